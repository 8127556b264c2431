// SASLServer.swift - the server side of PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-256 (RFC 4954)
//
// The test sink and the injection listener check credentials through these
// exchanges against a credential store. A store that keeps only salted
// hashes (what an operator should deploy) serves PLAIN, LOGIN and
// SCRAM-SHA-256; CRAM-MD5 needs the password itself (RFC 2195 hashes the
// challenge with it), so it is offered only by stores that have it.

/// SCRAM-SHA-256 keys stored for one user (RFC 5802 §3): enough to verify a
/// client and to prove ourselves, never enough to log in as the user.
public struct SCRAMStoredKeys: Hashable, Sendable {
    public let salt: [UInt8]
    public let iterations: Int
    public let storedKey: [UInt8]           /* H(HMAC(SaltedPassword, "Client Key")) */
    public let serverKey: [UInt8]           /* HMAC(SaltedPassword, "Server Key") */

    public init(salt: [UInt8], iterations: Int, storedKey: [UInt8], serverKey: [UInt8]) {
        self.salt = salt
        self.iterations = iterations
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    /// derive - the keys for `password` with `salt` and `iterations`.
    public static func derive(password: String, salt: [UInt8], iterations: Int, crypto: any SASLCrypto) -> SCRAMStoredKeys {
        let salted = crypto.pbkdf2SHA256(password: Array(password.utf8), salt: salt, iterations: iterations)
        let clientKey = crypto.hmacSHA256(key: salted, message: Array("Client Key".utf8))
        return SCRAMStoredKeys(salt: salt, iterations: iterations, storedKey: crypto.sha256(clientKey),
                               serverKey: crypto.hmacSHA256(key: salted, message: Array("Server Key".utf8)))
    }
}

/// Where a server looks up credentials.
///
/// Implementations must be safe to call from any thread.
public protocol SMTPCredentialStore: Sendable {
    /// True when `password` is `username`'s (PLAIN, LOGIN).
    func verify(username: String, password: String) -> Bool
    /// The SCRAM-SHA-256 keys of `username`, nil for an unknown user.
    func scramSHA256(username: String) -> SCRAMStoredKeys?
    /// The password itself, for CRAM-MD5; nil when the store keeps only hashes.
    func cramMD5Secret(username: String) -> [UInt8]?
}

/// Users and passwords held in memory (the test sink's `--auth user:pass`).
///
/// Immutable after creation; safe from any thread. SCRAM keys are derived
/// once, at creation, with a random salt per user.
public struct StaticCredentialStore: SMTPCredentialStore {
    private let passwords: [String: String]
    private let scram: [String: SCRAMStoredKeys]

    /// A store of `passwords` (user → password); `iterations` for SCRAM (RFC 7677 asks for ≥ 4096).
    public init(passwords: [String: String], iterations: Int = 4096, crypto: any SASLCrypto) {
        self.passwords = passwords
        scram = passwords.mapValues {
            SCRAMStoredKeys.derive(password: $0, salt: crypto.randomBytes(16), iterations: iterations, crypto: crypto)
        }
    }

    public func verify(username: String, password: String) -> Bool {
        guard let stored = passwords[username] else { return false }
        return constantTimeEqual(Array(stored.utf8), Array(password.utf8))
    }

    public func scramSHA256(username: String) -> SCRAMStoredKeys? { scram[username] }

    public func cramMD5Secret(username: String) -> [UInt8]? { passwords[username].map { Array($0.utf8) } }
}

/// The next step of a server-side exchange.
public enum SASLServerStep: Hashable, Sendable {
    /// Send 334 with this (not yet base64-encoded) challenge and wait for a response line.
    case challenge([UInt8])
    /// Authenticated as this user: 235.
    case success(username: String)
    /// Refused: the reply to send (535 for bad credentials, 501 for malformed input).
    case failure(Reply)
    /// PLAIN and LOGIN: check this password against the store, then succeed (235) or
    /// refuse (535). Checking a salted hash takes milliseconds, so the session hands it to
    /// its driver, which may do it off the loop thread (`ServerAction.verifyPassword`).
    case verify(username: String, password: String)
}

/// One server-side SASL exchange.
///
/// A value owned by one server session.
public protocol SASLServerExchange: Sendable {
    /// start - the AUTH command, with its initial response if one was given.
    mutating func start(initialResponse: [UInt8]?) -> SASLServerStep
    /// respond - a (decoded) client response line.
    mutating func respond(_ response: [UInt8]) -> SASLServerStep
}

/// The server mechanisms, in the order a server lists them.
public enum SASLServerMechanism: String, CaseIterable, Hashable, Sendable {
    case scramSHA256 = "SCRAM-SHA-256"
    case cramMD5 = "CRAM-MD5"
    case plain = "PLAIN"
    case login = "LOGIN"

    /// makeExchange - a fresh exchange against `store`; `hostname` names the server in CRAM-MD5 challenges.
    public func makeExchange(store: any SMTPCredentialStore, crypto: any SASLCrypto, hostname: String) -> any SASLServerExchange {
        switch self {
        case .plain: return PlainServerExchange(store: store)
        case .login: return LoginServerExchange(store: store)
        case .cramMD5: return CRAMMD5ServerExchange(store: store, crypto: crypto, hostname: hostname)
        case .scramSHA256: return SCRAMSHA256ServerExchange(store: store, crypto: crypto)
        }
    }
}

/// The replies every exchange shares.
enum SASLReplies {
    static let badCredentials = Reply(code: 535, enhanced: EnhancedStatus(5, 7, 8), text: "5.7.8 Authentication credentials invalid")
    static func malformed(_ why: String) -> Reply {
        Reply(code: 501, enhanced: EnhancedStatus(5, 5, 2), text: "5.5.2 Malformed authentication response: \(why)")
    }
}

/// PLAIN: "authzid NUL authcid NUL password" (RFC 4616); an authzid other than the user is refused.
struct PlainServerExchange: SASLServerExchange {
    let store: any SMTPCredentialStore

    mutating func start(initialResponse: [UInt8]?) -> SASLServerStep {
        guard let initialResponse else { return .challenge([]) }
        return respond(initialResponse)
    }

    mutating func respond(_ response: [UInt8]) -> SASLServerStep {
        let parts = response.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(SASLReplies.malformed("PLAIN needs authzid, user and password")) }
        let authzid = String(decoding: parts[0], as: UTF8.self)
        let username = String(decoding: parts[1], as: UTF8.self)
        let password = String(decoding: parts[2], as: UTF8.self)
        guard authzid.isEmpty || authzid == username else { return .failure(SASLReplies.badCredentials) }
        return .verify(username: username, password: password)
    }
}

/// LOGIN: ask for the username, then the password.
struct LoginServerExchange: SASLServerExchange {
    let store: any SMTPCredentialStore
    private var username: String?

    init(store: any SMTPCredentialStore) { self.store = store }

    mutating func start(initialResponse: [UInt8]?) -> SASLServerStep {
        guard let initialResponse else { return .challenge(Array("Username:".utf8)) }
        return respond(initialResponse)
    }

    mutating func respond(_ response: [UInt8]) -> SASLServerStep {
        guard let username else {
            self.username = String(decoding: response, as: UTF8.self)
            return .challenge(Array("Password:".utf8))
        }
        let password = String(decoding: response, as: UTF8.self)
        return .verify(username: username, password: password)
    }
}

/// CRAM-MD5: a unique challenge, answered with "user hex(HMAC-MD5(password, challenge))".
struct CRAMMD5ServerExchange: SASLServerExchange {
    let store: any SMTPCredentialStore
    let crypto: any SASLCrypto
    let hostname: String
    private var challenge: [UInt8] = []

    init(store: any SMTPCredentialStore, crypto: any SASLCrypto, hostname: String) {
        self.store = store
        self.crypto = crypto
        self.hostname = hostname
    }

    mutating func start(initialResponse: [UInt8]?) -> SASLServerStep {
        guard initialResponse == nil else { return .failure(SASLReplies.malformed("CRAM-MD5 takes no initial response")) }
        let unique = hexDigits(crypto.randomBytes(8))
        challenge = Array("<".utf8) + unique + Array("@\(hostname)>".utf8)
        return .challenge(challenge)
    }

    mutating func respond(_ response: [UInt8]) -> SASLServerStep {
        guard let space = response.lastIndex(of: UInt8(ascii: " ")) else {
            return .failure(SASLReplies.malformed("CRAM-MD5 response is \"user digest\""))
        }
        let username = String(decoding: response[..<space], as: UTF8.self)
        let digest = Array(response[(space + 1)...])
        guard let secret = store.cramMD5Secret(username: username) else { return .failure(SASLReplies.badCredentials) }
        let expected = hexDigits(crypto.hmacMD5(key: secret, message: challenge))
        return constantTimeEqual(expected, digest) ? .success(username: username) : .failure(SASLReplies.badCredentials)
    }
}

/// SCRAM-SHA-256 without channel binding: verify the client's proof, then prove ourselves.
struct SCRAMSHA256ServerExchange: SASLServerExchange {
    let store: any SMTPCredentialStore
    let crypto: any SASLCrypto
    private var step = 0
    private var username = ""
    private var keys: SCRAMStoredKeys?
    private var nonce = ""
    private var clientFirstBare = ""
    private var serverFirst = ""

    init(store: any SMTPCredentialStore, crypto: any SASLCrypto) {
        self.store = store
        self.crypto = crypto
    }

    mutating func start(initialResponse: [UInt8]?) -> SASLServerStep {
        guard let initialResponse else { return .challenge([]) }
        return respond(initialResponse)
    }

    mutating func respond(_ response: [UInt8]) -> SASLServerStep {
        let text = String(decoding: response, as: UTF8.self)
        switch step {
        case 0: return clientFirst(text)
        case 1: return clientFinal(text)
        case 2:
            /* The client's empty answer to our server-final. */
            return response.isEmpty ? .success(username: username) : .failure(SASLReplies.malformed("expected an empty response"))
        default:
            return .failure(SASLReplies.malformed("exchange already finished"))
        }
    }

    /// clientFirst - "n,,n=user,r=nonce": answer with our nonce, the salt and the iteration count.
    private mutating func clientFirst(_ text: String) -> SASLServerStep {
        guard text.hasPrefix("n,,") else {
            return .failure(SASLReplies.malformed(text.hasPrefix("p=") ? "channel binding is not supported" : "gs2 header must be n,,"))
        }
        clientFirstBare = String(text.dropFirst(3))
        let attributes = scramAttributes(clientFirstBare)
        guard let name = attributes["n"], let clientNonce = attributes["r"], !clientNonce.isEmpty,
              let user = unescapeSASLName(name) else {
            return .failure(SASLReplies.malformed("client-first needs n= and r="))
        }
        username = user
        /* An unknown user still gets a challenge (made-up keys), so the exchange does not
           reveal who exists: its salt is the same at every try, as a real user's is (a
           fresh random one each time would tell the two apart), yet unguessable. */
        let keys = store.scramSHA256(username: user)
            ?? SCRAMStoredKeys(salt: Array(crypto.hmacSHA256(key: madeUpSaltKey, message: Array(user.utf8)).prefix(16)),
                               iterations: 4096, storedKey: crypto.randomBytes(32), serverKey: crypto.randomBytes(32))
        self.keys = keys
        nonce = clientNonce + Base64.encode(crypto.randomBytes(18))
        serverFirst = "r=\(nonce),s=\(Base64.encode(keys.salt)),i=\(keys.iterations)"
        step = 1
        return .challenge(Array(serverFirst.utf8))
    }

    /// clientFinal - check the proof against the stored key; send our signature.
    private mutating func clientFinal(_ text: String) -> SASLServerStep {
        guard let keys, let comma = text.lastIndex(of: ","), text[comma...].hasPrefix(",p=") else {
            return .failure(SASLReplies.malformed("client-final needs p="))
        }
        let withoutProof = String(text[..<comma])
        let attributes = scramAttributes(withoutProof)
        guard attributes["c"] == "biws", attributes["r"] == nonce,
              let proof = Base64.decode(String(text[comma...].dropFirst(3))), proof.count == 32 else {
            return .failure(SASLReplies.malformed("client-final channel binding, nonce or proof"))
        }
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let clientSignature = crypto.hmacSHA256(key: keys.storedKey, message: authMessage)
        let clientKey = zip(proof, clientSignature).map { $0 ^ $1 }
        guard constantTimeEqual(crypto.sha256(clientKey), keys.storedKey) else { return .failure(SASLReplies.badCredentials) }
        step = 2
        let serverSignature = crypto.hmacSHA256(key: keys.serverKey, message: authMessage)
        return .challenge(Array("v=\(Base64.encode(serverSignature))".utf8))
    }
}

/// scramAttributes - "a=x,b=y" as a dictionary (first value of each key).
private func scramAttributes(_ text: String) -> [String: String] {
    var result: [String: String] = [:]
    for part in text.split(separator: ",") where part.count >= 2 && part.dropFirst().first == "=" {
        let key = String(part.prefix(1))
        if result[key] == nil { result[key] = String(part.dropFirst(2)) }
    }
    return result
}

/// unescapeSASLName - "=2C" and "=3D" back to "," and "="; nil for any other "=" escape.
private func unescapeSASLName(_ name: String) -> String? {
    var result = ""
    var rest = Substring(name)
    while let equals = rest.firstIndex(of: "=") {
        result += rest[..<equals]
        let code = rest[rest.index(after: equals)...].prefix(2)
        switch code {
        case "2C": result += ","
        case "3D": result += "="
        default: return nil
        }
        rest = rest[rest.index(equals, offsetBy: 3)...]
    }
    return result + rest
}

/// constantTimeEqual - compare secrets without an early exit that would leak where they differ.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
}

/// The key made-up SCRAM salts of unknown users are derived with: random, one per process.
private let madeUpSaltKey: [UInt8] = {
    var generator = SystemRandomNumberGenerator()
    return (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
}()
