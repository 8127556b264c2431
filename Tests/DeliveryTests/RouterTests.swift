// RouterTests.swift - the router's answer cache against a local DNS responder

import CarrierTesting
import Delivery
import EventCore
import Foundation
import Spool
import Testing

@Suite("Router")
struct RouterTests {
    /// The primary MX host's address lookup fails for now (SERVFAIL) while the backup's
    /// works: mail goes to the backup, but that partial answer is kept only briefly (the
    /// records' TTL is an hour), so the primary is asked again within seconds, not after
    /// the hour, and is first once it resolves.
    @Test func aPartialAnswerIsKeptOnlyBriefly() throws {
        let dns = try DNSTestResponder()
        dns.set("part.test", .mx, .answer([.mx(preference: 10, host: "primary.part.test", ttl: 3_600),
                                           .mx(preference: 20, host: "backup.part.test", ttl: 3_600)]))
        dns.set("primary.part.test", .a, .servfail)
        dns.set("backup.part.test", .a, .answer([.a(IPAddress("127.0.0.2")!, ttl: 3_600)]))
        try dns.start()
        defer { dns.stop() }
        let thread = try LoopThread.start(name: "router-test")
        defer { thread.stopAndJoin() }
        let holder = RouterHolder()

        let first: [String] = try runOnLoop(thread) { loop, done in
            let resolver = try! DNSResolver(loop: loop, configuration: DNSConfiguration(servers: [dns.server], timeoutMilliseconds: 500, tries: 1))
            holder.resolver = resolver
            holder.router = Router(routes: RouteTable([]), resolver: resolver)
            holder.router!.resolve("part.test", now: nowMilliseconds()) { result in
                done((try? result.get())?.hops.map(\.name) ?? [])
            }
        }
        #expect(first == ["backup.part.test"])

        dns.set("primary.part.test", .a, .answer([.a(IPAddress("127.0.0.1")!, ttl: 3_600)]))
        /* A minute later (by the clock the router is given): asked again, primary first. */
        let later: [String] = try runOnLoop(thread) { _, done in
            holder.router!.resolve("part.test", now: nowMilliseconds() + 60_000) { result in
                done((try? result.get())?.hops.map(\.name) ?? [])
            }
        }
        #expect(later == ["primary.part.test", "backup.part.test"])
        _ = try runOnLoop(thread) { (_, done: @escaping @Sendable (Bool) -> Void) in
            holder.router = nil
            holder.resolver?.close()
            holder.resolver = nil
            done(true)
        }
    }
}

/// Keeps the router between loop jobs; touched only on the test's loop thread.
private final class RouterHolder: @unchecked Sendable {
    var router: Router?
    var resolver: DNSResolver?
}
