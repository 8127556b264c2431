// RetryExpiryTests.swift - exponential backoff with jitter, 5xx as final, and max_age wherever
// a recipient waits (ready, deferred, in a suspended domain, site or campaign, at a paused site)

import CarrierTesting
import Testing
@testable import Scheduler

@Suite("Retry, backoff and expiry")
struct RetryExpiryTests {
    /// The delays between each temporary failure and the time `next` hands the recipient
    /// out again, checked to the millisecond: `next` does not give it 1 ms earlier.
    private func observedDelays(retry: RetryPolicy, queued: Int64 = 0, attempts: Int, holdFor: Int64 = 1234) throws -> [Int64] {
        var scheduler = TestScheduler(configuration(retry: retry))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(7, queued: queued), domain: domain, now: queued)
        var delivery = try scheduler.required(now: queued)
        var delays: [Int64] = []
        var now = queued
        for attempt in 1...attempts {
            /* The delay counts from the failure, not from the start of the transaction. */
            now += min(holdFor, retry.retryInterval)
            scheduler.completeAll(delivery, plainTemporary, now: now)
            #expect(scheduler.pendingCount == 1)
            guard let due = scheduler.nextWakeup else { Issue.record("no wake-up after attempt \(attempt)"); break }
            #expect(scheduler.next(now: due - 1) == nil, "attempt \(attempt): handed out 1 ms early")
            guard let again = scheduler.next(now: due) else { Issue.record("attempt \(attempt): not handed out at \(due)"); break }
            #expect(again.recipients.map(\.id) == [7])
            #expect(again.recipients[0].attempts == UInt16(attempt))
            delays.append(due - now)
            now = due
            delivery = again
        }
        return delays
    }

    @Test("Without jitter: first retry after 5 min, doubling to 4 h, exactly")
    func defaultSchedule() throws {
        let minute: Int64 = 60_000
        let delays = try observedDelays(retry: RetryPolicy(jitter: 0), attempts: 9)
        #expect(delays == [5, 10, 20, 40, 80, 160, 240, 240, 240].map { $0 * minute })
        let policy = RetryPolicy(jitter: 0)
        #expect(policy.retryInterval == 5 * minute && policy.maxRetryInterval == 240 * minute && policy.maxAge == 5 * 1440 * minute)
        #expect((1...9).map { policy.delay(afterAttempts: $0, key: 99) } == delays)
    }

    @Test("Durations down to milliseconds: 10 ms doubling to 80 ms")
    func millisecondSchedule() throws {
        let retry = RetryPolicy(retryInterval: 10, maxRetryInterval: 80, maxAge: 100_000, jitter: 0)
        #expect(try observedDelays(retry: retry, attempts: 6, holdFor: 3) == [10, 20, 40, 80, 80, 80])
    }

    @Test("With jitter 0.2: each delay in [base, 1.2 × base), the same for the same seed, different for another")
    func jitter() throws {
        let bases: [Int64] = [5, 10, 20, 40, 80, 160, 240, 240].map { $0 * 60_000 }
        var runs: [[Int64]] = []
        for (seed, queued) in [(42, 0), (42, 0), (43, 0), (42, 5)] as [(UInt64, Int64)] {
            let delays = try observedDelays(retry: RetryPolicy(jitter: 0.2, seed: seed), queued: queued, attempts: 8)
            #expect(delays.count == bases.count)
            for (delay, base) in zip(delays, bases) {
                #expect(delay >= base && Double(delay) < 1.2 * Double(base), "seed \(seed): \(delay) for base \(base)")
            }
            #expect(delays != bases, "jitter spreads the delays")
            runs.append(delays)
        }
        #expect(runs[0] == runs[1])
        #expect(runs[0] != runs[2])
        #expect(runs[0] != runs[3]) // another recipient, another spread
        /* The exact times for seed 42 (a regression guard for the jitter function). */
        #expect(runs[0] == Self.seed42)
    }

    static let seed42: [Int64] = [309_594, 633_432, 1_282_605, 2_418_254, 5_633_498, 10_019_337, 16_705_819, 15_379_001]

    @Test("Jitter policy: same seed, key and attempt give the same delay; delays stay in range")
    func jitterPolicy() {
        let policy = RetryPolicy(retryInterval: 1000, maxRetryInterval: 8000, jitter: 0.2, seed: 9)
        var random = SplitMix64(seed: 3)
        var distinct: Set<Int64> = []
        for _ in 0..<2000 {
            let key = random.next()
            let attempts = Int.random(in: 1...10, using: &random)
            let base = min(8000, Int64(1000) << Int64(attempts - 1))
            let delay = policy.delay(afterAttempts: attempts, key: key)
            #expect(delay >= base && Double(delay) < 1.2 * Double(base))
            #expect(delay == policy.delay(afterAttempts: attempts, key: key))
            if attempts == 1 { distinct.insert(delay) }
        }
        #expect(distinct.count > 100, "the jitter takes many values")
    }

    @Test("A 5xx is final at once: bounced with its reply, never handed out again")
    func permanentFailure() throws {
        var scheduler = TestScheduler(configuration(retry: RetryPolicy(retryInterval: 10, maxRetryInterval: 10, maxAge: 1_000_000, jitter: 0)))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        for id in 1...3 { scheduler.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        #expect(scheduler.pendingCount == 3)
        let delivery = try scheduler.required(now: 0)
        #expect(delivery.recipients.map(\.id) == [1, 2, 3])
        #expect(scheduler.pendingCount == 0 && scheduler.inFlightCount == 3)
        scheduler.complete(delivery, results: [.delivered, .permanentFailure(reply: "550 5.1.1 No such user"), plainTemporary], now: 5)
        let disposed = scheduler.takeDisposed()
        #expect(disposed.count == 1)
        #expect(disposed.first?.0.id == 2)
        #expect(disposed.first?.1 == .bounced(reply: "550 5.1.1 No such user"))
        #expect(scheduler.takeDisposed().isEmpty)
        #expect(scheduler.pendingCount == 1 && scheduler.inFlightCount == 0)
        /* Only the temporary failure comes back, again and again; never recipient 2. */
        var now: Int64 = 5
        for _ in 0..<20 {
            now = try scheduler.requiredWakeup()
            let again = try scheduler.required(now: now)
            #expect(again.recipients.map(\.id) == [3])
            scheduler.completeAll(again, plainTemporary, now: now)
        }
        let last = try scheduler.required(now: try scheduler.requiredWakeup())
        scheduler.completeAll(last, .permanentFailure(reply: "554 5.7.1 rejected"), now: now + 100)
        #expect(scheduler.takeDisposed().map(\.1) == [.bounced(reply: "554 5.7.1 rejected")])
        #expect(scheduler.pendingCount == 0)
        #expect(scheduler.next(now: now + 10_000_000) == nil)
    }

    @Test("max_age: a recipient deferred again and again expires at exactly queued + max_age")
    func deferredExpiry() {
        var scheduler = TestScheduler(configuration(retry: RetryPolicy(retryInterval: 100, maxRetryInterval: 100, maxAge: 950, jitter: 0)))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(1, queued: 0), domain: domain, now: 0)
        var handedOut: [Int64] = []
        var now: Int64 = 0
        while now < 950 {
            if let delivery = scheduler.next(now: now) {
                handedOut.append(now)
                scheduler.completeAll(delivery, plainTemporary, now: now)
            }
            #expect(scheduler.takeDisposed().isEmpty)
            #expect(scheduler.pendingCount == 1)
            guard let wake = scheduler.nextWakeup, wake > now else { Issue.record("no wake-up after \(now)"); return }
            now = wake
        }
        #expect(handedOut == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900])
        #expect(now == 950) // the last retry is cut to the deadline
        scheduler.advance(now: 949)
        #expect(scheduler.takeDisposed().isEmpty)
        #expect(scheduler.next(now: 949) == nil)
        scheduler.advance(now: 950)
        let disposed = scheduler.takeDisposed()
        #expect(disposed.map(\.0.id) == [1] && disposed.map(\.1) == [.expired])
        #expect(scheduler.pendingCount == 0)
        #expect(scheduler.next(now: 10_000) == nil)
    }

    @Test("Message expiry: a retry is never due after the message's expiry time; without one, the usual schedule")
    func retryCappedAtMessageExpiry() throws {
        var scheduler = TestScheduler(configuration(retry: RetryPolicy(retryInterval: 60_000, maxRetryInterval: 60_000, maxAge: 1_000_000, jitter: 0)))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(1), domain: domain, now: 0)
        scheduler.submit(recipient(2), domain: domain, now: 0)
        let first = try scheduler.required(now: 0)
        scheduler.complete(first, results: first.recipients.map { _ in plainTemporary }, now: 100, expires: 700)
        #expect(try scheduler.requiredWakeup() == 700)
        #expect(scheduler.retryTime(for: first.recipients[0], domain: domain, attempts: 1, now: 100, expires: 700) == 700)
        #expect(scheduler.retryTime(for: first.recipients[0], domain: domain, attempts: 1, now: 100) == 60_100)
        #expect(scheduler.next(now: 699) == nil)
        #expect(try scheduler.required(now: 700).recipients.map(\.id) == [1, 2])
    }

    @Test("Message expiry: an expired result disposes of the recipients as expired and leaves the site's health alone")
    func expiredResult() throws {
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["mx": Limits(maxConnections: 8, initialConnections: 4)])))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(1), domain: domain, now: 0)
        scheduler.submit(recipient(2), domain: domain, now: 0)
        let delivery = try scheduler.required(now: 0)
        #expect(scheduler.inFlightCount == 2)
        scheduler.completeAll(delivery, .expired, now: 10)
        let disposed = scheduler.takeDisposed()
        #expect(disposed.map(\.0.id) == [1, 2] && disposed.allSatisfy { $0.1 == .expired })
        #expect(scheduler.pendingCount == 0 && scheduler.inFlightCount == 0)
        #expect(scheduler.concurrency(site: site) == 4, "neither a success nor a failure of the site")
        #expect(scheduler.next(now: 1_000_000) == nil)
    }

    @Test("max_age: a recipient submitted with a due time past its deadline still expires at the deadline")
    func submittedPastDeadline() {
        var scheduler = TestScheduler(configuration(retry: RetryPolicy(maxAge: 10_000, jitter: 0)))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        /* Reloaded from the spool: queued long ago, retry time beyond max_age. */
        scheduler.submit(recipient(1, queued: 2_000), domain: domain, due: 50_000, now: 5_000)
        scheduler.submit(recipient(2, queued: 4_000), domain: domain, due: 6_000, now: 5_000)
        #expect(scheduler.pendingCount == 2)
        scheduler.advance(now: 11_999)
        #expect(scheduler.takeDisposed().isEmpty)
        scheduler.advance(now: 12_000)
        #expect(scheduler.takeDisposed().map(\.0.id) == [1])
        #expect(scheduler.pendingCount == 1)
        #expect(scheduler.next(now: 12_000)?.recipients.map(\.id) == [2])
        #expect(scheduler.pendingCount == 0)
        /* Already past max_age when submitted: it leaves at the next call, not later. */
        scheduler.submit(recipient(3, queued: 0), domain: domain, now: 20_000)
        #expect(scheduler.next(now: 20_000) == nil)
        #expect(scheduler.takeDisposed().map(\.0.id) == [3])
        #expect(scheduler.pendingCount == 0)
    }

    /// What keeps the recipients of a domain from being handed out.
    enum Hold: CaseIterable, Sendable { case domain, site, campaign, pausedSite }

    @Test("max_age: recipients waiting in a suspended domain, site or campaign, or at a paused site, expire at their deadline (KumoMTA #539)",
          arguments: Hold.allCases)
    func expiryWhileHeld(hold: Hold) throws {
        let maxAge: Int64 = 10_000
        var scheduler = TestScheduler(configuration(retry: RetryPolicy(retryInterval: 1000, maxRetryInterval: 1000, maxAge: maxAge, jitter: 0)))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        let campaign: UInt32 = hold == .campaign ? 7 : 0
        let priority: Priority = hold == .campaign ? .bulk : .transactional
        func make(_ id: UInt64, _ queued: Int64) -> TestRecipient { recipient(id, queued: queued, campaign: campaign, priority: priority) }

        /* 1 is delivered at once; 2 is out for a long time and fails at 9,200 (retry at
           10,200, deadline 10,500); the hold starts at 9,300; 3 arrives at 9,300, 4 at 9,400
           reloaded from the spool with an old queued time, 5 at 10,100. */
        scheduler.submit(make(1, 0), domain: domain, now: 0)
        scheduler.completeAll(try scheduler.required(now: 0), .delivered, now: 0)
        scheduler.submit(make(2, 500), domain: domain, now: 500)
        let second = try scheduler.required(now: 500)
        scheduler.completeAll(second, plainTemporary, now: 9_200)
        switch hold {
        case .domain: scheduler.suspend(domain: domain, until: .max, now: 9_300)
        case .site: scheduler.suspend(site: site, until: .max)
        case .campaign: scheduler.suspend(campaign: 7, until: .max)
        case .pausedSite: for _ in 0..<5 { scheduler.connectionFailed(site: site, now: 9_300) }
        }
        var expected: [UInt64: Int64] = [2: 10_500]
        var arrivals: [(Int64, TestRecipient)] = [(9_300, make(3, 9_300)), (9_400, make(4, 100)), (10_100, make(5, 10_100))]
        for (_, recipient) in arrivals { expected[recipient.id] = recipient.queued + maxAge }

        var expiredAt: [UInt64: Int64] = [:]
        var now: Int64 = 9_200
        var checkpoints = expected.values.flatMap { [$0 - 1, $0] }
        while now < 25_000 {
            let candidates = [arrivals.first?.0, scheduler.nextWakeup, checkpoints.filter { $0 > now }.min()].compactMap { $0 }
            now = max(now + 1, candidates.min() ?? 25_000)
            while let (time, recipient) = arrivals.first, time <= now {
                arrivals.removeFirst()
                scheduler.submit(recipient, domain: domain, now: now)
            }
            checkpoints.removeAll { $0 <= now }
            #expect(scheduler.next(now: now) == nil, "held at \(now)")
            for (recipient, disposal) in scheduler.takeDisposed() {
                #expect(disposal == .expired)
                expiredAt[recipient.id] = now
            }
            let pending = expected.filter { $0.value > now }.count - arrivals.count
            #expect(scheduler.pendingCount == pending, "at \(now)")
        }
        #expect(expiredAt == expected)
        #expect(scheduler.pendingCount == 0)
    }

    @Test("Property: a recipient that is never delivered leaves at exactly max(queued + max_age, when it came back), wherever it waits",
          arguments: 0..<12 as Range<UInt64>)
    func expiryProperty(seed: UInt64) {
        var random = SplitMix64(seed: seed &+ 1000)
        let maxAge: Int64 = 5_000
        let limits = Limits(maxConnections: 3, initialConnections: 2, maxRecipientsPerTransaction: Int.random(in: 1...4, using: &random),
                            messageRate: Rate(Int.random(in: 5...50, using: &random), per: 1), messageBurst: 2)
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["mx": limits]),
                                                    retry: RetryPolicy(retryInterval: 200, maxRetryInterval: 1600, maxAge: maxAge, jitter: 0.2, seed: seed),
                                                    health: HealthPolicy(threshold: 3, cooldown: 500, maxCooldown: 4000)))
        let site = scheduler.site("mx")
        let domains = (0..<3).map { scheduler.domain("d\($0).test", site: site) }

        enum State { case pending, inFlight, done }
        struct Model { var recipient: TestRecipient; var state: State; var backAt: Int64 }
        var model: [UInt64: Model] = [:]
        var outstanding: [TestDelivery] = []
        var nextID: UInt64 = 0
        var now: Int64 = 0
        let horizon: Int64 = 40_000
        var eventTimes = (0..<400).map { _ in Int64.random(in: 0..<horizon, using: &random) }
        eventTimes.sort()

        while true {
            let candidates = [eventTimes.first, scheduler.nextWakeup.map { max($0, now) }].compactMap { $0 }
            guard let time = candidates.min(), time < horizon else { break }
            now = time
            if let first = eventTimes.first, first <= now {
                eventTimes.removeFirst()
                switch Int.random(in: 0..<100, using: &random) {
                case 0..<35:
                    for _ in 0..<Int.random(in: 1...5, using: &random) {
                        nextID += 1
                        let queued = Bool.random(using: &random) ? now : now - Int64.random(in: 0...6_000, using: &random)
                        let kind = Int.random(in: 0..<3, using: &random)
                        let made = recipient(nextID, queued: queued, campaign: UInt32(kind), priority: kind == 0 ? .transactional : .bulk)
                        let due: Int64? = Int.random(in: 0..<4, using: &random) == 0 ? now + Int64.random(in: 0...9_000, using: &random) : nil
                        scheduler.submit(made, domain: domains.randomElement(using: &random)!, due: due, now: now)
                        model[nextID] = Model(recipient: made, state: .pending, backAt: now)
                    }
                case 35..<60:
                    if !outstanding.isEmpty {
                        let delivery = outstanding.remove(at: Int.random(in: 0..<outstanding.count, using: &random))
                        let results: [DeliveryResult] = delivery.recipients.map { _ in
                            switch Int.random(in: 0..<10, using: &random) {
                            case 0..<5: .delivered
                            case 5..<9: plainTemporary
                            default: .permanentFailure(reply: "550 5.1.1 unknown")
                            }
                        }
                        scheduler.complete(delivery, results: results, now: now)
                        for (recipient, result) in zip(delivery.recipients, results) {
                            model[recipient.id]!.state = result == plainTemporary ? .pending : .done
                            model[recipient.id]!.backAt = now
                        }
                    }
                case 60..<66: scheduler.suspend(domain: domains.randomElement(using: &random)!, until: Bool.random(using: &random) ? .max : now + Int64.random(in: 1...8_000, using: &random), now: now)
                case 66..<71: scheduler.resume(domain: domains.randomElement(using: &random)!, now: now)
                case 71..<74: scheduler.suspend(site: site, until: now + Int64.random(in: 1...8_000, using: &random))
                case 74..<76: scheduler.resume(site: site)
                case 76..<81: scheduler.suspend(campaign: UInt32.random(in: 1...2, using: &random), until: Bool.random(using: &random) ? .max : now + Int64.random(in: 1...8_000, using: &random))
                case 81..<85: scheduler.resume(campaign: UInt32.random(in: 1...2, using: &random), now: now)
                case 85..<90: scheduler.retryNow(domain: domains.randomElement(using: &random)!, now: now)
                case 90..<95: scheduler.connectionFailed(site: site, now: now)
                default: break
                }
            }
            /* The first broken invariant ends the run (one root cause, one report). */
            func fail(_ what: String) { Issue.record("seed \(seed) at \(now): \(what)") }
            while let delivery = scheduler.next(now: now) {
                for recipient in delivery.recipients {
                    guard model[recipient.id]!.state == .pending else { return fail("\(recipient.id) handed out twice") }
                    guard now < recipient.queued + maxAge else { return fail("\(recipient.id) handed out after its deadline") }
                    model[recipient.id]!.state = .inFlight
                }
                outstanding.append(delivery)
            }
            if let wake = scheduler.nextWakeup, wake <= now { return fail("wake-up \(wake) not after now") }
            for (recipient, disposal) in scheduler.takeDisposed() {
                let entry = model[recipient.id]!
                switch disposal {
                case .bounced:
                    guard entry.state == .done && entry.backAt == now else { return fail("\(recipient.id) bounced unasked") }
                case .expired:
                    guard entry.state == .pending else { return fail("\(recipient.id) expired while \(entry.state)") }
                    let deadline = max(entry.recipient.queued + maxAge, entry.backAt)
                    guard now == deadline else {
                        return fail("\(recipient.id) queued \(entry.recipient.queued) back \(entry.backAt) expired at \(now), not \(deadline)")
                    }
                    model[recipient.id]!.state = .done
                }
            }
            let pending = model.values.filter { $0.state == .pending }
            guard scheduler.pendingCount == pending.count else { return fail("pendingCount \(scheduler.pendingCount), model \(pending.count)") }
            let inFlight = model.values.filter { $0.state == .inFlight }.count
            guard scheduler.inFlightCount == inFlight else { return fail("inFlightCount \(scheduler.inFlightCount), model \(inFlight)") }
            if let overdue = pending.first(where: { max($0.recipient.queued + maxAge, $0.backAt) <= now }) {
                return fail("\(overdue.recipient.id) (queued \(overdue.recipient.queued), back \(overdue.backAt)) overdue")
            }
        }
        #expect(model.count > 100)
        #expect(model.values.contains { $0.state == .done })
    }
}
