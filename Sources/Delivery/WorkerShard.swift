// WorkerShard.swift - one worker shard: its loop, spool shard, scheduler, router and pools
//
// The shard hears of every pending recipient of its spool shard (all of them at start,
// each new one as soon as its record is durable), resolves the recipient's domain to a
// destination, and hands it to its scheduler. Whenever the scheduler allows a
// transaction, the shard reads the message and the recipients off the loop (the
// spool's reads are blocking preads, done on the shard's reader queue), renders the
// message, and gives it to the connection pool of the destination's first hop,
// failing over to the next hop when a connection cannot be made (a message past its
// own expiry time is not sent: its recipients expire). Results go back to the
// scheduler, to the spool as outcome records and to the delivery log.
//
// Nothing here is shared with another shard: a recipient's domain decides its shard.

import Dispatch
import EventCore
import Scheduler
import SMTP
import SMTPStreams
import Spool

/// Per-domain counters, for progress displays and summaries.
public struct DomainCounters: Sendable, Equatable {
    public var delivered = 0
    public var deferred = 0          /* temporary failures (each retry counts) */
    public var bounced = 0
    public var expired = 0
    public init() {}
}

/// A shard's state at one moment, for drain checks and progress.
public struct ShardStatus: Sendable {
    public var ready = 0              /* recipients that may go now */
    public var waiting = 0            /* deferred into the future, or held by a suspension */
    public var inFlight = 0           /* transactions started and not finished */
    public var resolving = 0          /* recipients whose domain is being looked up */
    public var byDomain: [String: DomainCounters] = [:]

    public init() {}
}

/// One worker shard. Confined to its loop thread; other threads reach it only through
/// jobs posted to that loop (`@unchecked Sendable` for exactly that).
public final class WorkerShard: @unchecked Sendable {
    public let index: Int
    let thread: LoopThread
    let spool: Spool
    let spoolShard: SpoolShard
    var configuration: EngineConfiguration
    let log: DeliveryLog?
    /// Open connections per site over every shard (their cap is the site's max_connections).
    let siteConnections: SiteConnections
    let reader: DispatchQueue

    // Loop-thread state.
    var loop: Loop!
    var scheduler: Scheduler
    var router: Router!
    var resolver: DNSResolver?
    var wake: LoopTimer!
    var pools: [PoolKey: ConnectionPool] = [:]
    /// Hops that could not be reached lately, until when they are passed over (ms).
    var deadHops: [SocketAddress: Int64] = [:]
    /// Hops whose STARTTLS handshake failed under opportunistic TLS: reached in plaintext
    /// until then (ms), as Postfix's `may` level does.
    var plaintextHops: [SocketAddress: Int64] = [:]
    static let deadHopMilliseconds: Int64 = 60_000
    /// Pools replaced by a reload, kept until their busy connections finish.
    var retiredPools: [ConnectionPool] = []
    var messages = MessageCache(capacity: 256)
    var campaignIDs: [String: UInt32] = [:]
    var campaignNames: [String] = [""]
    var domainIndex: [String: Int] = [:]
    var resolving: [String: [PendingRecipient]] = [:]
    var inFlight = 0
    /// True while `accept` queues a list (see there).
    var accepting = false
    /// Final outcomes waiting for their recipients' addresses (for the log) from the reader queue.
    var addressLookups = 0
    /// Bounce notices being read and queued whose outcomes are not yet recorded (`sendNotice`).
    var noticesInProgress = 0
    /// Outcomes and log records waiting for the next flush (see `scheduleFlush`).
    var unrecorded: [(RecipientKey, Outcome)] = []
    var unlogged: [DeliveryLogRecord] = []
    var flushTimer: LoopTimer!
    static let flushMilliseconds: UInt64 = 10
    var stopping = false
    var counters: [String: DomainCounters] = [:]
    let crypto = OpenSSLCrypto()
    var tlsContext: TLSContext?
    let sessions = TLSSessionCache()

    init(index: Int, spool: Spool, configuration: EngineConfiguration, log: DeliveryLog?, siteConnections: SiteConnections) throws(IOError) {
        self.index = index
        self.siteConnections = siteConnections
        self.spool = spool
        spoolShard = spool.shards[index]
        self.configuration = configuration
        self.log = log
        scheduler = Scheduler(Self.schedulerConfiguration(configuration))
        reader = DispatchQueue(label: "carrier-read-\(index)")
        thread = try LoopThread.start(name: "carrier-shard-\(index)")
    }

    /// start - on the loop: set up, take every pending recipient, subscribe for new ones.
    func start() {
        thread.execute { [self] loop in
            self.loop = loop
            wake = LoopTimer(loop: loop)
            flushTimer = LoopTimer(loop: loop)
            if let dns = configuration.dns { resolver = try? DNSResolver(loop: loop, configuration: dns) }
            router = Router(routes: configuration.routes, resolver: resolver, mxPort: configuration.mxPort)
            tlsContext = try? TLSContext.client(Self.tlsConfiguration(verify: false))
            /* Operators' suspensions first, so nothing they hold goes out. */
            restoreSuspensions()
            /* Weak: the spool keeps the handler, and the shard keeps the spool. */
            let pending = spoolShard.subscribe { [weak self] fresh in
                guard let self else { return }
                thread.execute { [self] _ in accept(fresh) }
            }
            /* In the order of the records (the index hands them out in hash order): each
               domain's queue then walks a campaign's recipients records one after the other,
               and reading a transaction's recipients finds their record already decoded. */
            accept(pending.sorted { ($0.segment, $0.offset, $0.key.index) < ($1.segment, $1.offset, $1.key.index) })
        }
    }

    /// The engine's scheduler settings: a decision is one SMTP transaction.
    static func schedulerConfiguration(_ configuration: EngineConfiguration) -> SchedulerConfiguration {
        var scheduler = configuration.scheduler
        scheduler.transactionPerMessage = true
        /* A connection carries a second transaction pipelined behind the first (ConnectionPool). */
        scheduler.transactionsPerConnection = 2
        return scheduler
    }

    /// reload - new routes and shaping (SIGHUP): domains are routed afresh as they are next
    /// tried, limits change at once, idle connections close so new TLS and credentials apply.
    func reload(_ configuration: EngineConfiguration) {
        thread.execute { [self] loop in
            let old = self.configuration.dns
            self.configuration = configuration
            let new = configuration.dns
            if old?.servers != new?.servers || old?.timeoutMilliseconds != new?.timeoutMilliseconds || old?.tries != new?.tries {
                /* Other DNS servers: a resolver of their own. The old one answers the queries
                   it has in flight (their timeouts are shorter than a minute), then closes. */
                if let previous = resolver {
                    let timer = LoopTimer(loop: loop)
                    timer.schedule(after: 60_000) { timer in
                        previous.close()
                        timer.close()
                    }
                }
                resolver = new.flatMap { try? DNSResolver(loop: loop, configuration: $0) }
            }
            router = Router(routes: configuration.routes, resolver: resolver, mxPort: configuration.mxPort)
            scheduler.reconfigure(Self.schedulerConfiguration(configuration))
            for (name, id) in campaignIDs {
                scheduler.setCampaignWeight(id, weight: configuration.scheduler.shaping.campaignWeights[name] ?? 1)
            }
            retiredPools.removeAll { $0.isEmpty }
            for pool in pools.values {
                pool.closeIdle()
                if !pool.isEmpty { retiredPools.append(pool) }
            }
            pools.removeAll()
            pump()
        }
    }

    static func tlsConfiguration(verify: Bool) -> TLSClientConfiguration {
        var tls = TLSClientConfiguration()
        tls.verifyPeer = verify
        return tls
    }

    // MARK: feed

    /// accept - new pending recipients: route their domains and queue them, then start what
    /// may go. A route known at once (a static route, a cached lookup) answers inside the
    /// loop: its domain must not start a transaction before the rest of the list is queued,
    /// or the first recipient of each domain would travel alone.
    func accept(_ list: [PendingRecipient]) {
        let now = nowMilliseconds()
        accepting = true
        defer { accepting = false }
        for recipient in list {
            let domain = recipient.domain
            if let index = domainIndex[domain] {
                submit(recipient, domain: index, now: now)
            } else if resolving[domain] != nil {
                resolving[domain]!.append(recipient)
            } else {
                resolving[domain] = [recipient]
                router.resolve(domain, now: now) { [self] result in resolved(domain, result) }
            }
        }
        pump()
    }

    /// resolved - a domain's destination (or why there is none): create its scheduler
    /// site and domain, queue the recipients that waited. A domain whose lookup failed
    /// for now gets a site of its own and is looked up again at each attempt.
    func resolved(_ domain: String, _ result: Result<Destination, RoutingFailure>) {
        let now = nowMilliseconds()
        let waiting = resolving.removeValue(forKey: domain) ?? []
        let index: Int
        switch result {
        case .success(let destination):
            let site = scheduler.site(destination.site, mxHosts: destination.mxHosts)
            index = scheduler.domain(domain, site: site)
        case .failure(.permanent(let code, let enhanced, let text)):
            /* Not created in the scheduler: later recipients look the domain up again. */
            var finals: [FinalOutcome] = []
            for recipient in waiting {
                let reply = "\(code) \(enhanced) \(text)"
                finals.append(FinalOutcome(key: recipient.key, outcome: .bounced(reply: reply), transactional: recipient.priority == .transactional,
                                           status: enhanced, diagnostic: reply, remoteMTA: nil))
                logEvent(.bounced, key: recipient.key, recipient: nil, domain: domain, campaign: recipient.campaign,
                         site: nil, host: nil, code: code, enhanced: enhanced, text: text, attempt: Int(recipient.attempts) + 1)
                counters[domain, default: DomainCounters()].bounced += 1
            }
            finalize(finals)
            if !accepting { pump() }
            return
        case .failure(.temporary):
            index = scheduler.domain(domain, site: scheduler.site("unresolved:" + domain))
        }
        domainIndex[domain] = index
        for recipient in waiting { submit(recipient, domain: index, now: now) }
        if !accepting { pump() }
    }

    func submit(_ recipient: PendingRecipient, domain: Int, now: Int64) {
        let campaign = campaignID(recipient.campaign)
        let key = recipient.key
        let scheduled = ScheduledRecipient(
            ref: RecipientRef(messageHigh: key.message.high, messageLow: key.message.low, index: key.index),
            queued: Int64(bitPattern: key.message.high), attempts: UInt16(min(recipient.attempts, UInt32(UInt16.max))),
            campaign: campaign, priority: recipient.priority == .transactional ? .transactional : .bulk,
            personalised: recipient.personalised)
        scheduler.submit(scheduled, domain: domain, due: recipient.nextAttempt, now: now)
    }

    func campaignID(_ name: String) -> UInt32 {
        if name.isEmpty { return 0 }
        if let id = campaignIDs[name] { return id }
        let id = UInt32(campaignNames.count)
        campaignNames.append(name)
        campaignIDs[name] = id
        if let weight = configuration.scheduler.shaping.campaignWeights[name] { scheduler.setCampaignWeight(id, weight: weight) }
        return id
    }

    // MARK: deciding

    /// pump - start every transaction the scheduler allows now; wake up when the next may.
    func pump() {
        guard !stopping else { return }
        let now = nowMilliseconds()
        while let delivery = scheduler.next(now: now) { begin(delivery) }
        disposeLeftovers(now: now)
        if let next = scheduler.nextWakeup {
            wake.schedule(after: UInt64(max(1, next - now))) { [unowned self] _ in pump() }
        } else {
            wake.cancel()
        }
    }

    /// begin - read what a transaction needs, then send it: from the caches when the message
    /// and the recipients' records were read recently, else on the reader queue (the
    /// spool's reads are blocking preads).
    func begin(_ delivery: Delivery) {
        inFlight += 1
        let keys = delivery.recipients.map { RecipientKey(message: MessageID(high: $0.ref.messageHigh, low: $0.ref.messageLow), index: $0.ref.index) }
        let id = keys[0].message
        if messages.get(id) == nil, let fresh = spoolShard.cachedMessage(id) {
            /* Committed moments ago by a listener: no need to read it back. */
            messages.put(id, PreparedMessage(fresh, hostname: configuration.hostname))
        }
        let needMessage = messages.get(id) == nil
        if !needMessage, let recipients = spoolShard.cachedRecipients(keys) {
            read(delivery, keys: keys, .success((nil, recipients)))
            return
        }
        let shard = spoolShard
        let thread = self.thread
        reader.async {
            let result = Result { () throws(SpoolError) -> (StoredMessage?, [NewRecipient]) in
                (needMessage ? try shard.message(id) : nil, try shard.recipients(keys))
            }
            thread.execute { [self] _ in read(delivery, keys: keys, result) }
        }
    }

    /// read - the message and recipients are here: route, render and hand to a pool.
    func read(_ delivery: Delivery, keys: [RecipientKey], _ result: Result<(StoredMessage?, [NewRecipient]), SpoolError>) {
        let (stored, recipients): (StoredMessage?, [NewRecipient])
        switch result {
        case .success(let value): (stored, recipients) = value
        case .failure(let error):
            /* A recipient purged meanwhile is gone (no outcome is due); anything else is retried. */
            let gone = if case .invalid = error.reason { true } else { false }
            let reply = "spool read failed: \(error)"
            finish(Attempt(shard: self, delivery: delivery, keys: keys, recipients: []),
                   results: keys.map { _ in gone ? .gone : .temporary(localReply(451, "4.3.0", reply)) },
                   hop: nil)
            return
        }
        let prepared: PreparedMessage
        if let cached = messages.get(keys[0].message) {
            prepared = cached
        } else if let stored {
            prepared = PreparedMessage(stored, hostname: configuration.hostname)
            messages.put(stored.id, prepared)
        } else {
            finish(Attempt(shard: self, delivery: delivery, keys: keys, recipients: recipients),
                   results: keys.map { _ in .temporary(localReply(451, "4.3.0", "message record not readable")) }, hop: nil)
            return
        }
        let attempt = Attempt(shard: self, delivery: delivery, keys: keys, recipients: recipients)
        attempt.prepared = prepared
        if prepared.metadata.expires != 0 && nowMilliseconds() >= prepared.metadata.expires {
            expire(attempt, at: prepared.metadata.expires)
            return
        }
        let domain = scheduler.domainName(delivery.domain)
        router.resolve(domain, now: nowMilliseconds()) { [self] routing in
            switch routing {
            case .success(let destination):
                attempt.destination = destination
                if destination.site != scheduler.siteName(delivery.site) {
                    /* First seen when DNS failed for now, or routed elsewhere before a reload:
                       the domain's later transactions take the limits of its real site. */
                    let site = scheduler.site(destination.site, mxHosts: destination.mxHosts)
                    scheduler.moveDomain(delivery.domain, to: site, now: nowMilliseconds())
                }
                send(attempt)
            case .failure(.permanent(let code, let enhanced, let text)):
                let reply = localReply(code, enhanced, text)
                finish(attempt, results: keys.map { _ in .permanent(reply) }, hop: nil)
            case .failure(.temporary(let code, let enhanced, let text)):
                let reply = localReply(code, enhanced, text)
                finish(attempt, results: keys.map { _ in .temporary(reply) }, hop: nil)
            }
        }
    }

    /// expire - the message's own expiry time (`MessageMetadata.expires`) passed before this
    /// attempt: its recipients are not sent but finish as expired, like those past `max_age`
    /// (spool outcome, log record, counters, a bounce notice by the usual rules).
    ///
    /// The check is lazy, made here when a transaction is about to start, so the scheduler
    /// keeps no per-message time: a recipient held by a suspension or a pause expires when
    /// it is next handed out (a deferred one is retried no later than the expiry time, see
    /// `finish`). Finished on the next loop turn: `pump` may have started this attempt, and
    /// many expired messages in a row must not nest `finish` and `pump` down the stack.
    func expire(_ attempt: Attempt, at expires: Int64) {
        let reply = localReply(451, "4.4.7", "message expired: its expiry time (\(rfc5322Date(expires))) passed before delivery")
        loop.nextTurn { [self] in finish(attempt, results: attempt.keys.map { _ in .expired(reply) }, hop: nil) }
    }

    /// send - render the message for this transaction and give it to the first hop's pool.
    func send(_ attempt: Attempt) {
        guard let prepared = attempt.prepared else { return }
        var addresses: [MailAddress] = []
        var results: [AttemptResult?] = Array(repeating: nil, count: attempt.keys.count)
        for (position, recipient) in attempt.recipients.enumerated() {
            do {
                addresses.append(try MailAddress(parsing: recipient.address))
                attempt.sent.append(position)
            } catch {
                results[position] = .permanent(localReply(553, "5.1.3", "bad recipient address: \(error)"))
            }
        }
        attempt.presetResults = results
        guard !addresses.isEmpty else {
            finish(attempt, results: results.map { $0! }, hop: nil)
            return
        }
        let variables = attempt.delivery.recipients[0].personalised ? attempt.recipients[0].variables : []
        let payload: MessagePayload
        do {
            payload = try prepared.payload(variables: variables, queueID: attempt.keys[0].message.description)
        } catch {
            let reply = localReply(554, "5.6.0", "message cannot be sent: \(error)")
            finish(attempt, results: results.map { $0 ?? .permanent(reply) }, hop: nil)
            return
        }
        var message = OutboundMessage(sender: prepared.sender, recipients: addresses, payload: payload)
        if !prepared.dsn.isEmpty {
            /* Relayed as asked (sent only to servers that offer DSN). */
            message.dsnReturn = prepared.dsn.ret
            message.envelopeID = prepared.dsn.envelopeID
            for (sent, position) in attempt.sent.enumerated() {
                if let request = prepared.dsn.recipients[Int(attempt.keys[position].index)] { message.recipientDSN[sent] = request }
            }
        }
        attempt.message = message
        tryHop(attempt)
    }

    /// tryHop - hand the attempt to the pool of its current hop, passing over hops that
    /// were down lately while a later one is not (when all are, they are tried in order).
    func tryHop(_ attempt: Attempt) {
        guard let destination = attempt.destination else { return }
        if !deadHops.isEmpty {
            let now = nowMilliseconds()
            let alive = destination.hops[attempt.hopIndex...].firstIndex { (deadHops[$0.address] ?? 0) <= now }
            if let alive { attempt.hopIndex = alive }
        }
        let hop = destination.hops[attempt.hopIndex]
        pool(for: hop, route: destination.route, site: attempt.delivery.site).checkout(attempt)
    }

    func pool(for hop: ResolvedHop, route: Route?, site: Int) -> ConnectionPool {
        let tls = route?.tls ?? .opportunistic
        let plaintext = tls == .opportunistic && (plaintextHops[hop.address] ?? 0) > nowMilliseconds()
        let key = PoolKey(address: hop.address, route: destinationKey(route) + (plaintext ? "|plaintext" : ""))
        if let pool = pools[key] { return pool }
        var session = ClientConfiguration(heloName: configuration.hostname)
        session.timeouts = configuration.timeouts
        var connection = ClientConnectionConfiguration(session: session)
        connection.connectTimeoutMilliseconds = configuration.connectTimeoutMilliseconds
        /* A name is sent as SNI and checked; an address literal is checked against the
           certificate's IP addresses (TLSConnection sends no SNI for it). */
        connection.serverName = hop.name
        connection.tlsSessionCache = sessions
        switch tls {
        case .none: connection.session.tls = .never
        case .opportunistic: connection.session.tls = plaintext ? .never : .opportunistic
        case .required: connection.session.tls = .required
        case .implicit: connection.session.tls = .never; connection.implicitTLS = true
        }
        if tls != .none {
            if let route, route.verifyCertificate || route.clientCertificate != nil {
                var tlsConfiguration = Self.tlsConfiguration(verify: route.verifyCertificate)
                if let files = route.clientCertificate {
                    tlsConfiguration.identity = .files(certificateChain: files.certificate, privateKey: files.key)
                }
                do throws(TLSError) {
                    connection.tls = try TLSContext.client(tlsConfiguration)
                } catch {
                    /* The loader checked the files; they changed since. Without a context the
                       connections fail with this TLS error: never plaintext instead. */
                    writeStandardError("carrier: route \(route.domain): TLS client context: \(error)\n")
                }
            } else {
                connection.tls = tlsContext
            }
        }
        connection.session.credentials = route?.credentials
        let limits = scheduler.limits(site: site)
        let pool = ConnectionPool(
            loop: loop, hop: hop, configuration: connection, sources: route?.sources ?? [],
            limits: PoolLimits(maxMessagesPerConnection: limits.maxMessagesPerConnection ?? 100,
                               idleTimeoutMilliseconds: configuration.idleTimeoutMilliseconds,
                               maxAgeMilliseconds: configuration.maxConnectionAgeMilliseconds,
                               maxConnections: limits.maxConnections ?? 20,
                               fairShare: max(1, ((limits.maxConnections ?? 20) + spool.shards.count - 1) / spool.shards.count),
                               connectionRate: limits.connectionRate, connectionBurst: max(1, limits.connectionBurst ?? 1)),
            gate: siteConnections.gate(scheduler.siteName(site)), crypto: crypto)
        pools[key] = pool
        return pool
    }

    func destinationKey(_ route: Route?) -> String { route.map { "route:" + $0.domain } ?? "mx" }

    // MARK: status and stopping

    /// status - the shard's counts now (on its loop; `completion` runs there).
    func status(_ completion: @escaping @Sendable (ShardStatus) -> Void) {
        let posted = thread.execute { [self] _ in
            guard loop != nil else { return completion(ShardStatus()) }
            let now = nowMilliseconds()
            scheduler.advance(now: now)
            var status = ShardStatus()
            status.ready = scheduler.sendableCount(now: now)
            status.waiting = scheduler.pendingCount - status.ready
            status.inFlight = inFlight
            status.resolving = resolving.values.reduce(0) { $0 + $1.count }
            status.byDomain = counters
            completion(status)
        }
        if !posted { completion(ShardStatus()) }
    }

    /// stop - start no new transaction; `completion` runs once the ones in flight are done
    /// and the idle connections said QUIT.
    func stop(_ completion: @escaping @Sendable () -> Void) {
        let posted = thread.execute { [self] _ in
            stopping = true
            wake?.cancel()
            waitForQuiet(completion)
        }
        if !posted { completion() }
    }

    func waitForQuiet(_ completion: @escaping @Sendable () -> Void) {
        if inFlight == 0 && addressLookups == 0 && noticesInProgress == 0 {
            flush()
            for pool in Array(pools.values) + retiredPools { pool.closeIdle() }
            completion()
            return
        }
        loop.nextTurn { [self] in
            let timer = LoopTimer(loop: loop)
            timer.schedule(after: 20) { [self] timer in
                timer.close()
                waitForQuiet(completion)
            }
        }
    }

    /// shutdown - close the loop (after `stop`).
    func shutdown() {
        spoolShard.unsubscribe()
        thread.execute { [self] _ in
            resolver?.close()
            wake?.close()
        }
        thread.stopAndJoin()
    }
}
