// BlastResolutionTests.swift - --mx and --to NAME resolved through a local DNS responder

import Blast
import CarrierTesting
import EventCore
import Testing

@Suite("Blast target resolution")
struct BlastResolutionTests {
    /// MX records lowest preference first; a host that does not resolve is skipped.
    @Test func sendsToTheMXHosts() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        let dns = try DNSTestResponder()
        try dns.start()
        defer { dns.stop() }
        dns.set("blast.test", .mx, .answer([
            .mx(preference: 20, host: "backup.blast.test", ttl: 60),
            .mx(preference: 5, host: "gone.blast.test", ttl: 60),
            .mx(preference: 10, host: "mx.blast.test", ttl: 60),
        ]))
        dns.set("gone.blast.test", .a, .nxdomain)
        dns.set("gone.blast.test", .aaaa, .nxdomain)
        dns.set("mx.blast.test", .a, .answer([.a(IPAddress("127.0.0.1")!, ttl: 60)]))
        dns.set("backup.blast.test", .a, .answer([.a(IPAddress("127.0.0.9")!, ttl: 60)]))

        var configuration = blastConfiguration(to: receiver, messages: 10)
        configuration.target = .mx(domain: "blast.test", port: receiver.port)
        configuration.dnsServers = [dns.server]
        configuration.recipientDomain = "blast.test"
        let report = try BlastRunner.run(configuration)
        #expect(report.destinations == ["127.0.0.1:\(receiver.port)", "127.0.0.9:\(receiver.port)"])
        #expect(report.messagesSent == 10)
        #expect(receiver.messages.value == 10)
    }

    /// A domain without MX records is its own mail host.
    @Test func fallsBackToTheDomain() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        let dns = try DNSTestResponder()
        try dns.start()
        defer { dns.stop() }
        dns.set("plain.test", .a, .answer([.a(IPAddress("127.0.0.1")!, ttl: 60)]))

        var configuration = blastConfiguration(to: receiver, messages: 4)
        configuration.target = .mx(domain: "plain.test", port: receiver.port)
        configuration.dnsServers = [dns.server]
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent == 4)
    }

    /// --to NAME:PORT resolves A records.
    @Test func resolvesHostNames() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        let dns = try DNSTestResponder()
        try dns.start()
        defer { dns.stop() }
        dns.set("receiver.blast.test", .a, .answer([.a(IPAddress("127.0.0.1")!, ttl: 60)]))

        var configuration = blastConfiguration(to: receiver, messages: 4)
        configuration.target = try BlastArguments.target("receiver.blast.test:\(receiver.port)", defaultPort: 25)
        configuration.dnsServers = [dns.server]
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent == 4)
    }

    /// A null MX, or no address anywhere, is a resolution error before anything starts.
    @Test func refusesUnresolvableTargets() throws {
        let dns = try DNSTestResponder()
        try dns.start()
        defer { dns.stop() }
        dns.set("null.test", .mx, .answer([.mx(preference: 0, host: "", ttl: 60)]))
        dns.set("nowhere.test", .mx, .nxdomain)

        for domain in ["null.test", "nowhere.test"] {
            var configuration = BlastConfiguration(target: .mx(domain: domain, port: 25))
            configuration.messages = 1
            configuration.dnsServers = [dns.server]
            #expect(throws: BlastError.self) { try BlastRunner.run(configuration) }
        }
    }
}
