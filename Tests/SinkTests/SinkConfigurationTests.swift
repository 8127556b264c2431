// SinkConfigurationTests.swift - option parsing, validation, and the documented decision function

import EventCore
import Sink
import Testing

@Suite("Sink configuration")
struct SinkConfigurationTests {
    /// Domain rules parse into their actions; bad ones say what was expected.
    @Test func domainRulesParse() throws {
        #expect(try SinkDomainRule(parsing: "Slow.Test=451:0.3") == SinkDomainRule(domain: "slow.test", action: .refuse(code: 451, rate: 0.3)))
        #expect(try SinkDomainRule(parsing: "rl.test=rate:200/s").action == .rateLimit(count: 200, seconds: 1))
        #expect(try SinkDomainRule(parsing: "rl.test=rate:60/m").action == .rateLimit(count: 60, seconds: 60))
        #expect(try SinkDomainRule(parsing: "rl.test=RATE:5/h").action == .rateLimit(count: 5, seconds: 3600))
        for bad in ["slow.test", "=451:0.3", "slow.test=451", "slow.test=351:0.3", "slow.test=451:1.5",
                    "slow.test=abc:0.1", "rl.test=rate:0/s", "rl.test=rate:10/d", "rl.test=rate:ten/s", "a b=451:0.1"] {
            #expect(throws: SinkConfigurationError.self, "\(bad)") { try SinkDomainRule(parsing: bad) }
        }
        do {
            _ = try SinkDomainRule(parsing: "slow.test=451")
        } catch {
            #expect(error.description.contains("DOMAIN=CODE:RATE"))
        }
    }

    /// Enhanced codes derived for domain-rule replies.
    @Test func enhancedCodesForRuleReplies() {
        let table = [421: "4.3.2", 450: "4.2.0", 451: "4.3.0", 452: "4.5.3", 550: "5.1.1", 553: "5.1.3", 554: "5.7.1", 499: "4.0.0", 599: "5.0.0"]
        for (code, status) in table { #expect(SinkDomainRule.enhancedStatus(for: code).description == status) }
    }

    /// Listen addresses and users parse; bad ones are refused with the option's name.
    @Test func listenAndUsersParse() throws {
        #expect(try SinkConfiguration.parseListen("127.0.0.1:2525") == SocketAddress("127.0.0.1:2525"))
        #expect(try SinkConfiguration.parseListen("[::1]:0").port == 0)
        #expect(throws: SinkConfigurationError.self) { try SinkConfiguration.parseListen("localhost:25") }
        #expect(throws: SinkConfigurationError.self) { try SinkConfiguration.parseListen("127.0.0.1") }
        let user = try SinkConfiguration.parseUser("alice:pa:ss")
        #expect(user.user == "alice" && user.password == "pa:ss")
        for bad in ["alice", ":pass", "alice:"] {
            #expect(throws: SinkConfigurationError.self) { try SinkConfiguration.parseUser(bad) }
        }
    }

    /// Contradictory settings are refused before anything starts.
    @Test func validationRefusesContradictions() {
        /// problem - the validation error of the default configuration changed by `change`, if any.
        func problem(_ change: (inout SinkConfiguration) -> Void) -> String? {
            var configuration = SinkConfiguration()
            change(&configuration)
            do {
                try configuration.validate()
                return nil
            } catch {
                return error.description
            }
        }
        #expect(problem { _ in } == nil)
        #expect(problem { $0.implicitTLS = true }?.contains("--implicit-tls") == true)
        #expect(problem { $0.requireTLS = true }?.contains("--require-tls") == true)
        #expect(problem { $0.requireAuthentication = true }?.contains("--auth") == true)
        #expect(problem { $0.faults.tempfailRate = 0.7; $0.faults.permfailRate = 0.4 }?.contains("exceed 1") == true)
        #expect(problem { $0.faults.disconnectRate = 2 }?.contains("--disconnect-rate") == true)
        #expect(problem { $0.threads = 0 }?.contains("--threads") == true)
        #expect(problem { $0.maximumConnections = 0 }?.contains("--max-connections") == true)
        #expect(problem { $0.listen = [] }?.contains("--listen") == true)
        #expect(problem {
            $0.domainRules = [SinkDomainRule(domain: "a.test", action: .refuse(code: 451, rate: 0.6)),
                              SinkDomainRule(domain: "A.test", action: .refuse(code: 550, rate: 0.6))]
        }?.contains("a.test") == true)
        #expect(throws: SinkError.self) {
            var configuration = SinkConfiguration()
            configuration.implicitTLS = true
            _ = try SinkServer.start(configuration)
        }
    }

    /// The decision function is exactly the documented one: FNV-1a 64 over seed, name, 0, key; SplitMix64; top 53 bits.
    @Test func decisionFunctionIsTheDocumentedOne() {
        /// reference - the header's recipe, written out independently.
        func reference(_ seed: UInt64, _ name: String, _ key: String) -> Double {
            var bytes: [UInt8] = (0..<8).map { UInt8(truncatingIfNeeded: seed >> (8 * UInt64($0))) }
            bytes += Array(name.utf8) + [0] + Array(key.utf8)
            var hash: UInt64 = 0xcbf29ce484222325
            for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
            hash = (hash ^ (hash >> 30)) &* 0xbf58476d1ce4e5b9
            hash = (hash ^ (hash >> 27)) &* 0x94d049bb133111eb
            hash ^= hash >> 31
            return Double(hash >> 11) / Double(UInt64(1) << 53)
        }
        for seed: UInt64 in [0, 1, 42, .max] {
            for decision in SinkFaultDecision.allCases {
                for key in ["", "a@b.test", "user17@example.test", "<m1@client.test>", "12345", "ünïcode@example.test"] {
                    #expect(SinkFaults.fraction(seed: seed, decision: decision, key: key) == reference(seed, decision.rawValue, key))
                }
            }
        }
        #expect(SinkFaultDecision.allCases.map(\.rawValue) == ["rcpt", "data", "greeting", "disconnect", "domain"])
    }

    /// Rates come out as rates over many keys (half at each refusal point), stacked tempfail then permfail, and seeds differ.
    @Test func ratesAreRatesAndStack() {
        var faults = SinkFaults(seed: 9)
        faults.tempfailRate = 0.1
        faults.permfailRate = 0.05
        let outcomes = (0..<20_000).map { faults.recipientOutcome("user\($0)@example.test") }
        let tempfails = outcomes.filter { $0 == .tempfail }.count
        let permfails = outcomes.filter { $0 == .permfail }.count
        /* Each refusal point (RCPT here) takes half of each rate: 5% and 2.5% of 20,000. */
        #expect((850...1_150).contains(tempfails))
        #expect((400...600).contains(permfails))
        /* Stacking: raising the permfail rate never turns a tempfail into something else. */
        var more = faults
        more.permfailRate = 0.5
        #expect((0..<2_000).allSatisfy { faults.recipientOutcome("u\($0)@x.test") != .tempfail || more.recipientOutcome("u\($0)@x.test") == .tempfail })
        #expect(SinkFaults.fraction(seed: 1, decision: .recipient, key: "a@b.test") != SinkFaults.fraction(seed: 2, decision: .recipient, key: "a@b.test"))
        #expect(SinkFaults.fraction(seed: 1, decision: .recipient, key: "a@b.test") != SinkFaults.fraction(seed: 1, decision: .message, key: "a@b.test"))
        #expect(!SinkFaults.decides(seed: 1, decision: .greeting, key: "1", rate: 0))
        #expect(SinkFaults.decides(seed: 1, decision: .greeting, key: "1", rate: 1))
    }

    /// The message key prefers X-Carrier-Id, then Message-ID, then the envelope.
    @Test func messageKeyPrefersTheCarrierID() {
        #expect(SinkFaults.messageKey(carrierID: "c", messageID: "<m>", sender: "<s@x>", recipients: ["a@x"]) == "c")
        #expect(SinkFaults.messageKey(carrierID: nil, messageID: "<m>", sender: "<s@x>", recipients: ["a@x"]) == "<m>")
        #expect(SinkFaults.messageKey(carrierID: nil, messageID: nil, sender: "<s@x>", recipients: ["a@x", "b@x"]) == "<s@x> a@x b@x")
        #expect(SinkFaults.messageKey(carrierID: nil, messageID: nil, sender: "<>", recipients: ["a@x"]) == "<> a@x")
    }
}
