// Routes.swift - where mail for a domain goes: static routes and smarthosts
//
// A route sends a domain (or, with `*`, every domain without a route of its own) to a
// list of next hops, tried in order: the first that answers takes the transaction, the
// next ones are the failover. The route also says how to talk to them: TLS mode,
// credentials, client certificate, and the local addresses to connect from. Domains
// without a route are delivered by MX lookup (see MXRouter).

public import EventCore
public import SMTP

/// How a route uses TLS.
public enum RouteTLS: String, Sendable, CaseIterable {
    /// Plaintext only: never STARTTLS.
    case none
    /// STARTTLS when offered, the certificate not verified (Postfix's `may`).
    case opportunistic
    /// STARTTLS or no delivery: a host that does not offer it counts as failed (Postfix's `encrypt`).
    case required
    /// TLS from the first octet (port 465, RFC 8314).
    case implicit
}

/// One next hop: a host name or address literal and a port.
///
/// A value; safe to send between threads.
public struct NextHop: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// parse - `host:port`, `[v6]:port` or `host` (port 25).
    public static func parse(_ text: String) throws(RouteError) -> NextHop {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw .invalid(text, "an IPv6 address needs its closing ]") }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.isEmpty || rest.hasPrefix(":"), let port = rest.isEmpty ? 25 : UInt16(rest.dropFirst()) else {
                throw .invalid(text, "the port must be a number from 1 to 65535")
            }
            return NextHop(host: host, port: port)
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let host = parts.first, !host.isEmpty else { throw .invalid(text, "expected HOST:PORT") }
        guard parts.count == 1 || (UInt16(parts[1]).map { $0 > 0 } ?? false) else {
            throw .invalid(text, "the port must be a number from 1 to 65535")
        }
        return NextHop(host: String(host).lowercased(), port: parts.count == 2 ? UInt16(parts[1])! : 25)
    }

    /// The socket address when the host is an address literal (or `localhost`).
    public var literalAddress: SocketAddress? {
        if host == "localhost" { return SocketAddress(ip: IPAddress("127.0.0.1")!, port: port) }
        return IPAddress(host).map { SocketAddress(ip: $0, port: port) }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A static route or smarthost.
///
/// A value; safe to send between threads.
public struct Route: Sendable {
    /// The recipient domain it serves, lowercase, or `*` for every domain without a route.
    public var domain: String
    /// Next hops in order of preference; later ones are the failover.
    public var hops: [NextHop]
    public var tls: RouteTLS = .opportunistic
    /// Verify the server's certificate and name (off by default, as for MX delivery).
    public var verifyCertificate = false
    /// AUTH credentials for a smarthost.
    public var credentials: SMTPCredentials?
    /// A client certificate (PEM files) for relays that authenticate by certificate.
    public var clientCertificate: (certificate: String, key: String)?
    /// Local addresses to connect from, used round-robin per connection (none: the kernel picks).
    public var sources: [IPAddress] = []

    public init(domain: String, hops: [NextHop]) {
        self.domain = domain.lowercased()
        self.hops = hops
    }

    /// parse - `DOMAIN=HOST:PORT[,HOST:PORT...]`, the form of `carrier serve --route`.
    public static func parse(_ text: String) throws(RouteError) -> Route {
        guard let equals = text.firstIndex(of: "=") else { throw .invalid(text, "expected DOMAIN=HOST:PORT[,HOST:PORT...]") }
        let domain = text[..<equals].trimmingCharacters(in: " ")
        guard !domain.isEmpty else { throw .invalid(text, "the domain before = is empty (use * for every domain)") }
        var hops: [NextHop] = []
        for item in text[text.index(after: equals)...].split(separator: ",") {
            hops.append(try NextHop.parse(item.trimmingCharacters(in: " ")))
        }
        guard !hops.isEmpty else { throw .invalid(text, "no HOST:PORT after =") }
        return Route(domain: domain, hops: hops)
    }

    /// The scheduler site its domains share: one set of limits for one set of hosts.
    public var siteName: String { "route:" + hops.map(\.description).joined(separator: ",") }
}

/// Why a route could not be read.
public enum RouteError: Error, Hashable, Sendable, CustomStringConvertible {
    case invalid(String, String)

    public var description: String {
        switch self {
        case .invalid(let text, let why): return "route '\(text)': \(why)"
        }
    }
}

/// The static routes: exact domains first, then `*`.
///
/// A value; safe to send between threads.
public struct RouteTable: Sendable {
    private var byDomain: [String: Route] = [:]
    private var wildcard: Route?

    public init(_ routes: [Route] = []) {
        for route in routes {
            if route.domain == "*" { wildcard = route } else { byDomain[route.domain] = route }
        }
    }

    /// route - the route for `domain`, or nil when it goes by MX.
    public func route(for domain: String) -> Route? {
        byDomain[domain.lowercased()] ?? wildcard
    }

    public var isEmpty: Bool { byDomain.isEmpty && wildcard == nil }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        var slice = self[...]
        while slice.first == set { slice = slice.dropFirst() }
        while slice.last == set { slice = slice.dropLast() }
        return String(slice)
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String { self[...].trimmingCharacters(in: set) }
}
