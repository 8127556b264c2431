// CarrierFile.swift - carrier.toml: the spool, the engine, the delivery log and the routes
//
// One file configures `carrier serve`. Every key is checked when the file is read; an
// unknown table or key, or a value of the wrong kind, is an error naming the file,
// line and key. The shaping (limits, retries, rules) lives in its own file, named by
// `shaping` in [delivery], laid over the shipped defaults (see ShapingFile).

public import Delivery
import EventCore
public import Injection
import SMTP
public import Spool

/// What carrier.toml configures.
///
/// A value; safe to send between threads.
public struct CarrierSettings: Sendable {
    public var spool = SpoolConfiguration()
    public var engine = EngineConfiguration()
    /// The shaping file, when one is named.
    public var shapingFile: String?
    /// The SMTP submission listener, when configured.
    public var submission: SubmissionConfiguration?
    /// The HTTP injection API, when configured.
    public var http: HTTPInjectionConfiguration?

    public init() {}
}

/// Reads carrier.toml.
public enum CarrierFile {
    /// load - read and check `path`; the shaping file it names is read too.
    public static func load(_ path: String) throws(ConfigurationError) -> CarrierSettings {
        guard let text = readTextFile(path) else { throw ConfigurationError(file: path, line: 0, "cannot read the file") }
        return try parse(text, file: path)
    }

    /// parse - the settings `text` describes (relative paths stay relative to the working folder).
    public static func parse(_ text: String, file: String = "carrier.toml") throws(ConfigurationError) -> CarrierSettings {
        var settings = CarrierSettings()
        settings.engine.scheduler = try ShapingFile.defaults()
        var routes: [Int: Route] = [:]
        var routeLines: [Int: Int] = [:]
        var credentials: [Int: (user: String?, password: String?, line: Int)] = [:]
        var certificates: [Int: (certificate: String?, key: String?, line: Int)] = [:]
        for entry in try parseTOML(text, file: file) {
            let error = { (message: String) in ConfigurationError(file: file, line: entry.line, message) }
            let value = entry.value
            switch (entry.table.first, entry.table.count) {
            case ("spool", 1):
                switch entry.key {
                case "directory": settings.spool.directory = try string(value, error)
                case "shards": settings.spool.shards = try positive(value, error)
                case "segment_size": settings.spool.segmentSize = try size(value, error)
                case "durability": settings.spool.durability = try durability(value, error)
                case "outcome_durability": settings.spool.outcomeDurability = try durability(value, error)
                default: throw error("unknown key \(entry.key) in [spool]")
                }
            case ("delivery", 1):
                switch entry.key {
                case "hostname": settings.engine.hostname = try string(value, error)
                case "mx_port": settings.engine.mxPort = try port(value, error)
                case "dns_servers":
                    let servers = try strings(value, error)
                    settings.engine.dns = servers == ["none"] ? nil : DNSConfiguration(servers: servers)
                case "idle_timeout": settings.engine.idleTimeoutMilliseconds = UInt64(try ShapingFile.duration(value, error))
                case "max_connection_age": settings.engine.maxConnectionAgeMilliseconds = UInt64(try ShapingFile.duration(value, error))
                case "connect_timeout": settings.engine.connectTimeoutMilliseconds = UInt64(try ShapingFile.duration(value, error))
                case "bounce_notices_transactional": settings.engine.bounceNoticesForTransactional = try boolean(value, error)
                case "bounce_notices_bulk": settings.engine.bounceNoticesForBulk = try boolean(value, error)
                case "shaping": settings.shapingFile = try string(value, error)
                default: throw error("unknown key \(entry.key) in [delivery]")
                }
            case ("log", 1):
                switch entry.key {
                case "path": settings.engine.logPath = try string(value, error)
                case "max_size": settings.engine.logMaxBytes = try size(value, error)
                default: throw error("unknown key \(entry.key) in [log]")
                }
            case ("smtp_listener", 1):
                var listener = settings.submission ?? SubmissionConfiguration()
                switch entry.key {
                case "listen": listener.listen = try addresses(value, error)
                case "threads": listener.threads = try positive(value, error)
                case "hostname": listener.hostname = try string(value, error)
                case "tls_certificate": listener.tlsCertificate = try string(value, error)
                case "tls_key": listener.tlsKey = try string(value, error)
                case "users_file":
                    let path = try string(value, error)
                    guard let text = readTextFile(path) else { throw error("cannot read users_file \(path)") }
                    do { listener.users = try SubmissionUsers(parsing: text, file: path) } catch { throw ConfigurationError(file: path, line: error.line, error.message) }
                case "trusted_networks":
                    listener.trustedNetworks = []
                    for text in try strings(value, error) {
                        guard let prefix = NetworkPrefix(text) else { throw error("trusted_networks: \(text) is not an address block such as 10.0.0.0/8") }
                        listener.trustedNetworks.append(prefix)
                    }
                case "max_connections": listener.maximumConnections = try positive(value, error)
                case "max_connections_per_client": listener.maximumConnectionsPerClient = try positive(value, error)
                case "max_message_size": listener.maximumMessageSize = try size(value, error)
                case "max_recipients": listener.maximumRecipients = try positive(value, error)
                case "command_timeout": listener.commandTimeoutMilliseconds = UInt64(try ShapingFile.duration(value, error))
                case "data_timeout": listener.dataTimeoutMilliseconds = UInt64(try ShapingFile.duration(value, error))
                case "default_class":
                    let text = try string(value, error)
                    guard let priority = PriorityClass(name: text) else { throw error("default_class must be \"transactional\" or \"bulk\"") }
                    listener.defaultPriority = priority
                default: throw error("unknown key \(entry.key) in [smtp_listener]")
                }
                settings.submission = listener
            case ("http_listener", 1):
                var listener = settings.http ?? HTTPInjectionConfiguration()
                switch entry.key {
                case "listen": listener.listen = try addresses(value, error)
                case "tokens": listener.tokens += try strings(value, error)
                case "token_file":
                    let path = try string(value, error)
                    guard let text = readTextFile(path) else { throw error("cannot read token_file \(path)") }
                    listener.tokens += text.split(separator: "\n").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
                case "max_request_size": listener.maximumRequestSize = try size(value, error)
                case "request_timeout": listener.requestTimeoutSeconds = Double(try ShapingFile.duration(value, error)) / 1000
                default: throw error("unknown key \(entry.key) in [http_listener]")
                }
                settings.http = listener
            case ("route", 2):
                let index = Int(entry.table[1])!
                var route = routes[index] ?? Route(domain: "", hops: [])
                switch entry.key {
                case "domain": route.domain = try string(value, error).lowercased()
                case "hosts":
                    route.hops = []
                    for host in try strings(value, error) {
                        do { route.hops.append(try NextHop.parse(host)) } catch { throw ConfigurationError(file: file, line: entry.line, "\(error)") }
                    }
                case "tls":
                    guard let mode = RouteTLS(rawValue: try string(value, error)) else {
                        throw error("tls must be one of \(RouteTLS.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    route.tls = mode
                case "verify_certificate": route.verifyCertificate = try boolean(value, error)
                case "username": credentials[index, default: (nil, nil, entry.line)].user = try string(value, error)
                case "password": credentials[index, default: (nil, nil, entry.line)].password = try string(value, error)
                case "password_file":
                    let path = try string(value, error)
                    guard let text = readTextFile(path) else { throw error("cannot read password_file \(path)") }
                    let password = text.split(separator: "\n").first.map(String.init) ?? ""
                    credentials[index, default: (nil, nil, entry.line)].password = password
                case "client_certificate": certificates[index, default: (nil, nil, entry.line)].certificate = try string(value, error)
                case "client_key": certificates[index, default: (nil, nil, entry.line)].key = try string(value, error)
                case "sources":
                    route.sources = []
                    for text in try strings(value, error) {
                        guard let address = IPAddress(text) else { throw error("sources: \(text) is not an IP address") }
                        route.sources.append(address)
                    }
                default: throw error("unknown key \(entry.key) in [[route]]")
                }
                routes[index] = route
                routeLines[index] = routeLines[index] ?? entry.line
            default:
                throw ConfigurationError(file: file, line: entry.line, "unknown table [\(entry.table.joined(separator: "."))]")
            }
        }
        var list: [Route] = []
        var domains: Set<String> = []
        for index in routes.keys.sorted() {
            var route = routes[index]!
            let line = routeLines[index] ?? 0
            guard !route.domain.isEmpty else { throw ConfigurationError(file: file, line: line, "[[route]] needs domain (a domain or \"*\")") }
            guard !route.hops.isEmpty else { throw ConfigurationError(file: file, line: line, "route \(route.domain) needs hosts = [\"HOST:PORT\", ...]") }
            guard domains.insert(route.domain).inserted else { throw ConfigurationError(file: file, line: line, "a second route for \(route.domain)") }
            if let given = credentials[index] {
                guard let user = given.user, let password = given.password else {
                    throw ConfigurationError(file: file, line: given.line, "route \(route.domain): username and password (or password_file) go together")
                }
                route.credentials = SMTPCredentials(username: user, secret: .password(password))
            }
            if let given = certificates[index] {
                guard let certificate = given.certificate, let key = given.key else {
                    throw ConfigurationError(file: file, line: given.line, "route \(route.domain): client_certificate and client_key go together")
                }
                /* Loaded now, so a missing or mismatched file stops the start with its name
                   instead of failing every TLS connection of the route later. */
                var tls = TLSClientConfiguration()
                tls.identity = .files(certificateChain: certificate, privateKey: key)
                do throws(TLSError) {
                    _ = try TLSContext.client(tls)
                } catch {
                    throw ConfigurationError(file: file, line: given.line, "route \(route.domain): client_certificate \(certificate) / client_key \(key): \(error)")
                }
                route.clientCertificate = (certificate, key)
            }
            list.append(route)
        }
        settings.engine.routes = RouteTable(list)
        if let problem = settings.submission?.problem() { throw ConfigurationError(file: file, line: 0, "[smtp_listener]: \(problem)") }
        if let problem = settings.http?.problem() { throw ConfigurationError(file: file, line: 0, "[http_listener]: \(problem)") }
        if let shaping = settings.shapingFile {
            guard let text = readTextFile(shaping) else {
                throw ConfigurationError(file: file, line: 0, "cannot read the shaping file \(shaping)")
            }
            settings.engine.scheduler = try ShapingFile.parse(text, file: shaping)
        }
        return settings
    }

    private static func string(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> String {
        guard case .string(let text) = value else { throw error("expected a string, not \(value)") }
        return text
    }

    private static func strings(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> [String] {
        guard case .array(let items) = value else { throw error("expected an array of strings, not \(value)") }
        var out: [String] = []
        for item in items {
            guard case .string(let text) = item else { throw error("expected an array of strings, not \(value)") }
            out.append(text)
        }
        return out
    }

    private static func addresses(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> [SocketAddress] {
        var out: [SocketAddress] = []
        for text in try strings(value, error) {
            guard let address = SocketAddress(text) else { throw error("listen: \(text) is not ADDRESS:PORT (an IP address, such as 127.0.0.1:2525 or [::1]:2525)") }
            out.append(address)
        }
        return out
    }

    private static func boolean(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Bool {
        guard case .boolean(let flag) = value else { throw error("expected true or false, not \(value)") }
        return flag
    }

    private static func positive(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Int {
        guard case .integer(let number) = value, number > 0 else { throw error("expected a positive integer, not \(value)") }
        return number
    }

    private static func port(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> UInt16 {
        guard case .integer(let number) = value, (1...65535).contains(number) else { throw error("expected a port from 1 to 65535, not \(value)") }
        return UInt16(number)
    }

    /// size - octets from an integer or "64MiB", "512KiB", "1GiB".
    private static func size(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Int {
        if case .integer(let number) = value, number > 0 { return number }
        guard case .string(let text) = value else { throw error("expected a size such as \"64MiB\", not \(value)") }
        for (suffix, shift) in [("KiB", 10), ("MiB", 20), ("GiB", 30)] where text.hasSuffix(suffix) {
            if let number = Int(text.dropLast(3)), number > 0, number < 1 << 20 { return number << shift }
        }
        throw error("expected a size such as \"512KiB\", \"64MiB\" or \"1GiB\", not \"\(text)\"")
    }

    /// durability - "fsync", "none" or "interval:100ms".
    private static func durability(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Durability {
        let text = try string(value, error)
        switch text {
        case "fsync": return .fsync
        case "none": return .none
        default:
            if text.hasPrefix("interval:") {
                let ms = try ShapingFile.duration(.string(String(text.dropFirst(9))), error)
                return .interval(milliseconds: Int(ms))
            }
            throw error("durability must be \"fsync\", \"interval:100ms\" or \"none\", not \"\(text)\"")
        }
    }
}

extension String {
    /// trimmingSpaces - without leading and trailing spaces, tabs and CRs.
    func trimmingSpaces() -> String {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        return String(drop(while: blank).reversed().drop(while: blank).reversed())
    }
}
