// ClientConnection.swift - a ClientSession driven over a TCP (and TLS) stream
//
// The protocol lives in SMTP.ClientSession; this class only carries out what
// the session asks: write buffers, upgrade the stream to TLS, arm the timer,
// close. The delivery engine's connection pools and the load generator both
// send mail through it, so it also reports when each stage of the handshake
// finished (connect, banner, EHLO, TLS, AUTH) for latency histograms.

public import EventCore
public import SMTP

/// What a `ClientConnection` needs besides the session configuration.
///
/// A value; safe to send between threads.
public struct ClientConnectionConfiguration: Sendable {
    /// The SMTP side: EHLO name, STARTTLS policy, credentials, timeouts.
    public var session: ClientConfiguration
    /// The TLS context for STARTTLS or implicit TLS; nil means no TLS at all.
    public var tls: TLSContext?
    /// Start TLS at connect (port 465 style) instead of with STARTTLS.
    public var implicitTLS = false
    /// The name checked against the server's certificate and sent as SNI.
    public var serverName: String?
    /// Where resumable TLS sessions are kept, per destination.
    public var tlsSessionCache: TLSSessionCache?
    /// The local address to connect from (source-IP pools).
    public var source: SocketAddress?
    /// How long a TCP connect may take.
    public var connectTimeoutMilliseconds: UInt64 = 30_000
    /// How long a TLS handshake may take.
    public var tlsHandshakeTimeoutMilliseconds: UInt64 = 30_000

    public init(session: ClientConfiguration) {
        self.session = session
    }
}

/// Stages of a connection, reported as each one ends.
public enum ClientConnectionStage: String, Sendable {
    case connect        /* TCP connected */
    case banner         /* the 220 greeting arrived */
    case ehlo           /* EHLO (or HELO) answered */
    case tlsHandshake   /* TLS is up (STARTTLS or implicit) */
    case authentication /* AUTH succeeded */
    case ready          /* open for mail */
}

/// Why a client connection ended before it was asked to close.
public enum ClientConnectionError: Error, Sendable, CustomStringConvertible {
    case connect(IOError)
    case tls(TLSError)
    case session(ClientSessionError)

    public var description: String {
        switch self {
        case .connect(let error): return "connect: \(error)"
        case .tls(let error): return "\(error)"
        case .session(let error): return "\(error)"
        }
    }
}

/// Hears what a `ClientConnection` does, on its loop thread.
public protocol ClientConnectionDelegate: AnyObject {
    /// A handshake stage finished, `nanoseconds` after the previous one (or after the connect started).
    func clientConnection(_ connection: ClientConnection, finished stage: ClientConnectionStage, nanoseconds: UInt64)
    /// The connection is idle and can take a message.
    func clientConnectionReady(_ connection: ClientConnection)
    /// The message handed over with `tag` is done, `nanoseconds` after `send` was called.
    func clientConnection(_ connection: ClientConnection, completed result: TransactionResult, tag: Int, nanoseconds: UInt64)
    /// The connection closed; `error` is nil after QUIT or `close()`.
    func clientConnectionClosed(_ connection: ClientConnection, error: ClientConnectionError?)
}

/// One outgoing SMTP connection on one loop.
///
/// Confined to its loop's thread. Keeps itself alive while the connection is
/// open (its stream's handler is this object). Messages handed over with
/// `send` are reported back with their tags (not always in the order sent); after a failure every
/// message still in flight is reported (deferred) before `clientConnectionClosed`.
public final class ClientConnection: ByteStreamHandler {
    public let loop: Loop
    public weak var delegate: (any ClientConnectionDelegate)?
    public let configuration: ClientConnectionConfiguration
    public let address: SocketAddress
    private var session: ClientSession
    private var stream: (any ByteStream)?
    private var connecting: TCPConnection?          /* the TCP connect in progress */
    private let timer: LoopTimer
    private var actions: [ClientAction] = []        /* reused for every event */
    private var outgoing: [ByteBuffer] = []         /* writes gathered during one perform() */
    private var tags: [UInt64: (tag: Int, sent: UInt64)] = [:]  /* in flight, by message reference */
    private var nextReference: UInt64 = 1
    private var stageStart: UInt64                  /* when the current stage began */
    private var reportedStage = ClientSession.Stage.greeting
    private var failure: ClientConnectionError?
    private var closed = false
    private var performing = false                  /* inside perform(): nested events just queue */

    /// connect - open a connection to `address` and run the SMTP handshake.
    public static func connect(
        loop: Loop, to address: SocketAddress, configuration: ClientConnectionConfiguration,
        crypto: any SASLCrypto, delegate: any ClientConnectionDelegate
    ) -> ClientConnection {
        let connection = ClientConnection(loop: loop, address: address, configuration: configuration, crypto: crypto)
        connection.delegate = delegate
        connection.connecting = TCPConnection.connect(loop: loop, to: address, from: configuration.source,
                              timeoutMilliseconds: configuration.connectTimeoutMilliseconds) { result in
            switch result {
            case .success(let tcp): connection.connected(tcp)
            case .failure(let error): connection.finish(.connect(error))
            }
        }
        return connection
    }

    private init(loop: Loop, address: SocketAddress, configuration: ClientConnectionConfiguration, crypto: any SASLCrypto) {
        self.loop = loop
        self.address = address
        self.configuration = configuration
        self.session = ClientSession(configuration: configuration.session, crypto: crypto)
        self.timer = LoopTimer(loop: loop)
        self.stageStart = MonotonicClock.nanoseconds()
        actions.reserveCapacity(16)
        outgoing.reserveCapacity(8)
    }

    /// True while the session can take messages (not failed, not quitting).
    public var isUsable: Bool { !closed && session.isUsable }

    /// True when ready with nothing in flight.
    public var isIdle: Bool { !closed && session.isIdle }

    /// Messages handed over and not yet reported.
    public var inFlight: Int { tags.count }

    /// What the server offered (after EHLO).
    public var capabilities: Capabilities? { session.capabilities }

    /// True when TLS is up and its handshake resumed a session kept from an earlier connection.
    public var isTLSSessionReused: Bool { (stream as? TLSConnection)?.isSessionReused == true }

    /// send - hand over one message; it is reported back with `tag`.
    public func send(_ message: OutboundMessage, tag: Int) {
        var message = message
        message.reference = nextReference
        nextReference += 1
        tags[message.reference] = (tag, MonotonicClock.nanoseconds())
        session.send(message, into: &actions)
        perform()
    }

    /// quit - say QUIT once the messages in flight are done, then close.
    public func quit() {
        session.quit(into: &actions)
        perform()
    }

    /// close - drop the connection now; messages in flight are reported deferred.
    public func close() {
        if let connecting {
            /* The connect completes with ECANCELED and reports then. */
            connecting.close()
        } else if let stream, stream.isOpen {
            stream.close()
        } else {
            finish(failure)
        }
    }

    // MARK: Connection

    private func connected(_ tcp: TCPConnection) {
        connecting = nil
        report(.connect)
        guard configuration.implicitTLS else {
            attach(tcp)
            session.start(into: &actions)
            perform()
            return
        }
        guard let context = configuration.tls else {
            /* Implicit TLS without a TLS context: never talk in plaintext instead. */
            tcp.close()
            finish(.tls(.configuration("implicit TLS is configured but no TLS context could be made")))
            return
        }
        stream = tcp
        TLSConnection.client(over: tcp, context: context, serverName: configuration.serverName,
                             sessionCache: configuration.tlsSessionCache, sessionKey: sessionKey,
                             handshakeTimeoutMilliseconds: configuration.tlsHandshakeTimeoutMilliseconds) { [self] result in
            switch result {
            case .success(let tls):
                report(.tlsHandshake)
                attach(tls)
                session.start(implicitTLS: true, into: &actions)
                perform()
            case .failure(let error):
                finish(.tls(error))
            }
        }
    }

    /// Where a resumable TLS session of this connection is kept: the server's address and
    /// the name it is checked against (an address serves one certificate per port).
    private var sessionKey: String { "\(address)|\(configuration.serverName ?? "")" }

    private func attach(_ stream: any ByteStream) {
        self.stream = stream
        stream.handler = self
        stream.startReading()
    }

    /// upgrade - the session said STARTTLS and got 220: run the TLS handshake.
    private func upgrade() {
        guard let tcp = stream, let context = configuration.tls else {
            failure = failure ?? .tls(.configuration("STARTTLS was agreed but no TLS context could be made"))
            session.connectionClosed(into: &actions)
            perform()
            /* The session ends quietly here (nothing was in flight): close the stream, whose
               end then finishes us, or finish now when there is none. */
            if let stream, stream.isOpen { stream.close() } else { finish(failure) }
            return
        }
        TLSConnection.client(over: tcp, context: context, serverName: configuration.serverName,
                             sessionCache: configuration.tlsSessionCache, sessionKey: sessionKey,
                             handshakeTimeoutMilliseconds: configuration.tlsHandshakeTimeoutMilliseconds) { [self] result in
            switch result {
            case .success(let tls):
                report(.tlsHandshake)
                attach(tls)
                session.tlsEstablished(into: &actions)
                perform()
            case .failure(let error):
                failure = .tls(error)
                session.connectionClosed(into: &actions)
                perform()
                /* The TLS connection had taken the socket's events and closed it: that end
                   never reaches us, so report it here. */
                finish(failure)
            }
        }
    }

    // MARK: Actions

    /// perform - carry out the session's actions in order.
    ///
    /// A delegate may call `send` or `quit` from a callback made here; the
    /// session then appends to the same action list and this loop goes on.
    /// Writes are gathered and go out together when the actions run out (or
    /// before TLS starts or the stream closes): a message's final dot and the
    /// next transaction's commands, started by the delegate on hearing of the
    /// previous one, leave in one system call.
    private func perform() {
        guard !performing else { return }
        performing = true
        defer { performing = false }
        var index = 0
        while index < actions.count {
            let action = actions[index]
            index += 1
            switch action {
            case .send(let buffers):
                outgoing.append(contentsOf: buffers)
            case .startTLS:
                flush()
                upgrade()
            case .armTimer(_, let milliseconds):
                timer.schedule(after: milliseconds) { [unowned self] _ in
                    session.timeoutFired(into: &actions)
                    perform()
                }
            case .cancelTimer:
                timer.cancel()
            case .ready:
                delegate?.clientConnectionReady(self)
            case .completed(let result):
                /* By reference, not by order: a message refused before it is sent (over
                   SIZE, needing SMTPUTF8) or sent again without AUTH= overtakes one in flight. */
                guard let (tag, sent) = tags.removeValue(forKey: result.reference) else {
                    preconditionFailure("a transaction result for a message never handed over (\(result.reference))")
                }
                delegate?.clientConnection(self, completed: result, tag: tag, nanoseconds: MonotonicClock.nanoseconds() - sent)
            case .failed(let error):
                failure = failure ?? .session(error)
            case .close:
                /* An open stream reports its closing (then we finish); a dead one cannot. */
                flush()
                if let stream, stream.isOpen { stream.close() } else { finish(failure) }
            }
            noteStage()
        }
        actions.removeAll(keepingCapacity: true)
        flush()
    }

    /// flush - write what perform() gathered, in one call.
    private func flush() {
        guard !outgoing.isEmpty else { return }
        if outgoing.count == 1 { stream?.write(outgoing[0]) } else { stream?.write(contentsOf: outgoing) }
        outgoing.removeAll(keepingCapacity: true)
    }

    /// noteStage - report each handshake stage the session just left behind.
    private func noteStage() {
        let stage = session.stage
        guard stage != reportedStage else { return }
        switch (reportedStage, stage) {
        case (.greeting, .ehlo): report(.banner)
        case (.ehlo, .startTLS), (.ehlo, .authentication), (.ehlo, .ready): report(.ehlo)
        default: break
        }
        if reportedStage == .authentication && stage == .ready { report(.authentication) }
        if stage == .ready && reportedStage != .ready { report(.ready) }
        reportedStage = stage
    }

    private func report(_ stage: ClientConnectionStage) {
        let now = MonotonicClock.nanoseconds()
        delegate?.clientConnection(self, finished: stage, nanoseconds: now - stageStart)
        stageStart = now
    }

    /// finish - report the end once.
    private func finish(_ error: ClientConnectionError?) {
        guard !closed else { return }
        closed = true
        timer.close()
        delegate?.clientConnectionClosed(self, error: error)
    }

    // MARK: ByteStreamHandler

    public func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        let consumed = session.receive(bytes, into: &actions)
        perform()
        return consumed
    }

    public func streamReadEOF(_ stream: any ByteStream) {
        session.connectionClosed(into: &actions)
        perform()
        stream.close()
    }

    public func streamClosed(_ stream: any ByteStream, error: (any Error)?) {
        guard stream === self.stream else { return }
        session.connectionClosed(into: &actions)
        perform()
        finish(failure)
    }
}
