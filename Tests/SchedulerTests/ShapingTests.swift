// ShapingTests.swift - where limits come from (domain > site > longest MX suffix > defaults,
// field by field) and how the scheduler applies them: batches, a domain's own rate, and the
// connection rate

import Testing
@testable import Scheduler

@Suite("Shaping")
struct ShapingTests {
    static let shaping = Shaping(
        defaults: Limits(maxConnections: 50, maxRecipientsPerTransaction: 200),
        mxSuffixes: [".google.com": Limits(maxConnections: 40, initialConnections: 8, messageRate: Rate(100, per: 1)),
                     ".l.google.com": Limits(initialConnections: 9, connectionRate: Rate(5, per: 1))],
        sites: ["gmail": Limits(maxConnections: 30)],
        domains: ["gmail.com": Limits(maxRecipientsPerTransaction: 10, messageRate: Rate(5, per: 1))])

    @Test("Site limits: the site entry, then the longest MX suffix, then the defaults, field by field")
    func siteResolution() {
        let limits = Self.shaping.siteLimits(site: "gmail", mxHosts: ["ASPMX.L.GOOGLE.COM", "alt1.aspmx.l.google.com"])
        #expect(limits.maxConnections == 30)                   // site entry beats suffix and defaults
        #expect(limits.initialConnections == 9)                // the longest suffix, ".l.google.com"
        #expect(limits.connectionRate == Rate(5, per: 1))
        #expect(limits.messageRate == nil)                     // only the longest suffix applies
        #expect(limits.maxRecipientsPerTransaction == 200)     // configured defaults
        #expect(limits.maxMessagesPerConnection == 100)        // built-in defaults under them
        #expect(Self.shaping.suffixMatch(["aspmx.l.google.com"]) == ".l.google.com")
        #expect(Self.shaping.suffixMatch(["mx1.smtp.google.com"]) == ".google.com")
        #expect(Self.shaping.suffixMatch(["google.com"]) == ".google.com") // the bare name matches its suffix
        #expect(Self.shaping.suffixMatch(["mx.notgoogle.com", "mx.example.net"]) == nil)

        let bySuffix = Self.shaping.siteLimits(site: "workspace", mxHosts: ["smtp.google.com"])
        #expect(bySuffix.maxConnections == 40 && bySuffix.initialConnections == 8 && bySuffix.messageRate == Rate(100, per: 1))
        #expect(bySuffix.maxRecipientsPerTransaction == 200)

        let plain = Self.shaping.siteLimits(site: "elsewhere", mxHosts: ["mx.example.net"])
        #expect(plain == Limits(maxConnections: 50, initialConnections: 5, maxMessagesPerConnection: 100, maxRecipientsPerTransaction: 200))
        #expect(Shaping().siteLimits(site: "x", mxHosts: []) == Limits.defaults)
    }

    @Test("Domain limits: the domain entry over its site's limits, field by field")
    func domainResolution() {
        let site = Self.shaping.siteLimits(site: "gmail", mxHosts: ["aspmx.l.google.com"])
        let gmail = Self.shaping.domainLimits(domain: "GMAIL.com", siteLimits: site)
        #expect(gmail.maxRecipientsPerTransaction == 10)
        #expect(gmail.messageRate == Rate(5, per: 1))
        #expect(gmail.maxConnections == 30 && gmail.initialConnections == 9)
        #expect(Self.shaping.domainLimits(domain: "googlemail.com", siteLimits: site) == site)
    }

    @Test("The scheduler takes its limits from the shaping: concurrency, batches")
    func schedulerUsesShaping() {
        var scheduler = TestScheduler(configuration(shaping: Self.shaping))
        let site = scheduler.site("gmail", mxHosts: ["aspmx.l.google.com"])
        #expect(scheduler.limits(site: site) == Self.shaping.siteLimits(site: "gmail", mxHosts: ["aspmx.l.google.com"]))
        #expect(scheduler.concurrency(site: site) == 9)
        /* gmail.com batches 10 recipients a transaction; another domain of the site, 200. */
        let gmail = scheduler.domain("gmail.com", site: site)
        let other = scheduler.domain("googlemail.com", site: site)
        for id in 0..<25 { scheduler.submit(recipient(UInt64(id)), domain: gmail, now: 0) }
        for id in 100..<350 { scheduler.submit(recipient(UInt64(id)), domain: other, now: 0) }
        let deliveries = scheduler.drain(now: 0)
        let gmailBatches = deliveries.filter { $0.domain == gmail }.map { $0.recipients.map(\.id) }
        #expect(gmailBatches == [Array(0..<10)]) // 5/s, burst 1: one transaction now
        #expect(deliveries.filter { $0.domain == other }.map(\.recipients.count) == [200, 50])
    }

    @Test("A domain moved to another site takes its queue there and goes by that site's limits")
    func movedDomainTakesTheNewSitesLimits() throws {
        let limits = Limits(maxConnections: 1, initialConnections: 1, maxRecipientsPerTransaction: 1)
        let wide = Limits(maxConnections: 4, initialConnections: 4, maxRecipientsPerTransaction: 1)
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["unresolved:one.test": limits, "mx:mx.one.test": wide])))
        let unresolved = scheduler.site("unresolved:one.test")
        let domain = scheduler.domain("one.test", site: unresolved)
        for id in 1...10 { scheduler.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        let first = scheduler.drain(now: 0)
        #expect(first.count == 1, "one connection on the first site")
        let real = scheduler.site("mx:mx.one.test", mxHosts: ["mx.one.test"])
        scheduler.moveDomain(domain, to: real, now: 0)
        let moved = scheduler.drain(now: 0)
        #expect(moved.count == 4 && moved.allSatisfy { $0.site == real }, "the new site's four: \(moved.map(\.site))")
        /* The transaction started before the move completes against its own site. */
        scheduler.completeAll(first[0], .delivered, now: 1)
        #expect(scheduler.drain(now: 1).isEmpty, "the old site's slot does not count for the new one")
        scheduler.completeAll(moved[0], .delivered, now: 2)
        #expect(scheduler.drain(now: 2).map(\.site) == [real])
    }

    @Test("maxRecipientsPerTransaction splits a domain's ready recipients into batches, in order")
    func batches() {
        var scheduler = TestScheduler(configuration(shaping: Shaping(domains: ["one.test": Limits(maxRecipientsPerTransaction: 3)])))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        for id in 1...10 { scheduler.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        let batches = scheduler.drain(now: 0).map { $0.recipients.map(\.id) }
        #expect(batches == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]])
    }

    @Test("A domain's own message rate limits that domain only")
    func domainRate() {
        let shaping = Shaping(defaults: Limits(maxRecipientsPerTransaction: 1),
                              domains: ["slow.test": Limits(messageRate: Rate(1, per: 1))])
        var scheduler = TestScheduler(configuration(shaping: shaping))
        let site = scheduler.site("mx")
        let slow = scheduler.domain("slow.test", site: site)
        let fast = scheduler.domain("fast.test", site: site)
        for id in 0..<5 {
            scheduler.submit(recipient(UInt64(id)), domain: slow, now: 0)
            scheduler.submit(recipient(UInt64(100 + id)), domain: fast, now: 0)
        }
        var starts: [Int: [Int64]] = [:]
        var now: Int64 = 0
        while now <= 10_000 {
            while let delivery = scheduler.next(now: now) {
                starts[delivery.domain, default: []].append(now)
                scheduler.completeAll(delivery, .delivered, now: now)
            }
            guard let wake = scheduler.nextWakeup, wake <= 10_000 else { break }
            guard wake > now else { Issue.record("wake-up \(wake) not after \(now)"); break }
            #expect(scheduler.next(now: wake - 1) == nil)
            now = wake
        }
        #expect(starts[fast] == [0, 0, 0, 0, 0])
        #expect(starts[slow] == [0, 1000, 2000, 3000, 4000])
    }

    @Test("A shared GCRA limiter (the engine's pools take connection tokens from one per site) keeps rate and burst; the rate comes from the site's limits")
    func connectionRate() {
        let limiter = SharedSite()
        let rate = Rate(2, per: 1)
        #expect(limiter.take(now: 0, rate: rate, burst: 2) == nil)
        #expect(limiter.take(now: 0, rate: rate, burst: 2) == nil)
        #expect(limiter.take(now: 0, rate: rate, burst: 2) == 500)
        #expect(limiter.take(now: 499, rate: rate, burst: 2) == 500)
        #expect(limiter.take(now: 500, rate: rate, burst: 2) == nil)
        #expect(limiter.take(now: 500, rate: rate, burst: 2) == 1000)
        #expect(limiter.take(now: 1000, rate: rate, burst: 2) == nil)
        /* A refused attempt takes nothing: after a long pause the burst is back. */
        #expect(limiter.take(now: 60_000, rate: rate, burst: 2) == nil)
        #expect(limiter.take(now: 60_000, rate: rate, burst: 2) == nil)
        #expect(limiter.take(now: 60_000, rate: rate, burst: 2) == 60_500)
        /* The rate can come from an MX suffix; without one, connections are not limited. */
        var bySuffix = TestScheduler(configuration(shaping: Self.shaping))
        let google = bySuffix.site("g", mxHosts: ["aspmx.l.google.com"])
        #expect(bySuffix.limits(site: google).connectionRate == Rate(5, per: 1))
        let free = bySuffix.site("free", mxHosts: ["mx.example.net"])
        #expect(bySuffix.limits(site: free).connectionRate == nil)
    }
}

@Suite("MX-suffix sites")
struct SuffixSiteTests {
    @Test("Domains whose MX hosts share a configured suffix share one site: one concurrency ceiling and one rate")
    func sharedSuffixSite() {
        var limits = Limits(maxConnections: 2, initialConnections: 2)
        limits.maxRecipientsPerTransaction = 1
        var scheduler = TestScheduler(configuration(shaping: Shaping(mxSuffixes: [".google.com": limits])))
        let gmail = scheduler.site("aspmx.l.google.com", mxHosts: ["aspmx.l.google.com", "alt1.aspmx.l.google.com"])
        let workspace = scheduler.site("example-com.mail.google.com", mxHosts: ["smtp.google.com"])
        let other = scheduler.site("mx.example.net", mxHosts: ["mx.example.net"])
        #expect(gmail == workspace)
        #expect(gmail != other)
        #expect(scheduler.siteName(gmail) == "mx:.google.com")
        let a = scheduler.domain("gmail.com", site: gmail), b = scheduler.domain("example.com", site: workspace)
        for id in 0..<4 { scheduler.submit(recipient(UInt64(id)), domain: id % 2 == 0 ? a : b, now: 0) }
        #expect(scheduler.drain(now: 0).count == 2) // the shared ceiling, not 2 per domain
    }
}
