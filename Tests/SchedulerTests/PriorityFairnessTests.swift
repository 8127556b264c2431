// PriorityFairnessTests.swift - transactional before bulk, and weighted round-robin among
// bulk campaigns, with queues of a million recipients

import Testing
@testable import Scheduler

@Suite("Priorities and fairness")
struct PriorityFairnessTests {
    /// submitBulk - `count` bulk recipients of `campaign`, ids from `first`, spread over
    /// `domains` in turn.
    func submitBulk(_ scheduler: inout TestScheduler, campaign: UInt32, count: Int, first: UInt64, domains: [Int], now: Int64 = 0) {
        for offset in 0..<count {
            scheduler.submit(recipient(first + UInt64(offset), queued: now, campaign: campaign, priority: .bulk),
                             domain: domains[offset % domains.count], now: now)
        }
    }

    @Test("A transactional recipient behind 1,000,000 queued bulk recipients of the same site is in the very next delivery")
    func transactionalFirst() throws {
        var scheduler = TestScheduler(configuration())
        let site = scheduler.site("mx")
        let bulkDomain = scheduler.domain("bulk.test", site: site)
        let otherDomain = scheduler.domain("other.test", site: site)
        submitBulk(&scheduler, campaign: 1, count: 1_000_000, first: 0, domains: [bulkDomain])
        #expect(scheduler.pendingCount == 1_000_000)
        /* Some bulk already under way. */
        for _ in 0..<3 { scheduler.completeAll(try scheduler.required(now: 0), .delivered, now: 0) }
        let transactional: UInt64 = 5_000_000
        scheduler.submit(recipient(transactional, queued: 1), domain: bulkDomain, now: 1)
        let next = try scheduler.required(now: 1)
        #expect(next.recipients.map(\.id) == [transactional])
        #expect(next.recipients[0].priority == .transactional)
        scheduler.completeAll(next, .delivered, now: 1)
        /* The same for another domain of the site. */
        scheduler.submit(recipient(transactional + 1, queued: 2), domain: otherDomain, now: 2)
        #expect(scheduler.next(now: 2)?.recipients.map(\.id) == [transactional + 1])
        #expect(scheduler.next(now: 2)?.recipients.first?.priority == .bulk)
    }

    @Test("Within the site's limits: at full concurrency the transactional recipient takes the next free slot")
    func transactionalWithinLimits() {
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["mx": Limits(maxConnections: 2, initialConnections: 2)])))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("bulk.test", site: site)
        submitBulk(&scheduler, campaign: 1, count: 10_000, first: 0, domains: [domain])
        let outstanding = scheduler.drain(now: 0)
        #expect(outstanding.count == 2)
        scheduler.submit(recipient(99_999), domain: domain, now: 1)
        #expect(scheduler.next(now: 1) == nil)
        scheduler.completeAll(outstanding[0], .delivered, now: 2)
        #expect(scheduler.next(now: 2)?.recipients.map(\.id) == [99_999])
    }

    /// decisionsUntilDone - deliveries (each completed as delivered) until every recipient
    /// with an id in `small` has been handed out; also the campaign of each delivery.
    func decisionsUntilDone(_ scheduler: inout TestScheduler, small: Range<UInt64>, limit: Int = 10_000) -> (count: Int, campaigns: [UInt32]) {
        var remaining = Set(small)
        var campaigns: [UInt32] = []
        var now: Int64 = 0
        while !remaining.isEmpty && campaigns.count < limit {
            now += 1
            guard let delivery = scheduler.next(now: now) else { Issue.record("no delivery at \(now)"); break }
            let kinds = Set(delivery.recipients.map(\.campaign))
            #expect(kinds.count == 1, "a transaction carries one campaign")
            campaigns.append(kinds.first!)
            for recipient in delivery.recipients { remaining.remove(recipient.id) }
            scheduler.completeAll(delivery, .delivered, now: now)
        }
        return (campaigns.count, campaigns)
    }

    @Test("Fairness: 1,000 recipients behind a 1,000,000-recipient campaign in the same domain finish within 2 × ⌈1000/100⌉ + 2 decisions")
    func fairnessOneDomain() {
        var scheduler = TestScheduler(configuration())
        let site = scheduler.site("mx")
        let domain = scheduler.domain("big.test", site: site)
        submitBulk(&scheduler, campaign: 1, count: 1_000_000, first: 0, domains: [domain])
        submitBulk(&scheduler, campaign: 2, count: 1000, first: 2_000_000, domains: [domain])
        let (count, campaigns) = decisionsUntilDone(&scheduler, small: 2_000_000..<2_001_000)
        #expect(count <= 2 * 10 + 2)
        #expect(campaigns.filter { $0 == 2 }.count == 10) // full batches of 100
        #expect(count == 20) // strict alternation, the big campaign first
        #expect(scheduler.pendingCount == 1_000_000 - 100 * (count - 10))
    }

    @Test("Fairness: the same two campaigns spread over four domains of one site finish within 2 × ⌈1000/50⌉ + 4 decisions")
    func fairnessSpread() {
        var limits = Limits()
        limits.maxRecipientsPerTransaction = 50
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["mx": limits])))
        let site = scheduler.site("mx")
        let domains = (0..<4).map { scheduler.domain("d\($0).test", site: site) }
        submitBulk(&scheduler, campaign: 1, count: 1_000_000, first: 0, domains: domains)
        submitBulk(&scheduler, campaign: 2, count: 1000, first: 2_000_000, domains: domains)
        let (count, campaigns) = decisionsUntilDone(&scheduler, small: 2_000_000..<2_001_000)
        #expect(count <= 2 * 20 + 4)
        #expect(campaigns.filter { $0 == 2 }.count == 20)
    }

    @Test("Campaign weights change the share: weight 3 gets three transactions for each one of weight 1")
    func weights() {
        var scheduler = TestScheduler(configuration())
        let site = scheduler.site("mx")
        let domain = scheduler.domain("big.test", site: site)
        submitBulk(&scheduler, campaign: 1, count: 100_000, first: 0, domains: [domain])
        submitBulk(&scheduler, campaign: 2, count: 100_000, first: 1_000_000, domains: [domain])
        scheduler.setCampaignWeight(1, weight: 3)
        let (_, campaigns) = decisionsUntilDone(&scheduler, small: 9_000_000..<9_000_001, limit: 40) // never done: runs 40
        #expect(campaigns.count == 40)
        #expect(campaigns.filter { $0 == 1 }.count == 30)
        #expect(campaigns.filter { $0 == 2 }.count == 10)
        #expect(campaigns[0..<8] == [1, 1, 1, 2, 1, 1, 1, 2])

        /* Weight on the small campaign: 1,000 recipients done in 10 of its turns and 3 of the big one's. */
        var favoured = TestScheduler(configuration())
        let favouredDomain = favoured.domain("big.test", site: favoured.site("mx"))
        submitBulk(&favoured, campaign: 1, count: 1_000_000, first: 0, domains: [favouredDomain])
        submitBulk(&favoured, campaign: 2, count: 1000, first: 2_000_000, domains: [favouredDomain])
        favoured.setCampaignWeight(2, weight: 4)
        let (count, _) = decisionsUntilDone(&favoured, small: 2_000_000..<2_001_000)
        #expect(count == 13)
    }
}

@Suite("Domain bursts")
struct DomainBurstTests {
    @Test("With the default burst a domain takes up to 8 transactions in a row, then the site's next domain gets its turn")
    func burstThenYield() {
        var limits = Limits(maxConnections: 1000, initialConnections: 1000)
        limits.maxRecipientsPerTransaction = 1
        var scheduler = TestScheduler(SchedulerConfiguration(shaping: Shaping(sites: ["mx": limits]), rules: []))
        #expect(scheduler.configuration.domainBurst == 8)
        let site = scheduler.site("mx")
        let domains = (0..<3).map { scheduler.domain("d\($0).test", site: site) }
        for id in 0..<60 { scheduler.submit(recipient(UInt64(id)), domain: domains[id % 3], now: 0) }
        var order: [Int] = []
        while let delivery = scheduler.next(now: 0) { order.append(delivery.domain) }
        #expect(order.count == 60)
        /* Runs of 8, 8, 8, then 8, 8, 8, then the last 4 of each. */
        var runs: [Int] = []
        for domain in order { if runs.isEmpty || order[runs.reduce(0, +) - 1] != domain { runs.append(1) } else { runs[runs.count - 1] += 1 } }
        #expect(runs == [8, 8, 8, 8, 8, 8, 4, 4, 4])
        #expect(Array(order.prefix(24)) == Array(repeating: domains[0], count: 8) + Array(repeating: domains[1], count: 8) + Array(repeating: domains[2], count: 8))
    }

    @Test("A domain's burst ends early when its queue runs dry, and transactional mail still comes first")
    func burstEndsAndPriorityHolds() {
        var limits = Limits(maxConnections: 1000, initialConnections: 1000)
        limits.maxRecipientsPerTransaction = 1
        var scheduler = TestScheduler(SchedulerConfiguration(shaping: Shaping(sites: ["mx": limits]), rules: []))
        let site = scheduler.site("mx")
        let a = scheduler.domain("a.test", site: site), b = scheduler.domain("b.test", site: site)
        for id in 0..<3 { scheduler.submit(recipient(UInt64(id), campaign: 1, priority: .bulk), domain: a, now: 0) }
        for id in 10..<20 { scheduler.submit(recipient(UInt64(id), campaign: 1, priority: .bulk), domain: b, now: 0) }
        #expect(scheduler.next(now: 0)?.domain == a)
        scheduler.submit(recipient(99), domain: b, now: 0) // transactional, behind a's burst
        #expect(scheduler.next(now: 0)?.recipients.map(\.id) == [99])
        var rest: [Int] = []
        while let delivery = scheduler.next(now: 0) { rest.append(delivery.domain) }
        #expect(rest.prefix(2) == [a, a]) // a's burst resumes and ends when a is empty
        #expect(rest.dropFirst(2).allSatisfy { $0 == b })
        #expect(rest.count == 12)
    }

    @Test("Fairness with the default burst: the small campaign over four domains still finishes within 2 × 20 + 4 × 8 decisions")
    func fairnessWithBurst() {
        var limits = Limits()
        limits.maxRecipientsPerTransaction = 50
        var scheduler = TestScheduler(SchedulerConfiguration(shaping: Shaping(sites: ["mx": limits]), rules: []))
        let site = scheduler.site("mx")
        let domains = (0..<4).map { scheduler.domain("d\($0).test", site: site) }
        let helpers = PriorityFairnessTests()
        helpers.submitBulk(&scheduler, campaign: 1, count: 1_000_000, first: 0, domains: domains)
        helpers.submitBulk(&scheduler, campaign: 2, count: 1000, first: 2_000_000, domains: domains)
        let (count, campaigns) = helpers.decisionsUntilDone(&scheduler, small: 2_000_000..<2_001_000)
        #expect(count <= 2 * 20 + 4 * 8)
        #expect(campaigns.filter { $0 == 2 }.count == 20)
    }
}
