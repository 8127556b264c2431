// EngineRoutingTests.swift - failover between hops, AUTH and STARTTLS to a smarthost, MX routing through DNS

import CarrierTesting
import Delivery
import EventCore
import Foundation
import SMTP
import Scheduler
import Sink
import Spool
import Testing

@Suite("Engine routing", .serialized)
struct EngineRoutingTests {
    /// The first hop refuses connections; the second receives everything.
    @Test func failsOverToTheNextHop() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl")
        let refused = try closedPort()
        let spool = try testSpool(folder.path)
        _ = try enqueueCampaign(spool, count: 300, domains: 3)
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(routes: [
            Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: refused), NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])]))
        let status = drain(engine)
        engine.stop()
        sink.stop()
        #expect(DeliveryEngine.isDrained(status))
        #expect(status.byDomain.values.reduce(0) { $0 + $1.delivered } == 300)
        #expect(status.byDomain.values.reduce(0) { $0 + $1.deferred } == 0)
        #expect(try readSinkRecord(folder.path + "/record.jsonl").flatMap(\.recipients).count == 300)
        spool.close()
    }

    /// A dead first hop (every greeting 421) is passed over once it failed: 60 one-message
    /// transactions on four connections reach the second hop promptly, the dead one sees a
    /// handful of connections rather than one per transaction, and the site is not paused
    /// for failures that failing over got past.
    @Test func aDeadFirstHopIsPassedOver() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl")
        let dead = try startRecordingSink(record: folder.path + "/dead.jsonl") { $0.faults.greeting421Rate = 1 }
        let spool = try testSpool(folder.path)
        _ = try enqueueCampaign(spool, count: 60, domains: 1, body: "Subject: {{n}}\r\n\r\nHi\r\n") { [("n", String($0))] }
        let route = Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: dead.addresses[0].port),
                                              NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])
        var configuration = engineConfiguration(routes: [route])
        configuration.scheduler = SchedulerConfiguration(shaping: Shaping(sites: [route.siteName: Limits(maxConnections: 4, initialConnections: 4)]))
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)
        let status = drain(engine, seconds: 20)
        engine.stop()
        sink.stop()
        dead.stop()
        #expect(status.byDomain["d0.test"]?.delivered == 60, "\(status.byDomain)")
        #expect(dead.statistics.connectionsTotal <= 8, "the dead hop saw \(dead.statistics.connectionsTotal) connections")
        spool.close()
    }

    /// A smarthost that requires STARTTLS and AUTH gets every message over TLS, authenticated.
    @Test func authenticatesOverSTARTTLSToASmarthost() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl") { configuration in
            configuration.tls = .selfSigned
            configuration.users = ["relay-user": "s3cret-Pa55"]
            configuration.requireAuthentication = true
            configuration.requireTLS = true
        }
        let spool = try testSpool(folder.path)
        _ = try enqueueCampaign(spool, count: 50, domains: 5)
        var route = Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])
        route.tls = .required
        route.credentials = SMTPCredentials(username: "relay-user", secret: .password("s3cret-Pa55"))
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(routes: [route]))
        let status = drain(engine)
        engine.stop()
        sink.stop()
        #expect(status.byDomain.values.reduce(0) { $0 + $1.delivered } == 50)
        let records = try readSinkRecord(folder.path + "/record.jsonl")
        #expect(records.flatMap(\.recipients).count == 50)
        #expect(records.allSatisfy { $0.tls && $0.auth == "relay-user" })
        spool.close()
    }

    /// A wrong password defers (never bounces), says why in the log, and the password shows
    /// up nowhere in the log, plain or base64-encoded.
    @Test func wrongPasswordDefersAndNeverLeaks() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl") { configuration in
            configuration.tls = .selfSigned
            configuration.users = ["relay-user": "right-password"]
            configuration.requireAuthentication = true
        }
        let spool = try testSpool(folder.path)
        _ = try enqueueCampaign(spool, count: 10, domains: 1)
        var route = Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])
        route.tls = .required
        let password = "Wr0ng-Secret-77"
        route.credentials = SMTPCredentials(username: "relay-user", secret: .password(password))
        let log = folder.path + "/delivery.log"
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(routes: [route], log: log))
        let status = drain(engine)
        engine.stop()
        sink.stop()
        #expect(status.byDomain.values.reduce(0) { $0 + $1.delivered } == 0)
        #expect(status.byDomain.values.reduce(0) { $0 + $1.bounced } == 0)
        #expect(status.byDomain.values.reduce(0) { $0 + $1.deferred } == 10)
        #expect(spool.shards.reduce(0) { $0 + $1.pendingCount } == 10)
        let text = try String(contentsOfFile: log, encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 10)
        #expect(lines.allSatisfy { $0.contains("\"event\":\"deferred\"") && $0.contains("authentication") })
        let plain = Array("\u{0}relay-user\u{0}\(password)".utf8)
        for secret in [password, Base64.encode(Array(password.utf8)), Base64.encode(plain)] {
            #expect(!text.contains(secret))
        }
        spool.close()
    }

    /// MX, implicit MX, null MX and NXDOMAIN through a local DNS responder.
    @Test func routesByMXThroughDNS() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl")
        let dns = try DNSTestResponder()
        let local = IPAddress("127.0.0.1")!
        dns.set("mx.test", .mx, .answer([.mx(preference: 10, host: "dead.mx.test", ttl: 60), .mx(preference: 20, host: "mail.mx.test", ttl: 60)]))
        dns.set("dead.mx.test", .a, .answer([.a(IPAddress("127.0.0.9")!, ttl: 60)]))
        dns.set("mail.mx.test", .a, .answer([.a(local, ttl: 60)]))
        dns.set("implicit.test", .a, .answer([.a(local, ttl: 60)]))
        dns.set("nullmx.test", .mx, .answer([.mx(preference: 0, host: "", ttl: 60)]))
        dns.set("servfail.test", .mx, .servfail)
        try dns.start()
        defer { dns.stop() }
        let spool = try testSpool(folder.path)
        for domain in ["mx.test", "implicit.test", "nullmx.test", "nx.test", "servfail.test"] {
            _ = try spool.enqueue(NewMessage(sender: "a@sender.test", body: Array("Subject: x\r\n\r\nx\r\n".utf8),
                                             recipients: [NewRecipient("someone@\(domain)")]))
        }
        var configuration = engineConfiguration(routes: [])
        configuration.dns = DNSConfiguration(servers: [dns.server], timeoutMilliseconds: 500, tries: 1)
        configuration.mxPort = sink.addresses[0].port
        configuration.connectTimeoutMilliseconds = 500
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)
        let status = drain(engine)
        engine.stop()
        sink.stop()
        #expect(status.byDomain["mx.test"]?.delivered == 1)
        #expect(status.byDomain["implicit.test"]?.delivered == 1)
        #expect(status.byDomain["nullmx.test"]?.bounced == 1)
        #expect(status.byDomain["nx.test"]?.bounced == 1)
        #expect(status.byDomain["servfail.test"]?.deferred == 1)
        let delivered = try readSinkRecord(folder.path + "/record.jsonl").flatMap(\.recipients).sorted()
        #expect(delivered == ["someone@implicit.test", "someone@mx.test"])
        #expect(spool.shards.reduce(0) { $0 + $1.pendingCount } == 1)
        spool.close()
    }
}

extension EngineRoutingTests {
    /// An MX host with only an AAAA record is reached over IPv6, and a static route may name
    /// its host (resolved through DNS, A or AAAA); a route whose name does not resolve defers
    /// rather than bouncing or going by MX.
    @Test(.enabled(if: ipv6LoopbackAvailable, "no IPv6 loopback (::1) here"))
    func ipv6OnlyMXAndRouteHostsByName() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let v6 = try startRecordingSink(record: folder.path + "/v6.jsonl") { $0.listen = [SocketAddress("[::1]:0")!] }
        let v4 = try startRecordingSink(record: folder.path + "/v4.jsonl")
        let dns = try DNSTestResponder()
        dns.set("v6only.test", .mx, .answer([.mx(preference: 10, host: "mx6.v6only.test", ttl: 60)]))
        dns.set("mx6.v6only.test", .aaaa, .answer([.aaaa(IPAddress("::1")!, ttl: 60)]))
        dns.set("relay.route.test", .a, .answer([.a(IPAddress("127.0.0.1")!, ttl: 60)]))
        try dns.start()
        defer { dns.stop() }
        let spool = try testSpool(folder.path)
        for domain in ["v6only.test", "named.test", "unnamed.test"] {
            _ = try spool.enqueue(NewMessage(sender: "a@sender.test", body: Array("Subject: x\r\n\r\nx\r\n".utf8),
                                             recipients: [NewRecipient("someone@\(domain)")]))
        }
        var configuration = engineConfiguration(routes: [
            Route(domain: "named.test", hops: [NextHop(host: "relay.route.test", port: v4.addresses[0].port)]),
            Route(domain: "unnamed.test", hops: [NextHop(host: "nowhere.route.test", port: v4.addresses[0].port)]),
        ])
        configuration.dns = DNSConfiguration(servers: [dns.server], timeoutMilliseconds: 500, tries: 1)
        configuration.mxPort = v6.addresses[0].port
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)
        let status = drain(engine)
        engine.stop()
        v6.stop()
        v4.stop()
        #expect(status.byDomain["v6only.test"]?.delivered == 1, "\(status.byDomain)")
        #expect(status.byDomain["named.test"]?.delivered == 1, "\(status.byDomain)")
        #expect(status.byDomain["unnamed.test"]?.deferred == 1, "\(status.byDomain)")
        #expect(try readSinkRecord(folder.path + "/v6.jsonl").flatMap(\.recipients) == ["someone@v6only.test"])
        #expect(try readSinkRecord(folder.path + "/v4.jsonl").flatMap(\.recipients) == ["someone@named.test"])
        spool.close()
    }
}

extension EngineRoutingTests {
    /// A reload with other DNS servers asks them from then on (the first server fails every
    /// lookup for now; after the reload the retry finds the MX through the second one).
    @Test func reloadSwitchesDNSServers() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl")
        let failing = try DNSTestResponder()
        failing.set("later.test", .mx, .servfail)
        try failing.start()
        defer { failing.stop() }
        let working = try DNSTestResponder()
        working.set("later.test", .mx, .answer([.mx(preference: 10, host: "mx.later.test", ttl: 60)]))
        working.set("mx.later.test", .a, .answer([.a(IPAddress("127.0.0.1")!, ttl: 60)]))
        try working.start()
        defer { working.stop() }
        let spool = try testSpool(folder.path)
        _ = try spool.enqueue(NewMessage(sender: "a@sender.test", body: Array("Subject: x\r\n\r\nx\r\n".utf8),
                                         recipients: [NewRecipient("someone@later.test")]))
        var configuration = engineConfiguration(routes: [])
        configuration.dns = DNSConfiguration(servers: [failing.server], timeoutMilliseconds: 500, tries: 1)
        configuration.mxPort = sink.addresses[0].port
        configuration.scheduler = SchedulerConfiguration(retry: RetryPolicy(retryInterval: 300, maxRetryInterval: 300, jitter: 0))
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)
        var status = drain(engine)
        #expect(status.byDomain["later.test"]?.deferred ?? 0 >= 1)
        configuration.dns = DNSConfiguration(servers: [working.server], timeoutMilliseconds: 500, tries: 1)
        engine.reload(configuration)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && status.byDomain["later.test"]?.delivered != 1 {
            usleep(20_000)
            status = engine.status()
        }
        engine.stop()
        sink.stop()
        #expect(status.byDomain["later.test"]?.delivered == 1, "\(status.byDomain)")
        spool.close()
    }
}

/// True when a socket can be bound to [::1] (some containers have no IPv6 loopback).
let ipv6LoopbackAvailable: Bool = {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
    }
}()

/// closedPort - a loopback port nothing listens on (bound, then closed).
func closedPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    return UInt16(bigEndian: address.sin_port)
}
