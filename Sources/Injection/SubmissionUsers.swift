// SubmissionUsers.swift - the listener's users: salted SCRAM hashes read from a file, never passwords
//
// One line per user, in the form RFC 5803 gives SCRAM secrets:
//
//     # comment
//     alice SCRAM-SHA-256$4096:<salt b64>$<StoredKey b64>:<ServerKey b64> class=bulk campaign=news tenant=acme
//
// The three trailing settings are optional defaults for that user's mail.
// One hash serves every mechanism the listener offers: SCRAM-SHA-256 uses
// the keys directly, and PLAIN and LOGIN derive the StoredKey from the
// password given and compare it in constant time. CRAM-MD5 needs the
// password itself, so it is not offered. `carrier hash-password` makes lines.

public import SMTP
public import SMTPStreams
public import Spool
import Synchronization

/// A listener user's defaults for the mail they submit.
///
/// A value; safe to send between threads.
public struct SubmissionUserDefaults: Sendable, Equatable {
    public var priority: PriorityClass?
    public var campaign: String?
    public var tenant: String?

    public init(priority: PriorityClass? = nil, campaign: String? = nil, tenant: String? = nil) {
        self.priority = priority
        self.campaign = campaign
        self.tenant = tenant
    }
}

/// A malformed users file: the file, line and what is wrong.
public struct SubmissionUsersError: Error, Sendable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let message: String

    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

/// The users of an SMTP listener, keyed by name.
///
/// Immutable after loading; safe from any thread.
public struct SubmissionUsers: SMTPCredentialStore {
    private let keys: [String: SCRAMStoredKeys]
    private let verified = VerifiedPasswords()
    /// Each user's defaults (class, campaign, tenant).
    public let defaults: [String: SubmissionUserDefaults]
    private let crypto: any SASLCrypto

    /// The fewest PBKDF2 iterations a line may use (RFC 7677 §4 asks for at least 4096).
    public static let minimumIterations = 4096
    /// The most: every PLAIN or LOGIN that is not remembered costs this many (on the
    /// listeners' password queue, one core at most).
    public static let maximumIterations = 100_000

    /// parse - the users in `text` (the content of `file`, named in errors).
    public init(parsing text: String, file: String, crypto: any SASLCrypto = OpenSSLCrypto()) throws(SubmissionUsersError) {
        var keys: [String: SCRAMStoredKeys] = [:]
        var defaults: [String: SubmissionUserDefaults] = [:]
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = words.first, !first.hasPrefix("#") else { continue }
            let fail = { (message: String) in SubmissionUsersError(file: file, line: number + 1, message: message) }
            guard words.count >= 2 else { throw fail("expected USER SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY") }
            let user = String(first)
            guard keys[user] == nil else { throw fail("user \(user) appears twice") }
            guard let parsed = SubmissionUsers.parseSecret(String(words[1])) else {
                throw fail("the secret of \(user) is not SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY (make one with carrier hash-password)")
            }
            guard (SubmissionUsers.minimumIterations...SubmissionUsers.maximumIterations).contains(parsed.iterations) else {
                throw fail("the secret of \(user) uses \(parsed.iterations) iterations; from \(SubmissionUsers.minimumIterations) to \(SubmissionUsers.maximumIterations) are allowed")
            }
            var settings = SubmissionUserDefaults()
            for word in words.dropFirst(2) {
                guard let equals = word.firstIndex(of: "=") else { throw fail("expected NAME=VALUE, not \(word)") }
                let name = word[..<equals], value = String(word[word.index(after: equals)...])
                switch name {
                case "class":
                    guard let priority = PriorityClass(name: value) else { throw fail("class must be transactional or bulk, not \(value)") }
                    settings.priority = priority
                case "campaign": settings.campaign = value
                case "tenant": settings.tenant = value
                default: throw fail("unknown setting \(name) (class, campaign or tenant)")
                }
            }
            keys[user] = parsed
            defaults[user] = settings
        }
        self.keys = keys
        self.defaults = defaults
        self.crypto = crypto
    }

    /// The number of users.
    public var count: Int { keys.count }

    /// verify - PLAIN and LOGIN: derive the StoredKey from `password` and compare. A password
    /// that verified before is recognised by a keyed hash instead, so a busy submitter does
    /// not pay PBKDF2 (milliseconds of the password queue) on every connection.
    public func verify(username: String, password: String) -> Bool {
        guard let stored = keys[username] else {
            /* Spend the same work for an unknown user, so timing does not tell which names exist. */
            _ = SCRAMStoredKeys.derive(password: password, salt: [0], iterations: SubmissionUsers.minimumIterations, crypto: crypto)
            return false
        }
        let tag = crypto.hmacSHA256(key: verified.key, message: Array(username.utf8) + [0] + Array(password.utf8))
        if let known = verified.tag(for: username), constantTimeEqual(known, tag) { return true }
        let derived = SCRAMStoredKeys.derive(password: password, salt: stored.salt, iterations: stored.iterations, crypto: crypto)
        guard constantTimeEqual(derived.storedKey, stored.storedKey) else { return false }
        verified.remember(tag, for: username)
        return true
    }

    public func scramSHA256(username: String) -> SCRAMStoredKeys? { keys[username] }

    /// CRAM-MD5 needs the plain password, which this store never holds.
    public func cramMD5Secret(username: String) -> [UInt8]? { nil }

    /// line - a users-file line for `user` with a fresh random salt.
    public static func line(user: String, password: String, defaults: SubmissionUserDefaults = SubmissionUserDefaults(),
                            iterations: Int = 4096, crypto: any SASLCrypto) -> String {
        let keys = SCRAMStoredKeys.derive(password: password, salt: crypto.randomBytes(16), iterations: iterations, crypto: crypto)
        var text = "\(user) SCRAM-SHA-256$\(iterations):\(Base64.encode(keys.salt))$\(Base64.encode(keys.storedKey)):\(Base64.encode(keys.serverKey))"
        if let priority = defaults.priority { text += " class=\(priority)" }
        if let campaign = defaults.campaign { text += " campaign=\(campaign)" }
        if let tenant = defaults.tenant { text += " tenant=\(tenant)" }
        return text
    }

    /// parseSecret - `SCRAM-SHA-256$iterations:salt$storedKey:serverKey` (RFC 5803 §3).
    static func parseSecret(_ text: String) -> SCRAMStoredKeys? {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "SCRAM-SHA-256" else { return nil }
        let head = parts[1].split(separator: ":", omittingEmptySubsequences: false)
        let tail = parts[2].split(separator: ":", omittingEmptySubsequences: false)
        guard head.count == 2, tail.count == 2, let iterations = Int(head[0]), iterations > 0,
              let salt = Base64.decode(String(head[1])), !salt.isEmpty,
              let stored = Base64.decode(String(tail[0])), stored.count == 32,
              let server = Base64.decode(String(tail[1])), server.count == 32 else { return nil }
        return SCRAMStoredKeys(salt: salt, iterations: iterations, storedKey: stored, serverKey: server)
    }
}

extension PriorityClass {
    /// The class named `transactional` or `bulk` (any case); nil for anything else.
    public init?(name: String) {
        switch name.lowercased() {
        case "transactional": self = .transactional
        case "bulk": self = .bulk
        default: return nil
        }
    }
}

/// The last password that verified for each user, as an HMAC under a key made at start
/// (never the password itself). Safe from any thread.
final class VerifiedPasswords: Sendable {
    let key: [UInt8] = OpenSSLCrypto().randomBytes(32)
    private let tags = Mutex<[String: [UInt8]]>([:])

    func tag(for user: String) -> [UInt8]? { tags.withLock { $0[user] } }
    func remember(_ tag: [UInt8], for user: String) { tags.withLock { $0[user] = tag } }
}
