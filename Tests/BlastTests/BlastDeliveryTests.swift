// BlastDeliveryTests.swift - blast against in-process receivers: both ends count the same messages

import Blast
import CarrierTesting
import EventCore
import Foundation
import SMTP
import Testing

@Suite("Blast delivery")
struct BlastDeliveryTests {
    /// Security x pipelining x chunking: every message arrives exactly once and the reports agree.
    static let transports: [(BlastSecurity, Bool, Bool)] = [BlastSecurity.plaintext, .startTLS, .implicitTLS].flatMap { security in
        [(true, false), (true, true), (false, false), (false, true)].map { (security, $0.0, $0.1) }
    }

    @Test(arguments: transports)
    func countsAgree(security: BlastSecurity, pipelining: Bool, chunking: Bool) throws {
        let receiver = try TestReceiver.start(ReceiverOptions(security: security))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 40)
        configuration.security = security
        configuration.pipelining = pipelining
        configuration.chunking = chunking
        let report = try BlastRunner.run(configuration)

        #expect(report.messagesSent == 40)
        #expect(report.messagesAttempted == 40)
        #expect(report.errors == 0)
        #expect(report.passed)
        #expect(receiver.messages.value == report.messagesSent)
        #expect(receiver.recipients.value == report.recipientsDelivered)
        #expect(report.connectionsReady == 4)
        #expect(report.replyCodes == [250: 40])
        #expect(report.enhancedCodes == ["2.0.0": 40])
        /* Exactly once: the X-Carrier-Ids are blast-0 ... blast-39, each one time. */
        #expect(receiver.carrierIDs.elements.sorted() == (0..<40).map { "blast-\($0)" }.sorted())
        #expect(report.phases[.transaction]?.count == 40)
        #expect(report.phases[.endToEnd]?.count == 40)
        #expect(report.phases[.connect]?.count == 4)
        #expect(report.phases[.tlsHandshake]?.count == (security == .plaintext ? 0 : 4))
        /* STARTTLS connections say EHLO twice. */
        #expect(report.phases[.ehlo]?.count == (security == .startTLS ? 8 : 4))
        try checkJSON(report)
    }

    /// Each AUTH mechanism ServerSession speaks, over STARTTLS; every connection authenticates.
    @Test(arguments: [SASLMechanism.plain, .login, .cramMD5, .scramSHA256])
    func authenticatesWithEachMechanism(mechanism: SASLMechanism) throws {
        let serverMechanism = try #require(SASLServerMechanism(rawValue: mechanism.rawValue))
        let receiver = try TestReceiver.start(ReceiverOptions(security: .startTLS, authMechanisms: [serverMechanism]))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 20)
        configuration.security = .startTLS
        configuration.authentication = try BlastArguments.authentication("\(mechanism.rawValue):\(testUser):\(testPassword)")
        let report = try BlastRunner.run(configuration)

        #expect(report.messagesSent == 20)
        #expect(receiver.messages.value == 20)
        #expect(report.errors == 0)
        #expect(receiver.users.elements == Array(repeating: testUser, count: 4))
        #expect(report.phases[.authentication]?.count == 4)
    }

    /// AUTH PLAIN over plaintext goes as asked (a test receiver that allows it).
    @Test func authenticatesOverPlaintext() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(authMechanisms: [.plain]))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 10)
        configuration.authentication = BlastAuthentication(mechanism: .plain, credentials: .password(testUser, testPassword))
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent == 10)
        #expect(receiver.messages.value == 10)
        #expect(receiver.users.elements.count == 4)
    }

    /// XOAUTH2 sends the token; a wrong token is refused and counted.
    @Test func authenticatesWithXOAuth2() throws {
        let receiver = try XOAuth2Receiver.start(user: testUser, token: "ya29.token")
        defer { receiver.stop() }
        var configuration = BlastConfiguration(target: .address(receiver.address))
        configuration.connections = 2
        configuration.threads = 1
        configuration.messages = 12
        configuration.timeoutMilliseconds = 10_000
        configuration.authentication = try BlastArguments.authentication("XOAUTH2:\(testUser):ya29.token")
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent == 12)
        #expect(receiver.messages.value == 12)
        #expect(receiver.authenticated.value == 2)

        configuration.authentication = try BlastArguments.authentication("XOAUTH2:\(testUser):wrong")
        let refused = try BlastRunner.run(configuration)
        #expect(refused.messagesSent == 0)
        #expect(refused.errorTypes["session_authentication_failed"] == 2 * configuration.reconnectAttempts)
        #expect(refused.messagesUnsent == 12)
        #expect(!refused.passed)
    }

    /// With --messages-per-connection every connection QUITs and a new one takes over.
    @Test func reconnectsAfterMessagesPerConnection() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 30)
        configuration.messagesPerConnection = 5
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent == 30)
        #expect(receiver.messages.value == 30)
        #expect(report.connectionAttempts == 6)
        #expect(receiver.connections.value == 6)
        #expect(report.errors == 0)
    }

    /// --source addresses are used round-robin by the connections.
    @Test func connectsFromEachSource() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 8)
        configuration.sources = [IPAddress("127.0.0.2")!, IPAddress("127.0.0.3")!]
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent == 8)
        #expect(receiver.counts.clients.elements.sorted() == ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"])
    }

    /// Several recipients per message: user<k> with k = n * recipients + j, every one used once.
    @Test func namesRecipientsInOrder() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 10)
        configuration.recipientsPerMessage = 3
        let report = try BlastRunner.run(configuration)
        #expect(report.recipientsDelivered == 30)
        #expect(receiver.recipients.value == 30)
        #expect(report.replyCodes[250] == 30)
    }

    /// A template's {{n}} becomes the message number in headers and body.
    @Test func sendsTemplates() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 8)
        configuration.content = .template(Array("Subject: t{{n}}\nX-Carrier-Id: tpl-{{n}}\n\n.dot line {{n}}\nbody\n".utf8))
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent == 8)
        #expect(receiver.carrierIDs.elements.sorted() == (0..<8).map { "tpl-\($0)" }.sorted())
    }

    /// checkJSON - the JSON report parses and agrees with the report's fields.
    private func checkJSON(_ report: BlastReport) throws {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        #expect(object["messages_sent"] as? Int == report.messagesSent)
        #expect(object["errors"] as? Int == report.errors)
        #expect((object["messages_per_second"] as? Double ?? 0) > 0)
        let replies = try #require(object["replies"] as? [String: Any])
        #expect(replies["250"] as? Int == report.messagesSent)
        let phases = try #require(object["phases"] as? [String: [String: Any]])
        for phase in ["connect", "banner", "ehlo", "tls_handshake", "auth", "handshake", "transaction", "end_to_end"] {
            let figures = try #require(phases[phase])
            for key in ["count", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] { #expect(figures[key] != nil, "\(phase).\(key)") }
        }
        let endToEnd = try #require(phases["end_to_end"])
        #expect(endToEnd["count"] as? Int == report.messagesAttempted)
        let p50 = try #require(endToEnd["p50_ms"] as? Double)
        let p99 = try #require(endToEnd["p99_ms"] as? Double)
        let max = try #require(endToEnd["max_ms"] as? Double)
        #expect(p50 <= p99 && p99 <= max + 0.001)
        let series = try #require(object["time_series"] as? [[String: Any]])
        #expect(!series.isEmpty)
        #expect(series.compactMap { $0["sent"] as? Int }.reduce(0, +) == report.messagesSent)
    }
}
