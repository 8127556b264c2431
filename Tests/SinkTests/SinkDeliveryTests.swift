// SinkDeliveryTests.swift - mail accepted over plaintext, STARTTLS and implicit TLS, with AUTH, on several threads

import CarrierTesting
import EventCore
import SMTP
import SMTPStreams
import Sink
import Testing

@Suite("Sink delivery")
struct SinkDeliveryTests {
    /// Pipelined messages over plaintext all get 250, and the statistics count exactly what was sent.
    @Test func plaintextMessagesAreAcceptedAndCounted() throws {
        let server = try startSink()
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let messages = (0..<20).map { message(to: ["r\($0)@example.test", "s\($0)@example.test"], carrierID: "id-\($0)") }
        let run = try client.send(messages, to: server)
        #expect(run.error == nil)
        #expect(run.replyCodes(messages: 20) == Array(repeating: [250, 250], count: 20))
        #expect(run.results[3]?.recipients.first?.reply.text.hasPrefix("2.0.0 Ok: queued as ") == true)

        server.stop()
        let statistics = server.statistics
        #expect(statistics.connectionsTotal == 1)
        #expect(statistics.connectionsCurrent == 0)
        #expect(statistics.messagesAccepted == 20)
        #expect(statistics.messageRecipients == 40)
        #expect(statistics.recipientsAccepted == 40)
        #expect(statistics.bytesAccepted == messages.reduce(0) { $0 + $1.payload.size })
        /* Greeting 220, then per message MAIL 250, two RCPT 250 and the final 250. */
        #expect(statistics.replies == [220: 1, 250: 80])
        #expect(statistics.replies4xx == 0 && statistics.replies5xx == 0)
    }

    /// Both DATA and BDAT deliver the body intact (checked through the Maildir below); here: both count.
    @Test(arguments: [false, true])
    func dataAndChunkingBothDeliver(chunking: Bool) throws {
        let server = try startSink()
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let messages = (0..<5).map { message(to: ["r\($0)@example.test"], body: "line\r\n.dot line\r\n") }
        let run = try client.send(messages, to: server) { $0.session.chunking = chunking }
        #expect(run.error == nil)
        #expect(run.replyCodes(messages: 5) == Array(repeating: [250], count: 5))
        #expect(server.statistics.messagesAccepted == 5)
    }

    /// Connections spread over two threads; the totals are exact.
    @Test func severalThreadsShareTheListenAddress() throws {
        let server = try startSink(threads: 2)
        defer { server.stop() }
        #expect(server.threadCount == 2)
        #expect(server.addresses.count == 1 && server.addresses[0].port != 0)
        let clients = try (0..<3).map { _ in try TestClient() }
        defer { clients.forEach { $0.stop() } }
        /* Two connections from each of three client threads, all at once. */
        let runs = (0..<6).map { _ in TestWaiter<ClientRun>() }
        for (index, run) in runs.enumerated() {
            clients[index % 3].thread.execute { loop in
                var configuration = ClientConnectionConfiguration(session: ClientConfiguration(heloName: "client.test"))
                configuration.session.tls = .never
                let messages = (0..<25).map { message(to: ["c\(index)-\($0)@example.test"]) }
                let sender = TestSender(messages: messages) { run.fulfill($0) }
                _ = ClientConnection.connect(loop: loop, to: server.addresses[0], configuration: configuration,
                                         crypto: OpenSSLCrypto(), delegate: sender)
            }
        }
        let finished = runs.compactMap { $0.wait(seconds: 60) }
        #expect(finished.count == 6)
        #expect(finished.allSatisfy { $0.error == nil })
        let delivered = finished.reduce(0) { total, run in
            total + run.results.values.filter { $0.recipients.allSatisfy { $0.disposition == .delivered } }.count
        }
        #expect(delivered == 150)
        server.stop()
        #expect(server.statistics.messagesAccepted == 150)
        #expect(server.statistics.connectionsTotal == 6)
    }

    /// Several --listen addresses with port 0: each gets its own real port, and every thread serves both.
    @Test func severalListenAddresses() throws {
        let server = try startSink(threads: 2) {
            $0.listen = [SocketAddress("127.0.0.1:0")!, SocketAddress("127.0.0.1:0")!]
        }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        #expect(server.addresses.count == 2)
        #expect(server.addresses[0].port != 0 && server.addresses[1].port != 0)
        #expect(server.addresses[0].port != server.addresses[1].port)
        for index in 0..<4 {
            let run = try client.send([message(to: ["l\(index)@example.test"])], to: server, address: server.addresses[index % 2])
            #expect(run.error == nil && run.replyCodes(messages: 1) == [[250]])
        }
        server.stop()
        #expect(server.statistics.connectionsTotal == 4)
    }

    /// STARTTLS with a self-signed certificate (client does not verify); the message is marked TLS.
    @Test func startTLSWithSelfSignedCertificate() throws {
        let server = try startSink { $0.tls = .selfSigned; $0.requireTLS = true }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        #expect(server.certificate != nil)
        let run = try client.send([message(to: ["tls@example.test"])], to: server, configure: unverifiedTLS)
        #expect(run.error == nil)
        #expect(run.stages.contains(.tlsHandshake))
        #expect(run.replyCodes(messages: 1) == [[250]])
    }

    /// Implicit TLS (port 465 style); the client verifies the self-signed certificate as its own root.
    @Test func implicitTLSVerifiedAgainstTheSelfSignedCertificate() throws {
        let server = try startSink { $0.tls = .selfSigned; $0.implicitTLS = true }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let authority = try #require(server.certificate).certificatePEM
        let run = try client.send([message(to: ["implicit@example.test"])], to: server) { configuration in
            var tls = TLSClientConfiguration()
            tls.trustRoots = .pem(authority)
            configuration.tls = try! TLSContext.client(tls)
            configuration.implicitTLS = true
            configuration.serverName = "localhost"
            configuration.session.tls = .never
        }
        #expect(run.error == nil)
        #expect(run.stages.first == .connect && run.stages.dropFirst().first == .tlsHandshake)
        #expect(run.replyCodes(messages: 1) == [[250]])
    }

    /// Each AUTH mechanism logs in (over plaintext, which the sink allows) and mail is accepted.
    @Test(arguments: [SASLMechanism.plain, .login, .cramMD5, .scramSHA256])
    func authenticatesWithEachMechanism(mechanism: SASLMechanism) throws {
        let server = try startSink { $0.users = ["alice": "s3cret", "bob": "other"]; $0.requireAuthentication = true }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let run = try client.send([message(to: ["auth@example.test"])], to: server) { configuration in
            configuration.session.credentials = .password("alice", "s3cret")
            configuration.session.mechanisms = [mechanism]
            configuration.session.allowPlaintextAuthentication = true
        }
        #expect(run.error == nil)
        #expect(run.stages.contains(.authentication))
        #expect(run.replyCodes(messages: 1) == [[250]])
    }

    /// A wrong password gets 535 with every mechanism.
    @Test(arguments: [SASLMechanism.plain, .login, .cramMD5, .scramSHA256])
    func wrongPasswordGets535(mechanism: SASLMechanism) throws {
        let server = try startSink { $0.users = ["alice": "s3cret"] }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let run = try client.send([message(to: ["auth@example.test"])], to: server) { configuration in
            configuration.session.credentials = .password("alice", "wrong")
            configuration.session.mechanisms = [mechanism]
            configuration.session.allowPlaintextAuthentication = true
        }
        guard case .session(.authenticationFailed(let reply))? = run.error else {
            Issue.record("expected an authentication failure, got \(String(describing: run.error))")
            return
        }
        #expect(reply.code == 535)
        #expect(server.statistics.messagesAccepted == 0)
    }

    /// --require-auth: MAIL without AUTH gets 530 5.7.0.
    @Test func requireAuthRefusesMailWithoutAuth() throws {
        let server = try startSink { $0.users = ["alice": "s3cret"]; $0.requireAuthentication = true }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let run = try client.send([message(to: ["auth@example.test"])], to: server)
        guard case .session(.authenticationRequired(let reply))? = run.error else {
            Issue.record("expected 530, got \(String(describing: run.error))")
            return
        }
        #expect(reply.code == 530)
        #expect(reply.text.hasPrefix("5.7.0"))
        #expect(server.statistics.messagesAccepted == 0)
    }

    /// --require-tls: MAIL before STARTTLS gets 530 5.7.0.
    @Test func requireTLSRefusesMailWithoutTLS() throws {
        let server = try startSink { $0.tls = .selfSigned; $0.requireTLS = true }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let run = try client.send([message(to: ["plain@example.test"])], to: server)
        guard case .session(.authenticationRequired(let reply))? = run.error else {
            Issue.record("expected 530, got \(String(describing: run.error))")
            return
        }
        #expect(reply.code == 530)
        #expect(reply.text.contains("STARTTLS"))
    }
}
