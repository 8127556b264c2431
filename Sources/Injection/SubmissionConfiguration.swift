// SubmissionConfiguration.swift - what the SMTP submission listener offers and demands

public import EventCore
public import Spool

/// The SMTP listener's settings ([smtp_listener] in carrier.toml, or `--smtp-listen`).
///
/// A value; safe to send between threads. The defaults are Postfix's where it
/// has one: loopback trusted, AUTH required from anywhere else, RFC 5321 timeouts.
public struct SubmissionConfiguration: Sendable {
    /// Addresses to listen on (`127.0.0.1:587`, `[::1]:587`).
    public var listen: [SocketAddress] = []
    /// Loop threads accepting connections (SO_REUSEPORT spreads them).
    public var threads = 1
    /// The name in the greeting, the EHLO reply and Received fields.
    public var hostname = "localhost"
    /// Certificate chain and key (PEM files) for STARTTLS; none: no STARTTLS.
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// The users (see `SubmissionUsers`); nil: no AUTH offered.
    public var users: SubmissionUsers?
    /// Clients that may submit without AUTH (Postfix's mynetworks).
    public var trustedNetworks: [NetworkPrefix] = NetworkPrefix.loopback
    /// Connections open at once, over all clients; more are answered 421 4.7.0 and closed.
    public var maximumConnections = 1_000
    /// Connections open at once from one client address.
    public var maximumConnectionsPerClient = 50
    /// Largest message (SIZE); larger ones get 552 5.3.4.
    public var maximumMessageSize = 50 << 20
    /// Most recipients in one message; more get 452 4.5.3.
    public var maximumRecipients = 1_000
    /// Idle time between commands, milliseconds (RFC 5321 §4.5.3.2.7: 5 minutes).
    public var commandTimeoutMilliseconds: UInt64 = 300_000
    /// Idle time inside DATA or BDAT, milliseconds (RFC 5321 §4.5.3.2.6: 3 minutes).
    public var dataTimeoutMilliseconds: UInt64 = 180_000
    /// Class of mail with neither a user default nor an X-Carrier-Class field.
    public var defaultPriority = PriorityClass.transactional

    public init() {}

    /// validate - a description of the first unusable setting, or nil.
    public func problem() -> String? {
        if listen.isEmpty { return "the SMTP listener needs at least one listen address" }
        if threads < 1 || threads > 64 { return "threads must be from 1 to 64" }
        if (tlsCertificate == nil) != (tlsKey == nil) { return "tls_certificate and tls_key go together" }
        if maximumConnections < 1 || maximumConnectionsPerClient < 1 { return "connection limits must be positive" }
        if maximumMessageSize < 1 { return "max_message_size must be positive" }
        if maximumMessageSize > Spool.maximumMessageSize { return "max_message_size must be at most \(Spool.maximumMessageSize) octets (what the spool stores)" }
        if maximumRecipients < 1 { return "max_recipients must be positive" }
        return nil
    }
}
