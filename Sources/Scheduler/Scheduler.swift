// Scheduler.swift - what each worker shard delivers next, and when
//
// A pure state machine: recipients go in (`submit`), decisions come out (`next`), results
// go back in (`complete`, `connectionFailed`), and every call takes the time. No clock,
// no I/O, no threads; one worker shard owns one scheduler (not thread-safe).
//
// Structure, chosen so no call scans all pending recipients:
//   - per domain: a FIFO of transactional recipients, a FIFO per bulk campaign (served
//     weighted round-robin), and a min-heap of deferred recipients by due time;
//   - per site: round-robin lists of domains with transactional and with bulk work ready;
//   - globally: a round-robin list of sites that may send, and min-heaps of domain
//     wake-ups (deferred work coming due), site wake-ups (rate, pause, suspension) and
//     domain age deadlines (max_age), each entry checked against the live state when popped.

import DequeModule
import HeapModule

/// The caller's reference to a recipient: the spool's recipient key (a 128-bit message id
/// and the recipient's index), in 32-bit words so it packs into 20 octets. (Concrete rather
/// than a generic parameter: unspecialised generic code across modules spent a third of
/// its time instantiating type metadata.)
public struct RecipientRef: Hashable, Sendable, CustomStringConvertible {
    private var words: (UInt32, UInt32, UInt32, UInt32, UInt32)

    public init(messageHigh: UInt64, messageLow: UInt64, index: UInt32) {
        words = (UInt32(truncatingIfNeeded: messageHigh >> 32), UInt32(truncatingIfNeeded: messageHigh),
                 UInt32(truncatingIfNeeded: messageLow >> 32), UInt32(truncatingIfNeeded: messageLow), index)
    }

    /// A reference made from one number (message 0, low word `value`, index 0): for tests
    /// and benchmarks.
    public init(_ value: UInt64) { self.init(messageHigh: 0, messageLow: value, index: 0) }

    public var messageHigh: UInt64 { UInt64(words.0) << 32 | UInt64(words.1) }
    public var messageLow: UInt64 { UInt64(words.2) << 32 | UInt64(words.3) }
    public var index: UInt32 { words.4 }

    public static func == (a: RecipientRef, b: RecipientRef) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3 && a.words.4 == b.words.4
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(messageHigh)
        hasher.combine(messageLow)
        hasher.combine(index)
    }

    public var description: String { "\(messageHigh):\(messageLow)/\(index)" }
}

/// A recipient the scheduler holds: the caller's reference and its attempt state.
public struct ScheduledRecipient: Sendable {
    /* Field order keeps this at 40 octets (the time first, for its 8-octet alignment). */
    /// When it was first queued (ms): `max_age` counts from here.
    public var queued: Int64
    public var ref: RecipientRef
    /// Campaign id as given to `submit` (0: none).
    public var campaign: UInt32
    /// Failed attempts so far.
    public var attempts: UInt16
    public var priority: Priority
    /// The recipient needs a message of its own (merge variables): it travels alone.
    public var personalised: Bool

    public init(ref: RecipientRef, queued: Int64, attempts: UInt16 = 0, campaign: UInt32 = 0, priority: Priority = .transactional,
                personalised: Bool = false) {
        self.ref = ref
        self.queued = queued
        self.personalised = personalised
        self.attempts = attempts
        self.campaign = campaign
        self.priority = priority
    }
}

/// Delivery priority: transactional goes before bulk at the same site.
public enum Priority: UInt8, Sendable {
    case transactional = 0
    case bulk = 1
}

/// One decision: deliver these recipients of one domain in one transaction.
public struct Delivery: Sendable {
    public var site: Int
    public var domain: Int
    public var recipients: [ScheduledRecipient]
}

/// What happened to one recipient of a delivery.
public enum DeliveryResult: Sendable, Equatable {
    case delivered
    /// 4xx or a transient failure; `reply` is the server's line, if any.
    case temporaryFailure(reply: String)
    /// 5xx.
    case permanentFailure(reply: String)
    /// Not sent: the caller found the message past its own expiry time when it was about to
    /// send it. The recipient leaves as `Disposal.expired`, like one past `max_age`; the
    /// site's health does not hear of it (no server was asked).
    case expired
}

/// Why a recipient left the scheduler without delivery.
public enum Disposal: Sendable, Equatable {
    case bounced(reply: String)
    case expired
}

/// Settings of a scheduler.
public struct SchedulerConfiguration: Sendable {
    public var shaping: Shaping
    public var retry: RetryPolicy
    public var health: HealthPolicy
    public var rules: [ResponseRule]
    /// Transactions a domain may take in a row when its site's turn comes, before the
    /// site's next domain (default 8, like messages sent down one connection; 1 for strict
    /// round-robin). Domains of one site share its MX hosts, so the receiver sees no
    /// difference; the scheduler finds the domain's queues still in cache.
    public var domainBurst: Int
    /// One transaction carries recipients of one message only, and a personalised recipient
    /// travels alone (what the delivery engine needs: a decision is one SMTP transaction).
    /// Off, recipients of any messages fill a transaction up to its limit.
    public var transactionPerMessage: Bool
    /// Site limits shared with the other shards' schedulers (nil: this scheduler alone
    /// enforces them). The engine gives every shard the same instance.
    public var sharedSites: SharedSites?
    /// Transactions in flight per allowed connection (default 1). The delivery engine sets
    /// 2: it pipelines a transaction behind the one a connection carries, so a site
    /// allowed N connections may have 2N transactions in flight. A site on probation
    /// after a pause still gets one.
    public var transactionsPerConnection = 1

    public init(shaping: Shaping = Shaping(), retry: RetryPolicy = RetryPolicy(), health: HealthPolicy = HealthPolicy(),
                rules: [ResponseRule] = ResponseRule.defaults, domainBurst: Int = 8, transactionPerMessage: Bool = false) {
        self.transactionPerMessage = transactionPerMessage
        self.shaping = shaping
        self.retry = retry
        self.health = health
        self.rules = rules
        self.domainBurst = max(1, domainBurst)
    }
}

/// The scheduler of one worker shard. Confined to that shard's thread.
public struct Scheduler {
    public typealias Recipient = ScheduledRecipient

    struct Deferred: Comparable {
        var due: Int64
        var sequence: UInt64
        var recipient: Recipient
        static func == (a: Deferred, b: Deferred) -> Bool { a.due == b.due && a.sequence == b.sequence }
        static func < (a: Deferred, b: Deferred) -> Bool { (a.due, a.sequence) < (b.due, b.sequence) }
    }

    struct Wake: Comparable {
        var time: Int64
        var index: Int
        static func < (a: Wake, b: Wake) -> Bool { (a.time, a.index) < (b.time, b.index) }
    }

    final class DomainState {
        let index: Int
        let name: String
        var site: Int
        var limits: Limits
        var rateBucket: RateBucket?
        var rateScale: (factor: Double, until: Int64) = (1, 0)
        var transactional = Deque<Recipient>()
        /// Bulk recipients by campaign: `campaignOrder[i]`'s queue is `bulkQueues[i]` (a
        /// domain has few campaigns at a time, so a linear search beats hashing).
        var campaignOrder: [UInt32] = []
        var bulkQueues: [Deque<Recipient>] = []

        func slot(_ campaign: UInt32) -> Int? { campaignOrder.firstIndex(of: campaign) }

        func removeSlot(_ slot: Int) {
            campaignOrder.remove(at: slot)
            bulkQueues.remove(at: slot)
        }
        var campaignCursor = 0
        var campaignCredit = 0
        var deferred = Heap<Deferred>()
        var inTransactionalList = false
        var inBulkList = false
        var suspendedUntil: Int64 = 0
        var readyCount = 0
        /// Transactions left in this domain's current turn (see `domainBurst`).
        var burst = 0

        init(index: Int, name: String, site: Int, limits: Limits) {
            self.index = index
            self.name = name
            self.site = site
            self.limits = limits
            if let rate = limits.messageRate { rateBucket = RateBucket(rate: rate, burst: limits.messageBurst ?? 1) }
        }
    }

    final class SiteState {
        let name: String
        /// The MX hosts it was created with (for reloading its limits).
        let mxHosts: [String]
        var limits: Limits
        var messageBucket: RateBucket?
        var rateScale: (factor: Double, until: Int64) = (1, 0)
        var transactionalDomains = Deque<Int>()
        var bulkDomains = Deque<Int>()
        var inFlight = 0
        /// Slow start: the concurrency allowed now (grows by 1/window per success).
        var window: Double
        var consecutiveFailures = 0
        var pausedUntil: Int64 = 0
        var pauses = 0
        var probing = false
        var suspendedUntil: Int64 = 0
        var inReadyList = false
        var waitingForSlot = false
        /// The site's rate shared with other shards.
        var shared: SharedSite?

        init(name: String, mxHosts: [String], limits: Limits) {
            self.name = name
            self.mxHosts = mxHosts
            self.limits = limits
            window = Double(min(limits.initialConnections ?? 5, limits.maxConnections ?? 20))
            if let rate = limits.messageRate { messageBucket = RateBucket(rate: rate, burst: limits.messageBurst ?? 1) }
        }

        var concurrency: Int { max(1, min(Int(window), limits.maxConnections ?? 20)) }
    }

    public private(set) var configuration: SchedulerConfiguration
    var domains: [DomainState] = []
    var domainIndex: [String: Int] = [:]
    var sites: [SiteState] = []
    var siteIndex: [String: Int] = [:]
    var readySites = Deque<Int>()
    var siteWakes = Heap<Wake>()
    var domainWakes = Heap<Wake>()
    var ageWakes = Heap<Wake>()
    /// Per domain: the time of its earliest pending age wake-up (`Int64.max`: none).
    var domainAgeWatch: [Int64] = []
    /// Per domain: the time of the wake-up queued for its earliest deferred recipient.
    var domainDeferredWake: [Int64] = []
    var campaignSuspensions: [UInt32: Int64] = [:]
    /// When campaign suspensions end (their domains stay listed; this only wakes the caller).
    var campaignWakes = Heap<Int64>()
    var campaignWeights: [UInt32: Int] = [:]
    /// Suspensions of domains and sites not created yet (restored from the spool before
    /// their first recipient arrives), applied when they are.
    var waitingDomainSuspensions: [String: Int64] = [:]
    var waitingSiteSuspensions: [String: Int64] = [:]
    var sequence: UInt64 = 0
    /// Recipients that left without delivery (bounced by a rule or an operator, expired);
    /// the caller drains them with `takeDisposed()`.
    public private(set) var disposed: [(Recipient, Disposal)] = []
    /// The domain index of each entry of `disposed`.
    var disposedDomains: [Int] = []
    /// Pending recipients (ready and deferred) and recipients handed out and not completed.
    public private(set) var pendingCount = 0
    public private(set) var inFlightCount = 0

    /// The rules' regular expressions, compiled once (a rule whose pattern does not compile
    /// never matches; the shaping file reader refuses such patterns with the line).
    var patterns: [Regex<AnyRegexOutput>?]

    public init(_ configuration: SchedulerConfiguration = SchedulerConfiguration()) {
        self.configuration = configuration
        patterns = configuration.rules.map { (try? $0.compilePattern()) ?? nil }
    }

    /// reconfigure - new shaping, retry, health and rules (a reload): every site and domain
    /// known takes its limits from the new shaping now; rate buckets restart full, queues
    /// and suspensions stay. Recipients already deferred keep their retry times.
    public mutating func reconfigure(_ configuration: SchedulerConfiguration) {
        self.configuration = configuration
        patterns = configuration.rules.map { (try? $0.compilePattern()) ?? nil }
        for site in sites {
            site.limits = configuration.shaping.siteLimits(site: site.name, mxHosts: site.mxHosts)
            site.messageBucket = site.limits.messageRate.map { RateBucket(rate: $0, burst: site.limits.messageBurst ?? 1) }
            /* Slow start goes on from where it is, but never below the new initial value. */
            let ceiling = Double(site.limits.maxConnections ?? 20)
            site.window = min(ceiling, max(site.window, Double(site.limits.initialConnections ?? 5)))
            if site.waitingForSlot && site.inFlight < allowedInFlight(site) { site.waitingForSlot = false }
        }
        for domain in domains {
            domain.limits = configuration.shaping.domainLimits(domain: domain.name, siteLimits: sites[domain.site].limits)
            domain.rateBucket = domain.limits.messageRate.map { RateBucket(rate: $0, burst: domain.limits.messageBurst ?? 1) }
        }
        for index in sites.indices { listSite(index) }
    }

    /// rule - the first response rule a temporary-failure reply triggers.
    private func rule(for reply: String) -> ResponseRule? {
        var text = reply
        return text.withUTF8 { utf8 in
            for (index, rule) in configuration.rules.enumerated() where rule.matches(utf8: utf8) {
                if rule.pattern == nil { return rule }
                if let regex = patterns[index], reply.contains(regex) { return rule }
            }
            return nil
        }
    }

    // MARK: destinations

    /// site - the index of a site (created on first use) whose MX hosts are `mxHosts`. When
    /// an MX host matches a configured MX suffix (and no limits are set for `name` itself),
    /// every such destination shares one site named `mx:<suffix>`: one concurrency ceiling
    /// and one rate for, say, all domains hosted by Google.
    public mutating func site(_ name: String, mxHosts: [String] = []) -> Int {
        var name = name
        if configuration.shaping.sites[name] == nil, let suffix = configuration.shaping.suffixMatch(mxHosts) { name = "mx:" + suffix }
        if let index = siteIndex[name] { return index }
        let index = sites.count
        sites.append(SiteState(name: name, mxHosts: mxHosts, limits: configuration.shaping.siteLimits(site: name, mxHosts: mxHosts)))
        sites[index].shared = configuration.sharedSites?.site(name)
        siteIndex[name] = index
        if let until = waitingSiteSuspensions.removeValue(forKey: name) { suspend(site: index, until: until) }
        return index
    }

    /// domain - the index of a recipient domain (created on first use) and its site.
    public mutating func domain(_ name: String, site: Int) -> Int {
        let name = name.lowercased()
        if let index = domainIndex[name] { return index }
        let index = domains.count
        domains.append(DomainState(index: index, name: name, site: site,
                                   limits: configuration.shaping.domainLimits(domain: name, siteLimits: sites[site].limits)))
        domainIndex[name] = index
        if let until = waitingDomainSuspensions.removeValue(forKey: name) {
            domains[index].suspendedUntil = until
            if until != .max { domainWakes.insert(Wake(time: until, index: index)) }
        }
        domainAgeWatch.append(.max)
        domainDeferredWake.append(.max)
        return index
    }

    /// moveDomain - the domain's destination is another site now (its MX hosts resolved
    /// after a failed lookup, or a reload routed it elsewhere): its queues, limits and turns
    /// go to `site`. Transactions in flight finish against the site that started them.
    public mutating func moveDomain(_ index: Int, to site: Int, now: Int64) {
        let domain = domains[index]
        guard domain.site != site else { return }
        let old = sites[domain.site]
        if domain.inTransactionalList {
            old.transactionalDomains.removeAll { $0 == index }
            domain.inTransactionalList = false
        }
        if domain.inBulkList {
            old.bulkDomains.removeAll { $0 == index }
            domain.inBulkList = false
        }
        domain.site = site
        domain.limits = configuration.shaping.domainLimits(domain: domain.name, siteLimits: sites[site].limits)
        domain.rateBucket = domain.limits.messageRate.map { RateBucket(rate: $0, burst: domain.limits.messageBurst ?? 1) }
        domain.burst = 0
        listDomain(index, now: now)
    }

    /// Recipients ready to go now (not deferred), summed over the domains: O(domains), for
    /// progress displays and drain checks, not for the hot path.
    public var readyCount: Int { domains.reduce(0) { $0 + $1.readyCount } }

    /// sendableCount - ready recipients not held at `now` by a suspension (of their domain,
    /// site or bulk campaign) or their site's pause: what may go once slots and rates allow.
    /// The held ones wait for an operator or a time, like deferred ones.
    public func sendableCount(now: Int64) -> Int {
        var count = 0
        for domain in domains where domain.readyCount > 0 {
            let site = sites[domain.site]
            guard domain.suspendedUntil <= now, site.suspendedUntil <= now, site.pausedUntil <= now,
                  (site.shared?.suspendedUntil ?? 0) <= now else { continue }
            guard !campaignSuspensions.isEmpty else {
                count += domain.readyCount
                continue
            }
            count += domain.transactional.count
            for (slot, campaign) in domain.campaignOrder.enumerated() {
                if let until = campaignSuspensions[campaign], until > now { continue }
                count += domain.bulkQueues[slot].count
            }
        }
        return count
    }

    public func domainName(_ index: Int) -> String { domains[index].name }
    public func siteName(_ index: Int) -> String { sites[index].name }
    public func limits(site: Int) -> Limits { sites[site].limits }
    /// The concurrency slow start currently allows a site.
    public func concurrency(site: Int) -> Int { sites[site].concurrency }
    /// Until when a site is paused by the health rules (0: not paused).
    public func pausedUntil(site: Int) -> Int64 { sites[site].pausedUntil }
    /// The factor a response rule scales a site's rate by now.
    public func rateScale(site: Int, now: Int64) -> Double {
        let local = sites[site].rateScale.until > now ? sites[site].rateScale.factor : 1
        guard let shared = sites[site].shared else { return local }
        return min(local, shared.scale(now: now))
    }

    /// setCampaignWeight - a campaign's share in the round-robin among bulk campaigns
    /// (default 1: equal shares).
    public mutating func setCampaignWeight(_ campaign: UInt32, weight: Int) { campaignWeights[campaign] = max(1, weight) }

    // MARK: submitting

    /// submit - queue a recipient for `domain`, due at `due` (now for a new one).
    public mutating func submit(_ recipient: Recipient, domain: Int, due: Int64? = nil, now: Int64) {
        pendingCount += 1
        /* Like a retry, a due time never passes the deadline, where the recipient expires. */
        if let due = due.map({ min($0, recipient.queued + configuration.retry.maxAge) }), due > now {
            deferRecipient(recipient, domain: domain, until: due)
        } else {
            makeReady(recipient, domain: domain, now: now)
        }
    }

    private mutating func makeReady(_ recipient: Recipient, domain index: Int, now: Int64) {
        let domain = domains[index]
        domain.readyCount += 1
        if recipient.priority == .transactional {
            Self.enqueue(recipient, &domain.transactional)
        } else {
            if let slot = domain.slot(recipient.campaign) {
                Self.enqueue(recipient, &domain.bulkQueues[slot])
            } else {
                domain.campaignOrder.append(recipient.campaign)
                domain.bulkQueues.append([recipient])
            }
        }
        watchAge(index, oldest: recipient.queued)
        listDomain(index, now: now)
    }

    /// enqueue - add a ready recipient in `queued` order, so the oldest of each queue is at
    /// its head (what `expireDomain` relies on): a new recipient goes at the tail in O(1); a
    /// retry coming due, or one reloaded with an old time, goes among those queued with it.
    private static func enqueue(_ recipient: Recipient, _ queue: inout Deque<Recipient>) {
        guard let last = queue.last, recipient.queued < last.queued else { return queue.append(recipient) }
        var low = 0, high = queue.count - 1 // the first position queued later than it
        while low < high {
            let middle = (low + high) / 2
            if queue[middle].queued > recipient.queued { high = middle } else { low = middle + 1 }
        }
        queue.insert(recipient, at: low)
    }

    /// listDomain - put a domain with ready work on its site's lists, and the site on the
    /// ready list.
    private mutating func listDomain(_ index: Int, now: Int64) {
        let domain = domains[index]
        let site = sites[domain.site]
        if !domain.transactional.isEmpty && !domain.inTransactionalList {
            domain.inTransactionalList = true
            site.transactionalDomains.append(index)
        }
        if domain.readyCount > domain.transactional.count && !domain.inBulkList {
            domain.inBulkList = true
            site.bulkDomains.append(index)
        }
        listSite(domain.site)
    }

    private mutating func listSite(_ index: Int) {
        let site = sites[index]
        if !site.inReadyList && !site.waitingForSlot && (!site.transactionalDomains.isEmpty || !site.bulkDomains.isEmpty) {
            site.inReadyList = true
            readySites.append(index)
        }
    }

    private mutating func deferRecipient(_ recipient: Recipient, domain index: Int, until due: Int64) {
        let domain = domains[index]
        sequence += 1
        domain.deferred.insert(Deferred(due: due, sequence: sequence, recipient: recipient))
        if due < domainDeferredWake[index] {
            domainDeferredWake[index] = due
            domainWakes.insert(Wake(time: due, index: index))
        }
    }

    /// watchAge - make sure the domain's age check runs by the deadline of a ready recipient
    /// queued at `oldest` (an earlier wake-up supersedes a later one).
    private mutating func watchAge(_ index: Int, oldest: Int64) {
        let time = oldest + configuration.retry.maxAge
        guard time < domainAgeWatch[index] else { return }
        domainAgeWatch[index] = time
        ageWakes.insert(Wake(time: time, index: index))
    }

    // MARK: deciding

    /// next - the next transaction to start at `now`, or nil when nothing may start now
    /// (see `nextWakeup` for when to ask again, or a completion frees a slot).
    public mutating func next(now: Int64) -> Delivery? {
        advance(now: now)
        /* Each site listed now is looked at once: a blocked one leaves the list (a wake-up or
           an event lists it again), a served one goes to the back. The bound is fixed first:
           counting against the shrinking list stopped halfway, and the sites behind the
           blocked ones waited for an unrelated event. */
        var budget = readySites.count
        while budget > 0, let siteIndex = readySites.popFirst() {
            budget -= 1
            let site = sites[siteIndex]
            site.inReadyList = false
            if let wait = siteGate(siteIndex, now: now) {
                /* Not for `Int64.max` (a slot, or a suspension until resumed): a completion or
                   `resume` lists the site again, and such a wake-up would never leave the heap. */
                if wait > now && wait != .max { siteWakes.insert(Wake(time: wait, index: siteIndex)) }
                continue
            }
            guard let delivery = takeFromSite(siteIndex, now: now) else { continue }
            listSite(siteIndex)
            return delivery
        }
        return nil
    }

    /// siteGate - nil when the site may start a transaction now; otherwise the time to look
    /// again (`Int64.max` while it waits for a slot).
    private mutating func siteGate(_ index: Int, now: Int64) -> Int64? {
        let site = sites[index]
        if site.suspendedUntil > now { return site.suspendedUntil }
        if site.pausedUntil > now { return site.pausedUntil }
        /* A response rule another shard applied to the site (Yahoo's TSS04, say) holds it here too. */
        if let shared = site.shared {
            let held = shared.suspendedUntil
            if held > now { return held }
        }
        if site.inFlight >= allowedInFlight(site) {
            site.waitingForSlot = true
            return .max
        }
        if let shared = site.shared {
            /* The site's rate over every shard (its total concurrency is the delivery
               layer's: the connections it may open). A token taken and then not used,
               when no transaction comes of it, is lost: the rate errs on the slow side. */
            if let rate = site.limits.messageRate,
               let at = shared.take(now: now, rate: rate, burst: site.limits.messageBurst ?? 1, scale: rateScale(site: index, now: now)) {
                return at
            }
        } else if let bucket = site.messageBucket {
            let at = bucket.earliest(now: now, scale: rateScale(site: index, now: now))
            if at > now { return at }
        }
        return nil
    }

    /// allowedInFlight - transactions the site may have in flight now.
    private func allowedInFlight(_ site: SiteState) -> Int {
        site.probing ? 1 : site.concurrency * max(1, configuration.transactionsPerConnection)
    }

    /// takeFromSite - one transaction from the site's next ready domain: transactional
    /// domains first, then bulk ones, round-robin within each.
    private mutating func takeFromSite(_ siteIndex: Int, now: Int64) -> Delivery? {
        let site = sites[siteIndex]
        for transactional in [true, false] {
            var tries = transactional ? site.transactionalDomains.count : site.bulkDomains.count
            while tries > 0 {
                tries -= 1
                let index = transactional ? site.transactionalDomains.popFirst()! : site.bulkDomains.popFirst()!
                let domain = domains[index]
                if transactional { domain.inTransactionalList = false } else { domain.inBulkList = false }
                if domain.suspendedUntil > now {
                    if domain.suspendedUntil != .max { domainWakes.insert(Wake(time: domain.suspendedUntil, index: index)) }
                    continue
                }
                if let bucket = domain.rateBucket {
                    let scale = domain.rateScale.until > now ? domain.rateScale.factor : 1
                    let at = bucket.earliest(now: now, scale: scale)
                    if at > now {
                        domainWakes.insert(Wake(time: at, index: index))
                        continue
                    }
                }
                let recipients = transactional ? takeTransactional(domain, now: now) : takeBulk(domain, now: now)
                if !transactional && recipients.isEmpty {
                    /* Every campaign with work here is suspended: the domain leaves the bulk
                       list until a resume or the suspension's end lists it again. Listed, it
                       kept its site listed, and each look took a shared rate token for nothing
                       (the other shards' domains of the site got less of its rate). */
                    domain.burst = 0
                    if !domain.transactional.isEmpty && !domain.inTransactionalList {
                        domain.inTransactionalList = true
                        site.transactionalDomains.append(index)
                        listSite(siteIndex)
                    }
                    continue
                }
                /* A domain keeps its site's turn for up to `domainBurst` transactions in a row
                   (as one connection would carry them), then goes to the back: the next
                   decisions find its queues still in cache (with 100,000 domains this took a
                   single-campaign benchmark from 1.9 to 3.3 M decisions/s). */
                if domain.burst == 0 { domain.burst = configuration.domainBurst }
                domain.burst -= 1
                if domain.burst > 0 {
                    if transactional, !domain.transactional.isEmpty, !domain.inTransactionalList {
                        domain.inTransactionalList = true
                        site.transactionalDomains.prepend(index)
                    } else if !transactional, domain.readyCount > domain.transactional.count, !domain.inBulkList {
                        domain.inBulkList = true
                        site.bulkDomains.prepend(index)
                    }
                }
                if !(transactional ? domain.inTransactionalList : domain.inBulkList) { domain.burst = 0 }
                listDomain(index, now: now)
                guard !recipients.isEmpty else { continue }
                if let bucket = domain.rateBucket {
                    let scale = domain.rateScale.until > now ? domain.rateScale.factor : 1
                    domain.rateBucket!.take(now: now, scale: scale)
                    _ = bucket
                }
                if site.shared == nil { site.messageBucket?.take(now: now, scale: rateScale(site: siteIndex, now: now)) }
                site.inFlight += 1
                if site.probing { site.waitingForSlot = true }
                inFlightCount += recipients.count
                pendingCount -= recipients.count
                return Delivery(site: siteIndex, domain: index, recipients: recipients)
            }
        }
        return nil
    }

    private mutating func batchLimit(_ domain: DomainState) -> Int { max(1, domain.limits.maxRecipientsPerTransaction ?? 100) }

    private mutating func takeTransactional(_ domain: DomainState, now: Int64) -> [Recipient] {
        var out: [Recipient] = []
        let limit = batchLimit(domain)
        while out.count < limit, let recipient = domain.transactional.first {
            if let first = out.first, !joins(recipient, first) { break }
            domain.transactional.removeFirst()
            domain.readyCount -= 1
            if expired(recipient, now: now) { pendingCount -= 1; dispose(recipient, .expired, domain: domain.index); continue }
            out.append(recipient)
        }
        return out
    }

    /// takeBulk - recipients of one bulk campaign: campaigns take turns, each for as many
    /// transactions in a row as its weight.
    private mutating func takeBulk(_ domain: DomainState, now: Int64) -> [Recipient] {
        var out: [Recipient] = []
        let limit = batchLimit(domain)
        var looked = 0
        while out.isEmpty && looked < domain.campaignOrder.count {
            if domain.campaignCursor >= domain.campaignOrder.count { domain.campaignCursor = 0 }
            let slot = domain.campaignCursor
            let campaign = domain.campaignOrder[slot]
            if !campaignSuspensions.isEmpty, let until = campaignSuspensions[campaign], until > now {
                domain.campaignCursor += 1
                domain.campaignCredit = 0
                looked += 1
                continue
            }
            while out.count < limit, let recipient = domain.bulkQueues[slot].first {
                if let first = out.first, !joins(recipient, first) { break }
                domain.bulkQueues[slot].removeFirst()
                domain.readyCount -= 1
                if expired(recipient, now: now) { pendingCount -= 1; dispose(recipient, .expired, domain: domain.index); continue }
                out.append(recipient)
            }
            if domain.bulkQueues[slot].isEmpty {
                domain.removeSlot(slot)
                domain.campaignCredit = 0
            } else {
                domain.campaignCredit += 1
                if domain.campaignCredit >= (campaignWeights.isEmpty ? 1 : campaignWeights[campaign, default: 1]) {
                    domain.campaignCursor += 1
                    domain.campaignCredit = 0
                }
            }
            looked += 1
        }
        return out
    }

    /// joins - whether `recipient` may share the transaction `first` opened.
    @inline(__always)
    private func joins(_ recipient: Recipient, _ first: Recipient) -> Bool {
        guard configuration.transactionPerMessage else { return true }
        return !first.personalised && !recipient.personalised
            && recipient.ref.messageHigh == first.ref.messageHigh && recipient.ref.messageLow == first.ref.messageLow
    }

    private func expired(_ recipient: Recipient, now: Int64) -> Bool {
        now - recipient.queued >= configuration.retry.maxAge
    }

    private mutating func dispose(_ recipient: Recipient, _ why: Disposal, domain: Int) {
        disposed.append((recipient, why))
        disposedDomains.append(domain)
    }

    /// advance - move deferred work that has come due to the ready queues, wake sites
    /// whose wait is over, and expire recipients past `max_age` wherever they wait.
    public mutating func advance(now: Int64) {
        while let wake = domainWakes.min, wake.time <= now {
            domainWakes.removeMin()
            let domain = domains[wake.index]
            if wake.time == domainDeferredWake[wake.index] { domainDeferredWake[wake.index] = .max }
            while let top = domain.deferred.min, top.due <= now {
                domain.deferred.removeMin()
                if expired(top.recipient, now: now) {
                    pendingCount -= 1
                    dispose(top.recipient, .expired, domain: wake.index)
                } else {
                    makeReady(top.recipient, domain: wake.index, now: now)
                }
            }
            /* One wake-up per domain for its deferred work: rate and suspension wake-ups
               popping here must not add copies (they would never drain). */
            if let top = domain.deferred.min, top.due < domainDeferredWake[wake.index] {
                domainDeferredWake[wake.index] = top.due
                domainWakes.insert(Wake(time: top.due, index: wake.index))
            }
            listDomain(wake.index, now: now)
        }
        while let wake = siteWakes.min, wake.time <= now {
            siteWakes.removeMin()
            listSite(wake.index)
        }
        if let time = campaignWakes.min, time <= now {
            while let time = campaignWakes.min, time <= now { campaignWakes.removeMin() }
            /* A campaign suspension ended: its domains left the bulk lists while it held them. */
            for index in domains.indices where domains[index].readyCount > domains[index].transactional.count {
                listDomain(index, now: now)
            }
        }
        while let wake = ageWakes.min, wake.time <= now {
            ageWakes.removeMin()
            if wake.time == domainAgeWatch[wake.index] { expireDomain(wake.index, now: now) } // else superseded
        }
    }

    /// expireDomain - drop a domain's recipients past `max_age` from the heads of its
    /// queues (the oldest are at the heads), and watch its next-oldest.
    private mutating func expireDomain(_ index: Int, now: Int64) {
        let domain = domains[index]
        domainAgeWatch[index] = .max
        while let head = domain.transactional.first, expired(head, now: now) {
            domain.transactional.removeFirst()
            domain.readyCount -= 1
            pendingCount -= 1
            dispose(head, .expired, domain: index)
        }
        for slot in domain.bulkQueues.indices {
            while let head = domain.bulkQueues[slot].first, expired(head, now: now) {
                domain.bulkQueues[slot].removeFirst()
                domain.readyCount -= 1
                pendingCount -= 1
                dispose(head, .expired, domain: index)
            }
        }
        for slot in domain.bulkQueues.indices.reversed() where domain.bulkQueues[slot].isEmpty { domain.removeSlot(slot) }
        if domain.campaignCursor >= domain.campaignOrder.count { domain.campaignCursor = 0 }
        /* Deferred recipients: their due time never passes their deadline (see `complete`),
           so the domain wake-up expires them. Watch the oldest ready recipient left. */
        var oldest = Int64.max
        if let head = domain.transactional.first { oldest = min(oldest, head.queued) }
        for queue in domain.bulkQueues { if let head = queue.first { oldest = min(oldest, head.queued) } }
        if oldest != .max { watchAge(index, oldest: oldest) }
    }

    /// nextWakeup - the earliest time something waiting becomes possible (nil: nothing waits
    /// on time; a completion or a submit is needed).
    public var nextWakeup: Int64? {
        [domainWakes.min?.time, siteWakes.min?.time, ageWakes.min?.time, campaignWakes.min].compactMap { $0 }.min()
    }

    // MARK: results

    /// complete - the results of a delivery, one per recipient in order; `reply` is the
    /// transaction-level reply when the whole transaction failed (for response rules).
    /// `expires` is the message's own expiry time (ms; 0: none): a temporary failure is not
    /// retried later than that, so the caller finds the message expired at that retry
    /// instead of hours after the time (the scheduler keeps no per-message state).
    public mutating func complete(_ delivery: Delivery, results: [DeliveryResult], now: Int64, expires: Int64 = 0) {
        precondition(results.count == delivery.recipients.count, "one result per recipient of the delivery")
        let site = sites[delivery.site]
        site.inFlight -= 1
        inFlightCount -= delivery.recipients.count
        var anyDelivered = false
        var anyRefused = false
        var allTemporary = true
        for (recipient, result) in zip(delivery.recipients, results) {
            switch result {
            case .delivered:
                anyDelivered = true
                allTemporary = false
            case .permanentFailure(let reply):
                anyRefused = true
                allTemporary = false
                /* Rules of code_class "5" (or "") act on permanent failures too: a 5xx saying
                   the sender is blocked can suspend a site. The recipient bounces either way. */
                if let rule = rule(for: reply), rule.action != .bounce {
                    apply(rule, delivery: delivery, campaign: recipient.campaign, now: now)
                }
                dispose(recipient, .bounced(reply: reply), domain: delivery.domain)
            case .temporaryFailure(let reply):
                if let rule = rule(for: reply) {
                    apply(rule, delivery: delivery, campaign: recipient.campaign, now: now)
                    if rule.action == .bounce {
                        dispose(recipient, .bounced(reply: reply), domain: delivery.domain)
                        continue
                    }
                }
                retry(recipient, domain: delivery.domain, now: now, expires: expires)
            case .expired:
                allTemporary = false
                dispose(recipient, .expired, domain: delivery.domain)
            }
        }
        if anyRefused && !anyDelivered && site.probing {
            /* A 5xx is the server answering: the probe found it up, whatever it thought of
               these recipients (probing went on, one transaction at a time, until a delivery). */
            site.consecutiveFailures = 0
            site.probing = false
            site.pauses = 0
        }
        if anyDelivered {
            site.consecutiveFailures = 0
            if site.probing { site.probing = false; site.pauses = 0 }
            let ceiling = Double(site.limits.maxConnections ?? 20)
            site.window = min(ceiling, site.window + 1 / max(1, site.window))
        } else if allTemporary && !delivery.recipients.isEmpty && !site.probing {
            site.window = max(1, site.window / 2)
        }
        if site.waitingForSlot && site.inFlight < allowedInFlight(site) {
            site.waitingForSlot = false
            listSite(delivery.site)
        }
    }

    /// retry - defer a recipient after a temporary failure: exponential backoff with
    /// jitter, never past its `max_age` deadline (at which it expires instead) nor past its
    /// message's `expires` (0: none; the caller expires it when it comes due then).
    private mutating func retry(_ recipient: Recipient, domain: Int, now: Int64, expires: Int64) {
        var recipient = recipient
        recipient.attempts &+= 1
        let due = retryTime(for: recipient, domain: domain, attempts: Int(recipient.attempts), now: now, expires: expires)
        pendingCount += 1
        deferRecipient(recipient, domain: domain, until: due)
    }

    /// retryTime - when a recipient failing for the `attempts`-th time at `now` is retried
    /// (the time `complete` uses), for tests and the delivery log.
    public func retryTime(for recipient: Recipient, domain: Int, attempts: Int, now: Int64, expires: Int64 = 0) -> Int64 {
        let key = UInt64(truncatingIfNeeded: recipient.queued) ^ (UInt64(recipient.campaign) << 32) ^ UInt64(domain) &* 0x100_0000_01b3
        let due = min(now + configuration.retry.delay(afterAttempts: attempts, key: key), recipient.queued + configuration.retry.maxAge)
        return expires == 0 ? due : min(due, expires)
    }

    /// connectionFailed - a connection to the site failed, or it answered 421: counts
    /// toward pausing it; a failed probe pauses it again for twice as long.
    public mutating func connectionFailed(site index: Int, now: Int64) {
        let site = sites[index]
        /* Already paused: a failure now is a transaction started before the pause, which
           says nothing new (each one doubled the pause: ten in flight made a minute an hour). */
        if site.pausedUntil > now { return }
        site.consecutiveFailures += 1
        site.window = max(1, site.window / 2)
        if site.probing || site.consecutiveFailures >= configuration.health.threshold {
            var cooldown = configuration.health.cooldown
            for _ in 0..<min(site.pauses, 40) where cooldown < configuration.health.maxCooldown {
                cooldown = min(configuration.health.maxCooldown, cooldown * 2)
            }
            site.pauses += 1
            site.pausedUntil = now + cooldown
            site.probing = true
            site.consecutiveFailures = 0
            site.window = Double(site.limits.initialConnections ?? 5)
            siteWakes.insert(Wake(time: site.pausedUntil, index: index))
        }
    }

    /// connectionSucceeded - a connection to the site was established and greeted.
    public mutating func connectionSucceeded(site index: Int) {
        sites[index].consecutiveFailures = 0
    }

    private mutating func apply(_ rule: ResponseRule, delivery: Delivery, campaign: UInt32, now: Int64) {
        switch (rule.action, rule.scope) {
        /* A rule lengthens a suspension in force, never shortens it (an operator's "until
           resumed" stays). */
        case (.suspend(let duration), .domain):
            suspend(domain: delivery.domain, until: max(domains[delivery.domain].suspendedUntil, now + duration), now: now)
        case (.suspend(let duration), .site):
            suspend(site: delivery.site, until: max(sites[delivery.site].suspendedUntil, now + duration))
            /* Every shard sending to the site holds it, not only the one that heard the reply. */
            sites[delivery.site].shared?.suspend(until: now + duration)
        case (.suspend(let duration), .campaign):
            suspend(campaign: campaign, until: max(campaignSuspensions[campaign] ?? 0, now + duration))
        case (.scaleRate(let factor, let duration), .domain):
            domains[delivery.domain].rateScale = (min(1, max(0.001, factor)), now + duration)
        case (.scaleRate(let factor, let duration), _):
            sites[delivery.site].rateScale = (min(1, max(0.001, factor)), now + duration)
            sites[delivery.site].shared?.setScale(min(1, max(0.001, factor)), until: now + duration)
        case (.bounce, _): break
        }
    }

    // MARK: administration

    /// suspend - by name: a domain that does not exist yet is suspended when it is created.
    public mutating func suspend(domainNamed name: String, until: Int64, now: Int64) {
        if let index = domainIndex[name.lowercased()] { suspend(domain: index, until: until, now: now) } else { waitingDomainSuspensions[name.lowercased()] = until }
    }

    /// suspend - by name: a site that does not exist yet is suspended when it is created.
    public mutating func suspend(siteNamed name: String, until: Int64) {
        if let index = siteIndex[name] { suspend(site: index, until: until) } else { waitingSiteSuspensions[name] = until }
    }

    public mutating func resume(domainNamed name: String, now: Int64) {
        waitingDomainSuspensions[name.lowercased()] = nil
        if let index = domainIndex[name.lowercased()] { resume(domain: index, now: now) }
    }

    public mutating func resume(siteNamed name: String) {
        waitingSiteSuspensions[name] = nil
        if let index = siteIndex[name] { resume(site: index) }
    }

    /// domainIndex - the index of a domain already known, by name.
    public func domainIndex(_ name: String) -> Int? { domainIndex[name.lowercased()] }

    /// suspend - deliver nothing to a domain until `until` (ms; `Int64.max` until resumed).
    public mutating func suspend(domain index: Int, until: Int64, now: Int64) {
        domains[index].suspendedUntil = until
        if until != .max { domainWakes.insert(Wake(time: until, index: index)) }
    }

    /// suspend - deliver nothing to a site until `until`.
    public mutating func suspend(site index: Int, until: Int64) {
        sites[index].suspendedUntil = until
        if until != .max { siteWakes.insert(Wake(time: until, index: index)) }
    }

    /// suspend - deliver nothing of a campaign until `until`.
    public mutating func suspend(campaign: UInt32, until: Int64) {
        campaignSuspensions[campaign] = until
        if until != .max { campaignWakes.insert(until) }
    }

    public mutating func resume(domain index: Int, now: Int64) {
        domains[index].suspendedUntil = 0
        listDomain(index, now: now)
    }

    public mutating func resume(site index: Int) {
        sites[index].suspendedUntil = 0
        listSite(index)
    }

    public mutating func resume(campaign: UInt32, now: Int64) {
        campaignSuspensions[campaign] = nil
        for index in domains.indices where domains[index].slot(campaign) != nil { listDomain(index, now: now) }
    }

    /// retryNow - make a domain's deferred recipients due at once; returns how many.
    /// (A suspension in force still holds them.)
    @discardableResult
    public mutating func retryNow(domain index: Int, now: Int64) -> Int {
        let domain = domains[index]
        var count = 0
        while let top = domain.deferred.popMin() { makeReady(top.recipient, domain: index, now: now); count += 1 }
        return count
    }

    /// retryNow - by name: a site's domains (nil when the site is not known), or a domain's.
    public mutating func retryNow(siteNamed name: String, now: Int64) -> Int {
        guard let site = siteIndex[name] else { return 0 }
        var count = 0
        for index in domains.indices where domains[index].site == site { count += retryNow(domain: index, now: now) }
        return count
    }

    /// bounceAll - remove every pending recipient of a domain (ready or deferred), as bounced
    /// with `reason`; returns how many.
    @discardableResult
    public mutating func bounceAll(domain index: Int, reason: String) -> Int {
        let domain = domains[index]
        var count = 0
        for recipient in domain.transactional { dispose(recipient, .bounced(reply: reason), domain: index); count += 1 }
        domain.transactional.removeAll()
        for queue in domain.bulkQueues {
            for recipient in queue { dispose(recipient, .bounced(reply: reason), domain: index); count += 1 }
        }
        domain.bulkQueues.removeAll()
        domain.campaignOrder.removeAll()
        domain.campaignCursor = 0
        while let top = domain.deferred.popMin() { dispose(top.recipient, .bounced(reply: reason), domain: index); count += 1 }
        domain.readyCount = 0
        pendingCount -= count
        return count
    }

    /// bounceAll - remove every pending recipient of a campaign (bulk or transactional,
    /// ready or deferred), as bounced with `reason`. Suspending a campaign holds only its
    /// bulk recipients: transactional mail is never held behind a campaign.
    @discardableResult
    public mutating func bounceAll(campaign: UInt32, reason: String) -> Int {
        var count = 0
        for index in domains.indices {
            let domain = domains[index]
            if let slot = domain.slot(campaign) {
                let queue = domain.bulkQueues[slot]
                for recipient in queue { dispose(recipient, .bounced(reply: reason), domain: index) }
                count += queue.count
                domain.readyCount -= queue.count
                domain.removeSlot(slot)
                if domain.campaignCursor >= domain.campaignOrder.count { domain.campaignCursor = 0 }
            }
            /* Transactional recipients can carry a campaign id too: they go as well. */
            if campaign != 0, domain.transactional.contains(where: { $0.campaign == campaign }) {
                let before = domain.transactional.count
                for recipient in domain.transactional where recipient.campaign == campaign { dispose(recipient, .bounced(reply: reason), domain: index) }
                domain.transactional.removeAll { $0.campaign == campaign }
                count += before - domain.transactional.count
                domain.readyCount -= before - domain.transactional.count
            }
            if domain.deferred.unordered.contains(where: { $0.recipient.campaign == campaign }) {
                var kept: [Deferred] = []
                for item in domain.deferred.unordered {
                    if item.recipient.campaign == campaign { dispose(item.recipient, .bounced(reply: reason), domain: index); count += 1 } else { kept.append(item) }
                }
                domain.deferred = Heap(kept)
            }
        }
        pendingCount -= count
        return count
    }

    /// takeDisposed - recipients that left without delivery since the last call.
    public mutating func takeDisposed() -> [(Recipient, Disposal)] {
        defer {
            disposed.removeAll(keepingCapacity: true)
            disposedDomains.removeAll(keepingCapacity: true)
        }
        return disposed
    }

    /// takeDisposedWithDomains - the same, each with its domain's index.
    public mutating func takeDisposedWithDomains() -> [(recipient: Recipient, disposal: Disposal, domain: Int)] {
        defer {
            disposed.removeAll(keepingCapacity: true)
            disposedDomains.removeAll(keepingCapacity: true)
        }
        return zip(disposed, disposedDomains).map { ($0.0, $0.1, $1) }
    }
}
