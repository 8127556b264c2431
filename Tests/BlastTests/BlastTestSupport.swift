// BlastTestSupport.swift - in-process receivers for blast tests: ServerConnection on a loop thread
//
// Each test starts its own receiver on 127.0.0.1 and a kernel-chosen port,
// with exactly the behaviour it needs (TLS, AUTH, a reply delay, refused
// recipients, a drop in the middle of DATA), points a blast at it, and
// compares what both ends counted. `XOAuth2Receiver` is a hand-written
// line server for the one mechanism ServerSession does not speak.

import Blast
import CarrierTesting
import EventCore
import SMTP
import SMTPStreams

/// A test CA and a certificate for "localhost" issued by it.
let testAuthority = try! TLSCertificate.makeAuthority(commonName: "Blast Test CA")
let testIdentity = try! testAuthority.issue(commonName: "localhost", dnsNames: ["localhost"])

/// The user and password every AUTH test uses.
let testUser = "alice"
let testPassword = "s3cret:with:colons"

/// What a test receiver does.
struct ReceiverOptions: Sendable {
    var security = BlastSecurity.plaintext
    var authMechanisms: [SASLServerMechanism] = []      /* non-empty: AUTH required */
    var replyDelayMilliseconds: UInt64 = 0              /* each message answered this much later */
    var tempfailEvery = 0                               /* > 0: RCPT user<k> with k % this == 1 gets 451 */
    var closeMidData = false                            /* drop the connection once message data flows */
    var refuseGreeting = false                          /* greet with 421 4.3.2 */
    var pipelining = true
    var chunking = true
}

/// A ServerConnection receiver on its own loop thread that counts what it accepts.
///
/// Safe from any thread: the counters and logs are thread-safe; everything
/// on the loop is made and used by loop jobs.
final class TestReceiver: Sendable {
    let port: UInt16
    let counts: ReceiverCounts
    private let thread: LoopThread

    var messages: TestCounter { counts.messages }
    var recipients: TestCounter { counts.recipients }
    var carrierIDs: TestLog<String> { counts.carrierIDs }
    var users: TestLog<String> { counts.users }
    var connections: TestCounter { counts.connections }

    private init(port: UInt16, thread: LoopThread, counts: ReceiverCounts) {
        self.port = port
        self.thread = thread
        self.counts = counts
    }

    /// start - listen on 127.0.0.1 with `options`.
    static func start(_ options: ReceiverOptions = ReceiverOptions()) throws -> TestReceiver {
        let thread = try LoopThread.start(name: "blast-receiver")
        let port = TestWaiter<UInt16>()
        let counts = ReceiverCounts()
        thread.execute { loop in
            var session = ServerConfiguration(hostname: "localhost")
            session.startTLSAvailable = options.security == .startTLS
            session.requireTLS = options.security == .startTLS
            session.authMechanisms = options.authMechanisms
            session.requireAuthentication = !options.authMechanisms.isEmpty
            session.allowPlaintextAuthentication = true
            session.pipelining = options.pipelining
            session.chunking = options.chunking
            var configuration = ServerConnectionConfiguration(session: session)
            if options.security != .plaintext {
                configuration.tls = try! TLSContext.server(TLSServerConfiguration(identity: .pem(testIdentity)))
            }
            configuration.implicitTLS = options.security == .implicitTLS
            let crypto = OpenSSLCrypto()
            let store = StaticCredentialStore(passwords: [testUser: testPassword], iterations: 4096, crypto: crypto)
            let delegate = ReceiverDelegate(options: options, counts: counts)
            let policy = TempfailPolicy(every: options.tempfailEvery, refuseGreeting: options.refuseGreeting)
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { tcp in
                counts.connections.add()
                counts.clients.append(tcp.remoteAddress.map { "\($0.ip)" } ?? "?")
                ServerConnection.start(tcp, configuration: configuration, policy: policy,
                                       credentials: store, crypto: crypto, delegate: delegate)
            }
            port.fulfill(listener.localAddress.port)
        }
        guard let bound = port.wait(seconds: 10) else { throw ReceiverError.notListening }
        return TestReceiver(port: bound, thread: thread, counts: counts)
    }

    /// The receiver's address.
    var address: SocketAddress { SocketAddress(ip: IPAddress("127.0.0.1")!, port: port) }

    /// stop - close the listener and connections, join the thread.
    func stop() {
        thread.stopAndJoin()
    }
}

/// Why a receiver did not start.
enum ReceiverError: Error { case notListening }

/// What a receiver counted; thread-safe.
final class ReceiverCounts: Sendable {
    let messages = TestCounter()            /* messages answered 250 */
    let recipients = TestCounter()          /* recipients of those messages */
    let carrierIDs = TestLog<String>()      /* X-Carrier-Id of each message */
    let users = TestLog<String>()           /* AUTH successes */
    let connections = TestCounter()         /* accepted */
    let clients = TestLog<String>()         /* the client's IP address of each connection */
}

/// Answers 250 (after the delay), counts, and drops connections mid-DATA when asked; loop-confined.
private final class ReceiverDelegate: ServerConnectionDelegate {
    let options: ReceiverOptions
    let counts: ReceiverCounts

    init(options: ReceiverOptions, counts: ReceiverCounts) {
        self.options = options
        self.counts = counts
    }

    func serverConnection(_ connection: ServerConnection, received message: ReceivedMessage) {
        let body = String(decoding: message.body.readableByteArray, as: UTF8.self)
        let id = body.split(separator: "\r\n").first { $0.hasPrefix("X-Carrier-Id: ") }.map { String($0.dropFirst(14)) } ?? "?"
        counts.messages.add()
        counts.recipients.add(message.recipients.count)
        counts.carrierIDs.append(id)
        let reply = Reply(code: 250, enhanced: EnhancedStatus(2, 0, 0), text: "2.0.0 Ok: queued")
        guard options.replyDelayMilliseconds > 0 else { return connection.answer(reply) }
        LoopTimer(loop: connection.loop).schedule(after: options.replyDelayMilliseconds) { timer in
            connection.answer(reply)
            timer.close()
        }
    }

    func serverConnectionDidRead(_ connection: ServerConnection) {
        if options.closeMidData && connection.isReceivingData { connection.close() }
    }

    func serverConnection(_ connection: ServerConnection, authenticated user: String) {
        counts.users.append(user)
    }

    func serverConnectionClosed(_ connection: ServerConnection) {}
}

/// Refuses RCPT for user<k> with k % every == 1 with 451 4.7.1, or every greeting; loop-confined.
private final class TempfailPolicy: ServerPolicy {
    let every: Int
    let refuseGreeting: Bool
    init(every: Int, refuseGreeting: Bool) {
        self.every = every
        self.refuseGreeting = refuseGreeting
    }

    func greeting() -> Reply? {
        refuseGreeting ? Reply(code: 421, enhanced: EnhancedStatus(4, 3, 2), text: "4.3.2 Too busy") : nil
    }

    func recipient(_ recipient: MailAddress, parameters: RecipientParameters, session: ServerSessionView) -> Reply? {
        guard every > 0, let k = Int(recipient.localPart.dropFirst(4)), k % every == 1 else { return nil }
        return Reply(code: 451, enhanced: EnhancedStatus(4, 7, 1), text: "4.7.1 Try again later")
    }
}

/// A blast configuration aimed at `receiver`: small, quick, verified TLS against the test CA.
func blastConfiguration(to receiver: TestReceiver, messages: Int = 40) -> BlastConfiguration {
    var configuration = BlastConfiguration(target: .address(receiver.address))
    configuration.connections = 4
    configuration.threads = 2
    configuration.messages = messages
    configuration.content = .generated(size: 600)
    configuration.trustRoots = .pem(testAuthority.certificatePEM)
    configuration.serverName = "localhost"
    configuration.timeoutMilliseconds = 10_000
    return configuration
}

/// A minimal SMTP server that speaks AUTH XOAUTH2 (and nothing fancy); counts messages.
/// With `hangUpAfterEHLO` it answers EHLO and then closes, never carrying mail.
///
/// Lines are handled one by one in order, so pipelined commands work. Safe
/// from any thread like `TestReceiver`.
final class XOAuth2Receiver: Sendable {
    let port: UInt16
    let messages: TestCounter
    let authenticated: TestCounter
    private let thread: LoopThread

    private init(port: UInt16, thread: LoopThread, messages: TestCounter, authenticated: TestCounter) {
        self.port = port
        self.thread = thread
        self.messages = messages
        self.authenticated = authenticated
    }

    static func start(user: String, token: String, hangUpAfterEHLO: Bool = false) throws -> XOAuth2Receiver {
        let thread = try LoopThread.start(name: "xoauth2-receiver")
        let port = TestWaiter<UInt16>()
        let messages = TestCounter()
        let authenticated = TestCounter()
        let expected = Base64.encode(Array("user=\(user)\u{1}auth=Bearer \(token)\u{1}\u{1}".utf8))
        thread.execute { loop in
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { tcp in
                let handler = XOAuth2LineHandler(expected: expected, hangUpAfterEHLO: hangUpAfterEHLO,
                                                 messages: messages, authenticated: authenticated)
                tcp.handler = handler
                tcp.write(ByteBuffer(string: "220 localhost ESMTP test\r\n"))
                tcp.startReading()
            }
            port.fulfill(listener.localAddress.port)
        }
        guard let bound = port.wait(seconds: 10) else { throw ReceiverError.notListening }
        return XOAuth2Receiver(port: bound, thread: thread, messages: messages, authenticated: authenticated)
    }

    var address: SocketAddress { SocketAddress(ip: IPAddress("127.0.0.1")!, port: port) }

    func stop() { thread.stopAndJoin() }
}

/// The line protocol of `XOAuth2Receiver`; loop-confined, kept alive as the stream's handler.
private final class XOAuth2LineHandler: ByteStreamHandler {
    let expected: String
    let hangUpAfterEHLO: Bool
    let messages: TestCounter
    let authenticated: TestCounter
    var inData = false
    var isAuthenticated = false

    init(expected: String, hangUpAfterEHLO: Bool, messages: TestCounter, authenticated: TestCounter) {
        self.expected = expected
        self.hangUpAfterEHLO = hangUpAfterEHLO
        self.messages = messages
        self.authenticated = authenticated
    }

    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        var consumed = 0
        var out = ""
        while let newline = bytes[consumed...].firstIndex(of: 0x0a) {
            let line = String(decoding: bytes[consumed..<newline], as: UTF8.self).trimmingSuffix("\r")
            consumed = newline + 1
            if inData {
                if line == "." {
                    inData = false
                    messages.add()
                    out += "250 2.0.0 Ok\r\n"
                }
                continue
            }
            let upper = line.uppercased()
            if upper.hasPrefix("EHLO") && hangUpAfterEHLO {
                stream.write(ByteBuffer(string: "250 localhost\r\n"))
                stream.shutdownWrite()
                return bytes.count
            } else if upper.hasPrefix("EHLO") {
                out += "250-localhost\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH XOAUTH2\r\n"
            } else if upper.hasPrefix("AUTH XOAUTH2 ") {
                isAuthenticated = String(line.dropFirst(13)) == expected
                if isAuthenticated { authenticated.add() }
                out += isAuthenticated ? "235 2.7.0 Accepted\r\n" : "535 5.7.8 Bad token\r\n"
            } else if upper.hasPrefix("MAIL") || upper.hasPrefix("RCPT") || upper.hasPrefix("RSET") {
                out += isAuthenticated ? "250 2.1.0 Ok\r\n" : "530 5.7.0 Authentication required\r\n"
            } else if upper == "DATA" {
                inData = isAuthenticated
                out += isAuthenticated ? "354 Go ahead\r\n" : "530 5.7.0 Authentication required\r\n"
            } else if upper == "QUIT" {
                out += "221 2.0.0 Bye\r\n"
            } else {
                out += "502 5.5.1 Not implemented\r\n"
            }
        }
        if !out.isEmpty { stream.write(ByteBuffer(string: out)) }
        return consumed
    }

    func streamReadEOF(_ stream: any ByteStream) { stream.close() }
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

extension String {
    /// trimmingSuffix - the string without one trailing `suffix`.
    func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
