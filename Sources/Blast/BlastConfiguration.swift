// BlastConfiguration.swift - what one `carrier blast` run does: target, load shape, protocol, limits
//
// One value holds every choice of a run, so the command line, the tests and
// the benchmark script build the same thing. `validate()` checks it once,
// before any thread starts, and says what is wrong in the words of the
// command-line options; after that the run trusts it (the sender and the
// recipient domain parse, the counts are positive).
//
// Envelope naming is fixed so a seeded receiver (`carrier sink --seed`) can
// predict its own fault decisions from the recipient list: message number n
// (0, 1, 2, ... over the whole run) goes to `recipientsPerMessage` recipients
// `user<k>@<recipientDomain>` with k = n * recipientsPerMessage + j for
// j = 0 ..< recipientsPerMessage. Every recipient of a run is used exactly
// once, in order of message number.

public import EventCore
public import SMTP

#if canImport(Glibc)
import Glibc
#endif

/// Where a blast sends its load.
///
/// A value; safe to send between threads.
public enum BlastTarget: Sendable, Equatable, CustomStringConvertible {
    /// One address, used as given.
    case address(SocketAddress)
    /// A host name resolved with A and AAAA queries (IPv4 first), on `port`.
    case host(String, port: UInt16)
    /// A mail domain resolved like the engine will: MX records, lowest preference first
    /// (the domain itself when it has none), each host's addresses, on `port`.
    case mx(domain: String, port: UInt16)

    public var description: String {
        switch self {
        case .address(let address): return address.description
        case .host(let name, let port): return "\(name):\(port)"
        case .mx(let domain, let port): return "MX \(domain) port \(port)"
        }
    }
}

/// How a blast protects its connections.
public enum BlastSecurity: String, Sendable {
    /// No TLS at all (STARTTLS is never sent).
    case plaintext
    /// STARTTLS, required: a server that does not offer it fails the connection.
    case startTLS
    /// TLS from the first byte (port 465 style).
    case implicitTLS
}

/// What each message of a blast holds.
///
/// A value; safe to send between threads.
public enum BlastContent: Sendable {
    /// A generated message of about `size` octets: From, To, Subject, Date,
    /// Message-ID and `X-Carrier-Id: blast-<n>` headers, then plain ASCII lines.
    case generated(size: Int)
    /// A complete message (headers and body) in which every `{{n}}` becomes the
    /// message number. Line endings are normalised to CRLF.
    case template([UInt8])
}

/// AUTH for every connection of a blast: one mechanism, one set of credentials.
///
/// A value; safe to send between threads.
public struct BlastAuthentication: Sendable, Equatable {
    public var mechanism: SASLMechanism     /* the only mechanism the client will use */
    public var credentials: SMTPCredentials /* a password, or for XOAUTH2 the bearer token */

    public init(mechanism: SASLMechanism, credentials: SMTPCredentials) {
        self.mechanism = mechanism
        self.credentials = credentials
    }
}

/// Everything one blast run does.
///
/// A value; safe to send between threads. Build it, call `validate()` (the
/// runner does), then hand it to `BlastRunner.run`.
///
/// Closed loop (no `rate`): each connection keeps up to `window` messages in
/// flight when the server pipelines (one otherwise) and sends the next as
/// soon as one completes. Open loop (`rate`): message n is due at
/// start + n / rate whatever the replies; due messages wait in a per-thread
/// queue for a connection with room, and latency counts from the due time.
public struct BlastConfiguration: Sendable {
    /// Where the load goes.
    public var target: BlastTarget
    /// DNS servers for `.host` and `.mx` targets (`127.0.0.1:5353`); empty: /etc/resolv.conf.
    public var dnsServers: [String] = []
    /// Connections kept open at once, spread evenly over the threads.
    public var connections = 10
    /// Loop threads; at most `connections` are used.
    public var threads = BlastConfiguration.processorCount
    /// Stop after this many messages (every one is attempted once)...
    public var messages: Int?
    /// ...or after this long, whichever comes first; at least one must be set. At the
    /// deadline what is in flight is cut off (unsent); in open loop what was due is overdue.
    public var durationNanoseconds: UInt64?
    /// What each message holds.
    public var content = BlastContent.generated(size: 1000)
    /// Recipients per message, named as the file comment says.
    public var recipientsPerMessage = 1
    /// MAIL FROM and the From header.
    public var sender = "blast@example.test"
    /// The domain of every recipient.
    public var recipientDomain = "example.test"
    /// The EHLO name, also the right-hand side of generated Message-IDs.
    public var heloName = "blast.example.test"
    /// Messages per connection before QUIT and a new connection; nil: no limit.
    public var messagesPerConnection: Int?
    /// Local addresses to connect from, round-robin over the connections; empty: the kernel's choice.
    public var sources: [IPAddress] = []
    /// Plaintext, STARTTLS or implicit TLS.
    public var security = BlastSecurity.plaintext
    /// Verify the server's certificate and name (off: `--insecure`).
    public var verifyPeer = true
    /// Roots the certificate is verified against.
    public var trustRoots = TLSTrustRoots.system
    /// The name checked against the certificate and sent as SNI; nil: the host
    /// name of the target (or its IP address for an address target).
    public var serverName: String?
    /// AUTH on every connection; nil for none.
    public var authentication: BlastAuthentication?
    /// Pipeline commands when the server offers PIPELINING.
    public var pipelining = true
    /// Send bodies with BDAT when the server offers CHUNKING.
    public var chunking = false
    /// Closed and open loop: messages in flight per pipelining connection.
    public var window = 4
    /// Open loop: messages started per second over the whole run; nil: closed loop.
    public var rate: Double?
    /// Limit for a TCP connect, a TLS handshake and every SMTP reply.
    public var timeoutMilliseconds: UInt64 = 30_000
    /// Handshake failures in a row after which a connection slot gives up.
    public var reconnectAttempts = 3
    /// The error ratio above which the run counts as failed.
    public var maxErrorRatio = 0.01

    public init(target: BlastTarget) {
        self.target = target
    }

    /// The number of online processors: the default thread count.
    public static var processorCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// The window a connection uses: `window` when it pipelines, else one.
    func window(pipelining offered: Bool) -> Int {
        pipelining && offered ? window : 1
    }

    /// validate - every problem a run would hit, reported before it starts.
    public func validate() throws(BlastError) {
        func invalid(_ why: String) -> BlastError { .invalidConfiguration(why) }

        /* Counts and limits. */
        guard connections >= 1 else { throw invalid("--connections must be at least 1") }
        guard threads >= 1 else { throw invalid("--threads must be at least 1") }
        guard messages != nil || durationNanoseconds != nil else {
            throw invalid("give --messages or --duration: a blast always has an end")
        }
        if let messages, messages < 1 { throw invalid("--messages must be at least 1") }
        if let durationNanoseconds, durationNanoseconds < 1_000_000 { throw invalid("--duration must be at least 1ms") }
        guard (1...1_000).contains(recipientsPerMessage) else { throw invalid("--recipients must be between 1 and 1000") }
        if let messagesPerConnection, messagesPerConnection < 1 {
            throw invalid("--messages-per-connection must be at least 1")
        }
        guard window >= 1 else { throw invalid("--window must be at least 1") }
        if let rate, !(rate > 0 && rate.isFinite) { throw invalid("--rate must be a positive number of messages per second") }
        guard timeoutMilliseconds >= 1 else { throw invalid("--timeout must be at least 1ms") }
        guard reconnectAttempts >= 1 else { throw invalid("reconnect attempts must be at least 1") }
        guard maxErrorRatio >= 0 && maxErrorRatio <= 1 else { throw invalid("--max-error-ratio must be between 0 and 1") }
        if case .generated(let size) = content, size < 1 { throw invalid("--size must be at least 1") }
        if case .template(let bytes) = content, bytes.isEmpty { throw invalid("the --message file is empty") }

        /* Names that go on the wire. */
        do {
            _ = try ReversePath(parsing: sender)
        } catch {
            throw invalid("--from \(sender) is not a mail address: \(error)")
        }
        do {
            _ = try MailAddress(parsing: "user0@" + recipientDomain)
        } catch {
            throw invalid("--rcpt-domain \(recipientDomain) is not a mail domain: \(error)")
        }
        guard !heloName.isEmpty, heloName.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw invalid("--helo must be a host name without spaces")
        }
        if authentication?.mechanism == .xoauth2, case .password = authentication?.credentials.secret {
            throw invalid("XOAUTH2 takes an OAuth 2 token, not a password")
        }
        if let source = sources.first(where: { target.family != nil && $0.isIPv6 != target.family }) {
            throw invalid("--source \(source) is not of the target's address family")
        }
    }
}

extension BlastTarget {
    /// For an address target, whether it is IPv6; nil when resolved later.
    var family: Bool? {
        if case .address(let address) = self { return address.ip.isIPv6 }
        return nil
    }
}

/// Why a blast could not run (as opposed to errors counted while it runs).
///
/// A value; safe to send between threads.
public enum BlastError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An option is missing, out of range or malformed.
    case invalidConfiguration(String)
    /// The target's name or domain did not resolve to any address.
    case resolution(String)
    /// The TLS context could not be built (a bad CA file).
    case tls(TLSError)
    /// The `--message` template cannot be sent (long lines).
    case template(String)
    /// A thread, file or other system resource failed.
    case system(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): return why
        case .resolution(let why): return "cannot resolve the target: \(why)"
        case .tls(let error): return "\(error)"
        case .template(let why): return "the message template cannot be used: \(why)"
        case .system(let why): return why
        }
    }
}
