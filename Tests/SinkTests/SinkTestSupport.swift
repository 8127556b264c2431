// SinkTestSupport.swift - start a sink in-process and talk to it with ClientConnection

import CarrierTesting
import EventCore
import Foundation
import SMTP
import SMTPStreams
import Sink

/// startSink - a quiet sink on 127.0.0.1 with a free port, configured by `configure`.
func startSink(threads: Int = 1, _ configure: (inout SinkConfiguration) -> Void = { _ in }) throws -> SinkServer {
    var configuration = SinkConfiguration()
    configuration.listen = [SocketAddress("127.0.0.1:0")!]
    configuration.threads = threads
    configuration.hostname = "sink.test"
    configure(&configuration)
    return try SinkServer.start(configuration)
}

/// message - an outbound message to `recipients` with Message-ID and X-Carrier-Id headers (unless nil).
func message(to recipients: [String], carrierID: String? = nil, messageID: String? = nil,
             body: String = "Hello from the sink tests.\r\n", from sender: String = "sender@client.test") -> OutboundMessage {
    var text = "From: <\(sender)>\r\nSubject: sink test\r\n"
    if let messageID { text += "Message-ID: \(messageID)\r\n" }
    if let carrierID { text += "X-Carrier-Id: \(carrierID)\r\n" }
    text += "\r\n" + body
    let bytes = Array(text.utf8)
    let payload = try! bytes.withUnsafeBytes { try MessagePayload(encoding: $0) }
    return OutboundMessage(sender: try! ReversePath(parsing: sender),
                           recipients: recipients.map { try! MailAddress(parsing: $0) }, payload: payload)
}

/// What one client connection saw.
struct ClientRun: Sendable {
    var results: [Int: TransactionResult] = [:]     /* by tag: the message's index */
    var stages: [ClientConnectionStage] = []
    var stageNanoseconds: [UInt64] = []
    var error: ClientConnectionError?

    /// replyCodes - every recipient's final reply code, message by message, in order.
    func replyCodes(messages: Int) -> [[Int]] {
        (0..<messages).map { tag in results[tag].map { $0.recipients.sorted { $0.index < $1.index }.map(\.reply.code) } ?? [] }
    }
}

/// Sends every message once the connection is ready (pipelined), then quits; loop-confined.
///
/// A connection holds its delegate weakly, so a sender retains itself until
/// its connection reports `clientConnectionClosed`, then lets go.
final class TestSender: ClientConnectionDelegate {
    private var retainedUntilClosed: TestSender?
    private let messages: [OutboundMessage]
    private var sent = false
    private var run = ClientRun()
    private let done: (ClientRun) -> Void
    /// Called when the connection is ready, before anything is sent (true to hold the connection open).
    var onReady: ((ClientConnection) -> Bool)?

    init(messages: [OutboundMessage], done: @escaping (ClientRun) -> Void) {
        self.messages = messages
        self.done = done
        retainedUntilClosed = self
    }

    func clientConnection(_ connection: ClientConnection, finished stage: ClientConnectionStage, nanoseconds: UInt64) {
        run.stages.append(stage)
        run.stageNanoseconds.append(nanoseconds)
    }

    func clientConnectionReady(_ connection: ClientConnection) {
        if let onReady, onReady(connection) { return }
        guard !sent else { return connection.quit() }
        sent = true
        for (tag, message) in messages.enumerated() { connection.send(message, tag: tag) }
        if messages.isEmpty { connection.quit() }
    }

    func clientConnection(_ connection: ClientConnection, completed result: TransactionResult, tag: Int, nanoseconds: UInt64) {
        run.results[tag] = result
    }

    func clientConnectionClosed(_ connection: ClientConnection, error: ClientConnectionError?) {
        run.error = error
        done(run)
        retainedUntilClosed = nil
    }
}

/// A client loop thread for one test; stopped by `stop()`.
final class TestClient: Sendable {
    let thread: LoopThread

    init() throws {
        thread = try LoopThread.start(name: "sink-client")
    }

    func stop() { thread.stopAndJoin() }

    /// send - one connection to `server` (at `address`, else its first): deliver `messages` pipelined, quit, report what happened.
    func send(_ messages: [OutboundMessage], to server: SinkServer, address: SocketAddress? = nil,
              configure: @escaping @Sendable (inout ClientConnectionConfiguration) -> Void = { _ in }) throws -> ClientRun {
        let address = address ?? server.addresses[0]
        return try runOnLoop(thread, timeout: 60) { loop, done in
            var configuration = ClientConnectionConfiguration(session: ClientConfiguration(heloName: "client.test"))
            configuration.session.tls = .never
            configuration.session.timeouts = .uniform(20_000)
            configure(&configuration)
            let sender = TestSender(messages: messages) { done($0) }
            _ = ClientConnection.connect(loop: loop, to: address, configuration: configuration,
                                     crypto: OpenSSLCrypto(), delegate: sender)
        }
    }
}

/// unverifiedTLS - client settings for STARTTLS (or implicit TLS) to a self-signed sink, without verification.
@Sendable
func unverifiedTLS(_ configuration: inout ClientConnectionConfiguration) {
    var tls = TLSClientConfiguration()
    tls.verifyPeer = false
    configuration.tls = try! TLSContext.client(tls)
    configuration.session.tls = .required
    configuration.serverName = "localhost"
}

/// waitUntil - poll `condition` every few milliseconds; false if it is still false after `seconds`.
func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = MonotonicClock.nanoseconds() + UInt64(seconds * 1e9)
    while !condition() {
        if MonotonicClock.nanoseconds() > deadline { return false }
        usleep(2_000)
    }
    return true
}

/// temporaryDirectory - a fresh empty directory.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("sink-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
