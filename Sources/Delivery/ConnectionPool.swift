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

import EventCore
import SMTP
import SMTPStreams

/// What a pool hears back about one transaction it was given.
protocol PoolTransaction: AnyObject {
    /// The message to send.
    var message: OutboundMessage { get }
    /// The connection is ready and took the message.
    func poolStarted(on hop: ResolvedHop)
    /// The transaction is over, recipient by recipient.
    func poolCompleted(_ result: TransactionResult, hop: ResolvedHop)
    /// No connection could be made (connect, greeting, TLS, AUTH): `error` says which.
    func poolFailed(_ error: ClientConnectionError?, hop: ResolvedHop)
}

/// Limits a pool applies to its connections.
struct PoolLimits {
    var maxMessagesPerConnection: Int
    var idleTimeoutMilliseconds: UInt64
    var maxAgeMilliseconds: UInt64
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
    /// Every connection open or opening (the client connection holds its delegate weakly).
    private var connections: [ObjectIdentifier: PooledConnection] = [:]
    private var sourceCursor = 0
    /// Connections open or opening (idle and busy).
    var open: Int { connections.count }

    init(loop: Loop, hop: ResolvedHop, configuration: ClientConnectionConfiguration, sources: [IPAddress],
         limits: PoolLimits, crypto: any SASLCrypto) {
        self.loop = loop
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
            return
        }
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

    /// checkin - a connection finished its transaction: keep it idle or let it go.
    fileprivate func checkin(_ connection: PooledConnection) {
        guard connection.isReusable(limits: limits) else {
            connection.retire()
            return
        }
        idle.append(connection)
        connection.idleSince(timeout: limits.idleTimeoutMilliseconds)
    }

    fileprivate func closed(_ connection: PooledConnection) {
        connections[ObjectIdentifier(connection)] = nil
        idle.removeAll { $0 === connection }
    }

    /// closeIdle - QUIT every idle connection (draining or reloading).
    func closeIdle() {
        let all = idle
        idle.removeAll()
        for connection in all { connection.retire() }
    }

    var isEmpty: Bool { open == 0 }
}

/// One connection of a pool and the transaction it carries. Confined to the loop thread.
private final class PooledConnection: ClientConnectionDelegate {
    unowned let pool: ConnectionPool
    var connection: ClientConnection?
    private var transaction: (any PoolTransaction)?
    private var ready = false
    private var messages = 0
    private let opened = MonotonicClock.nanoseconds()
    private var idleTimer: LoopTimer?

    init(pool: ConnectionPool, transaction: any PoolTransaction) {
        self.pool = pool
        self.transaction = transaction
    }

    func isReusable(limits: PoolLimits) -> Bool {
        guard let connection, connection.isUsable, ready else { return false }
        let age = (MonotonicClock.nanoseconds() - opened) / 1_000_000
        return messages < limits.maxMessagesPerConnection && age < limits.maxAgeMilliseconds
    }

    func start(_ transaction: any PoolTransaction) {
        idleTimer?.cancel()
        self.transaction = transaction
        send()
    }

    private func send() {
        guard let connection, let transaction else { return }
        messages += 1
        transaction.poolStarted(on: pool.hop)
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
           starts the waiting transaction; later ones are the pool's business. */
        guard !ready else { return }
        ready = true
        send()
    }

    func clientConnection(_ connection: ClientConnection, completed result: TransactionResult, tag: Int, nanoseconds: UInt64) {
        let transaction = self.transaction
        self.transaction = nil
        transaction?.poolCompleted(result, hop: pool.hop)
        if connection.isUsable { pool.checkin(self) }
    }

    func clientConnectionClosed(_ connection: ClientConnection, error: ClientConnectionError?) {
        idleTimer?.close()
        idleTimer = nil
        pool.closed(self)
        self.connection = nil
        if let transaction {
            /* It never got as far as sending (the messages sent were reported completed). */
            self.transaction = nil
            transaction.poolFailed(error, hop: pool.hop)
        }
    }
}
