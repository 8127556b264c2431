// ConcurrencyHealthTests.swift - slow start, the concurrency ceiling, and destination health
// (pause after consecutive connection failures, growing cooldown, one probe at a time)

import Testing
@testable import Scheduler

@Suite("Concurrency and destination health")
struct ConcurrencyHealthTests {
    /// A scheduler with one site "mx" (limits as given, one recipient per transaction) and
    /// `count` ready recipients in two of its domains.
    private func loaded(_ limits: Limits, count: Int, retry: RetryPolicy = RetryPolicy(jitter: 0))
        -> (TestScheduler, site: Int, domains: [Int]) {
        var limits = limits
        limits.maxRecipientsPerTransaction = 1
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["mx": limits]), retry: retry))
        let site = scheduler.site("mx")
        let domains = [scheduler.domain("one.test", site: site), scheduler.domain("two.test", site: site)]
        for id in 0..<count { scheduler.submit(recipient(UInt64(id)), domain: domains[id % 2], now: 0) }
        return (scheduler, site, domains)
    }

    @Test("Slow start: begins at initialConnections, grows by successes to maxConnections, never above concurrency")
    func slowStart() {
        var (scheduler, site, _) = loaded(Limits(maxConnections: 4, initialConnections: 2), count: 500)
        #expect(scheduler.concurrency(site: site) == 2)
        var outstanding = scheduler.drain(now: 0)
        #expect(outstanding.count == 2)
        #expect(scheduler.next(now: 0) == nil)
        /* The window grows by 1/window per delivered transaction (Postfix's feedback). */
        var window = 2.0
        var seen: Set<Int> = [2]
        for step in 1...40 {
            let now = Int64(step)
            scheduler.completeAll(outstanding.removeFirst(), .delivered, now: now)
            window = min(4, window + 1 / window)
            #expect(scheduler.concurrency(site: site) == Int(window), "step \(step)")
            while let delivery = scheduler.next(now: now) {
                outstanding.append(delivery)
                #expect(outstanding.count <= scheduler.concurrency(site: site), "step \(step)")
            }
            /* There is a backlog, so the site runs exactly at its concurrency. */
            #expect(outstanding.count == scheduler.concurrency(site: site), "step \(step)")
            seen.insert(outstanding.count)
        }
        #expect(seen == [2, 3, 4])
        /* After 3 successes the window is 2 + 1/2 + 1/2.5 + 1/2.9 = 3.24. */
        var (fresh, freshSite, _) = loaded(Limits(maxConnections: 4, initialConnections: 2), count: 10)
        var held = fresh.drain(now: 0)
        for expected in [2, 2, 3] {
            fresh.completeAll(held.removeFirst(), .delivered, now: 1)
            #expect(fresh.concurrency(site: freshSite) == expected)
            held += fresh.drain(now: 1)
        }
    }

    @Test("An all-temporary-failure transaction halves the concurrency, down to 1; a mixed one does not")
    func halving() throws {
        var (scheduler, site, _) = loaded(Limits(maxConnections: 8, initialConnections: 8), count: 100)
        var outstanding = scheduler.drain(now: 0)
        #expect(outstanding.count == 8)
        scheduler.completeAll(outstanding.removeFirst(), plainTemporary, now: 1)
        #expect(scheduler.concurrency(site: site) == 4)
        /* 7 outstanding, 4 allowed: nothing more until fewer than 4 are out. */
        #expect(scheduler.next(now: 1) == nil)
        for _ in 0..<3 { scheduler.completeAll(outstanding.removeFirst(), plainTemporary, now: 2) }
        #expect(scheduler.concurrency(site: site) == 1) // 4 → 2 → 1 → 1
        #expect(scheduler.next(now: 2) == nil) // 4 outstanding ≥ 1
        /* A transaction with a permanent failure is not "all temporary": no halving. */
        var batchLimits = Limits(maxConnections: 8, initialConnections: 6)
        batchLimits.maxRecipientsPerTransaction = 2
        var mixed = TestScheduler(configuration(shaping: Shaping(sites: ["mx": batchLimits])))
        let mixedSite = mixed.site("mx")
        let domain = mixed.domain("one.test", site: mixedSite)
        for id in 0..<10 { mixed.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        let delivery = try mixed.required(now: 0)
        mixed.complete(delivery, results: [plainTemporary, .permanentFailure(reply: "550 5.1.1 no")], now: 1)
        #expect(mixed.concurrency(site: mixedSite) == 6)
    }

    @Test("The concurrency ceiling is shared by the domains of a site and starts at min(initial, max)")
    func sharedCeiling() {
        var (scheduler, site, domains) = loaded(Limits(maxConnections: 3, initialConnections: 10), count: 100)
        #expect(scheduler.concurrency(site: site) == 3)
        let outstanding = scheduler.drain(now: 0)
        #expect(outstanding.count == 3)
        #expect(Set(outstanding.map(\.domain)) == Set(domains))
        for delivery in outstanding { scheduler.completeAll(delivery, .delivered, now: 1) }
        #expect(scheduler.concurrency(site: site) == 3)
        #expect(scheduler.drain(now: 1).count == 3)
    }

    /// How the delivery layer reports a failed connection: the connection error first and
    /// then the transaction's temporary failures, or the other way round.
    enum ReportOrder: CaseIterable, Sendable { case failureFirst, completionFirst }

    @Test("Waiting for a slot, or in an open-ended suspension, leaves no timer behind (white box: the wake-up heaps stay small)")
    func noTimerForOpenEndedWaits() throws {
        var (scheduler, site, domains) = loaded(Limits(maxConnections: 1, initialConnections: 1), count: 3000)
        for step in 0..<1000 {
            let now = Int64(step)
            let delivery = try scheduler.required(now: now)
            #expect(scheduler.next(now: now) == nil) // the one slot is taken
            scheduler.completeAll(delivery, .delivered, now: now)
        }
        #expect(scheduler.siteWakes.count <= 2)
        #expect(scheduler.siteWakes.min?.time != .max)

        scheduler.suspend(domain: domains[0], until: .max, now: 1000)
        scheduler.suspend(domain: domains[1], until: .max, now: 1000)
        scheduler.suspend(site: site, until: .max)
        for step in 0..<1000 {
            let now = Int64(1000 + step)
            scheduler.submit(recipient(UInt64(10_000 + step), queued: now), domain: domains[step % 2], now: now)
            #expect(scheduler.next(now: now) == nil)
        }
        scheduler.resume(site: site)
        for step in 0..<1000 {
            let now = Int64(2000 + step)
            scheduler.submit(recipient(UInt64(20_000 + step), queued: now), domain: domains[step % 2], now: now)
            #expect(scheduler.next(now: now) == nil)
        }
        #expect(scheduler.siteWakes.count <= 2)
        #expect(scheduler.domainWakes.count <= 4)
        #expect(scheduler.nextWakeup != .max)
        scheduler.resume(domain: domains[0], now: 3000)
        #expect(scheduler.next(now: 3000)?.domain == domains[0])
    }

    @Test("Health: 5 consecutive connection failures pause the site 1 min; then one probe at a time; cooldown doubles to 1 h; a delivered probe restores concurrency",
          arguments: ReportOrder.allCases)
    func deadDestination(order: ReportOrder) throws {
        /* Retries come due after 1 ms, so work is always ready when the pause ends. */
        var (scheduler, site, _) = loaded(Limits(maxConnections: 10, initialConnections: 5), count: 200,
                                          retry: RetryPolicy(retryInterval: 1, maxRetryInterval: 1, jitter: 0))
        var now: Int64 = 1000
        for attempt in 1...5 {
            let delivery = try scheduler.required(now: now)
            fail(&scheduler, delivery, site: site, now: now, order: order)
            #expect(scheduler.pausedUntil(site: site) == (attempt < 5 ? 0 : now + 60_000), "attempt \(attempt)")
        }
        var pausedUntil = now + 60_000
        for probe in 0..<9 {
            for early in [now, now + 1, (now + pausedUntil) / 2, pausedUntil - 1] {
                #expect(scheduler.next(now: early) == nil, "probe \(probe) at \(early)")
            }
            #expect(scheduler.nextWakeup == pausedUntil)
            now = pausedUntil
            let delivery = scheduler.next(now: now)
            #expect(delivery != nil, "probe \(probe)")
            #expect(scheduler.next(now: now) == nil, "one probe at a time")
            #expect(scheduler.next(now: now + 10_000) == nil, "still one probe while it is out")
            now += 10_000
            if let delivery { fail(&scheduler, delivery, site: site, now: now, order: order) }
            let cooldown: Int64 = min(3_600_000, 60_000 << Int64(probe + 1)) // 2, 4, … 32 min, 1 h, 1 h
            #expect(scheduler.pausedUntil(site: site) == now + cooldown, "probe \(probe)")
            pausedUntil = now + cooldown
        }
        /* The probe after the pause succeeds: normal concurrency again, and the next pause
           starts over at 1 minute. */
        now = pausedUntil
        let probe = try scheduler.required(now: now)
        #expect(scheduler.next(now: now) == nil)
        scheduler.completeAll(probe, .delivered, now: now)
        let outstanding = scheduler.drain(now: now)
        #expect(outstanding.count == 5) // initialConnections, as before the pause
        #expect(outstanding.count == scheduler.concurrency(site: site))
        for delivery in outstanding { fail(&scheduler, delivery, site: site, now: now, order: order) }
        #expect(scheduler.pausedUntil(site: site) == now + 60_000)
    }

    private func fail(_ scheduler: inout TestScheduler, _ delivery: TestDelivery, site: Int, now: Int64, order: ReportOrder) {
        switch order {
        case .failureFirst:
            scheduler.connectionFailed(site: site, now: now)
            scheduler.completeAll(delivery, plainTemporary, now: now)
        case .completionFirst:
            scheduler.completeAll(delivery, plainTemporary, now: now)
            scheduler.connectionFailed(site: site, now: now)
        }
    }

    @Test("Health: failures of transactions started before a pause do not lengthen it")
    func failuresInFlightDoNotEscalateThePause() throws {
        var (scheduler, site, _) = loaded(Limits(maxConnections: 10, initialConnections: 10), count: 200)
        let outstanding = scheduler.drain(now: 0)
        #expect(outstanding.count == 10)
        /* The server goes away: the first five failures pause the site for a minute... */
        for delivery in outstanding.prefix(5) { fail(&scheduler, delivery, site: site, now: 0, order: .failureFirst) }
        #expect(scheduler.pausedUntil(site: site) == 60_000)
        /* ...and the five already in flight failing a moment later leave it at a minute
           (each doubled it: 2, 4, 8, 16, 32 minutes). */
        for delivery in outstanding.suffix(5) { fail(&scheduler, delivery, site: site, now: 1_000, order: .failureFirst) }
        #expect(scheduler.pausedUntil(site: site) == 60_000)
        /* The probe after the pause failing still doubles it. */
        let probe = try scheduler.required(now: 60_000)
        fail(&scheduler, probe, site: site, now: 60_000, order: .failureFirst)
        #expect(scheduler.pausedUntil(site: site) == 60_000 + 120_000)
    }

    @Test("Health: a probe the server refuses with 5xx ends the pause like a delivery (the server is up)")
    func aRefusedProbeEndsProbing() throws {
        var (scheduler, site, _) = loaded(Limits(maxConnections: 10, initialConnections: 5), count: 200)
        for delivery in scheduler.drain(now: 0) { fail(&scheduler, delivery, site: site, now: 0, order: .failureFirst) }
        #expect(scheduler.pausedUntil(site: site) == 60_000)
        let probe = try scheduler.required(now: 60_000)
        #expect(scheduler.next(now: 60_000) == nil, "one probe at a time")
        scheduler.completeAll(probe, .permanentFailure(reply: "550 5.1.1 No such user"), now: 60_000)
        #expect(scheduler.drain(now: 60_000).count > 1, "probing is over: more than one transaction at a time again")
    }

    @Test("Health: failures must be consecutive; a greeting or a delivery resets the count")
    func consecutiveOnly() throws {
        var (scheduler, site, _) = loaded(Limits(), count: 10)
        for _ in 0..<4 { scheduler.connectionFailed(site: site, now: 0) }
        scheduler.connectionSucceeded(site: site)
        for _ in 0..<4 { scheduler.connectionFailed(site: site, now: 0) }
        #expect(scheduler.pausedUntil(site: site) == 0)
        let delivery = try scheduler.required(now: 0)
        scheduler.completeAll(delivery, .delivered, now: 0)
        for _ in 0..<4 { scheduler.connectionFailed(site: site, now: 0) }
        #expect(scheduler.pausedUntil(site: site) == 0)
        scheduler.connectionFailed(site: site, now: 7)
        #expect(scheduler.pausedUntil(site: site) == 60_007)
    }

    @Test("Health: the threshold and cooldowns are configurable, down to milliseconds")
    func configurableHealth() throws {
        var scheduler = TestScheduler(configuration(health: HealthPolicy(threshold: 2, cooldown: 10, maxCooldown: 25)))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(1), domain: domain, now: 0)
        scheduler.connectionFailed(site: site, now: 0)
        #expect(scheduler.pausedUntil(site: site) == 0)
        scheduler.connectionFailed(site: site, now: 0)
        #expect(scheduler.pausedUntil(site: site) == 10)
        #expect(scheduler.next(now: 9) == nil)
        let probe = try scheduler.required(now: 10)
        scheduler.connectionFailed(site: site, now: 10)
        #expect(scheduler.pausedUntil(site: site) == 30)
        scheduler.completeAll(probe, plainTemporary, now: 10)
        scheduler.retryNow(domain: domain, now: 30)
        let second = try scheduler.required(now: 30)
        scheduler.connectionFailed(site: site, now: 30)
        #expect(scheduler.pausedUntil(site: site) == 55) // 40 capped at 25
        scheduler.completeAll(second, plainTemporary, now: 30)
    }
}
