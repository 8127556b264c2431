// SinkFaultTests.swift - injected faults: exactly the refusals the public decision functions predict

import CarrierTesting
import EventCore
import SMTP
import SMTPStreams
import Sink
import Testing

@Suite("Sink fault injection")
struct SinkFaultTests {
    /// Tempfail and permfail rates, per RCPT and per end of data, refuse exactly the predicted recipients.
    @Test(arguments: [false, true])
    func tempfailAndPermfailMatchThePrediction(chunking: Bool) throws {
        var faults = SinkFaults(seed: 7)
        faults.tempfailRate = 0.4
        faults.permfailRate = 0.2
        let server = try startSink { $0.faults = faults }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let recipients = (0..<60).map { index in (0..<3).map { "user\(index)-\($0)@example.test" } }
        let messages = recipients.enumerated().map { message(to: $1, carrierID: "msg-\($0)") }
        let run = try client.send(messages, to: server) { $0.session.chunking = chunking }
        #expect(run.error == nil)

        /* The prediction: each recipient's RCPT fate, then the end-of-data fate of messages with someone accepted. */
        let rules = SinkRules(faults: faults, domainRules: [])
        var expected: [[Int]] = []
        var refusedRecipients = 0
        var refusedMessages = 0
        var acceptedMessages = 0
        for (index, addresses) in recipients.enumerated() {
            let rcpt = addresses.map { rules.recipientReply(try! MailAddress(parsing: $0))?.code }
            refusedRecipients += rcpt.compactMap { $0 }.count
            let end: Int
            if rcpt.allSatisfy({ $0 != nil }) {
                end = 0
            } else if let refusal = rules.messageReply(key: "msg-\(index)") {
                end = refusal.code
                refusedMessages += 1
            } else {
                end = 250
                acceptedMessages += 1
            }
            expected.append(rcpt.map { $0 ?? end })
        }
        #expect(run.replyCodes(messages: 60) == expected)
        /* The rates are big enough that every kind of outcome happened. */
        let all = expected.flatMap { $0 }
        #expect([250, 451, 550, 554].allSatisfy { all.contains($0) })

        server.stop()
        let statistics = server.statistics
        #expect(statistics.recipientsRefused == refusedRecipients)
        #expect(statistics.recipientsAccepted == 180 - refusedRecipients)
        #expect(statistics.messagesRefused == refusedMessages)
        #expect(statistics.messagesAccepted == acceptedMessages)
        #expect(statistics.replies4xx + statistics.replies5xx == refusedRecipients + refusedMessages)
    }

    /// A domain's refusal rules stack in order on one fraction; other domains are untouched.
    @Test func domainRefusalRules() throws {
        let rules = try ["slow.test=451:0.3", "SLOW.test=550:0.2"].map { try SinkDomainRule(parsing: $0) }
        let server = try startSink { $0.domainRules = rules; $0.faults = SinkFaults(seed: 3) }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let addresses = (0..<40).map { "u\($0)@Slow.Test" } + (0..<10).map { "u\($0)@fast.test" }
        let run = try client.send(addresses.map { message(to: [$0]) }, to: server)
        #expect(run.error == nil)
        /* Computed from the documented function directly, not through SinkRules. */
        let expected = addresses.map { address -> [Int] in
            guard address.hasSuffix("@Slow.Test") else { return [250] }
            let fraction = SinkFaults.fraction(seed: 3, decision: .domain, key: address)
            return [fraction < 0.3 ? 451 : fraction < 0.5 ? 550 : 250]
        }
        #expect(run.replyCodes(messages: 50) == expected)
        #expect(Set(expected.flatMap { $0 }) == [250, 451, 550])
        let refusal = run.results.values.flatMap(\.recipients).first { $0.reply.code == 451 }
        #expect(refusal?.reply.text.hasPrefix("4.3.0 ") == true)
        let permanent = run.results.values.flatMap(\.recipients).first { $0.reply.code == 550 }
        #expect(permanent?.reply.text.hasPrefix("5.1.1 ") == true)
    }

    /// A rate-limited domain takes N recipients, then answers 421 4.7.0 and closes; other domains still pass.
    @Test func rateLimitedDomainAnswers421AndCloses() throws {
        let server = try startSink { $0.domainRules = [try! SinkDomainRule(parsing: "ratelimited.test=rate:3/h")] }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let first = try client.send((0..<6).map { message(to: ["r\($0)@ratelimited.test"]) }, to: server)
        #expect(first.replyCodes(messages: 3) == [[250], [250], [250]])
        guard case .session(.serviceClosing(let reply))? = first.error else {
            Issue.record("expected 421 and a close, got \(String(describing: first.error))")
            return
        }
        #expect(reply.code == 421)
        #expect(reply.text.hasPrefix("4.7.0 ") && reply.text.contains("rate limit exceeded"))
        #expect((3..<6).allSatisfy { first.results[$0]?.recipients.first?.disposition != .delivered })

        /* The bucket is empty across connections; another domain is not limited. */
        let second = try client.send([message(to: ["r9@ratelimited.test"])], to: server)
        #expect(second.error != nil)
        let third = try client.send([message(to: ["other@example.test"])], to: server)
        #expect(third.error == nil && third.replyCodes(messages: 1) == [[250]])
        server.stop()
        #expect(server.statistics.messagesAccepted == 4)
        #expect(server.statistics.recipientsRefused >= 2)
    }

    /// --greeting-421-rate refuses exactly the predicted connections (numbered in order).
    @Test func greeting421MatchesThePrediction() throws {
        var faults = SinkFaults(seed: 11)
        faults.greeting421Rate = 0.5
        let server = try startSink(threads: 2) { $0.faults = faults }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        var refused: [Bool] = []
        for index in 0..<12 {
            let run = try client.send([message(to: ["g\(index)@example.test"])], to: server)
            if case .session(.greetingRejected(let reply))? = run.error {
                #expect(reply.code == 421 && reply.text.hasPrefix("4.3.2 "))
                refused.append(true)
            } else {
                #expect(run.error == nil)
                refused.append(false)
            }
        }
        let expected = (1...12).map { faults.refusesGreeting(connection: UInt64($0)) }
        #expect(refused == expected)
        #expect(expected.contains(true) && expected.contains(false))
        server.stop()
        #expect(server.statistics.greetingsRefused == expected.filter { $0 }.count)
        #expect(server.statistics.messagesAccepted == expected.filter { !$0 }.count)
    }

    /// Beyond --max-connections a connection gets 421 4.7.0 at once and no session.
    @Test func maxConnectionsRefusesTheExtraConnection() throws {
        let server = try startSink(threads: 2) { $0.maximumConnections = 2 }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        /* Two connections that stay open (idle) once ready. */
        let held = (0..<2).map { _ in TestWaiter<Bool>() }
        let closed = (0..<2).map { _ in TestWaiter<ClientRun>() }
        final class Holder: @unchecked Sendable { var connections: [ClientConnection] = [] }
        let holder = Holder()
        for index in 0..<2 {
            client.thread.execute { loop in
                var configuration = ClientConnectionConfiguration(session: ClientConfiguration(heloName: "client.test"))
                configuration.session.tls = .never
                let sender = TestSender(messages: []) { closed[index].fulfill($0) }
                var holding = true
                sender.onReady = { connection in
                    guard holding else { return false }
                    holding = false
                    holder.connections.append(connection)
                    held[index].fulfill(true)
                    return true
                }
                _ = ClientConnection.connect(loop: loop, to: server.addresses[0], configuration: configuration,
                                         crypto: OpenSSLCrypto(), delegate: sender)
            }
        }
        #expect(held.allSatisfy { $0.wait(seconds: 30) == true })
        #expect(server.statistics.connectionsCurrent == 2)

        let third = try client.send([message(to: ["third@example.test"])], to: server)
        guard case .session(.greetingRejected(let reply))? = third.error else {
            Issue.record("expected a 421 greeting, got \(String(describing: third.error))")
            return
        }
        #expect(reply.code == 421)
        #expect(reply.text == "4.7.0 Too many connections")

        /* Once the held connections quit, a new one is served. */
        client.thread.execute { _ in holder.connections.forEach { $0.quit() } }
        #expect(closed.allSatisfy { $0.wait(seconds: 30)?.error == nil })
        /* The client may see the close before the sink's close callback ran. */
        #expect(waitUntil { server.statistics.connectionsCurrent == 0 })
        let fourth = try client.send([message(to: ["fourth@example.test"])], to: server)
        #expect(fourth.error == nil && fourth.replyCodes(messages: 1) == [[250]])
        server.stop()
        #expect(server.statistics.connectionsRefused == 1)
        #expect(server.statistics.connectionsTotal == 3)
        #expect(server.statistics.replies[421] == 1)
    }

    /// --disconnect-rate cuts exactly the predicted data phases off; the client sees a lost connection and the sink stays up.
    @Test(arguments: [(false, 1_000), (true, 1_000), (false, 300_000), (true, 300_000)])
    func disconnectMidDataMatchesThePrediction(chunking: Bool, size: Int) throws {
        var faults = SinkFaults(seed: 5)
        faults.disconnectRate = 0.5
        let server = try startSink { $0.faults = faults }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let body = String(repeating: "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", count: size / 74 + 1)
        var cut: [Bool] = []
        for index in 0..<8 {
            let run = try client.send([message(to: ["d\(index)@example.test"], body: body)], to: server) {
                $0.session.chunking = chunking
            }
            switch run.error {
            case nil:
                #expect(run.replyCodes(messages: 1) == [[250]])
                cut.append(false)
            case .session(.connectionLost)?:
                #expect(run.results[0]?.recipients.first?.disposition == .deferred)
                cut.append(true)
            case let other?:
                Issue.record("unexpected error \(other)")
                cut.append(true)
            }
        }
        let expected = (1...8).map { faults.disconnects(dataPhase: UInt64($0)) }
        #expect(cut == expected)
        #expect(expected.contains(true) && expected.contains(false))
        server.stop()
        #expect(server.statistics.disconnects == expected.filter { $0 }.count)
        #expect(server.statistics.messagesAccepted == expected.filter { !$0 }.count)
    }

    /// --delay-ms holds replies back but keeps their order, through STARTTLS and pipelined refusals.
    @Test func delayedRepliesKeepTheirOrder() throws {
        let rule = try SinkDomainRule(parsing: "slow.test=550:0.5")
        let server = try startSink {
            $0.replyDelayMilliseconds = 40
            $0.tls = .selfSigned
            $0.domainRules = [rule]
        }
        let client = try TestClient()
        defer {
            client.stop()
            server.stop()
        }
        let messages = (0..<6).map { index in message(to: (0..<3).map { "d\(index)-\($0)@slow.test" }) }
        let run = try client.send(messages, to: server, configure: unverifiedTLS)
        #expect(run.error == nil)
        let rules = SinkRules(faults: SinkFaults(), domainRules: [rule])
        let expected = messages.map { message in
            message.recipients.map { rules.recipientReply($0)?.code ?? 250 }
        }
        #expect(run.replyCodes(messages: 6) == expected)
        #expect(Set(expected.flatMap { $0 }) == [250, 550])
        /* Held back: a lower bound only, at half the delay (loop timers count whole milliseconds). */
        let banner = try #require(run.stages.firstIndex(of: .banner))
        #expect(run.stageNanoseconds[banner] >= 20_000_000)
    }
}
