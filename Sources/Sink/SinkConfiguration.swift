// SinkConfiguration.swift - everything `carrier sink` can be told, checked before it starts
//
// The command line (Sources/carrier/SinkCommand.swift) only parses options
// into this value; tests build it directly. `validate()` is the one place
// that says which combinations make sense, with messages a user can act on.

public import EventCore

#if canImport(Glibc)
import Glibc
#endif

/// Where the sink's TLS certificate comes from.
public enum SinkTLSIdentity: Sendable {
    /// A PEM certificate chain file and its PEM key file (`--tls-cert`, `--tls-key`).
    case files(certificateChain: String, privateKey: String)
    /// A throwaway certificate made at start for the hostname, localhost, 127.0.0.1 and ::1 (`--tls-self-signed`).
    case selfSigned
    /// A certificate already in memory (tests).
    case pem(TLSCertificate)
}

/// A configuration the sink cannot run with, or an option it cannot parse.
public enum SinkConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// An option's value could not be parsed: the option, the value, why.
    case invalidOption(String, String, String)
    /// Options that contradict each other or miss a partner.
    case inconsistent(String)

    public var description: String {
        switch self {
        case .invalidOption(let option, let value, let why): return "\(option) '\(value)': \(why)"
        case .inconsistent(let why): return why
        }
    }
}

/// How one `carrier sink` runs: listeners, SMTP offer, TLS, AUTH, faults, outputs.
///
/// A value; safe to send between threads. Defaults are the fast path: no
/// TLS, no AUTH, no faults, no recording; every message gets
/// "250 2.0.0 Ok: queued as ID" and is forgotten.
public struct SinkConfiguration: Sendable {
    /// Addresses to listen on; every thread listens on each (SO_REUSEPORT). Port 0 picks one.
    public var listen: [SocketAddress] = [SocketAddress(ip: IPAddress("127.0.0.1")!, port: 2525)]
    /// Loop threads (default: one per online CPU).
    public var threads = SinkConfiguration.onlineProcessors
    /// The name in the greeting and the EHLO reply, and the self-signed certificate's CN.
    public var hostname = SinkConfiguration.localHostname
    /// Largest message accepted (SIZE); 0 means no limit.
    public var maximumMessageSize = 50 << 20
    /// Most recipients per transaction; more get 452 4.5.3.
    public var maximumRecipients = 1_000

    /// The certificate; nil for no TLS at all.
    public var tls: SinkTLSIdentity?
    /// TLS from the first byte (port 465 style) instead of offering STARTTLS.
    public var implicitTLS = false
    /// Refuse mail until STARTTLS (530 5.7.0).
    public var requireTLS = false

    /// Users and passwords for AUTH (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256); empty offers no AUTH.
    /// AUTH is allowed without TLS: the sink is a test tool, and load tests of AUTH alone need it.
    public var users: [String: String] = [:]
    /// Refuse mail until AUTH (530 5.7.0).
    public var requireAuthentication = false

    /// Seeded fault rates (see `SinkFaults`).
    public var faults = SinkFaults()
    /// Hold every reply back this long, in milliseconds (a slow server).
    public var replyDelayMilliseconds: UInt64 = 0
    /// Most connections open at once across all threads; more get 421 4.7.0 and are closed. Nil: no limit.
    public var maximumConnections: Int?
    /// Per-domain refusals and rate limits, applied in this order.
    public var domainRules: [SinkDomainRule] = []

    /// Append one JSON line per accepted message to this file.
    public var recordPath: String?
    /// Store each accepted message in this Maildir (DIR/new).
    public var maildirPath: String?
    /// Write a live counter line to standard error once a second.
    public var liveStatistics = false
    /// Write the final statistics as JSON to this file when the sink stops.
    public var statisticsPath: String?

    public init() {}

    /// validate - throw the first problem with this configuration, in words an operator can act on.
    public func validate() throws(SinkConfigurationError) {
        guard !listen.isEmpty else { throw .inconsistent("give at least one --listen address") }
        guard (1...1024).contains(threads) else { throw .invalidOption("--threads", String(threads), "must be between 1 and 1024") }
        guard !hostname.isEmpty else { throw .invalidOption("--hostname", hostname, "must not be empty") }
        guard maximumMessageSize >= 0 else { throw .invalidOption("--max-size", String(maximumMessageSize), "must be 0 (no limit) or more") }
        guard maximumRecipients > 0 else { throw .invalidOption("--max-recipients", String(maximumRecipients), "must be positive") }
        for (option, rate) in [("--tempfail-rate", faults.tempfailRate), ("--permfail-rate", faults.permfailRate),
                               ("--greeting-421-rate", faults.greeting421Rate), ("--disconnect-rate", faults.disconnectRate)]
        where !(rate >= 0 && rate <= 1) {
            throw .invalidOption(option, String(rate), "must be between 0 and 1")
        }
        guard faults.tempfailRate + faults.permfailRate <= 1 else {
            throw .inconsistent("--tempfail-rate plus --permfail-rate must not exceed 1")
        }
        if let maximumConnections, maximumConnections < 1 {
            throw .invalidOption("--max-connections", String(maximumConnections), "must be positive")
        }
        if implicitTLS && tls == nil {
            throw .inconsistent("--implicit-tls needs a certificate: --tls-cert and --tls-key, or --tls-self-signed")
        }
        if requireTLS && tls == nil {
            throw .inconsistent("--require-tls needs a certificate: --tls-cert and --tls-key, or --tls-self-signed")
        }
        if requireAuthentication && users.isEmpty {
            throw .inconsistent("--require-auth needs at least one --auth user:pass")
        }
        var shares: [String: Double] = [:]
        for rule in domainRules {
            guard case .refuse(_, let rate) = rule.action else { continue }
            shares[rule.domain, default: 0] += rate
            guard shares[rule.domain]! <= 1 else {
                throw .inconsistent("the refusal rates of the --domain-rule options for \(rule.domain) add up to more than 1")
            }
        }
    }

    /// parseListen - an `IP:PORT` listen address (`127.0.0.1:2525`, `[::1]:2525`, port 0 for any).
    public static func parseListen(_ text: String) throws(SinkConfigurationError) -> SocketAddress {
        guard let address = SocketAddress(text) else {
            throw .invalidOption("--listen", text, "expected IP:PORT such as 127.0.0.1:2525 or [::1]:2525")
        }
        return address
    }

    /// parseUser - a `user:pass` pair for `--auth` (the password may contain ':').
    public static func parseUser(_ text: String) throws(SinkConfigurationError) -> (user: String, password: String) {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
            throw .invalidOption("--auth", text, "expected user:pass")
        }
        let password = String(text[text.index(after: colon)...])
        guard !password.isEmpty else { throw .invalidOption("--auth", text, "the password is empty") }
        return (String(text[..<colon]), password)
    }

    /// The number of online CPUs (at least 1).
    public static var onlineProcessors: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// This machine's host name, or "localhost" when it has none.
    public static var localHostname: String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "localhost" }
        let text = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.isEmpty ? "localhost" : text
    }
}
