// ServerConnection.swift - a ServerSession driven over an accepted TCP (and TLS) stream
//
// The protocol lives in SMTP.ServerSession; this class carries out what it
// asks (write replies, upgrade to TLS, arm the idle timer, close) and hands
// finished messages to a delegate that stores them and answers later. While
// a message is with the delegate nothing more is taken, and if the client
// sends more meanwhile the stream stops reading, so a client that pipelines
// the next commands waits in the kernel's buffers, not in ours. A
// delegate that answers at once (the test sink) keeps the session going
// through the rest of the same read, and every reply to one read leaves in
// one write: a pipelining client then costs one read and one write per
// batch, not a write per reply and a pause of the socket per message.
// The test sink adds a reply delay (a tarpit) here, so its replies keep their
// order and STARTTLS still follows its 220.

public import Dispatch
public import EventCore
public import SMTP

/// What a `ServerConnection` needs besides the session configuration.
///
/// A value; safe to send between threads.
public struct ServerConnectionConfiguration: Sendable {
    /// The SMTP side: what is offered and demanded.
    public var session: ServerConfiguration
    /// The server TLS context for STARTTLS or implicit TLS; nil means no TLS.
    public var tls: TLSContext?
    /// TLS from the first byte (port 465) instead of STARTTLS.
    public var implicitTLS = false
    /// Hold every reply back this long (fault injection: a slow server).
    public var replyDelayMilliseconds: UInt64 = 0
    /// How long a TLS handshake may take.
    public var tlsHandshakeTimeoutMilliseconds: UInt64 = 30_000
    /// Where PLAIN and LOGIN passwords are checked against the credential store: a store
    /// of salted hashes derives a key with PBKDF2 for each check (milliseconds), which
    /// would hold up every other session of the loop. Nil checks on the loop thread (a
    /// store of plain passwords, like the test sink's).
    public var passwordQueue: DispatchQueue?

    public init(session: ServerConfiguration) {
        self.session = session
    }
}

/// Hears what a `ServerConnection` does, on its loop thread.
public protocol ServerConnectionDelegate: AnyObject {
    /// A message is complete. Store it, then call `answer` on the connection
    /// (now or later, on this thread) with 250 or the refusal.
    func serverConnection(_ connection: ServerConnection, received message: ReceivedMessage)
    /// Bytes were read and handled (the sink's mid-DATA disconnects look at `isReceivingData` here).
    func serverConnectionDidRead(_ connection: ServerConnection)
    /// AUTH succeeded.
    func serverConnection(_ connection: ServerConnection, authenticated user: String)
    /// The connection is closed.
    func serverConnectionClosed(_ connection: ServerConnection)
}

extension ServerConnectionDelegate {
    public func serverConnectionDidRead(_ connection: ServerConnection) {}
    public func serverConnection(_ connection: ServerConnection, authenticated user: String) {}
}

/// One accepted SMTP connection on one loop.
///
/// Confined to its loop's thread; keeps itself alive while open (its stream's
/// handler is this object).
public final class ServerConnection: ByteStreamHandler {
    /// An action held back by the reply delay.
    private enum Deferred {
        case send(ByteBuffer)
        case startTLS
        case close
    }

    public let loop: Loop
    public weak var delegate: (any ServerConnectionDelegate)?
    public let configuration: ServerConnectionConfiguration
    /// The client's address.
    public let remoteAddress: SocketAddress?
    private var session: ServerSession
    private let credentials: (any SMTPCredentialStore)?
    private var stream: any ByteStream
    private let tcp: TCPConnection
    private let timer: LoopTimer
    private var actions: [ServerAction] = []        /* reused for every event */
    private var held: [(due: UInt64, action: Deferred)] = []   /* delayed, in order */
    private var delayTimer: LoopTimer?
    private var closed = false
    private var performing = false                  /* inside perform(): nested events just queue */
    private var awaitingAnswer = false              /* a message is with the delegate */
    private var readingPaused = false               /* reading stopped until the delegate answers */
    private var peerFinished = false                /* the client half-closed while its message was stored */
    private var batching = false                    /* inside streamRead(): replies wait for one write */
    private var batch: [ByteBuffer] = []            /* replies of this read, written together */

    /// start - take over an accepted connection and greet (after the TLS handshake for implicit TLS).
    @discardableResult
    public static func start(
        _ tcp: TCPConnection, configuration: ServerConnectionConfiguration, policy: any ServerPolicy,
        credentials: (any SMTPCredentialStore)?, crypto: any SASLCrypto, delegate: any ServerConnectionDelegate
    ) -> ServerConnection {
        let connection = ServerConnection(tcp, configuration: configuration, policy: policy,
                                          credentials: credentials, crypto: crypto)
        connection.delegate = delegate
        connection.begin()
        return connection
    }

    private init(_ tcp: TCPConnection, configuration: ServerConnectionConfiguration, policy: any ServerPolicy,
                 credentials: (any SMTPCredentialStore)?, crypto: any SASLCrypto) {
        self.loop = tcp.loop
        self.tcp = tcp
        self.stream = tcp
        self.configuration = configuration
        self.remoteAddress = tcp.remoteAddress
        self.credentials = credentials
        self.session = ServerSession(configuration: configuration.session, policy: policy,
                                     credentials: credentials, crypto: crypto)
        self.timer = LoopTimer(loop: tcp.loop)
        actions.reserveCapacity(16)
    }

    private func begin() {
        guard configuration.implicitTLS, let context = configuration.tls else {
            attach(tcp)
            session.start(into: &actions)
            perform()
            return
        }
        tcp.handler = self
        TLSConnection.server(over: tcp, context: context,
                             handshakeTimeoutMilliseconds: configuration.tlsHandshakeTimeoutMilliseconds) { [self] result in
            guard case .success(let tls) = result else { return finish() }
            attach(tls)
            session.start(implicitTLS: true, into: &actions)
            perform()
        }
    }

    private func attach(_ stream: any ByteStream) {
        self.stream = stream
        stream.handler = self
        stream.startReading()
    }

    /// True while message octets are being read (DATA or BDAT).
    public var isReceivingData: Bool { session.isReceivingData }

    /// True once TLS is up.
    public var isTLS: Bool { session.isTLS }

    /// answer - the delegate's decision about the message it was given: 250, or a refusal.
    public func answer(_ reply: Reply) {
        guard !closed else { return }
        awaitingAnswer = false
        if reply.isPositiveCompletion {
            session.messageAccepted(reply, into: &actions)
        } else {
            session.messageRejected(reply, into: &actions)
        }
        perform()
        resume()
    }

    /// resume - after an answer (a stored message, a checked password): input the client
    /// pipelined meanwhile is shown again on the next turn, or, when the client half-closed
    /// meanwhile, the reply goes out, then FIN.
    private func resume() {
        if peerFinished {
            /* The client sent its end of stream after the message: it still gets the reply
               (written after the queued ones, then FIN), and the connection closes after. */
            stream.shutdownWrite()
            timer.schedule(after: 5_000) { [unowned self] _ in stream.close() }
            return
        }
        /* On the next turn, input the client pipelined meanwhile is shown again. */
        if readingPaused {
            readingPaused = false
            stream.startReading()
        }
    }

    /// close - drop the connection now (fault injection, shutdown).
    public func close() {
        stream.close()
    }

    // MARK: Actions

    /// perform - carry out the session's actions in order.
    ///
    /// The delegate may answer a message from inside `received` (a sink does);
    /// the session then appends to the same action list and this loop goes on.
    private func perform() {
        guard !performing else { return }
        performing = true
        defer { performing = false }
        var index = 0
        while index < actions.count {
            let action = actions[index]
            index += 1
            switch action {
            case .send(let buffer): carryOut(.send(buffer))
            case .startTLS: carryOut(.startTLS)
            case .close: carryOut(.close)
            case .armTimer(let milliseconds):
                timer.schedule(after: milliseconds) { [unowned self] _ in
                    session.timeoutFired(into: &actions)
                    perform()
                }
            case .cancelTimer:
                timer.cancel()
            case .deliver(let message):
                awaitingAnswer = true
                delegate?.serverConnection(self, received: message)
                /* Nothing more is taken until the delegate answers. Reading stops only when the
                   client sends more meanwhile (see streamRead): a client that waits for its 250,
                   as most do, costs no stop and restart of the socket per message. */
            case .authenticated(let user):
                delegate?.serverConnection(self, authenticated: user)
            case .verifyPassword(let username, let password):
                checkPassword(username: username, password: password)
            }
        }
        actions.removeAll(keepingCapacity: true)
    }

    /// checkPassword - on the loop thread, or on the password queue with reading stopped
    /// as for a message being stored; the answer comes back through the loop's job mailbox.
    private func checkPassword(username: String, password: String) {
        guard let store = credentials else { return session.passwordChecked(false, into: &actions) }
        guard let queue = configuration.passwordQueue else {
            return session.passwordChecked(store.verify(username: username, password: password), into: &actions)
        }
        awaitingAnswer = true
        let route = AnswerRoute(self)
        queue.async {
            let valid = store.verify(username: username, password: password)
            route.loop.execute { _ in route.connection?.passwordChecked(valid) }
        }
    }

    /// passwordChecked - the password queue's verdict, on the loop thread.
    private func passwordChecked(_ valid: Bool) {
        guard !closed else { return }
        awaitingAnswer = false
        session.passwordChecked(valid, into: &actions)
        perform()
        resume()
    }

    /// carryOut - do a write, upgrade or close now, or after the reply delay (keeping the order).
    private func carryOut(_ action: Deferred) {
        let delay = configuration.replyDelayMilliseconds
        guard delay > 0 else { return execute(action) }
        let due = loop.now + delay
        held.append((due, action))
        if held.count == 1 {
            let timer = delayTimer ?? LoopTimer(loop: loop)
            delayTimer = timer
            timer.schedule(after: delay) { [unowned self] _ in releaseHeld() }
        }
    }

    /// releaseHeld - do the held actions whose time came; wait for the next one.
    private func releaseHeld() {
        let now = loop.now
        var released = 0
        while released < held.count && held[released].due <= now {
            let action = held[released].action
            released += 1
            execute(action)
        }
        held.removeFirst(released)
        if let next = held.first { delayTimer?.schedule(after: next.due - now) { [unowned self] _ in releaseHeld() } }
    }

    private func execute(_ action: Deferred) {
        switch action {
        case .send(let buffer):
            if batching { batch.append(buffer) } else { stream.write(buffer) }
        case .close:
            writeBatch()
            stream.close()
        case .startTLS:
            writeBatch()
            guard let context = configuration.tls else { return stream.close() }
            TLSConnection.server(over: tcp, context: context,
                                 handshakeTimeoutMilliseconds: configuration.tlsHandshakeTimeoutMilliseconds) { [self] result in
                guard case .success(let tls) = result else { return finish() }
                attach(tls)
                session.tlsEstablished(into: &actions)
                perform()
            }
        }
    }

    /// writeBatch - write the replies collected during this read, as one vectored write.
    private func writeBatch() {
        guard !batch.isEmpty else { return }
        if batch.count == 1 { stream.write(batch[0]) } else { stream.write(contentsOf: batch) }
        batch.removeAll(keepingCapacity: true)
    }

    private func finish() {
        guard !closed else { return }
        closed = true
        timer.close()
        delayTimer?.close()
        delegate?.serverConnectionClosed(self)
    }

    // MARK: ByteStreamHandler

    public func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        /* Every reply to this read goes out in one write (RFC 2920 §3.2), even across messages. */
        batching = true
        var consumed = 0
        while true {
            let used = session.receive(UnsafeRawBufferPointer(rebasing: bytes[consumed...]), into: &actions)
            consumed += used
            perform()
            /* A message answered inside `received` (a sink does) leaves the session ready for the
               rest of this read. Go on with it here: the stream keeps the rest only after we
               return, so the answer's startReading() cannot show it again, and a client that
               pipelined its next transaction would wait for replies that never come. */
            guard used > 0, consumed < bytes.count, self.stream.isOpen else { break }
        }
        batching = false
        writeBatch()
        if awaitingAnswer && consumed < bytes.count && !readingPaused {
            /* Input pipelined behind a message being stored: keep it (at most this read) and
               read no more until the answer, so the rest waits in the kernel, not with us. */
            readingPaused = true
            stream.stopReading()
        }
        delegate?.serverConnectionDidRead(self)
        return consumed
    }

    public func streamReadEOF(_ stream: any ByteStream) {
        /* A client may half-close right after its final dot: a message being stored is still answered. */
        if awaitingAnswer {
            peerFinished = true
            return
        }
        stream.close()
    }

    public func streamClosed(_ stream: any ByteStream, error: (any Error)?) {
        finish()
    }
}

/// A connection's way back from the password queue: the queue holds it, only the loop
/// thread reads `connection`, and the reference is weak, so a connection that closed
/// meanwhile is never released off its loop.
private final class AnswerRoute: @unchecked Sendable {
    weak var connection: ServerConnection?
    let loop: Loop

    init(_ connection: ServerConnection) {
        self.connection = connection
        loop = connection.loop
    }
}
