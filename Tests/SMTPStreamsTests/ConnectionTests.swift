// ConnectionTests.swift - ClientConnection and ServerConnection over real loopback sockets

import CarrierTesting
import Dispatch
import EventCore
import SMTP
import SMTPStreams
import Testing

private let authority = try! TLSCertificate.makeAuthority(commonName: "SMTPStreams Test CA")
private let serverIdentity = try! authority.issue(commonName: "localhost", dnsNames: ["localhost"])

/// Stores every message and answers 250 at once (or after `delay` ms); loop-confined.
private final class Receiver: ServerConnectionDelegate {
    let received: TestCounter
    let bodies: TestLog<String>
    let users: TestLog<String>
    let delay: UInt64
    var connections: [ObjectIdentifier: ServerConnection] = [:]

    init(received: TestCounter, bodies: TestLog<String>, users: TestLog<String>, delay: UInt64 = 0) {
        self.received = received
        self.bodies = bodies
        self.users = users
        self.delay = delay
    }

    func serverConnection(_ connection: ServerConnection, received message: ReceivedMessage) {
        bodies.append(String(decoding: message.body.readableByteArray, as: UTF8.self))
        received.add()
        let reply = Reply(code: 250, enhanced: EnhancedStatus(2, 0, 0), text: "2.0.0 Ok: queued")
        guard delay > 0 else { return connection.answer(reply) }
        LoopTimer(loop: connection.loop).schedule(after: delay) { timer in
            connection.answer(reply)
            timer.close()
        }
    }
    func serverConnection(_ connection: ServerConnection, authenticated user: String) {
        users.append(user)
    }
    func serverConnectionClosed(_ connection: ServerConnection) {
        connections[ObjectIdentifier(connection)] = nil
    }
}

/// Sends `count` messages as the connection becomes ready, then quits; loop-confined.
/// A connection holds its delegate weakly: a Sender retains itself until closed.
private final class Sender: ClientConnectionDelegate {
    private var retainedUntilClosed: Sender?
    let count: Int
    var sent = 0
    var results: [RecipientResult.Disposition] = []
    var stages: [ClientConnectionStage] = []
    var resumed = false
    let done: (Sender, ClientConnectionError?) -> Void

    init(count: Int, done: @escaping (Sender, ClientConnectionError?) -> Void) {
        self.count = count
        self.done = done
        retainedUntilClosed = self
    }

    func clientConnection(_ connection: ClientConnection, finished stage: ClientConnectionStage, nanoseconds: UInt64) {
        stages.append(stage)
    }
    func clientConnectionReady(_ connection: ClientConnection) {
        if connection.isTLSSessionReused { resumed = true }
        guard sent < count else { return connection.quit() }
        /* Hand over everything at once: pipelining sends them back to back. */
        while sent < count {
            let body = Array("Subject: message \(sent)\r\n\r\nBody \(sent).\r\n.leading dot\r\n".utf8)
            let payload = try! body.withUnsafeBytes { try MessagePayload(encoding: $0) }
            let message = OutboundMessage(sender: try! ReversePath(parsing: "sender@example.test"),
                                          recipients: [try! MailAddress(parsing: "r\(sent)@localhost")], payload: payload)
            connection.send(message, tag: sent)
            sent += 1
        }
    }
    func clientConnection(_ connection: ClientConnection, completed result: TransactionResult, tag: Int, nanoseconds: UInt64) {
        results += result.recipients.map(\.disposition)
    }
    func clientConnectionClosed(_ connection: ClientConnection, error: ClientConnectionError?) {
        done(self, error)
        retainedUntilClosed = nil
    }
}

/// Sends one message per entry of `bodies` (a body of that many octets, tag = its index)
/// when the connection is first ready, then quits; reports each tag's dispositions.
/// Loop-confined; retains itself until closed.
private final class TaggedSender: ClientConnectionDelegate {
    private var retainedUntilClosed: TaggedSender?
    let bodies: [Int]
    var started = false
    var results: [Int: [RecipientResult.Disposition]] = [:]
    let done: ([Int: [RecipientResult.Disposition]]) -> Void

    init(bodies: [Int], done: @escaping ([Int: [RecipientResult.Disposition]]) -> Void) {
        self.bodies = bodies
        self.done = done
        retainedUntilClosed = self
    }

    func clientConnection(_ connection: ClientConnection, finished stage: ClientConnectionStage, nanoseconds: UInt64) {}
    func clientConnectionReady(_ connection: ClientConnection) {
        guard !started else { return connection.quit() }
        started = true
        for (tag, size) in bodies.enumerated() {
            let lines = (0..<(size / 100)).map { _ in String(repeating: "x", count: 98) + "\r\n" }.joined()
            let body = Array("Subject: \(tag)\r\n\r\n\(lines)".utf8)
            let payload = try! body.withUnsafeBytes { try MessagePayload(encoding: $0) }
            connection.send(OutboundMessage(sender: try! ReversePath(parsing: "sender@example.test"),
                                            recipients: [try! MailAddress(parsing: "r\(tag)@localhost")], payload: payload), tag: tag)
        }
    }
    func clientConnection(_ connection: ClientConnection, completed result: TransactionResult, tag: Int, nanoseconds: UInt64) {
        results[tag] = result.recipients.map(\.disposition)
    }
    func clientConnectionClosed(_ connection: ClientConnection, error: ClientConnectionError?) {
        done(results)
        retainedUntilClosed = nil
    }
}

/// startServer - a listener on 127.0.0.1 (any port) on `thread`, each connection going to
/// a Receiver that counts into `received`, `bodies` and `users`; its address.
private func startServer(on thread: LoopThread, _ configuration: ServerConnectionConfiguration,
                         credentials: (any SMTPCredentialStore)? = nil, received: TestCounter,
                         bodies: TestLog<String> = TestLog<String>(), users: TestLog<String> = TestLog<String>()) throws -> SocketAddress {
    let port = TestWaiter<UInt16>()
    thread.execute { loop in
        let crypto = OpenSSLCrypto()
        let receiver = Receiver(received: received, bodies: bodies, users: users)
        let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { tcp in
            let connection = ServerConnection.start(tcp, configuration: configuration, policy: AcceptAllPolicy(),
                                                    credentials: credentials, crypto: crypto, delegate: receiver)
            receiver.connections[ObjectIdentifier(connection)] = connection
        }
        port.fulfill(listener.localAddress.port)
    }
    return SocketAddress(ip: IPAddress("127.0.0.1")!, port: try #require(port.wait(seconds: 10)))
}

@Suite("SMTP over sockets")
struct ConnectionTests {
    /// STARTTLS, SCRAM-SHA-256 and pipelined messages between the two drivers; every body arrives.
    @Test(arguments: [false, true])
    func messagesArriveOverTLSWithAuth(implicitTLS: Bool) throws {
        let server = try LoopThread.start(name: "smtp-server")
        let client = try LoopThread.start(name: "smtp-client")
        defer {
            client.stopAndJoin()
            server.stopAndJoin()
        }
        let received = TestCounter()
        let bodies = TestLog<String>()
        let users = TestLog<String>()
        var session = ServerConfiguration(hostname: "localhost")
        session.startTLSAvailable = !implicitTLS
        session.requireTLS = true
        session.requireAuthentication = true
        session.authMechanisms = [.scramSHA256, .plain]
        var configuration = ServerConnectionConfiguration(session: session)
        configuration.tls = try TLSContext.server(TLSServerConfiguration(identity: .pem(serverIdentity)))
        configuration.implicitTLS = implicitTLS
        let store = StaticCredentialStore(passwords: ["alice": "s3cret"], crypto: OpenSSLCrypto())
        let serverPort = try startServer(on: server, configuration, credentials: store, received: received, bodies: bodies, users: users).port
        let outcome = TestWaiter<(results: [RecipientResult.Disposition], stages: [ClientConnectionStage], error: String?)>()
        client.execute { loop in
            var session = ClientConfiguration(heloName: "client.test")
            session.tls = .required
            session.credentials = .password("alice", "s3cret")
            var configuration = ClientConnectionConfiguration(session: session)
            var tls = TLSClientConfiguration()
            tls.trustRoots = .pem(authority.certificatePEM)
            configuration.tls = try! TLSContext.client(tls)
            configuration.implicitTLS = implicitTLS
            configuration.serverName = "localhost"
            let sender = Sender(count: 20) { sender, error in
                outcome.fulfill((sender.results, sender.stages, error.map { "\($0)" }))
            }
            _ = ClientConnection.connect(loop: loop, to: SocketAddress(ip: IPAddress("127.0.0.1")!, port: serverPort),
                                         configuration: configuration, crypto: OpenSSLCrypto(), delegate: sender)
        }
        let result = try #require(outcome.wait(seconds: 30))
        #expect(result.error == nil)
        #expect(result.results.count == 20)
        #expect(result.results.allSatisfy { $0 == .delivered })
        /* STARTTLS means two EHLOs; implicit TLS shakes hands before the banner. */
        #expect(result.stages == (implicitTLS
            ? [.connect, .tlsHandshake, .banner, .ehlo, .authentication, .ready]
            : [.connect, .banner, .ehlo, .tlsHandshake, .ehlo, .authentication, .ready]))
        #expect(received.value == 20)
        #expect(users.elements == ["alice"])
        let arrived = bodies.elements
        #expect(arrived.contains("Subject: message 7\r\n\r\nBody 7.\r\n.leading dot\r\n"))
    }

    /// A PLAIN password checked on the password queue does not hold up the loop: while one
    /// client's check is stuck, another client on the same loop sends a message; then the
    /// check ends and the first client authenticates and sends its own.
    @Test func aSlowPasswordCheckDoesNotStallTheLoop() throws {
        let server = try LoopThread.start(name: "smtp-server")
        let client = try LoopThread.start(name: "smtp-client")
        let store = BlockingStore(password: "s3cret")
        defer {
            store.release.signal()
            client.stopAndJoin()
            server.stopAndJoin()
        }
        let received = TestCounter()
        let users = TestLog<String>()
        var session = ServerConfiguration(hostname: "localhost")
        session.authMechanisms = [.plain]
        session.allowPlaintextAuthentication = true
        var configuration = ServerConnectionConfiguration(session: session)
        configuration.passwordQueue = DispatchQueue(label: "test-passwords")
        let address = try startServer(on: server, configuration, credentials: store, received: received, users: users)
        let first = TestWaiter<[RecipientResult.Disposition]>()
        let second = TestWaiter<[RecipientResult.Disposition]>()
        client.execute { loop in
            var session = ClientConfiguration(heloName: "client.test")
            session.tls = .never
            session.credentials = .password("alice", "s3cret")
            session.allowPlaintextAuthentication = true
            session.mechanisms = [.plain]
            _ = ClientConnection.connect(loop: loop, to: address, configuration: ClientConnectionConfiguration(session: session),
                                         crypto: OpenSSLCrypto(), delegate: Sender(count: 1) { sender, _ in first.fulfill(sender.results) })
        }
        #expect(store.entered.wait(seconds: 10) != nil, "the password check started")
        client.execute { loop in
            var session = ClientConfiguration(heloName: "other.test")
            session.tls = .never
            _ = ClientConnection.connect(loop: loop, to: address, configuration: ClientConnectionConfiguration(session: session),
                                         crypto: OpenSSLCrypto(), delegate: Sender(count: 1) { sender, _ in second.fulfill(sender.results) })
        }
        #expect(second.wait(seconds: 10) == [.delivered], "the other client was served while the check was stuck")
        #expect(received.value == 1 && users.elements.isEmpty)
        store.release.signal()
        #expect(first.wait(seconds: 10) == [.delivered])
        #expect(users.elements == ["alice"])
        #expect(received.value == 2)
    }

    /// Two messages handed over together, the second over the server's SIZE: the second is
    /// refused before it is sent, while the first is still in flight, and each result comes
    /// back with its own tag (they were matched by order, so the first got the second's
    /// bounce and the second the first's delivery).
    @Test func aMessageRefusedBeforeSendingKeepsItsOwnTag() throws {
        let server = try LoopThread.start(name: "smtp-server")
        let client = try LoopThread.start(name: "smtp-client")
        defer {
            client.stopAndJoin()
            server.stopAndJoin()
        }
        let received = TestCounter()
        var session = ServerConfiguration(hostname: "localhost")
        session.maximumMessageSize = 2_000
        let address = try startServer(on: server, ServerConnectionConfiguration(session: session), received: received)
        let outcome = TestWaiter<[Int: [RecipientResult.Disposition]]>()
        client.execute { loop in
            let delegate = TaggedSender(bodies: [100, 3_000]) { results in outcome.fulfill(results) }
            _ = ClientConnection.connect(loop: loop, to: address, configuration: ClientConnectionConfiguration(session: ClientConfiguration(heloName: "client.test")),
                                         crypto: OpenSSLCrypto(), delegate: delegate)
        }
        let results = try #require(outcome.wait(seconds: 10))
        #expect(results[0] == [.delivered], "\(results)")
        #expect(results[1] == [.bounced], "\(results)")
        #expect(received.value == 1)
    }

    /// A STARTTLS handshake that fails (here: the server's certificate is not trusted) ends
    /// the connection with a TLS error, reported to the delegate, with nothing sent in
    /// plaintext. (The TLS layer had taken over the socket's events, so the connection's end
    /// was never reported: the delegate waited for ever, and a pool with it.)
    @Test func aFailedSTARTTLSHandshakeEndsTheConnection() throws {
        let server = try LoopThread.start(name: "smtp-server")
        let client = try LoopThread.start(name: "smtp-client")
        defer {
            client.stopAndJoin()
            server.stopAndJoin()
        }
        let received = TestCounter()
        var session = ServerConfiguration(hostname: "localhost")
        session.startTLSAvailable = true
        var configuration = ServerConnectionConfiguration(session: session)
        configuration.tls = try TLSContext.server(TLSServerConfiguration(identity: .pem(serverIdentity)))
        let address = try startServer(on: server, configuration, received: received)
        let outcome = TestWaiter<String?>()
        client.execute { loop in
            var session = ClientConfiguration(heloName: "client.test")
            session.tls = .required
            var configuration = ClientConnectionConfiguration(session: session)
            /* Another authority than the one that issued the server's certificate. */
            var tls = TLSClientConfiguration()
            tls.trustRoots = .pem(try! TLSCertificate.makeAuthority(commonName: "Someone Else").certificatePEM)
            configuration.tls = try! TLSContext.client(tls)
            configuration.serverName = "localhost"
            _ = ClientConnection.connect(loop: loop, to: address, configuration: configuration, crypto: OpenSSLCrypto(),
                                         delegate: Sender(count: 1) { _, error in outcome.fulfill(error.map { "\($0)" }) })
        }
        let error = try #require(outcome.wait(seconds: 15), "the connection's end was never reported")
        #expect(error != nil, "a failed handshake ended without an error")
        #expect(received.value == 0)
    }

    /// Implicit TLS with no TLS context fails the connection with a TLS error: nothing goes
    /// out in plaintext instead.
    @Test func implicitTLSWithoutAContextNeverFallsBackToPlaintext() throws {
        let server = try LoopThread.start(name: "smtp-server")
        let client = try LoopThread.start(name: "smtp-client")
        defer {
            client.stopAndJoin()
            server.stopAndJoin()
        }
        let received = TestCounter()
        let address = try startServer(on: server, ServerConnectionConfiguration(session: ServerConfiguration(hostname: "localhost")), received: received)
        let outcome = TestWaiter<String?>()
        client.execute { loop in
            var configuration = ClientConnectionConfiguration(session: ClientConfiguration(heloName: "client.test"))
            configuration.implicitTLS = true
            configuration.tls = nil
            _ = ClientConnection.connect(loop: loop, to: address, configuration: configuration, crypto: OpenSSLCrypto(),
                                         delegate: Sender(count: 1) { _, error in outcome.fulfill(error.map { "\($0)" }) })
        }
        let error = try #require(outcome.wait(seconds: 10))
        #expect(error?.contains("no TLS context") == true, "\(String(describing: error))")
        #expect(received.value == 0)
    }

    /// A second connection to the same server resumes the first one's TLS session (kept by
    /// address and name). Without a name there is no SNI, and OpenSSL 3.0 then resumes no
    /// TLS 1.3 session (measured here: a full handshake each time), so only named hosts resume.
    @Test func tlsSessionsResumeOnReconnect() throws {
        let server = try LoopThread.start(name: "smtp-server")
        let client = try LoopThread.start(name: "smtp-client")
        defer {
            client.stopAndJoin()
            server.stopAndJoin()
        }
        let received = TestCounter()
        var session = ServerConfiguration(hostname: "localhost")
        session.startTLSAvailable = true
        var configuration = ServerConnectionConfiguration(session: session)
        configuration.tls = try TLSContext.server(TLSServerConfiguration(identity: .pem(serverIdentity)))
        let address = try startServer(on: server, configuration, received: received)
        let cache = TLSSessionCache()
        var tls = TLSClientConfiguration()
        tls.verifyPeer = false
        let context = try TLSContext.client(tls)      /* sessions belong to the context that made them */
        var reused: [Bool] = []
        for _ in 0..<2 {
            let outcome = TestWaiter<Bool>()
            client.execute { loop in
                var session = ClientConfiguration(heloName: "client.test")
                session.tls = .required
                var configuration = ClientConnectionConfiguration(session: session)
                configuration.tls = context
                configuration.tlsSessionCache = cache
                configuration.serverName = "localhost"
                let sender = Sender(count: 1) { sender, _ in outcome.fulfill(sender.resumed) }
                _ = ClientConnection.connect(loop: loop, to: address, configuration: configuration, crypto: OpenSSLCrypto(), delegate: sender)
            }
            reused.append(try #require(outcome.wait(seconds: 10)))
        }
        #expect(reused == [false, true])
        #expect(received.value == 2)
    }
}

/// A credential store whose password check waits until the test releases it.
private final class BlockingStore: SMTPCredentialStore {
    let password: String
    let entered = TestWaiter<Bool>()
    let release = DispatchSemaphore(value: 0)

    init(password: String) { self.password = password }

    func verify(username: String, password: String) -> Bool {
        entered.fulfill(true)
        release.wait()
        return username == "alice" && password == self.password
    }
    func scramSHA256(username: String) -> SCRAMStoredKeys? { nil }
    func cramMD5Secret(username: String) -> [UInt8]? { nil }
}
