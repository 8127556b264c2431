// Router.swift - a domain's destination: its static route, or its MX hosts through c-ares
//
// For a domain without a static route the router asks DNS for its MX records, orders
// them by preference (shuffling hosts of equal preference), resolves each host's
// addresses and caches the answer for its TTL. A domain without MX records is its own
// mail exchanger (the implicit MX of RFC 5321 §5.1). A null MX (RFC 7505) and a
// domain that does not exist are permanent: its recipients bounce at once. SERVFAIL
// and timeouts are temporary: they are deferred and asked again later.

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
            completion(staticDestination(route))
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

    /// resolveHosts - the addresses of each MX host (A records), in MX order.
    private func resolveHosts(_ domain: String, _ records: [MXRecord], ttl: Int64, implicit: Bool = false) {
        guard let resolver else { return }
        var answers: [[ResolvedHop]?] = Array(repeating: nil, count: records.count)
        var temporary: String?
        var remaining = records.count
        var minimumTTL = ttl
        for (index, record) in records.enumerated() {
            resolver.queryA(record.host) { [self] result in
                switch result {
                case .success(let addresses):
                    answers[index] = addresses.map { ResolvedHop(name: record.host, address: SocketAddress(ip: $0.address, port: mxPort)) }
                    minimumTTL = min(minimumTTL, Int64(addresses.map(\.ttl).min() ?? 300) * 1000)
                case .failure(let error):
                    answers[index] = []
                    if error.isTemporary { temporary = "\(record.host): \(error)" }
                }
                remaining -= 1
                guard remaining == 0 else { return }
                let hops = answers.flatMap { $0 ?? [] }
                if !hops.isEmpty {
                    let hosts = records.map(\.host)
                    let destination = Destination(site: "mx:" + Set(hosts).sorted().joined(separator: ","), mxHosts: hosts, hops: hops, route: nil)
                    finish(domain, .success(destination), ttl: minimumTTL)
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

    private func finish(_ domain: String, _ result: Result<Destination, RoutingFailure>, ttl: Int64) {
        if ttl > 0 {
            let kept = min(Router.maximumTTL, max(Router.minimumTTL, ttl))
            cache[domain] = (result, nowMilliseconds() + kept)
        }
        for completion in waiting.removeValue(forKey: domain) ?? [] { completion(result) }
    }

    /// staticDestination - a route's hops; host names other than `localhost` need DNS,
    /// which static routes do not do (yet): they must be address literals.
    private func staticDestination(_ route: Route) -> Result<Destination, RoutingFailure> {
        var hops: [ResolvedHop] = []
        for hop in route.hops {
            guard let address = hop.literalAddress else { continue }
            hops.append(ResolvedHop(name: hop.host, address: address))
        }
        guard !hops.isEmpty else {
            return .failure(.temporary(code: 451, enhanced: "4.4.3", text: "route for \(route.domain): no address literal among its hosts"))
        }
        return .success(Destination(site: route.siteName, mxHosts: [], hops: hops, route: route))
    }
}
