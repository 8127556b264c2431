// Router.swift - a domain's destination: its static route, or its MX hosts through c-ares
//
// For a domain without a static route the router asks DNS for its MX records, orders
// them by preference (shuffling hosts of equal preference), resolves each host's
// addresses (A and AAAA, IPv4 first) and caches the answer for its TTL. A domain
// without MX records is its own mail exchanger (the implicit MX of RFC 5321 §5.1). A
// null MX (RFC 7505) and a domain that does not exist are permanent: its recipients
// bounce at once. SERVFAIL and timeouts are temporary: they are deferred and asked
// again later. A static route's hosts given by name are resolved the same way.

public import EventCore
import Spool

/// One address to try, with the host name it came from (for the log and TLS SNI).
public struct ResolvedHop: Hashable, Sendable {
    public var name: String
    public var address: SocketAddress
}

/// Where a domain's mail goes: the scheduler site, the hops in order and how to talk to them.
///
/// A value; safe to send between threads.
public struct Destination: Sendable {
    /// The scheduler site: a static route's hops, or the domain's MX host set.
    public var site: String
    /// The MX host names (for shaping by MX suffix); empty for static routes.
    public var mxHosts: [String]
    public var hops: [ResolvedHop]
    /// The static route, or nil for MX delivery (opportunistic TLS, no credentials).
    public var route: Route?
}

/// Why a domain has no destination now.
public enum RoutingFailure: Error, Hashable, Sendable, CustomStringConvertible {
    /// Bounce: the domain does not exist, or publishes a null MX.
    case permanent(code: Int, enhanced: String, text: String)
    /// Defer: DNS failed for now.
    case temporary(code: Int, enhanced: String, text: String)

    public var description: String {
        switch self {
        case .permanent(let code, let enhanced, let text), .temporary(let code, let enhanced, let text):
            return "\(code) \(enhanced) \(text)"
        }
    }
}

/// Resolves domains to destinations. Confined to its worker shard's loop thread.
public final class Router {
    private let routes: RouteTable
    private let resolver: DNSResolver?
    private let mxPort: UInt16
    private var cache: [String: (result: Result<Destination, RoutingFailure>, expires: Int64)] = [:]
    private var waiting: [String: [(Result<Destination, RoutingFailure>) -> Void]] = [:]
    private var random = SystemRandomNumberGenerator()

    /// How long a permanent failure (NXDOMAIN, null MX) is remembered, in ms.
    static let negativeTTL: Int64 = 300_000
    /// The shortest and longest time an answer is kept, whatever its TTL says.
    static let minimumTTL: Int64 = 5_000
    static let maximumTTL: Int64 = 3_600_000

    /// Make a router; without a resolver, domains without a static route fail temporarily.
    public init(routes: RouteTable, resolver: DNSResolver?, mxPort: UInt16 = 25) {
        self.routes = routes
        self.resolver = resolver
        self.mxPort = mxPort
    }

    /// resolve - the destination of `domain`, now (static routes, cached answers) or once DNS answers.
    public func resolve(_ domain: String, now: Int64, _ completion: @escaping (Result<Destination, RoutingFailure>) -> Void) {
        let domain = domain.lowercased()
        if let route = routes.route(for: domain) {
            if route.hops.allSatisfy({ $0.literalAddress != nil }) {
                completion(staticDestination(route, resolved: [:]))
            } else {
                resolveRoute(route, now: now, completion)
            }
            return
        }
        if let cached = cache[domain], cached.expires > now {
            completion(cached.result)
            return
        }
        guard let resolver else {
            completion(.failure(.temporary(code: 451, enhanced: "4.4.3", text: "no route for \(domain) and no DNS resolver")))
            return
        }
        if waiting[domain] != nil {
            waiting[domain]!.append(completion)
            return
        }
        waiting[domain] = [completion]
        resolver.queryMX(domain) { [self] result in
            switch result {
            case .success(let records):
                if records.contains(where: { $0.host.isEmpty }) {
                    finish(domain, .failure(.permanent(code: 556, enhanced: "5.1.10", text: "\(domain) does not accept mail (null MX)")), ttl: Router.negativeTTL)
                    return
                }
                resolveHosts(domain, ordered(records), ttl: Int64(records.map(\.ttl).min() ?? 300) * 1000)
            case .failure(.noData):
                /* No MX: the domain itself is the mail exchanger (implicit MX). */
                resolveHosts(domain, [MXRecord(preference: 0, host: domain, ttl: 300)], ttl: 300_000, implicit: true)
            case .failure(.nxdomain):
                finish(domain, .failure(.permanent(code: 550, enhanced: "5.1.2", text: "\(domain): no such domain (NXDOMAIN)")), ttl: Router.negativeTTL)
            case .failure(let error):
                finish(domain, .failure(.temporary(code: 451, enhanced: "4.4.3", text: "MX lookup for \(domain) failed: \(error)")), ttl: 0)
            }
        }
    }

    /// ordered - MX records by preference, hosts of equal preference shuffled (RFC 5321 §5.1).
    private func ordered(_ records: [MXRecord]) -> [MXRecord] {
        var out: [MXRecord] = []
        for preference in Set(records.map(\.preference)).sorted() {
            out += records.filter { $0.preference == preference }.shuffled(using: &random)
        }
        return out
    }

    /// addresses - a host's IPv4 then IPv6 addresses (A and AAAA, asked together), with the
    /// shortest TTL in ms. Fails when neither has an address: temporarily if either lookup
    /// failed for now, else with the A lookup's error (NXDOMAIN, no data).
    private func addresses(of host: String, _ completion: @escaping (Result<(addresses: [IPAddress], ttl: Int64), DNSError>) -> Void) {
        guard let resolver else { return completion(.failure(.cancelled(host))) }
        var results: [Result<[AddressRecord], DNSError>?] = [nil, nil]
        func done(_ index: Int, _ result: Result<[AddressRecord], DNSError>) {
            results[index] = result
            guard let v4 = results[0], let v6 = results[1] else { return }
            let records = ((try? v4.get()) ?? []) + ((try? v6.get()) ?? [])
            if !records.isEmpty {
                completion(.success((records.map(\.address), Int64(records.map(\.ttl).min() ?? 300) * 1000)))
            } else if case .failure(let error) = v6, Router.isTransient(error) {
                completion(.failure(error))
            } else if case .failure(let error) = v4 {
                completion(.failure(error))
            } else if case .failure(let error) = v6 {
                completion(.failure(error))
            } else {
                completion(.failure(.noData(host)))
            }
        }
        resolver.queryA(host) { done(0, $0) }
        resolver.queryAAAA(host) { done(1, $0) }
    }

    /// resolveHosts - the addresses of each MX host (A and AAAA), in MX order.
    private func resolveHosts(_ domain: String, _ records: [MXRecord], ttl: Int64, implicit: Bool = false) {
        var answers: [[ResolvedHop]?] = Array(repeating: nil, count: records.count)
        var temporary: String?
        var remaining = records.count
        var minimumTTL = ttl
        for (index, record) in records.enumerated() {
            addresses(of: record.host) { [self] result in
                switch result {
                case .success(let (addresses, addressTTL)):
                    answers[index] = addresses.map { ResolvedHop(name: record.host, address: SocketAddress(ip: $0, port: mxPort)) }
                    minimumTTL = min(minimumTTL, addressTTL)
                case .failure(let error):
                    answers[index] = []
                    if Router.isTransient(error) { temporary = "\(record.host): \(error)" }
                }
                remaining -= 1
                guard remaining == 0 else { return }
                let hops = answers.flatMap { $0 ?? [] }
                if !hops.isEmpty {
                    let hosts = records.map(\.host)
                    let destination = Destination(site: "mx:" + Set(hosts).sorted().joined(separator: ","), mxHosts: hosts, hops: hops, route: nil)
                    /* Some host's lookup failed for now: this answer (without it, perhaps
                       without the primary) is kept only briefly, so that host is asked again
                       soon instead of being passed over for the records' whole TTL. */
                    finish(domain, .success(destination), ttl: temporary == nil ? minimumTTL : Router.minimumTTL)
                } else if let temporary {
                    finish(domain, .failure(.temporary(code: 451, enhanced: "4.4.3", text: "address lookup failed: \(temporary)")), ttl: 0)
                } else if implicit {
                    finish(domain, .failure(.permanent(code: 550, enhanced: "5.1.2", text: "\(domain) has no MX and no address")), ttl: Router.negativeTTL)
                } else {
                    finish(domain, .failure(.permanent(code: 550, enhanced: "5.4.4", text: "no address for any MX host of \(domain)")), ttl: Router.negativeTTL)
                }
            }
        }
    }

    /// isTransient - a lookup failure that says nothing about the name: SERVFAIL, a timeout,
    /// and a query cancelled because its resolver closed (a reload, shutting down), which
    /// must defer, never bounce.
    static func isTransient(_ error: DNSError) -> Bool {
        if case .cancelled = error { return true }
        return error.isTemporary
    }

    private func finish(_ domain: String, _ result: Result<Destination, RoutingFailure>, ttl: Int64) {
        if ttl > 0 {
            let kept = min(Router.maximumTTL, max(Router.minimumTTL, ttl))
            cache[domain] = (result, nowMilliseconds() + kept)
        }
        for completion in waiting.removeValue(forKey: domain) ?? [] { completion(result) }
    }

    /// resolveRoute - a route with hosts given by name: their addresses (cached for their
    /// TTL), then its destination.
    private func resolveRoute(_ route: Route, now: Int64, _ completion: @escaping (Result<Destination, RoutingFailure>) -> Void) {
        let key = "route:" + route.domain
        if let cached = cache[key], cached.expires > now { return completion(cached.result) }
        guard resolver != nil else {
            return completion(.failure(.temporary(code: 451, enhanced: "4.4.3", text: "route for \(route.domain) names hosts and there is no DNS resolver")))
        }
        if waiting[key] != nil {
            waiting[key]!.append(completion)
            return
        }
        waiting[key] = [completion]
        let names = Array(Set(route.hops.filter { $0.literalAddress == nil }.map(\.host)))
        var resolved: [String: [IPAddress]] = [:]
        var failures: [String] = []
        var remaining = names.count
        var ttl = Router.maximumTTL
        for name in names {
            addresses(of: name) { [self] result in
                switch result {
                case .success(let (addresses, addressTTL)):
                    resolved[name] = addresses
                    ttl = min(ttl, addressTTL)
                case .failure(let error):
                    failures.append("\(error)")
                }
                remaining -= 1
                guard remaining == 0 else { return }
                let result = staticDestination(route, resolved: resolved, failures: failures)
                /* A failed lookup is asked again at the next attempt; an answer is kept for its
                   TTL, or only briefly when some host's lookup failed. */
                finish(key, result, ttl: (try? result.get()) == nil ? 0 : failures.isEmpty ? ttl : Router.minimumTTL)
            }
        }
    }

    /// staticDestination - a route's hops in order: address literals as they are, names by
    /// the addresses `resolved` found. No address at all defers (the route stays the
    /// domain's route: mail never goes by MX instead).
    private func staticDestination(_ route: Route, resolved: [String: [IPAddress]], failures: [String] = []) -> Result<Destination, RoutingFailure> {
        var hops: [ResolvedHop] = []
        for hop in route.hops {
            if let address = hop.literalAddress {
                hops.append(ResolvedHop(name: hop.host, address: address))
            } else {
                hops += (resolved[hop.host] ?? []).map { ResolvedHop(name: hop.host, address: SocketAddress(ip: $0, port: hop.port)) }
            }
        }
        guard !hops.isEmpty else {
            let why = failures.isEmpty ? "no address for any of its hosts" : failures.joined(separator: "; ")
            return .failure(.temporary(code: 451, enhanced: "4.4.3", text: "route for \(route.domain): \(why)"))
        }
        return .success(Destination(site: route.siteName, mxHosts: [], hops: hops, route: route))
    }
}
