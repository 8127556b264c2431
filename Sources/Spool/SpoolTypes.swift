// SpoolTypes.swift - what goes into the spool and what comes out: messages, recipients,
// outcomes, settings, errors and reports

#if canImport(Glibc)
import Glibc
#endif

/// A message's queue id: 128 bits, unique across restarts and shards.
///
/// The high word is the creation time in milliseconds; the low word a per-process
/// random prefix and a counter. Printed as 28 lowercase hex digits.
public struct MessageID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /* Four 32-bit words rather than two 64-bit ones: a RecipientKey is then 20 octets
       instead of 24, which the index pays once per pending recipient. */
    private var words: (UInt32, UInt32, UInt32, UInt32)

    public var high: UInt64 { UInt64(words.0) << 32 | UInt64(words.1) }
    public var low: UInt64 { UInt64(words.2) << 32 | UInt64(words.3) }

    public init(high: UInt64, low: UInt64) {
        words = (UInt32(truncatingIfNeeded: high >> 32), UInt32(truncatingIfNeeded: high),
                 UInt32(truncatingIfNeeded: low >> 32), UInt32(truncatingIfNeeded: low))
    }

    public static func == (a: MessageID, b: MessageID) -> Bool { a.words == b.words }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0); hasher.combine(words.1); hasher.combine(words.2); hasher.combine(words.3)
    }

    /// parse - the id printed by `description`, or nil.
    public init?(_ text: String) {
        guard text.utf8.count == 28, let high = UInt64(text.prefix(12), radix: 16),
              let low = UInt64(text.suffix(16), radix: 16) else { return nil }
        self.init(high: high, low: low)
    }

    public var description: String {
        /* 12 digits of the high word (48 bits of milliseconds last until the year 10889), 16 of the low. */
        String(unsafeUninitializedCapacity: 28) { out in
            let digits: StaticString = "0123456789abcdef"
            let table = digits.utf8Start
            var high = self.high, low = self.low
            for index in stride(from: 27, through: 12, by: -1) { out[index] = table[Int(low & 0xF)]; low >>= 4 }
            for index in stride(from: 11, through: 0, by: -1) { out[index] = table[Int(high & 0xF)]; high >>= 4 }
            return 28
        }
    }

    public static func < (a: MessageID, b: MessageID) -> Bool { (a.high, a.low) < (b.high, b.low) }
}

/// Delivery priority: transactional mail goes before bulk mail for the same destination.
public enum PriorityClass: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case transactional = 0
    case bulk = 1

    public var description: String { self == .transactional ? "transactional" : "bulk" }
}

/// What the spool keeps about a message besides its envelope and body.
public struct MessageMetadata: Sendable, Equatable {
    /// Campaign name ("" for none).
    public var campaign: String
    /// Tenant or account the message belongs to ("" for none).
    public var tenant: String
    public var priority: PriorityClass
    /// When undelivered recipients expire, in milliseconds since the Unix epoch (0: the
    /// scheduler's `max_age` alone decides).
    public var expires: Int64
    /// Opaque routing and signing hints, stored and returned as given.
    public var hints: [UInt8]

    public init(campaign: String = "", tenant: String = "", priority: PriorityClass = .transactional,
                expires: Int64 = 0, hints: [UInt8] = []) {
        self.campaign = campaign
        self.tenant = tenant
        self.priority = priority
        self.expires = expires
        self.hints = hints
    }
}

/// One recipient as handed to the spool: an address and optional merge variables.
public struct NewRecipient: Sendable, Equatable {
    public var address: String
    /// Per-recipient merge variables (name, value), in order.
    public var variables: [(String, String)]

    public init(_ address: String, variables: [(String, String)] = []) {
        self.address = address
        self.variables = variables
    }

    public static func == (a: NewRecipient, b: NewRecipient) -> Bool {
        a.address == b.address && a.variables.elementsEqual(b.variables, by: { $0 == $1 })
    }

    /// The domain part of the address, lowercased ("" when there is no "@").
    public var domain: String { recipientDomain(address) }
}

/// recipientDomain - the lowercased text after the last "@" of an address.
func recipientDomain(_ address: String) -> String {
    guard let at = address.utf8.lastIndex(of: UInt8(ascii: "@")) else { return "" }
    return String(address[address.utf8.index(after: at)...]).lowercased()
}

/// A message to enqueue.
public struct NewMessage: Sendable {
    /// Envelope sender ("" for the null reverse path).
    public var sender: String
    /// The message as it will be sent (headers and body, CRLF line endings).
    public var body: [UInt8]
    public var metadata: MessageMetadata
    public var recipients: [NewRecipient]

    public init(sender: String, body: [UInt8], metadata: MessageMetadata = MessageMetadata(), recipients: [NewRecipient]) {
        self.sender = sender
        self.body = body
        self.metadata = metadata
        self.recipients = recipients
    }
}

/// One recipient of one message: the key outcomes are recorded against.
public struct RecipientKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var message: MessageID
    /// Position of the recipient in the message's recipient list (0-based).
    public var index: UInt32

    public init(message: MessageID, index: UInt32) {
        self.message = message
        self.index = index
    }

    public var description: String { "\(message)/\(index)" }
    public static func < (a: RecipientKey, b: RecipientKey) -> Bool { (a.message, a.index) < (b.message, b.index) }
}

/// A pending recipient as recovery and `due` hand it out: a compact reference into the
/// spool (where its record is and its attempt state), not a copy of the record.
public struct PendingRecipient: Sendable, Equatable {
    public var key: RecipientKey
    /// Segment and offset of the recipients record that holds this recipient.
    public var segment: UInt32
    public var offset: UInt32
    /// Delivery attempts so far.
    public var attempts: UInt32
    /// Earliest time of the next attempt, in milliseconds since the Unix epoch.
    public var nextAttempt: Int64
    /// The recipient's domain.
    public var domain: String
    public var priority: PriorityClass
    public var campaign: String
    /// The recipient has merge variables, so it gets a message (and a transaction) of its own.
    public var personalised: Bool
}

/// What happened to a recipient.
public enum Outcome: Sendable, Equatable {
    /// Accepted by the receiving server (final).
    case delivered(reply: String)
    /// Refused permanently (final).
    case bounced(reply: String)
    /// Gave up after the retry period (final; a bounce is due).
    case expired(reply: String)
    /// A temporary failure; try again at `nextAttempt` (ms since the epoch).
    case deferred(nextAttempt: Int64, reply: String)
    /// Removed without delivery: purged by an operator, or the rest of a message whose
    /// enqueue failed in another shard (final).
    case cancelled(reason: String)

    var kind: UInt8 {
        switch self {
        case .delivered: 1
        case .bounced: 2
        case .expired: 3
        case .deferred: 4
        case .cancelled: 5
        }
    }

    var isFinal: Bool { if case .deferred = self { false } else { true } }

    var reply: String {
        switch self {
        case .delivered(let reply), .bounced(let reply), .expired(let reply), .deferred(_, let reply): reply
        case .cancelled(let reason): reason
        }
    }
}

/// How an append is made durable before it is acknowledged.
public enum Durability: Sendable, Equatable, CustomStringConvertible {
    /// `fdatasync` before acknowledging (the default): an acknowledged append survives a
    /// crash or a power loss.
    case fsync
    /// `fdatasync` at most every `milliseconds`; acknowledged at once. A process crash loses
    /// nothing (the data is in the page cache), a power loss can lose the last interval.
    case interval(milliseconds: Int)
    /// Never `fdatasync` (load generation and tests): a power loss can lose anything not
    /// yet written back by the kernel.
    case none

    public var description: String {
        switch self {
        case .fsync: "fsync"
        case .interval(let ms): "interval(\(ms) ms)"
        case .none: "none"
        }
    }
}

/// Spool settings.
public struct SpoolConfiguration: Sendable {
    /// The spool's home (`Queue/` by default): one `shard-NN` folder per shard.
    public var directory: String
    /// Number of shards when the spool is created (an existing spool keeps its own).
    public var shards: Int
    /// A segment is closed and a new one started once it would grow past this size.
    public var segmentSize: Int
    /// How message and recipient records are made durable.
    public var durability: Durability
    /// How outcome records are made durable; a lost outcome only repeats a delivery.
    public var outcomeDurability: Durability
    /// Open without writing: no lock, no truncation or quarantine (for `carrier queue`
    /// while the engine runs).
    public var readOnly: Bool

    /// The number of online processors: the default shard count.
    public static var processors: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    public init(directory: String = "Queue", shards: Int = SpoolConfiguration.processors,
                segmentSize: Int = 64 << 20, durability: Durability = .fsync,
                outcomeDurability: Durability = .interval(milliseconds: 100), readOnly: Bool = false) {
        self.directory = directory
        self.shards = max(1, shards)
        self.segmentSize = segmentSize
        self.durability = durability
        self.outcomeDurability = outcomeDurability
        self.readOnly = readOnly
    }
}

/// A spool failure, with the path and the system error where there is one.
public struct SpoolError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The kinds of failure; an SMTP injector maps `diskFull` to 452 4.3.1 and the rest to 451 4.3.0.
    public enum Reason: Sendable, Equatable {
        /// No space left (ENOSPC or EDQUOT): nothing of the append was kept.
        case diskFull
        /// A read, write or sync failed with `errno`.
        case io(operation: String, errno: Int32)
        /// Another process holds the shard's lock.
        case locked(pid: Int32)
        /// A segment's header is not one this build reads.
        case badHeader(String)
        /// The spool was closed.
        case closed
        /// The request itself is unusable (no recipients, a recipient not pending, ...).
        case invalid(String)
    }

    public var reason: Reason
    public var path: String

    public init(_ reason: Reason, path: String = "") {
        self.reason = reason
        self.path = path
    }

    public var description: String {
        let at = path.isEmpty ? "" : "\(path): "
        switch reason {
        case .diskFull: return "\(at)no space left on device"
        case .io(let operation, let code): return "\(at)\(operation) failed: \(String(cString: strerror(code)))"
        case .locked(let pid): return "\(at)queue is locked by pid \(pid)"
        case .badHeader(let why): return "\(at)not a spool segment this build reads: \(why)"
        case .closed: return "\(at)the spool is closed"
        case .invalid(let why): return "\(at)\(why)"
        }
    }

    static func system(_ operation: String, path: String, errno code: Int32 = errno) -> SpoolError {
        code == ENOSPC || code == EDQUOT ? SpoolError(.diskFull, path: path) : SpoolError(.io(operation: operation, errno: code), path: path)
    }
}

/// Counts of one shard's recipients.
public struct ShardCounts: Sendable, Equatable {
    /// Pending recipients (never attempted or deferred).
    public var pending = 0
    /// Pending recipients that have had at least one attempt.
    public var deferred = 0
    /// Final outcomes recorded since the spool was opened (replayed ones included).
    public var delivered = 0
    public var bounced = 0
    public var expired = 0
    public var cancelled = 0
    /// Messages with pending recipients.
    public var messages = 0
    /// Pending recipients by domain and by campaign ("" for none).
    public var byDomain: [String: Int] = [:]
    public var byCampaign: [String: Int] = [:]
    /// Segment files and their total size.
    public var segments = 0
    public var bytes = 0

    public init() {}

    /// merge - add another shard's counts.
    public mutating func merge(_ other: ShardCounts) {
        pending += other.pending; deferred += other.deferred; delivered += other.delivered
        bounced += other.bounced; expired += other.expired; cancelled += other.cancelled
        messages += other.messages; segments += other.segments; bytes += other.bytes
        byDomain.merge(other.byDomain, uniquingKeysWith: +)
        byCampaign.merge(other.byCampaign, uniquingKeysWith: +)
    }
}

/// What recovery found in one shard.
public struct RecoveryReport: Sendable, Equatable {
    public var shard: Int
    public var segments = 0
    public var records = 0
    public var pending = 0
    /// Octets cut from the end of the last segment (a torn final record).
    public var truncatedBytes = 0
    /// Segments moved to `corrupt/` (their readable prefix stays in place), with why.
    public var quarantined: [String] = []
    /// Messages whose records were in an unreadable part of a segment, or whose message
    /// record was lost while recipients remained: their pending recipients are gone.
    public var affectedMessages: [MessageID] = []

    public init(shard: Int) { self.shard = shard }
}

/// The scope of an administrative suspension.
public enum AdminScope: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case domain = 1
    case site = 2
    case campaign = 3

    public var description: String {
        switch self {
        case .domain: "domain"
        case .site: "site"
        case .campaign: "campaign"
        }
    }
}

/// A suspension in force: nothing for `name` in `scope` is delivered until `until`
/// (ms since the epoch; 0 for no expiry) or a resume.
public struct Suspension: Sendable, Hashable {
    public var scope: AdminScope
    public var name: String
    public var until: Int64

    public init(scope: AdminScope, name: String, until: Int64) {
        self.scope = scope
        self.name = name
        self.until = until
    }
}

/// domainHash - FNV-1a (64-bit) over octets with ASCII letters lowercased: where a domain's
/// records live, and how the index finds a domain without building its string. Stable
/// across versions and machines.
@inline(__always) func domainHash<Octets: Sequence<UInt8>>(_ octets: Octets) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in octets { hash = (hash ^ UInt64(asciiLower(byte))) &* 0x100_0000_01b3 }
    return hash
}

/// shardIndex - the shard of a domain: `domainHash` of its octets, modulo the shard count.
public func shardIndex(domain: String, shards: Int) -> Int {
    Int(domainHash(domain.utf8) % UInt64(shards))
}

/// shardIndex - the shard of an address's domain (the text after its last "@"), without
/// building the domain string.
public func shardIndex(address: String, shards: Int) -> Int {
    var address = address
    return address.withUTF8 { utf8 in
        let start = utf8.lastIndex(of: UInt8(ascii: "@")).map { $0 + 1 } ?? utf8.count
        return Int(domainHash(utf8[start...]) % UInt64(shards))
    }
}

/// nowMilliseconds - wall-clock time in milliseconds since the Unix epoch.
public func nowMilliseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
}
