// BlastErrorTests.swift - refused recipients, dropped connections and dead targets are counted, never hung on

import Blast
import CarrierTesting
import EventCore
import Testing

@Suite("Blast errors")
struct BlastErrorTests {
    /// A receiver that tempfails every recipient user<k> with k % 4 == 1: exactly those are 4xx.
    @Test func countsTempfailedRecipients() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(tempfailEvery: 4))
        defer { receiver.stop() }
        let report = try BlastRunner.run(blastConfiguration(to: receiver, messages: 40))

        /* Messages 1, 5, ..., 37 go to user1, user5, ..., user37. */
        #expect(report.recipientsDeferred == 10)
        #expect(report.replyCodes == [250: 30, 451: 10])
        #expect(report.enhancedCodes == ["2.0.0": 30, "4.7.1": 10])
        #expect(report.errorTypes == ["reply_4xx": 10])
        #expect(report.messagesSent == 30)
        #expect(receiver.messages.value == 30)
        #expect(report.errorRatio == 0.25)
        #expect(!report.passed)
        #expect(report.failureReason?.contains("reply_4xx 10") == true)
    }

    /// With three recipients per message the same rule picks recipients, not messages.
    @Test func countsTempfailedRecipientsOfLargerMessages() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(tempfailEvery: 4))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 40)
        configuration.recipientsPerMessage = 3
        configuration.maxErrorRatio = 0.3
        let report = try BlastRunner.run(configuration)

        let refused = (0..<120).filter { $0 % 4 == 1 }.count
        #expect(report.recipientsDeferred == refused)
        #expect(report.recipientsDelivered == 120 - refused)
        #expect(receiver.recipients.value == 120 - refused)
        #expect(report.messagesSent == 40)
        #expect(report.errorRatio == 0.25)
        #expect(report.passed)
        #expect(report.failureReason == nil)
    }

    /// A receiver that drops every connection mid-DATA: each message is an error, and the run ends.
    @Test func countsConnectionsLostMidData() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(closeMidData: true))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 10)
        configuration.connections = 2
        let report = try BlastRunner.run(configuration)

        #expect(report.messagesAttempted == 10)
        #expect(report.messagesSent == 0)
        #expect(report.recipientsAborted == 10)
        #expect(receiver.messages.value == 0)
        #expect(report.connectionsFailed >= 3)
        #expect(report.errorTypes["recipient_aborted"] == 10)
        #expect(report.errors == report.recipientsAborted + report.connectionsFailed)
        #expect(report.errorRatio == 1)
        #expect(!report.passed)
    }

    /// Nobody listening: every slot gives up after its attempts; nothing is sent, nothing hangs.
    @Test func givesUpOnRefusedConnections() throws {
        let closed = try TestReceiver.start()
        let address = closed.address
        closed.stop()
        var configuration = BlastConfiguration(target: .address(address))
        configuration.connections = 2
        configuration.threads = 2
        configuration.messages = 10
        configuration.reconnectAttempts = 2
        let report = try BlastRunner.run(configuration)

        #expect(report.errorTypes == ["connect_refused": 4])
        #expect(report.connectionsFailed == 4)
        #expect(report.messagesAttempted == 0)
        #expect(report.messagesUnsent == 10)
        #expect(report.errorRatio == 1)
        #expect(!report.passed)
    }

    /// A 421 greeting is a failed handshake: counted, and each slot gives up after its attempts.
    @Test func givesUpOnRefusedGreetings() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(refuseGreeting: true))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 10)
        configuration.connections = 2
        configuration.reconnectAttempts = 2
        let report = try BlastRunner.run(configuration)
        #expect(report.errorTypes == ["session_greeting_rejected": 4])
        #expect(receiver.connections.value == 4)
        #expect(report.messagesUnsent == 10)
    }

    /// A server that closes every connection right after EHLO never carries mail: the run still ends.
    @Test func givesUpOnServersThatHangUpAfterTheHandshake() throws {
        let receiver = try XOAuth2Receiver.start(user: "u", token: "t", hangUpAfterEHLO: true)
        defer { receiver.stop() }
        var configuration = BlastConfiguration(target: .address(receiver.address))
        configuration.connections = 2
        configuration.threads = 1
        configuration.messages = 10
        configuration.reconnectAttempts = 2
        configuration.timeoutMilliseconds = 10_000
        let report = try BlastRunner.run(configuration)
        /* Messages handed over before the hang-up are cut off; the rest are never sent. */
        #expect(report.messagesSent == 0)
        #expect(report.messagesAttempted + report.messagesUnsent == 10)
        #expect(report.recipientsAborted == report.messagesAttempted)
        #expect(receiver.messages.value == 0)
        #expect(!report.passed)
    }

    /// A certificate for another name fails verification: counted by type, the run ends.
    @Test func countsCertificateNameMismatch() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(security: .implicitTLS))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 5)
        configuration.security = .implicitTLS
        configuration.serverName = "mx.elsewhere.test"
        configuration.connections = 1
        configuration.threads = 1
        configuration.reconnectAttempts = 1
        let report = try BlastRunner.run(configuration)
        #expect(report.errorTypes == ["tls_name_mismatch": 1])
        #expect(report.messagesUnsent == 5)

        /* --insecure: the same server is accepted. */
        configuration.verifyPeer = false
        let insecure = try BlastRunner.run(configuration)
        #expect(insecure.messagesSent == 5)
        #expect(insecure.errors == 0)
    }

    /// The exit verdict compares the error ratio with --max-error-ratio, inclusive.
    @Test func verdictFollowsMaxErrorRatio() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(tempfailEvery: 4))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 40)
        configuration.maxErrorRatio = 0.25
        #expect(try BlastRunner.run(configuration).passed)
        configuration.maxErrorRatio = 0.24
        #expect(try !BlastRunner.run(configuration).passed)
    }

    /// Configurations that cannot run are refused before any thread starts, with the option's name.
    @Test func refusesBadConfigurations() {
        var configuration = BlastConfiguration(target: .address(SocketAddress("127.0.0.1:25")!))
        configuration.messages = nil
        #expect(throws: BlastError.invalidConfiguration("give --messages or --duration: a blast always has an end")) {
            try configuration.validate()
        }
        configuration.messages = 10
        configuration.sender = "not an address"
        #expect(throws: BlastError.self) { try configuration.validate() }
        configuration.sender = "a@b.test"
        configuration.recipientsPerMessage = 0
        #expect(throws: BlastError.self) { try configuration.validate() }
        configuration.recipientsPerMessage = 1
        configuration.rate = 0
        #expect(throws: BlastError.self) { try configuration.validate() }
        configuration.rate = nil
        configuration.sources = [IPAddress("::1")!]
        #expect(throws: BlastError.self) { try configuration.validate() }
        configuration.sources = []
        #expect(throws: Never.self) { try configuration.validate() }
    }
}
