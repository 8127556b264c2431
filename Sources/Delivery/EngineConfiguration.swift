// EngineConfiguration.swift - what the delivery engine needs to run

public import EventCore
public import Scheduler
public import SMTP

/// Settings of the delivery engine, shared by every worker shard.
///
/// A value; safe to send between threads.
public struct EngineConfiguration: Sendable {
    /// Static routes and smarthosts; domains without one go by MX.
    public var routes = RouteTable()
    /// Shaping, retry schedule, health and response rules.
    public var scheduler = SchedulerConfiguration(transactionPerMessage: true)
    /// The name sent with EHLO, and the domain of generated Message-IDs and DSNs.
    public var hostname = EngineConfiguration.localHostname
    /// DNS for MX routing: nil turns MX routing off (every domain needs a static route).
    public var dns: DNSConfiguration? = DNSConfiguration()
    /// The port MX hosts are reached on (25; tests point it at a sink).
    public var mxPort: UInt16 = 25
    /// An idle connection says QUIT after this long.
    public var idleTimeoutMilliseconds: UInt64 = 30_000
    /// A connection is not reused once this old.
    public var maxConnectionAgeMilliseconds: UInt64 = 300_000
    /// SMTP timeouts (RFC 5321 defaults).
    public var timeouts = SMTPTimeouts()
    /// How long a TCP connect may take.
    public var connectTimeoutMilliseconds: UInt64 = 30_000
    /// Send a DSN to the sender when a transactional (bulk) message's recipient bounces or expires.
    public var bounceNoticesForTransactional = true
    public var bounceNoticesForBulk = false
    /// The delivery log (JSON Lines); nil for none.
    public var logPath: String?
    /// Rotate the delivery log at this size.
    public var logMaxBytes = 256 << 20

    public init() {}

    /// The machine's host name (the EHLO name by default).
    public static var localHostname: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, 255) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }
}

#if canImport(Glibc)
import Glibc
#endif
