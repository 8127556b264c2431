// SubmissionListenerTests.swift - the SMTP listener against real clients: Python's smtplib,
// raw pipelining and hostile input, swaks, and Carrier's own blast for SCRAM-SHA-256
//
// Every test runs a listener in this process over a real spool in fsync mode and reads back
// what the spool holds: a 250 must mean a stored message, a refusal must mean none.

import CarrierTesting
import Delivery
import EventCore
import Foundation
@testable import Injection
import Spool
import Testing

@Suite("SMTP listener", .serialized)
struct SubmissionListenerTests {
    @Test func smtplibFromLoopbackIsStoredWithTraceAndWithoutCarrierHeaders() throws {
        let fixture = try ListenerFixture("plain")
        defer { fixture.stop() }
        let answer = try runPeer("plain", port: fixture.port)
        #expect((answer["refused"] as? [String: Any])?.isEmpty == true)
        let stored = try fixture.stored()
        try #require(stored.count == 1)
        let (message, recipients) = stored[0]
        #expect(recipients == ["rcpt@dest.test"])
        #expect(message.sender == "sender@client.test")
        #expect(message.metadata.campaign == "from-header", "X-Carrier-Campaign sets the campaign")
        #expect(message.metadata.priority == .transactional, "the listener's default class")
        #expect(MessageHints.isLiteral(message.metadata.hints), "submitted mail is never a merge template")
        let body = text(message)
        #expect(body.hasPrefix("Received: from "))
        #expect(body.contains("by carrier.test (Carrier) with ESMTP id \(message.id)"))
        #expect(body.contains("for <rcpt@dest.test>; "))
        #expect(!body.lowercased().contains("x-carrier-campaign"), "steering headers are removed before storing")
        #expect(body.hasSuffix("\r\n\r\nbody of plain\r\n"))
        #expect(fixture.server.statistics.messagesAccepted == 1)
    }

    @Test func starttlsThenAuthPlainUsesTheUsersDefaults() throws {
        let fixture = try ListenerFixture("starttls", tls: true)
        defer { fixture.stop() }
        let answer = try runPeer("starttls", port: fixture.port, [testUser, testPassword])
        #expect(answer["auth"] as? Int == 235)
        #expect((answer["tls"] as? String)?.hasPrefix("TLSv1.") == true)
        let stored = try fixture.stored()
        try #require(stored.count == 1)
        #expect(stored[0].message.metadata.priority == .bulk, "alice's default class")
        #expect(stored[0].message.metadata.campaign == "from-header", "the header wins over the user's default campaign")
        #expect(text(stored[0].message).contains("with ESMTPSA id"))
    }

    @Test func authLoginOverPlaintextOnLoopback() throws {
        let fixture = try ListenerFixture("login")
        defer { fixture.stop() }
        let answer = try runPeer("login", port: fixture.port, [testUser, testPassword])
        #expect(answer["auth"] as? Int == 235)
        #expect(text(try fixture.stored()[0].message).contains("with ESMTPA id"))
    }

    @Test func wrongPasswordIs535AndUnauthenticatedClientsOutsideTrustedNetworksGet530() throws {
        let fixture = try ListenerFixture("denied") { $0.trustedNetworks = [] }
        defer { fixture.stop() }
        let bad = try runPeer("badauth", port: fixture.port, [testUser, "wrong password"])
        #expect(bad["auth"] as? Int == 535)
        let refused = try runPeer("noauth", port: fixture.port)
        #expect(refused["mail"] as? Int == 530)
        #expect((refused["text"] as? String)?.hasPrefix("5.7.0") == true)
        #expect(try fixture.stored().isEmpty)
    }

    @Test func plaintextAuthIsRefusedOutsideLoopbackAndTrustIsByNetwork() throws {
        let fixture = try ListenerFixture("policy", tls: true) { $0.trustedNetworks = [NetworkPrefix("10.0.0.0/8")!] }
        defer { fixture.stop() }
        let outside = fixture.server.shared.connectionSettings(for: IPAddress("192.0.2.7"))
        #expect(outside.session.requireAuthentication)
        #expect(!outside.session.allowPlaintextAuthentication, "538 5.7.11 before STARTTLS off loopback")
        #expect(outside.session.startTLSAvailable)
        let trusted = fixture.server.shared.connectionSettings(for: IPAddress("10.1.2.3"))
        #expect(!trusted.session.requireAuthentication)
        let loopback = fixture.server.shared.connectionSettings(for: IPAddress("127.0.0.1"))
        #expect(loopback.session.requireAuthentication, "loopback is not trusted unless listed")
        #expect(loopback.session.allowPlaintextAuthentication)
        #expect(loopback.session.authMechanisms.map(\.rawValue) == ["SCRAM-SHA-256", "PLAIN", "LOGIN"])
    }

    @Test func scramSHA256FromCarrierBlast() throws {
        let carrier = try #require(builtExecutable("carrier"), "the carrier executable is built next to the tests")
        let fixture = try ListenerFixture("scram") { $0.trustedNetworks = [] }
        defer { fixture.stop() }
        let output = fixture.folder.file("blast.out")
        let blast = try ChildProcess(carrier, ["blast", "--to", "127.0.0.1:\(fixture.port)", "--connections", "2", "--messages", "6",
                                               "--auth", "SCRAM-SHA-256:\(testUser):\(testPassword)", "--rcpt-domain", "dest.test", "--quiet"],
                                     outputPath: output)
        let code = blast.wait(seconds: 60)
        #expect(code == 0, "\((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        let stored = try fixture.stored()
        #expect(stored.count == 6)
        #expect(stored.allSatisfy { text($0.message).contains("with ESMTPA id") })
    }

    @Test func pipelinedTransactionsAreAnsweredInOrderAndStoredOnce() throws {
        let fixture = try ListenerFixture("pipelined")
        defer { fixture.stop() }
        let answer = try runPeer("pipelined", port: fixture.port, ["20"])
        let codes = try #require(answer["codes"] as? [Int])
        let expected = [220, 250] + Array(repeating: [250, 250, 250, 354, 250], count: 20).flatMap { $0 } + [221]
        #expect(codes == expected)
        let stored = try fixture.stored()
        #expect(stored.count == 20)
        #expect(stored.allSatisfy { $0.recipients.count == 2 })
        let queued = Set((answer["last_data"] as? [String] ?? []).map { String($0.split(separator: " ").last!) })
        #expect(queued == Set(stored.map(\.message.id.description)), "each 250 names the id it was stored under")
    }

    @Test func aClientThatHalfClosesAfterTheDotStillGetsIts250() throws {
        let fixture = try ListenerFixture("halfclose")
        defer { fixture.stop() }
        let answer = try runPeer("halfclose", port: fixture.port)
        #expect(answer["codes"] as? [Int] == [220, 250, 250, 250, 354, 250, 0])
        #expect(try fixture.stored().count == 1)
    }

    @Test func whileStoppingNewTransactionsGet421() throws {
        let fixture = try ListenerFixture("stopping")
        defer { fixture.stop() }
        fixture.server.shared.stopping.store(true, ordering: .releasing)
        let refused = try runPeer("noauth", port: fixture.port)
        #expect(refused["mail"] as? Int == 421)
        #expect((refused["text"] as? String)?.hasPrefix("4.3.2") == true)
        #expect(try fixture.stored().isEmpty)
    }

    @Test func chunkingWithBDATIsStoredWhole() throws {
        let fixture = try ListenerFixture("bdat")
        defer { fixture.stop() }
        let answer = try runPeer("bdat", port: fixture.port)
        #expect(answer["codes"] as? [Int] == [220, 250, 250, 250, 250, 250, 221])
        let stored = try fixture.stored()
        try #require(stored.count == 1)
        #expect(text(stored[0].message).hasSuffix("\r\n\r\nbody of bdat\r\nsecond chunk\r\n"))
        #expect((answer["texts"] as? [String])?[5].hasPrefix("2.0.0 Ok: queued as \(stored[0].message.id)") == true)
    }

    @Test func hostileInputGetsTheRightCodesAndNothingIsStored() throws {
        let fixture = try ListenerFixture("hostile", tls: true)
        defer { fixture.stop() }
        let results = try runPeer("hostile", port: fixture.port)
        func codes(_ name: String) -> [Int] { results[name] as? [Int] ?? [] }
        #expect(codes("long_line") == [220, 250, 500, 250], "1 MB line: 500 5.5.6, then the session goes on")
        #expect(codes("invalid_utf8").prefix(2) == [220, 250])
        #expect([500, 501, 553].contains(codes("invalid_utf8")[2]), "invalid UTF-8 address: \(codes("invalid_utf8"))")
        #expect(codes("invalid_utf8").last == 250)
        #expect(codes("data_before_rcpt") == [220, 250, 250, 554, 250])
        #expect(codes("data_before_mail") == [220, 250, 503])
        #expect(codes("bare_lf") == [220, 250, 250, 250, 354, 550, 250], "bare LF refused with 550 5.6.0")
        #expect(codes("smuggling") == [220, 250, 250, 250, 354, 550, 250], "LF.LF does not end DATA; the whole message is refused")
        #expect(codes("starttls_pipelined") == [220, 250, 220, 250, 503], "the MAIL pipelined after STARTTLS was dropped")
        #expect(codes("auth_bad_base64") == [220, 250, 501, 250])
        #expect(codes("auth_unknown_mechanism") == [220, 250, 504])
        #expect(codes("rcpt_before_mail") == [220, 250, 503])
        #expect(codes("mail_before_helo") == [220, 503])
        #expect(codes("unknown_command") == [220, 250, 500])
        #expect(codes("size_too_big") == [220, 250, 552])
        #expect(codes("bad_address") == [220, 250, 501])
        #expect(codes("null_byte").last == 250, "the session survives a NUL: \(codes("null_byte"))")
        #expect(try fixture.stored().isEmpty, "nothing hostile was stored")
        /* The listener is still up and serving. */
        _ = try runPeer("plain", port: fixture.port)
        #expect(try fixture.stored().count == 1)
    }

    @Test func swaksPlainStarttlsAuthAndPipelining() throws {
        let swaks = try #require(which("swaks"), "swaks is installed (make test installs it)")
        let fixture = try ListenerFixture("swaks", tls: true)
        defer { fixture.stop() }
        let runs: [[String]] = [
            [],
            ["--tls", "--auth", "PLAIN", "--auth-user", testUser, "--auth-password", testPassword],
            ["--pipeline", "--auth", "LOGIN", "--auth-user", testUser, "--auth-password", testPassword],
        ]
        for (index, extra) in runs.enumerated() {
            let output = fixture.folder.file("swaks-\(index).out")
            let process = try ChildProcess(swaks, ["--server", "127.0.0.1:\(fixture.port)", "--from", "sender@client.test",
                                                   "--to", "swaks\(index)@dest.test", "--header", "Subject: swaks \(index)",
                                                   "--body", "hello {{name}} from swaks"] + extra,
                                           outputPath: output, environment: childEnvironment)
            let code = process.wait(seconds: 60)
            let transcript = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            /* swaks exits 0 only when the message was accepted (its transcript interleaves
               stdout and stderr in the one output file, so the spool is what is checked). */
            #expect(code == 0, "swaks \(extra): \(transcript)")
        }
        let stored = try fixture.stored()
        #expect(stored.map(\.recipients).sorted { $0[0] < $1[0] } == [["swaks0@dest.test"], ["swaks1@dest.test"], ["swaks2@dest.test"]])
        #expect(stored.allSatisfy { text($0.message).contains("hello {{name}} from swaks") }, "merge syntax in submitted mail is content")
    }

    @Test func overTheConnectionLimitsClientsGet421() throws {
        let fixture = try ListenerFixture("limits") { $0.maximumConnectionsPerClient = 3 }
        defer { fixture.stop() }
        let answer = try runPeer("idle", port: fixture.port, ["5", "0"])
        #expect(answer["codes"] as? [String: Int] == ["220": 3, "421": 2])
        #expect(fixture.server.statistics.connectionsRefused == 2)
    }

    @Test func diskFullIs452AndEveryAcceptedMessageIsKept() throws {
        let folder = TemporaryFolder("listener-full")
        defer { folder.remove() }
        guard let tmpfs = TestTmpfs.mount(at: folder.path + "/mnt", megabytes: 2, label: "carrier-listener-test") else {
            print("diskFullIs452: skipped: cannot mount a tmpfs (needs root / CAP_SYS_ADMIN)")
            return
        }
        let mount = tmpfs.path
        defer { tmpfs.unmount() }
        var accepted = 0
        var finals: [[Any]] = []
        do {
            let spool = try Spool(SpoolConfiguration(directory: mount + "/Queue", shards: 1, segmentSize: 256 << 10))
            defer { spool.close() }
            var configuration = SubmissionConfiguration()
            configuration.listen = [SocketAddress("127.0.0.1:0")!]
            let server = try SubmissionServer.start(configuration, spool: spool)
            defer { server.stop() }
            let answer = try runPeer("fill", port: server.addresses[0].port, ["100", "100000"])
            finals = answer["finals"] as? [[Any]] ?? []
            accepted = finals.filter { $0.first as? Int == 250 }.count
            let last = try #require(finals.last)
            #expect(last.first as? Int == 452, "the disk filled up: \(last)")
            #expect((last.last as? String)?.hasPrefix("4.3.1") == true)
            #expect(accepted > 0)
        }
        let reopened = try Spool(SpoolConfiguration(directory: mount + "/Queue", readOnly: true))
        defer { reopened.close() }
        #expect(reopened.shards.reduce(0) { $0 + $1.pendingCount } == accepted, "every 250 is in the spool, nothing else")
    }
}
