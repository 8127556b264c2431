// AdministrationTests.swift - suspend and resume (domain, site, campaign) with and without
// expiry, retry now, bounce everything for a domain or a campaign

import Testing
@testable import Scheduler

@Suite("Administration")
struct AdministrationTests {
    enum Scope: CaseIterable, Sendable { case domain, site, campaign }

    /// A site with a held domain (bulk recipients 1-3 of campaign 7) and a free domain at
    /// another site (recipient 10).
    private func setUp() -> (TestScheduler, site: Int, held: Int, free: Int) {
        var scheduler = TestScheduler(configuration())
        let site = scheduler.site("mx")
        let held = scheduler.domain("held.test", site: site)
        let free = scheduler.domain("free.test", site: scheduler.site("other"))
        for id in 1...3 { scheduler.submit(recipient(UInt64(id), campaign: 7, priority: .bulk), domain: held, now: 0) }
        scheduler.submit(recipient(10), domain: free, now: 0)
        return (scheduler, site, held, free)
    }

    private func suspend(_ scheduler: inout TestScheduler, _ scope: Scope, site: Int, domain: Int, until: Int64, now: Int64) {
        switch scope {
        case .domain: scheduler.suspend(domain: domain, until: until, now: now)
        case .site: scheduler.suspend(site: site, until: until)
        case .campaign: scheduler.suspend(campaign: 7, until: until)
        }
    }

    @Test("A suspension with an expiry holds everything in its scope, and ends by itself at the expiry time", arguments: Scope.allCases)
    func suspendWithExpiry(scope: Scope) {
        var (scheduler, site, held, _) = setUp()
        suspend(&scheduler, scope, site: site, domain: held, until: 5_000, now: 0)
        #expect(scheduler.drain(now: 0).flatMap { $0.recipients.map(\.id) } == [10])
        for now in [1, 2_500, 4_999] as [Int64] { #expect(scheduler.next(now: now) == nil, "at \(now)") }
        #expect(scheduler.nextWakeup == 5_000, "the caller is woken when the suspension ends")
        #expect(scheduler.next(now: 5_000)?.recipients.map(\.id) == [1, 2, 3])
    }

    /// Recipients held by a suspension count as waiting, not as sendable (so `serve --drain`
    /// can finish while an operator holds a domain, site or campaign), and count again once
    /// it ends.
    @Test("Held recipients are not sendable", arguments: Scope.allCases)
    func heldRecipientsAreNotSendable(scope: Scope) {
        var (scheduler, site, held, _) = setUp()
        #expect(scheduler.sendableCount(now: 0) == 4)
        suspend(&scheduler, scope, site: site, domain: held, until: 5_000, now: 0)
        #expect(scheduler.sendableCount(now: 0) == 1, "only the free domain's recipient")
        #expect(scheduler.readyCount == 4, "still queued")
        #expect(scheduler.sendableCount(now: 5_000) == 4, "the suspension has ended")
    }

    /// A domain whose bulk work is all in a suspended campaign leaves the ready lists (it
    /// kept its site listed, and with a shared site rate every look took a token for
    /// nothing); the suspension's end, or a resume, lists it again.
    @Test("A domain held by a campaign suspension is not looked at until the campaign may go", arguments: [false, true])
    func campaignHeldDomainLeavesTheLists(resumeEarly: Bool) {
        var (scheduler, _, held, _) = setUp()
        scheduler.suspend(campaign: 7, until: 5_000)
        #expect(scheduler.drain(now: 0).flatMap { $0.recipients.map(\.id) } == [10])
        #expect(scheduler.readySites.isEmpty, "nothing to look at while campaign 7 is held")
        if resumeEarly {
            scheduler.resume(campaign: 7, now: 1_000)
            #expect(scheduler.next(now: 1_000)?.recipients.map(\.id) == [1, 2, 3])
        } else {
            #expect(scheduler.next(now: 4_999) == nil)
            #expect(scheduler.next(now: 5_000)?.recipients.map(\.id) == [1, 2, 3])
        }
        _ = held
    }

    /// Two suspended sites ahead of a ready one in the ready list: one call to `next` still
    /// reaches the ready site (it looked at about half the list, and nothing woke the
    /// caller for the rest: the ready site waited for an unrelated event).
    @Test func suspendedSitesAheadDoNotHideAReadyOne() {
        var scheduler = TestScheduler(configuration())
        let first = scheduler.site("first")
        let second = scheduler.site("second")
        let ready = scheduler.site("ready")
        scheduler.suspend(site: first, until: .max)
        scheduler.suspend(site: second, until: .max)
        scheduler.submit(recipient(1), domain: scheduler.domain("a.test", site: first), now: 0)
        scheduler.submit(recipient(2), domain: scheduler.domain("b.test", site: second), now: 0)
        scheduler.submit(recipient(3), domain: scheduler.domain("c.test", site: ready), now: 0)
        #expect(scheduler.next(now: 0)?.recipients.map(\.id) == [3])
    }

    @Test("A suspension without expiry holds until a manual resume", arguments: Scope.allCases)
    func suspendAndResume(scope: Scope) {
        var (scheduler, site, held, _) = setUp()
        suspend(&scheduler, scope, site: site, domain: held, until: .max, now: 0)
        #expect(scheduler.drain(now: 0).count == 1)
        #expect(scheduler.next(now: 86_400_000) == nil)
        switch scope {
        case .domain: scheduler.resume(domain: held, now: 86_400_000)
        case .site: scheduler.resume(site: site)
        case .campaign: scheduler.resume(campaign: 7, now: 86_400_000)
        }
        #expect(scheduler.next(now: 86_400_000)?.recipients.map(\.id) == [1, 2, 3])
    }

    @Test("A manual resume ends a suspension before its expiry", arguments: Scope.allCases)
    func resumeEarly(scope: Scope) {
        var (scheduler, site, held, _) = setUp()
        suspend(&scheduler, scope, site: site, domain: held, until: 60_000, now: 0)
        #expect(scheduler.drain(now: 0).count == 1)
        switch scope {
        case .domain: scheduler.resume(domain: held, now: 10)
        case .site: scheduler.resume(site: site)
        case .campaign: scheduler.resume(campaign: 7, now: 10)
        }
        #expect(scheduler.next(now: 10)?.recipients.map(\.id) == [1, 2, 3])
    }

    @Test("A suspended campaign holds only its own recipients; transactional and other campaigns go on")
    func campaignOnly() {
        var (scheduler, _, held, _) = setUp()
        scheduler.submit(recipient(20, campaign: 8, priority: .bulk), domain: held, now: 0)
        scheduler.submit(recipient(30), domain: held, now: 0)
        scheduler.suspend(campaign: 7, until: .max)
        let ids = scheduler.drain(now: 0).flatMap { $0.recipients.map(\.id) }
        #expect(Set(ids) == [10, 20, 30])
    }

    @Test("Deferred recipients coming due in a suspended domain wait for the suspension to end")
    func deferredInSuspension() throws {
        var (scheduler, _, held, _) = setUp()
        let first = scheduler.drain(now: 0)
        let delivery = try #require(first.first { $0.domain == held })
        scheduler.completeAll(delivery, plainTemporary, now: 0) // retry at 5 min
        scheduler.suspend(domain: held, until: 600_000, now: 0)
        #expect(scheduler.next(now: 300_000) == nil)
        #expect(scheduler.next(now: 599_999) == nil)
        #expect(scheduler.next(now: 600_000)?.recipients.map(\.id) == [1, 2, 3])
    }

    @Test("Retry now makes a domain's deferred recipients due at once")
    func retryNow() throws {
        var (scheduler, _, held, free) = setUp()
        for delivery in scheduler.drain(now: 0) { scheduler.completeAll(delivery, plainTemporary, now: 0) }
        #expect(scheduler.next(now: 1) == nil)
        scheduler.retryNow(domain: held, now: 1)
        let again = try scheduler.required(now: 1)
        #expect(again.recipients.map(\.id) == [1, 2, 3])
        #expect(again.recipients.allSatisfy { $0.attempts == 1 })
        #expect(scheduler.next(now: 1) == nil) // the other domain keeps its retry time
        #expect(scheduler.next(now: 300_000)?.domain == free)
    }

    @Test("Bounce all for a domain removes its ready and deferred recipients and reports them")
    func bounceDomain() {
        var (scheduler, _, held, free) = setUp()
        let first = scheduler.drain(now: 0)
        for delivery in first where delivery.domain == held { scheduler.completeAll(delivery, plainTemporary, now: 0) } // 1-3 deferred
        scheduler.submit(recipient(4), domain: held, now: 1)                                   // ready, transactional
        scheduler.submit(recipient(5, campaign: 9, priority: .bulk), domain: held, now: 1)     // ready, bulk
        scheduler.submit(recipient(6), domain: held, due: 10_000, now: 1)                      // deferred by submit
        scheduler.submit(recipient(11), domain: free, now: 1)
        #expect(scheduler.pendingCount == 7)
        let count = scheduler.bounceAll(domain: held, reason: "operator: bounced")
        #expect(count == 6)
        let disposed = scheduler.takeDisposed()
        #expect(Set(disposed.map(\.0.id)) == [1, 2, 3, 4, 5, 6])
        #expect(disposed.allSatisfy { $0.1 == .bounced(reply: "operator: bounced") })
        #expect(scheduler.pendingCount == 1)
        #expect(scheduler.drain(now: 1).flatMap { $0.recipients.map(\.id) } == [11])
        #expect(scheduler.next(now: 100_000_000) == nil)
        #expect(scheduler.takeDisposed().isEmpty)
    }

    @Test("Bounce all for a campaign removes its ready and deferred recipients in every domain and reports them")
    func bounceCampaign() {
        var scheduler = TestScheduler(configuration())
        let site = scheduler.site("mx")
        let one = scheduler.domain("one.test", site: site)
        let two = scheduler.domain("two.test", site: site)
        for id in 1...4 { scheduler.submit(recipient(UInt64(id), campaign: 7, priority: .bulk), domain: id % 2 == 0 ? one : two, now: 0) }
        /* 1 and 3 fail and are deferred; 2 and 4 stay ready behind a suspension. */
        let delivery = scheduler.drain(now: 0)
        for item in delivery where item.domain == two { scheduler.completeAll(item, plainTemporary, now: 0) }
        for item in delivery where item.domain == one { scheduler.completeAll(item, plainTemporary, now: 0) }
        scheduler.retryNow(domain: one, now: 0)
        scheduler.suspend(domain: one, until: .max, now: 0)
        for id in 20...22 { scheduler.submit(recipient(UInt64(id), campaign: 8, priority: .bulk), domain: two, now: 1) }
        scheduler.submit(recipient(30), domain: one, now: 1)
        #expect(scheduler.pendingCount == 8)
        #expect(scheduler.bounceAll(campaign: 7, reason: "campaign cancelled") == 4)
        let disposed = scheduler.takeDisposed()
        #expect(Set(disposed.map(\.0.id)) == [1, 2, 3, 4])
        #expect(disposed.allSatisfy { $0.1 == .bounced(reply: "campaign cancelled") })
        #expect(scheduler.pendingCount == 4)
        scheduler.resume(domain: one, now: 2)
        var seen: [UInt64] = []
        for now in [2, 400_000, 100_000_000] as [Int64] {
            for item in scheduler.drain(now: now) {
                seen += item.recipients.map(\.id)
                scheduler.completeAll(item, .delivered, now: now)
            }
        }
        #expect(Set(seen) == [20, 21, 22, 30])
        #expect(scheduler.pendingCount == 0)
    }
}

@Suite("Bouncing a campaign")
struct BounceCampaignTests {
    @Test("bounceAll(campaign:) takes ready transactional recipients of the campaign too, and leaves others")
    func transactionalOfCampaign() {
        var scheduler = Scheduler()
        let site = scheduler.site("s")
        let domain = scheduler.domain("d.test", site: site)
        let now: Int64 = 1_000
        scheduler.submit(ScheduledRecipient(ref: RecipientRef(1), queued: now, campaign: 7, priority: .transactional), domain: domain, now: now)
        scheduler.submit(ScheduledRecipient(ref: RecipientRef(2), queued: now, campaign: 8, priority: .transactional), domain: domain, now: now)
        scheduler.submit(ScheduledRecipient(ref: RecipientRef(3), queued: now, campaign: 7, priority: .bulk), domain: domain, now: now)
        #expect(scheduler.bounceAll(campaign: 7, reason: "550 5.7.1 campaign withdrawn") == 2)
        #expect(Set(scheduler.takeDisposed().map(\.0.ref)) == [RecipientRef(1), RecipientRef(3)])
        #expect(scheduler.pendingCount == 1)
        #expect(scheduler.next(now: now)?.recipients.map(\.ref) == [RecipientRef(2)])
        #expect(scheduler.next(now: now) == nil)
    }
}

@Suite("Wake-up bookkeeping")
struct WakeBookkeepingTests {
    @Test("A rate-limited domain with a retry far ahead keeps one deferred wake-up, however many rate wake-ups pass")
    func deferredWakeNotDuplicated() {
        var limits = Limits(maxRecipientsPerTransaction: 1)
        limits.messageRate = Rate(10, per: 1)
        var scheduler = TestScheduler(configuration(shaping: Shaping(domains: ["r.test": limits])))
        let domain = scheduler.domain("r.test", site: scheduler.site("s"))
        for id in 0..<2_000 { scheduler.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        scheduler.submit(recipient(9_999), domain: domain, due: 4 * 3_600_000, now: 0)
        var now: Int64 = 0
        var handed = 0
        for _ in 0..<10_000 where handed < 1_000 {
            if let delivery = scheduler.next(now: now) {
                handed += 1
                scheduler.completeAll(delivery, .delivered, now: now)
            } else if let wake = scheduler.nextWakeup, wake > now {
                now = wake // a rate wake-up, 100 ms on
            } else {
                break
            }
        }
        #expect(handed == 1_000)
        #expect(now < 3_600_000) // the rate, not the far retry, set the pace
        #expect(scheduler.domainWakes.count <= 3, "domain wake-ups: \(scheduler.domainWakes.count)")
    }
}
