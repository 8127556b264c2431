// BlastAgainstSinkTests.swift - carrier blast against carrier sink, both in this process
//
// The two tools were built to check each other: whatever blast says it sent,
// the sink must say it received, over every transport, with and without
// pipelining and chunking, and with each AUTH mechanism. With the sink's
// seeded fault injection, blast's 4xx count must be exactly what the sink's
// decision function predicts for the recipients and messages blast sends.

import Blast
import CarrierTesting
import EventCore
import SMTP
import Sink
import Testing

/// sinkConfiguration - a one-thread sink on a kernel-chosen loopback port.
private func sinkConfiguration() -> SinkConfiguration {
    var configuration = SinkConfiguration()
    configuration.listen = [SocketAddress("127.0.0.1:0")!]
    configuration.threads = 1
    return configuration
}

/// blastConfiguration - `messages` 1 KB messages to `sink` over `connections` connections.
private func blastConfiguration(_ sink: SinkServer, messages: Int, connections: Int = 4) -> BlastConfiguration {
    var configuration = BlastConfiguration(target: .address(sink.addresses[0]))
    configuration.messages = messages
    configuration.connections = connections
    configuration.threads = 1
    configuration.content = .generated(size: 1000)
    configuration.maxErrorRatio = 1
    return configuration
}

@Suite("Blast against sink")
struct BlastAgainstSinkTests {
    /// Every combination of transport, pipelining and chunking: the counts agree exactly.
    @Test(arguments: [BlastSecurity.plaintext, .startTLS, .implicitTLS], [false, true])
    func countsAgreeOverEveryTransport(security: BlastSecurity, pipelining: Bool) throws {
        for chunking in [false, true] {
            var sinkSettings = sinkConfiguration()
            if security != .plaintext {
                sinkSettings.tls = .pem(testIdentity)
                sinkSettings.implicitTLS = security == .implicitTLS
                sinkSettings.requireTLS = true
            }
            let sink = try SinkServer.start(sinkSettings)
            defer { sink.stop() }
            var blast = blastConfiguration(sink, messages: 60)
            blast.security = security
            blast.pipelining = pipelining
            blast.chunking = chunking
            blast.trustRoots = .pem(testAuthority.certificatePEM)
            blast.serverName = "localhost"
            let report = try BlastRunner.run(blast)
            let received = sink.statistics
            #expect(report.messagesSent == 60, "\(security) pipelining \(pipelining) chunking \(chunking)")
            #expect(report.errors == 0)
            #expect(received.messagesAccepted == 60)
            #expect(received.recipientsAccepted == report.recipientsDelivered)
        }
    }

    /// Each AUTH mechanism the sink offers, over STARTTLS with AUTH required.
    @Test(arguments: [SASLMechanism.plain, .login, .cramMD5, .scramSHA256])
    func everyMechanismAuthenticates(mechanism: SASLMechanism) throws {
        var sinkSettings = sinkConfiguration()
        sinkSettings.tls = .pem(testIdentity)
        sinkSettings.users = ["alice": "s3cret"]
        sinkSettings.requireAuthentication = true
        let sink = try SinkServer.start(sinkSettings)
        defer { sink.stop() }
        var blast = blastConfiguration(sink, messages: 20, connections: 2)
        blast.security = .startTLS
        blast.trustRoots = .pem(testAuthority.certificatePEM)
        blast.serverName = "localhost"
        blast.authentication = BlastAuthentication(mechanism: mechanism, credentials: .password("alice", "s3cret"))
        let report = try BlastRunner.run(blast)
        #expect(report.messagesSent == 20)
        #expect(report.errors == 0)
        #expect(sink.statistics.messagesAccepted == 20)
    }

    /// A 10% tempfail rate: blast's 4xx recipients are exactly what the sink's seeded rules predict, about 10%.
    @Test func seededTempfailsAreCountedExactly() throws {
        var sinkSettings = sinkConfiguration()
        sinkSettings.faults.seed = 42
        sinkSettings.faults.tempfailRate = 0.1
        let sink = try SinkServer.start(sinkSettings)
        defer { sink.stop() }
        let messages = 2_000
        var blast = blastConfiguration(sink, messages: messages)
        blast.recipientDomain = "example.test"
        let report = try BlastRunner.run(blast)

        /* Message n goes to user<n>@example.test with X-Carrier-Id blast-<n> (one recipient each). */
        let rules = SinkRules(faults: sinkSettings.faults, domainRules: [])
        var expected = 0
        for n in 0..<messages {
            let recipient = try MailAddress(parsing: "user\(n)@example.test")
            if rules.recipientReply(recipient) != nil || rules.messageReply(key: "blast-\(n)") != nil { expected += 1 }
        }
        #expect(report.recipientsDeferred == expected)
        #expect(report.recipientsDelivered == messages - expected)
        #expect(report.replyCodes[451] == expected)
        /* About 10%: 1 - (1 - 0.05)^2 = 9.75% on average. */
        #expect(expected > messages * 7 / 100 && expected < messages * 13 / 100)
    }

    /// The sink dropping connections mid-DATA: blast counts errors and the run ends.
    @Test func disconnectsAreErrorsAndDoNotHang() throws {
        var sinkSettings = sinkConfiguration()
        sinkSettings.faults.disconnectRate = 0.2
        let sink = try SinkServer.start(sinkSettings)
        defer { sink.stop() }
        let blast = blastConfiguration(sink, messages: 100, connections: 2)
        let report = try BlastRunner.run(blast)
        #expect(report.errors > 0)
        #expect(report.messagesSent + report.messagesFailed + report.messagesUnsent == 100)
        #expect(!report.passed || report.configuration.maxErrorRatio >= report.errorRatio)
    }
}
