// ResponseRuleTests.swift - response rules: the shipped throttle rules, scopes, bounce, order

import Testing
@testable import Scheduler

@Suite("Response rules")
struct ResponseRuleTests {
    static let tss04 = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints"
    static let ms650 = "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation."

    @Test("Yahoo's [TSS04] suspends the whole site for 30 minutes; the recipient is retried, not bounced")
    func yahooSuspendsSite() throws {
        var scheduler = TestScheduler(configuration(rules: ResponseRule.defaults))
        let site = scheduler.site("yahoo", mxHosts: ["mta5.am0.yahoodns.net"])
        let yahoo = scheduler.domain("yahoo.com", site: site)
        let aol = scheduler.domain("aol.com", site: site)
        let elsewhere = scheduler.domain("example.net", site: scheduler.site("other"))
        scheduler.submit(recipient(1, queued: 1000), domain: yahoo, now: 1000)
        let delivery = try scheduler.required(now: 1000)
        scheduler.completeAll(delivery, .temporaryFailure(reply: Self.tss04), now: 1000)
        #expect(scheduler.takeDisposed().isEmpty)
        #expect(scheduler.pendingCount == 1)
        let until: Int64 = 1000 + 30 * 60_000
        /* Another domain of the site waits too; another site does not. */
        scheduler.submit(recipient(2, queued: 1000), domain: aol, now: 1000)
        scheduler.submit(recipient(3, queued: 1000), domain: elsewhere, now: 1000)
        #expect(scheduler.drain(now: 1000).flatMap { $0.recipients.map(\.id) } == [3])
        /* Recipient 1's retry comes due at 5 min, but the site is suspended until 30 min. */
        for now in [1001, 1000 + 5 * 60_000, until - 1] as [Int64] { #expect(scheduler.next(now: now) == nil, "at \(now)") }
        #expect(scheduler.nextWakeup == until)
        let resumed = scheduler.drain(now: until).flatMap { $0.recipients.map(\.id) }
        #expect(resumed.sorted() == [1, 2])
    }

    @Test("A code_class \"5\" rule acts on a permanent failure: the recipient bounces and the site is suspended")
    func permanentFailureRuleSuspends() throws {
        let blocked = ResponseRule(name: "blocked", contains: ["blocked"], codeClass: "5", scope: .site, action: .suspend(duration: 60_000))
        var scheduler = TestScheduler(configuration(rules: [blocked]))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(1), domain: domain, now: 0)
        scheduler.submit(recipient(2), domain: domain, now: 0)
        let first = try scheduler.required(now: 0)
        scheduler.completeAll(first, .permanentFailure(reply: "550 5.7.1 Sender blocked by policy"), now: 0)
        #expect(scheduler.takeDisposed().map { $0.0.id } == first.recipients.map(\.id))
        #expect(scheduler.next(now: 1) == nil, "the site is suspended")
        #expect(scheduler.drain(now: 60_000).flatMap { $0.recipients.map(\.id) }.count == 2 - first.recipients.count)
    }

    @Test("Microsoft's 4.7.650 halves the site's rate for one hour, then the rate is whole again")
    func microsoftHalvesRate() throws {
        let limits = Limits(maxRecipientsPerTransaction: 1, messageRate: Rate(10, per: 1))
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["outlook": limits]), rules: ResponseRule.defaults))
        let site = scheduler.site("outlook")
        let domain = scheduler.domain("outlook.com", site: site)
        for id in 0..<100 { scheduler.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        #expect(scheduler.rateScale(site: site, now: 0) == 1)
        let first = try scheduler.required(now: 0)
        scheduler.completeAll(first, .temporaryFailure(reply: Self.ms650), now: 0)
        #expect(scheduler.rateScale(site: site, now: 0) == 0.5)
        #expect(scheduler.rateScale(site: site, now: 3_599_999) == 0.5)
        #expect(scheduler.rateScale(site: site, now: 3_600_000) == 1)
        #expect(scheduler.takeDisposed().isEmpty)
        /* 10/s is one per 100 ms; halved, one per 200 ms. */
        var starts: [Int64] = []
        for now in stride(from: Int64(1), through: 1000, by: 1) {
            while let delivery = scheduler.next(now: now) {
                starts.append(now)
                scheduler.completeAll(delivery, .delivered, now: now)
            }
        }
        #expect(starts == [100, 300, 500, 700, 900])
        /* After the hour, 100 ms apart again. */
        starts = []
        for now in stride(from: Int64(3_600_000), through: 3_600_500, by: 1) {
            while let delivery = scheduler.next(now: now) {
                starts.append(now)
                scheduler.completeAll(delivery, .delivered, now: now)
            }
        }
        #expect(starts == [3_600_000, 3_600_100, 3_600_200, 3_600_300, 3_600_400, 3_600_500])
    }

    @Test("A rate rule scoped to the domain slows that domain's own rate only; scoped to a campaign, it acts on the site")
    func scaledRateScopes() throws {
        let slowDomain = ResponseRule(name: "slow-domain", contains: ["slow domain"], scope: .domain, action: .scaleRate(factor: 0.25, duration: 10_000))
        let slowCampaign = ResponseRule(name: "slow-campaign", contains: ["slow campaign"], scope: .campaign, action: .scaleRate(factor: 0.5, duration: 10_000))
        let shaping = Shaping(defaults: Limits(maxRecipientsPerTransaction: 1), domains: ["rated.test": Limits(messageRate: Rate(10, per: 1))])
        var scheduler = TestScheduler(configuration(shaping: shaping, rules: [slowDomain, slowCampaign]))
        let site = scheduler.site("mx")
        let rated = scheduler.domain("rated.test", site: site)
        let free = scheduler.domain("free.test", site: site)
        for id in 0..<50 {
            scheduler.submit(recipient(UInt64(id)), domain: rated, now: 0)
            scheduler.submit(recipient(UInt64(100 + id)), domain: free, now: 0)
        }
        let first = try scheduler.required(now: 0)
        #expect(first.domain == rated)
        scheduler.completeAll(first, .temporaryFailure(reply: "451 4.7.1 slow domain down"), now: 0)
        #expect(scheduler.rateScale(site: site, now: 0) == 1) // the site is not touched
        var starts: [Int64] = []
        var freeCount = 0
        for now in stride(from: Int64(0), through: 1000, by: 1) {
            while let delivery = scheduler.next(now: now) {
                if delivery.domain == rated { starts.append(now) } else { freeCount += 1 }
                scheduler.completeAll(delivery, .delivered, now: now)
            }
        }
        #expect(starts == [100, 500, 900]) // 10/s × 0.25: one per 400 ms after the one taken at 0
        #expect(freeCount == 50)
        /* A campaign-scoped rate rule scales the site's rate. */
        scheduler.submit(recipient(500, campaign: 3, priority: .bulk), domain: free, now: 2000)
        let bulk = try scheduler.required(now: 2000)
        scheduler.completeAll(bulk, .temporaryFailure(reply: "451 4.7.1 slow campaign down"), now: 2000)
        #expect(scheduler.rateScale(site: site, now: 2000) == 0.5)
        #expect(scheduler.rateScale(site: site, now: 12_000) == 1)
    }

    @Test("Gmail's 4.2.1 rate reply suspends only the domain, for 15 minutes")
    func gmailSuspendsDomain() throws {
        var scheduler = TestScheduler(configuration(rules: ResponseRule.defaults))
        let site = scheduler.site("google")
        let gmail = scheduler.domain("gmail.com", site: site)
        let hosted = scheduler.domain("hosted.example", site: site)
        scheduler.submit(recipient(1), domain: gmail, now: 0)
        let delivery = try scheduler.required(now: 0)
        scheduler.completeAll(delivery, .temporaryFailure(reply: "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered."), now: 0)
        scheduler.retryNow(domain: gmail, now: 1)
        scheduler.submit(recipient(2), domain: hosted, now: 1)
        #expect(scheduler.drain(now: 1).flatMap { $0.recipients.map(\.id) } == [2])
        #expect(scheduler.next(now: 899_999) == nil)
        #expect(scheduler.next(now: 900_000)?.recipients.map(\.id) == [1])
    }

    @Test("A rule scoped to the campaign suspends that campaign only")
    func campaignScope() throws {
        let rule = ResponseRule(name: "complaints", contains: ["complaint"], scope: .campaign, action: .suspend(duration: 60_000))
        var scheduler = TestScheduler(configuration(rules: [rule]))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(1, campaign: 7, priority: .bulk), domain: domain, now: 0)
        let delivery = try scheduler.required(now: 0)
        scheduler.completeAll(delivery, .temporaryFailure(reply: "421 4.7.1 too many COMPLAINTS"), now: 0)
        scheduler.retryNow(domain: domain, now: 0)
        scheduler.submit(recipient(2, campaign: 8, priority: .bulk), domain: domain, now: 0)
        #expect(scheduler.drain(now: 0).flatMap { $0.recipients.map(\.id) } == [2])
        #expect(scheduler.next(now: 59_999) == nil)
        #expect(scheduler.next(now: 60_000)?.recipients.map(\.id) == [1])
    }

    @Test("A rule with the bounce action turns a temporary failure into a bounce")
    func bounceAction() throws {
        let rule = ResponseRule(name: "full", contains: ["mailbox full"], scope: .domain, action: .bounce)
        var scheduler = TestScheduler(configuration(rules: [rule]))
        let site = scheduler.site("mx")
        let domain = scheduler.domain("one.test", site: site)
        scheduler.submit(recipient(1), domain: domain, now: 0)
        scheduler.submit(recipient(2), domain: domain, now: 0)
        let delivery = try scheduler.required(now: 0)
        scheduler.complete(delivery, results: [.temporaryFailure(reply: "452 4.2.2 Mailbox FULL"), plainTemporary], now: 0)
        let disposed = scheduler.takeDisposed()
        #expect(disposed.map(\.0.id) == [1])
        #expect(disposed.map(\.1) == [.bounced(reply: "452 4.2.2 Mailbox FULL")])
        #expect(scheduler.pendingCount == 1)
        /* Recipient 2 is retried; recipient 1 never comes back. */
        #expect(scheduler.next(now: 300_000)?.recipients.map(\.id) == [2])
        #expect(scheduler.next(now: 100_000_000) == nil)
    }

    /// A site-wide rule heard by one shard holds the site in every shard that shares it
    /// (it held only the shard that heard the reply; the others kept sending to Yahoo).
    @Test("A site rule applies in every shard sharing the site")
    func siteRulesAreShared() throws {
        let suspend = ResponseRule(name: "suspend", contains: ["[tss04]"], scope: .site, action: .suspend(duration: 10_000))
        let slow = ResponseRule(name: "slow", contains: ["4.7.28"], scope: .site, action: .scaleRate(factor: 0.5, duration: 60_000))
        let shared = SharedSites()
        var settings = configuration(rules: [suspend, slow])
        settings.sharedSites = shared
        var heard = TestScheduler(settings)
        var other = TestScheduler(settings)
        let heardSite = heard.site("mx:yahoo")
        let otherSite = other.site("mx:yahoo")
        heard.submit(recipient(1), domain: heard.domain("yahoo.com", site: heardSite), now: 0)
        other.submit(recipient(2), domain: other.domain("ymail.com", site: otherSite), now: 0)
        let delivery = try heard.required(now: 0)
        heard.completeAll(delivery, .temporaryFailure(reply: Self.tss04), now: 0)
        #expect(other.next(now: 1) == nil, "the other shard holds the site too")
        #expect(other.nextWakeup == 10_000)
        #expect(other.next(now: 10_000)?.recipients.map(\.id) == [2])
        /* A rate rule: both shards see the factor. */
        heard.retryNow(domain: 0, now: 20_000)
        let again = try heard.required(now: 20_000)
        heard.completeAll(again, .temporaryFailure(reply: "421 4.7.28 Gmail has detected an unusual rate"), now: 20_000)
        #expect(other.rateScale(site: otherSite, now: 20_001) == 0.5)
        #expect(other.rateScale(site: otherSite, now: 80_000) == 1)
    }

    @Test("Rules are tried in order; the first match wins")
    func firstMatchWins() throws {
        let suspend = ResponseRule(name: "suspend", contains: ["[tss04]"], scope: .site, action: .suspend(duration: 10_000))
        let bounce = ResponseRule(name: "bounce", contains: ["4.7.0"], scope: .site, action: .bounce)
        for (rules, bounces) in [([suspend, bounce], false), ([bounce, suspend], true)] {
            var scheduler = TestScheduler(configuration(rules: rules))
            let site = scheduler.site("mx")
            let domain = scheduler.domain("one.test", site: site)
            scheduler.submit(recipient(1), domain: domain, now: 0)
            let delivery = try scheduler.required(now: 0)
            scheduler.completeAll(delivery, .temporaryFailure(reply: Self.tss04), now: 0)
            scheduler.submit(recipient(2), domain: domain, now: 0)
            if bounces {
                #expect(scheduler.takeDisposed().map(\.0.id) == [1])
                #expect(scheduler.next(now: 0)?.recipients.map(\.id) == [2]) // the site is not suspended
            } else {
                #expect(scheduler.takeDisposed().isEmpty)
                #expect(scheduler.next(now: 9_999) == nil)
                #expect(scheduler.next(now: 10_000)?.recipients.map(\.id) == [2])
            }
        }
    }

    @Test("Matching: case-insensitive fragments, all of them, within the code class")
    func matching() {
        let rule = ResponseRule(name: "r", contains: ["4.2.1", "RATE"], scope: .domain, action: .bounce)
        #expect(rule.matches("450 4.2.1 receiving mail at a Rate that prevents"))
        #expect(!rule.matches("450 4.2.1 mailbox busy"))
        #expect(!rule.matches("550 4.2.1 rate"))  // class 4 only
        #expect(!rule.matches(""))
        let any = ResponseRule(name: "any", contains: ["blocked"], codeClass: "", scope: .site, action: .bounce)
        #expect(any.matches("554 5.7.1 BLOCKED") && any.matches("421 blocked"))
        /* The shipped rules: each known reply meets the intended rule first. */
        let replies = [(Self.tss04, "yahoo-tss04"), (Self.ms650, "microsoft-4.7.650"),
                       ("421 4.7.28 Our system has detected an unusual rate of unsolicited mail", "gmail-4.7.28"),
                       ("450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages", "gmail-4.2.1-rate"),
                       ("421 4.7.0 Connection rate limit exceeded", "generic-rate-4.7.0")]
        for (reply, name) in replies {
            #expect(ResponseRule.defaults.first { $0.matches(reply) }?.name == name, "\(reply)")
        }
        #expect(ResponseRule.defaults.first { $0.matches("450 4.2.0 Mailbox busy, try later") } == nil)
        #expect(ResponseRule.defaults.first { $0.matches("550 5.7.1 [TSS04] rejected") } == nil)
    }
}

@Suite("Response rules with regular expressions")
struct ResponseRulePatternTests {
    @Test("A rule with a pattern matches only replies the regex matches (case-insensitive), after its fragments")
    func patternRule() throws {
        let rule = ResponseRule(name: "rx", contains: ["4.7."], pattern: #"4\.7\.(1|2)[0-9]{2} .*too many"#, scope: .domain, action: .bounce)
        #expect(rule.matches("451 4.7.150 Too many messages from your IP"))
        #expect(!rule.matches("451 4.7.650 too many"))                     // regex says 1xx or 2xx
        #expect(!rule.matches("451 4.3.150 too many"))                     // fragment "4.7." missing
        #expect(!rule.matches("551 4.7.150 too many"))                     // not a 4xx
        var scheduler = TestScheduler(configuration(shaping: Shaping(defaults: Limits(maxRecipientsPerTransaction: 1)), rules: [rule]))
        let domain = scheduler.domain("x.test", site: scheduler.site("s"))
        scheduler.submit(recipient(1), domain: domain, now: 0)
        scheduler.submit(recipient(2), domain: domain, now: 0)
        scheduler.completeAll(try scheduler.required(now: 0), .temporaryFailure(reply: "451 4.7.150 TOO MANY connections"), now: 0)
        #expect(scheduler.takeDisposed().map(\.1) == [.bounced(reply: "451 4.7.150 TOO MANY connections")])
        scheduler.completeAll(try scheduler.required(now: 0), .temporaryFailure(reply: "451 4.7.650 too many"), now: 0)
        #expect(scheduler.takeDisposed().isEmpty) // deferred, not bounced
        #expect(scheduler.pendingCount == 1)
    }
}
