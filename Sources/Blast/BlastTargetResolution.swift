// BlastTargetResolution.swift - turn a blast target into the addresses its connections use
//
// Done once, before the load starts, on a loop thread of its own: an address
// target is used as given; a host name gets A then AAAA; a mail domain gets
// MX records, lowest preference first, each host resolved in turn, and a
// domain without MX records is its own mail host (RFC 5321 §5.1). Hosts that
// do not resolve are skipped; no address at all is an error. Connections
// start on the first address and move to the next after a failed handshake.

import Dispatch
import EventCore
import Synchronization

/// One address a blast connects to, with the name its certificate must carry.
///
/// A value; safe to send between threads.
struct BlastDestination: Sendable, Equatable {
    let address: SocketAddress
    let serverName: String?         /* SNI and certificate name; nil: none */
}

/// Resolves a `BlastTarget` with `DNSResolver`.
enum BlastTargetResolver {
    /// resolve - the destinations of `configuration`'s target, in the order to use them.
    static func resolve(_ configuration: BlastConfiguration) throws(BlastError) -> [BlastDestination] {
        let override = configuration.serverName
        let destinations: [BlastDestination]
        switch configuration.target {
        case .address(let address):
            destinations = [BlastDestination(address: address, serverName: override ?? "\(address.ip)")]
        case .host(let name, let port):
            destinations = try lookUp(configuration) { resolver, done in
                resolveHost(resolver, name) { addresses in
                    if addresses.isEmpty { return done(.failure(.resolution("\(name) has no A or AAAA records"))) }
                    done(.success(addresses.map { BlastDestination(address: SocketAddress(ip: $0, port: port), serverName: override ?? name) }))
                }
            }
        case .mx(let domain, let port):
            destinations = try lookUp(configuration) { resolver, done in
                resolver.queryMX(domain) { result in
                    let hosts: [String]
                    switch result {
                    case .success(let records) where records.count == 1 && records[0].host.isEmpty:
                        return done(.failure(.resolution("\(domain) has a null MX: it accepts no mail")))
                    case .success(let records) where !records.isEmpty:
                        hosts = records.map(\.host).filter { !$0.isEmpty }
                    case .success, .failure(.noData):
                        hosts = [domain]
                    case .failure(let error):
                        return done(.failure(.resolution("MX \(domain): \(error)")))
                    }
                    resolveHosts(resolver, hosts, port: port, override: override, found: []) { found in
                        if found.isEmpty { return done(.failure(.resolution("no MX host of \(domain) has an address"))) }
                        done(.success(found))
                    }
                }
            }
        }

        /* Connections bind to the sources' family: keep the addresses they can reach. */
        guard let family = configuration.sources.first?.isIPv6 else { return destinations }
        let usable = destinations.filter { $0.address.ip.isIPv6 == family }
        if usable.isEmpty { throw .resolution("no address of \(configuration.target) matches the --source address family") }
        return usable
    }

    /// lookUp - run `body` on a temporary loop with a resolver; wait for its answer.
    private static func lookUp(
        _ configuration: BlastConfiguration,
        _ body: @escaping (DNSResolver, @escaping (Result<[BlastDestination], BlastError>) -> Void) -> Void
    ) throws(BlastError) -> [BlastDestination] {
        let thread: LoopThread
        do {
            thread = try LoopThread.start(name: "blast-dns")
        } catch {
            throw .system("cannot start the DNS thread: \(error)")
        }
        defer { thread.stopAndJoin() }
        let answer = BlastWaiter<Result<[BlastDestination], BlastError>>()
        let servers = configuration.dnsServers
        let timeout = Int(min(configuration.timeoutMilliseconds, 10_000))
        let body = UncheckedSendable(body)
        thread.execute { loop in
            let resolver: DNSResolver
            do {
                resolver = try DNSResolver(loop: loop, configuration: DNSConfiguration(servers: servers, timeoutMilliseconds: timeout))
            } catch {
                return answer.fulfill(.failure(.resolution("DNS configuration: \(error)")))
            }
            body.value(resolver) { result in
                resolver.close()
                answer.fulfill(result)
            }
        }
        return try answer.wait().get()
    }

    /// resolveHost - A then AAAA records of `name`; the addresses found (maybe none).
    ///
    /// "localhost" is the loopback address without asking (RFC 6761 §6.3): the
    /// resolver queries servers only and never reads /etc/hosts.
    private static func resolveHost(_ resolver: DNSResolver, _ name: String, _ done: @escaping ([IPAddress]) -> Void) {
        if let literal = IPAddress(name) { return done([literal]) }
        let lowered = name.lowercased()
        if lowered == "localhost" || lowered.hasSuffix(".localhost") { return done([IPAddress("127.0.0.1")!]) }
        resolver.queryA(name) { v4 in
            let first = (try? v4.get())?.map(\.address) ?? []
            resolver.queryAAAA(name) { v6 in
                done(first + ((try? v6.get())?.map(\.address) ?? []))
            }
        }
    }

    /// resolveHosts - each host in turn, appending its destinations to `found`.
    private static func resolveHosts(
        _ resolver: DNSResolver, _ hosts: [String], port: UInt16, override: String?,
        found: [BlastDestination], _ done: @escaping ([BlastDestination]) -> Void
    ) {
        guard let host = hosts.first else { return done(found) }
        resolveHost(resolver, host) { addresses in
            let more = addresses.map { BlastDestination(address: SocketAddress(ip: $0, port: port), serverName: override ?? host) }
            resolveHosts(resolver, Array(hosts.dropFirst()), port: port, override: override, found: found + more, done)
        }
    }
}

/// A one-shot result slot a coordinating thread waits on; the first value wins.
///
/// Safe from any thread: the value sits in a `Mutex`, the wake-up is a semaphore.
final class BlastWaiter<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let signal = DispatchSemaphore(value: 0)

    /// fulfill - store `result` unless one is stored, and wake the waiter.
    func fulfill(_ result: Value) {
        let first = value.withLock { slot -> Bool in
            guard slot == nil else { return false }
            slot = result
            return true
        }
        if first { signal.signal() }
    }

    /// wait - block until a value arrives.
    func wait() -> Value {
        signal.wait()
        return value.withLock { $0! }
    }
}

/// Carries a value that is not Sendable to the one loop thread that uses it.
///
/// Only for closures and objects made on the coordinating thread, handed to a
/// loop job, and never touched by the coordinating thread again.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
