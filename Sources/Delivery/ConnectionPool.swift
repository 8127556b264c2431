// ConnectionPool.swift - reusable SMTP connections to one next hop
//
// One pool per (address, route): the route fixes the TLS mode, the credentials and
// the client certificate, so every connection in a pool is interchangeable. A
// transaction takes an idle connection when there is one, else a new connection is
// opened for it. After the transaction the connection goes back to the idle list
// unless it has carried its maximum of messages, is older than its maximum age, or
// saw anything wrong (I/O error, timeout, 421, protocol error: the session is then
// no longer usable and closes itself). An idle connection says QUIT after the idle
// timeout. The session sends RSET before every transaction after the first.
//
// When no connection is idle and no new one may open, a transaction goes behind the
// one in flight on a connection whose server offered PIPELINING: the session writes
// its RSET, MAIL, RCPTs and DATA in the same write as the previous message's final dot
// (RFC 2920 section 3.1 allows exactly this), so a busy connection carries a message
// per round trip instead of one per two. A connection carries at most two
// transactions. One that was still waiting its turn when the connection failed never
// reached the server and is given to the pool again rather than deferred.
//
// A site's connections over every pool and every shard are capped by its
// max_connections through one `ConnectionGate`: a pool opens a connection only with a
// slot from the gate, and otherwise waits. While some pool waits, the others let their
// idle connections go, a pool holding more than its fair share (max_connections over
// the shards) gives its connections no new work (not even its own waiting
// transactions) and lets each go when it is done, and a pool at its share opens no
// more: a shard whose domains need the site is not kept out by another shard, and two
// busy shards settle at half each instead of trading connections back and forth.

import Synchronization

import EventCore
import Scheduler
import SMTP
import SMTPStreams

/// What a pool hears back about one transaction it was given.
protocol PoolTransaction: AnyObject {
    /// The message to send.
    var message: OutboundMessage { get }
    /// The transaction is over, recipient by recipient.
    func poolCompleted(_ result: TransactionResult, hop: ResolvedHop)
    /// No connection could be made (connect, greeting, TLS, AUTH): `error` says which.
    func poolFailed(_ error: ClientConnectionError?, hop: ResolvedHop)
}

/// The open connections of one site, over every shard, and the rate new ones may open
/// at. Thread-safe (atomics).
final class ConnectionGate: Sendable {
    let open = Atomic<Int>(0)
    /// Pools waiting for a slot.
    let waiting = Atomic<Int>(0)
    /// The site's connection_rate, over every shard (milliseconds of `MonotonicClock`).
    let rate = SharedSite()

    /// acquire - a slot for one more connection, unless `limit` are open.
    func acquire(limit: Int) -> Bool {
        var current = open.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = open.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func release() { open.subtract(1, ordering: .acquiringAndReleasing) }
}

/// Every site's connection gate, shared by the engine's shards. Thread-safe.
public final class SiteConnections: Sendable {
    private let table = Mutex<[String: ConnectionGate]>([:])

    public init() {}

    /// open - connections open or being opened now, over every site and shard.
    public var open: Int {
        table.withLock { gates in gates.values.reduce(0) { $0 + $1.open.load(ordering: .relaxed) } }
    }

    func gate(_ site: String) -> ConnectionGate {
        table.withLock { gates in
            if let gate = gates[site] { return gate }
            let gate = ConnectionGate()
            gates[site] = gate
            return gate
        }
    }
}

/// Limits a pool applies to its connections.
struct PoolLimits {
    var maxMessagesPerConnection: Int
    var idleTimeoutMilliseconds: UInt64
    var maxAgeMilliseconds: UInt64
    /// The site's max_connections, over every pool of the site in every shard.
    var maxConnections: Int
    /// This pool's fair share of them (max_connections over the shards): a pool above its
    /// share gives a connection back when another pool waits; one at or below keeps it.
    var fairShare: Int
    /// The site's connection_rate and connection_burst (nil: new connections as needed).
    var connectionRate: Rate? = nil
    var connectionBurst = 1
}

/// The connections to one hop. Confined to its worker shard's loop thread.
final class ConnectionPool {
    let hop: ResolvedHop
    let configuration: ClientConnectionConfiguration
    let sources: [IPAddress]
    var limits: PoolLimits
    private let loop: Loop
    private let crypto: any SASLCrypto
    private var idle: [PooledConnection] = []
    /// Connections carrying one transaction whose server pipelines: each can take a second.
    private var seconds: [PooledConnection] = []
    /// Every connection open or opening (the client connection holds its delegate weakly).
    private var connections: [ObjectIdentifier: PooledConnection] = [:]
    private var sourceCursor = 0
    private let gate: ConnectionGate
    /// Transactions waiting for a slot from the gate, oldest first.
    private var waiting: [any PoolTransaction] = []
    private var waitTimer: LoopTimer?
    /// When waiting transactions look for a connection again (ms): soon for a slot, later
    /// for a connection-rate token.
    private var retryDelay: UInt64 = 2
    /// While there are idle connections: looks whether another pool waits for a slot.
    private var idleWatch: LoopTimer?
    /// Connections open or opening (idle and busy).
    var open: Int { connections.count }

    init(loop: Loop, hop: ResolvedHop, configuration: ClientConnectionConfiguration, sources: [IPAddress],
         limits: PoolLimits, gate: ConnectionGate, crypto: any SASLCrypto) {
        self.loop = loop
        self.gate = gate
        self.hop = hop
        self.configuration = configuration
        self.sources = sources
        self.limits = limits
        self.crypto = crypto
    }

    /// checkout - run `transaction` on an idle connection, or on a new one.
    func checkout(_ transaction: any PoolTransaction) {
        while let connection = idle.popLast() {
            guard connection.isReusable(limits: limits) else {
                connection.retire()
                continue
            }
            connection.start(transaction)
            offerSecond(connection)
            return
        }
        if waiting.isEmpty {
            /* Behind a busy connection before opening another: the scheduler lets a site
               have two transactions in flight per connection it allows, so its slow start
               still counts connections. */
            if !givesBack {
                while let connection = seconds.popLast() {
                    guard connection.canTakeSecond(limits: limits) else { continue }
                    connection.start(transaction)
                    return
                }
            }
            if open(for: transaction) { return }
        }
        wait(transaction)
    }

    /// open - a new connection for `transaction`, when the gate has a slot and the site's
    /// connection rate a token; false otherwise (`retryDelay` says when to look again).
    private func open(for transaction: any PoolTransaction) -> Bool {
        retryDelay = 2
        guard acquireSlot() else { return false }
        if let rate = limits.connectionRate {
            let now = Int64(MonotonicClock.nanoseconds() / 1_000_000)
            if let at = gate.rate.take(now: now, rate: rate, burst: limits.connectionBurst) {
                /* A slot but no token yet: give the slot back and come back for both. */
                gate.release()
                retryDelay = UInt64(max(1, at - now))
                return false
            }
        }
        connect(transaction)
        return true
    }

    /// True when a pool of the site other than this one waits for a slot.
    private var othersWaiting: Bool {
        gate.waiting.load(ordering: .relaxed) > (waiting.isEmpty ? 0 : 1)
    }

    /// True when another pool of the site waits for a slot and this one holds more than its
    /// fair share: its connections then take no more work, not even this pool's waiting
    /// transactions, and go once they are done.
    private var givesBack: Bool { othersWaiting && open > limits.fairShare }

    /// acquireSlot - a gate slot for a new connection, unless another pool waits and this
    /// one already has its fair share (the slot is the other pool's to take).
    private func acquireSlot() -> Bool {
        if othersWaiting && open >= limits.fairShare { return false }
        return gate.acquire(limit: limits.maxConnections)
    }

    /// offerSecond - a connection carries one transaction: give it a waiting one to pipeline
    /// behind it, or list it as able to take the next.
    fileprivate func offerSecond(_ connection: PooledConnection) {
        guard connection.canTakeSecond(limits: limits), !givesBack else { return }
        if !waiting.isEmpty {
            connection.start(waiting.removeFirst())
            if waiting.isEmpty { gate.waiting.subtract(1, ordering: .relaxed) }
            return
        }
        guard !seconds.contains(where: { $0 === connection }) else { return }
        seconds.append(connection)
    }


    /// connect - a new connection for `transaction` (a gate slot is held for it).
    private func connect(_ transaction: any PoolTransaction) {
        var configuration = self.configuration
        if !sources.isEmpty {
            configuration.source = SocketAddress(ip: sources[sourceCursor % sources.count], port: 0)
            sourceCursor += 1
        }
        let pooled = PooledConnection(pool: self, transaction: transaction)
        connections[ObjectIdentifier(pooled)] = pooled
        pooled.connection = ClientConnection.connect(loop: loop, to: hop.address, configuration: configuration,
                                                     crypto: crypto, delegate: pooled)
    }

    /// wait - no connection now: queue the transaction and look again after `retryDelay`
    /// (2 ms for a slot, the time of the next token under a connection rate).
    private func wait(_ transaction: any PoolTransaction) {
        if waiting.isEmpty { gate.waiting.add(1, ordering: .relaxed) }
        waiting.append(transaction)
        armRetry()
    }

    private func armRetry() {
        if waitTimer == nil { waitTimer = LoopTimer(loop: loop) }
        if !waitTimer!.isArmed { waitTimer!.schedule(after: retryDelay) { [unowned self] _ in retryWaiting() } }
    }

    private func retryWaiting() {
        /* A checkin, a second place or a closed connection may have taken the last waiting
           transaction since the timer was armed: it then took this pool off the gate's
           count already, and counting it off again would tell every pool of the site that
           nobody waits (fair shares and idle connections never given back). */
        guard !waiting.isEmpty else { return }
        while let first = waiting.first, open(for: first) { waiting.removeFirst() }
        if waiting.isEmpty {
            gate.waiting.subtract(1, ordering: .relaxed)
        } else {
            armRetry()
        }
    }

    /// checkin - a connection finished its transaction: give it to a waiting transaction,
    /// keep it idle, or let it go (worn out, or another pool of the site waits for a slot).
    fileprivate func checkin(_ connection: PooledConnection) {
        seconds.removeAll { $0 === connection }
        guard connection.isReusable(limits: limits), !givesBack else {
            connection.retire()
            return
        }
        if !waiting.isEmpty {
            connection.start(waiting.removeFirst())
            if waiting.isEmpty { gate.waiting.subtract(1, ordering: .relaxed) }
            offerSecond(connection)
            return
        }
        idle.append(connection)
        connection.idleSince(timeout: limits.idleTimeoutMilliseconds)
        watchIdle()
    }

    /// watchIdle - while connections are idle, let one go whenever another pool waits.
    private func watchIdle() {
        if idleWatch == nil { idleWatch = LoopTimer(loop: loop) }
        guard !idleWatch!.isArmed else { return }
        idleWatch!.schedule(after: 5) { [unowned self] _ in
            if gate.waiting.load(ordering: .relaxed) > 0, let connection = idle.first {
                idle.removeFirst()
                connection.retire()
            }
            if !idle.isEmpty { watchIdle() }
        }
    }

    fileprivate func closed(_ connection: PooledConnection) {
        connections[ObjectIdentifier(connection)] = nil
        idle.removeAll { $0 === connection }
        seconds.removeAll { $0 === connection }
        gate.release()
        /* A slot came free: a transaction waiting here takes it at once. */
        if let first = waiting.first {
            if open(for: first) {
                waiting.removeFirst()
                if waiting.isEmpty { gate.waiting.subtract(1, ordering: .relaxed) }
            } else {
                armRetry()
            }
        }
    }

    /// closeIdle - QUIT every idle connection (draining or reloading).
    func closeIdle() {
        let all = idle
        idle.removeAll()
        for connection in all { connection.retire() }
    }

    /// True when nothing is open and nothing waits for a slot: only then may a reload drop
    /// the pool (one waiting for a slot has transactions to finish and is counted at the gate).
    var isEmpty: Bool { open == 0 && waiting.isEmpty }

    deinit {
        /* A timer's handle outlives its owner until closed, and its callback holds this pool unowned. */
        waitTimer?.close()
        idleWatch?.close()
    }
}

/// One connection of a pool and the transactions it carries (one, or two when the second is
/// pipelined behind the first). Confined to the loop thread.
private final class PooledConnection: ClientConnectionDelegate {
    unowned let pool: ConnectionPool
    var connection: ClientConnection?
    /// The transaction it was opened for, until the handshake is done.
    private var first: (any PoolTransaction)?
    /// Transactions handed to the connection, oldest first, with their tags.
    private var carried: [(tag: Int, transaction: any PoolTransaction)] = []
    private var ready = false
    private var messages = 0
    private let opened = MonotonicClock.nanoseconds()
    private var idleTimer: LoopTimer?

    init(pool: ConnectionPool, transaction: any PoolTransaction) {
        self.pool = pool
        first = transaction
        carried.reserveCapacity(2)
    }

    func isReusable(limits: PoolLimits) -> Bool {
        guard let connection, connection.isUsable, ready else { return false }
        let age = (MonotonicClock.nanoseconds() - opened) / 1_000_000
        return messages < limits.maxMessagesPerConnection && age < limits.maxAgeMilliseconds
    }

    /// True when it carries one transaction and may take a second behind it.
    func canTakeSecond(limits: PoolLimits) -> Bool {
        carried.count == 1 && connection?.capabilities?.pipelining == true && isReusable(limits: limits)
    }

    func start(_ transaction: any PoolTransaction) {
        idleTimer?.cancel()
        guard let connection else { return }
        messages += 1
        carried.append((messages, transaction))
        connection.send(transaction.message, tag: messages)
    }

    func idleSince(timeout: UInt64) {
        guard let connection else { return }
        if idleTimer == nil { idleTimer = LoopTimer(loop: connection.loop) }
        idleTimer!.schedule(after: timeout) { [weak self] _ in self?.retire() }
    }

    /// retire - say QUIT (the pool already forgot this connection, or is about to).
    func retire() {
        idleTimer?.cancel()
        connection?.quit()
    }

    // MARK: ClientConnectionDelegate

    func clientConnection(_ connection: ClientConnection, finished stage: ClientConnectionStage, nanoseconds: UInt64) {}

    func clientConnectionReady(_ connection: ClientConnection) {
        /* Ready the first time (handshake done) and after each transaction: only the first
           starts the transaction it was opened for; later ones are the pool's business. */
        guard !ready else { return }
        ready = true
        if let first {
            self.first = nil
            start(first)
            pool.offerSecond(self)
        }
    }

    func clientConnection(_ connection: ClientConnection, completed result: TransactionResult, tag: Int, nanoseconds: UInt64) {
        guard let position = carried.firstIndex(where: { $0.tag == tag }) else { return }
        let transaction = carried.remove(at: position).transaction
        /* Back in the pool first: the shard starts its next transaction while hearing of
           this one, and should find this connection free rather than wait for a slot. */
        if connection.isUsable {
            if carried.isEmpty { pool.checkin(self) } else { pool.offerSecond(self) }
        }
        if result.notSent {
            /* Nothing of it reached the server: another connection takes it. */
            pool.checkout(transaction)
        } else {
            transaction.poolCompleted(result, hop: pool.hop)
        }
    }

    func clientConnectionClosed(_ connection: ClientConnection, error: ClientConnectionError?) {
        idleTimer?.close()
        idleTimer = nil
        pool.closed(self)
        self.connection = nil
        /* The connection reported every message it was given; the one it was opened for
           never got as far as being sent. */
        carried.removeAll()
        if let first {
            self.first = nil
            first.poolFailed(error, hop: pool.hop)
        }
    }
}
