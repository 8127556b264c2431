// SASLClient.swift - the client side of the SASL mechanisms SMTP AUTH uses (RFC 4954)
//
// Each mechanism turns server challenges (already base64-decoded) into
// responses (base64-encoded by the session). None of them negotiates a SASL
// security layer: RFC 2554 allowed a mechanism to add integrity or
// encryption after authentication, but PLAIN, LOGIN, CRAM-MD5, XOAUTH2 and
// SCRAM-SHA-256 (without channel binding) define none; TLS does that job. A
// server that tries to start one is a protocol error (the session sees an
// unexpected 334 after the exchange ended).
//
// SCRAM-SHA-256 (RFC 5802, RFC 7677) is the one mechanism that also
// authenticates the server: its final message proves the server knows the
// salted password, and a wrong proof fails the exchange.

/// Credentials for SMTP AUTH.
///
/// A value; safe to send between threads. A password serves PLAIN, LOGIN,
/// CRAM-MD5 and SCRAM-SHA-256; an OAuth 2 bearer token serves XOAUTH2.
public struct SMTPCredentials: Hashable, Sendable {
    public enum Secret: Hashable, Sendable {
        case password(String)
        case oauth2Token(String)
    }

    public let username: String
    public let secret: Secret

    public init(username: String, secret: Secret) {
        self.username = username
        self.secret = secret
    }

    /// A username and password.
    public static func password(_ username: String, _ password: String) -> SMTPCredentials {
        SMTPCredentials(username: username, secret: .password(password))
    }
}

/// The SASL mechanisms this client speaks, strongest first.
public enum SASLMechanism: String, CaseIterable, Hashable, Sendable {
    case scramSHA256 = "SCRAM-SHA-256"
    case cramMD5 = "CRAM-MD5"
    case xoauth2 = "XOAUTH2"
    case plain = "PLAIN"
    case login = "LOGIN"

    /// Whether `secret` can drive this mechanism.
    func works(with secret: SMTPCredentials.Secret) -> Bool {
        switch (self, secret) {
        case (.xoauth2, .oauth2Token): return true
        case (.xoauth2, .password), (_, .oauth2Token): return false
        default: return true
        }
    }

    /// choose - the mechanisms to try, strongest first: offered by the server, allowed
    /// by the configuration and usable with the credentials.
    static func candidates(offered: [String], allowed: [SASLMechanism], secret: SMTPCredentials.Secret) -> [SASLMechanism] {
        let offered = Set(offered.map { $0.uppercased() })
        return allCases.filter { offered.contains($0.rawValue) && allowed.contains($0) && $0.works(with: secret) }
    }
}

/// Why a SASL exchange failed on the client side.
public enum SASLClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A challenge was not what the mechanism allows (bad syntax, wrong nonce, absurd iteration count).
    case malformedChallenge(String)
    /// SCRAM: the server's final proof is wrong: it does not know the password.
    case serverNotAuthenticated
    /// SCRAM: the server ended the exchange with an error ("e=...").
    case serverError(String)
    /// The server sent a challenge after the mechanism had finished.
    case unexpectedChallenge

    public var description: String {
        switch self {
        case .malformedChallenge(let why): return "malformed SASL challenge: \(why)"
        case .serverNotAuthenticated: return "the server's SCRAM signature is wrong"
        case .serverError(let error): return "the server ended SCRAM with \(error)"
        case .unexpectedChallenge: return "challenge after the exchange finished (a SASL security layer?)"
        }
    }
}

/// One client-side SASL exchange in progress.
///
/// A value owned by one session. `initialResponse` is sent with the AUTH
/// command (RFC 4954 §4); every 334 challenge goes through `respond`.
public protocol SASLClientExchange: Sendable {
    var mechanism: SASLMechanism { get }
    /// The initial response, or nil when the mechanism starts with a server challenge.
    mutating func initialResponse() -> [UInt8]?
    /// The response to a (decoded) challenge.
    mutating func respond(to challenge: [UInt8]) throws(SASLClientError) -> [UInt8]
    /// Whether the exchange may end with 235 now (SCRAM: only after checking the server's proof).
    var isComplete: Bool { get }
}

/// makeExchange - a fresh exchange of `mechanism` for `credentials`.
func makeExchange(_ mechanism: SASLMechanism, _ credentials: SMTPCredentials, crypto: any SASLCrypto) -> any SASLClientExchange {
    let secret: String
    switch credentials.secret {
    case .password(let password), .oauth2Token(let password): secret = password
    }
    switch mechanism {
    case .plain: return PlainExchange(username: credentials.username, password: secret)
    case .login: return LoginExchange(username: credentials.username, password: secret)
    case .cramMD5: return CRAMMD5Exchange(username: credentials.username, password: secret, crypto: crypto)
    case .xoauth2: return XOAuth2Exchange(username: credentials.username, token: secret)
    case .scramSHA256:
        let nonce = Base64.encode(crypto.randomBytes(SCRAMSHA256Exchange.nonceBytes))
        return SCRAMSHA256Exchange(username: credentials.username, password: secret, clientNonce: nonce, crypto: crypto)
    }
}

/// PLAIN (RFC 4616): authzid NUL authcid NUL password, as the initial response.
struct PlainExchange: SASLClientExchange {
    let username: String
    let password: String
    private var sent = false

    init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    var mechanism: SASLMechanism { .plain }
    var isComplete: Bool { sent }

    mutating func initialResponse() -> [UInt8]? {
        sent = true
        return [0] + Array(username.utf8) + [0] + Array(password.utf8)
    }

    mutating func respond(to challenge: [UInt8]) throws(SASLClientError) -> [UInt8] {
        /* An empty challenge asks for the response we would have sent up front. */
        guard !sent, challenge.isEmpty else { throw .unexpectedChallenge }
        return initialResponse()!
    }
}

/// LOGIN (draft-murchison-sasl-login): the username, then the password, each on request.
///
/// The challenges' texts ("Username:", "Password:") vary between servers and
/// are not checked; the order is what counts, as in every deployed client.
struct LoginExchange: SASLClientExchange {
    let username: String
    let password: String
    private var step = 0

    init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    var mechanism: SASLMechanism { .login }
    var isComplete: Bool { step == 2 }

    mutating func initialResponse() -> [UInt8]? { nil }

    mutating func respond(to challenge: [UInt8]) throws(SASLClientError) -> [UInt8] {
        step += 1
        switch step {
        case 1: return Array(username.utf8)
        case 2: return Array(password.utf8)
        default: throw .unexpectedChallenge
        }
    }
}

/// CRAM-MD5 (RFC 2195): the username and the hex HMAC-MD5 of the challenge.
struct CRAMMD5Exchange: SASLClientExchange {
    let username: String
    let password: String
    let crypto: any SASLCrypto
    private var answered = false

    init(username: String, password: String, crypto: any SASLCrypto) {
        self.username = username
        self.password = password
        self.crypto = crypto
    }

    var mechanism: SASLMechanism { .cramMD5 }
    var isComplete: Bool { answered }

    mutating func initialResponse() -> [UInt8]? { nil }

    mutating func respond(to challenge: [UInt8]) throws(SASLClientError) -> [UInt8] {
        guard !answered else { throw .unexpectedChallenge }
        guard !challenge.isEmpty else { throw .malformedChallenge("empty CRAM-MD5 challenge") }
        answered = true
        let digest = crypto.hmacMD5(key: Array(password.utf8), message: challenge)
        return Array(username.utf8) + [UInt8(ascii: " ")] + hexDigits(digest)
    }
}

/// XOAUTH2 (Google, Microsoft): user and bearer token as the initial response.
///
/// On failure the server sends a 334 with a JSON error; the client answers
/// with an empty response and the server then sends the final 5xx.
struct XOAuth2Exchange: SASLClientExchange {
    let username: String
    let token: String
    private var failed = false

    init(username: String, token: String) {
        self.username = username
        self.token = token
    }

    var mechanism: SASLMechanism { .xoauth2 }
    var isComplete: Bool { true }

    mutating func initialResponse() -> [UInt8]? {
        Array("user=\(username)\u{1}auth=Bearer \(token)\u{1}\u{1}".utf8)
    }

    mutating func respond(to challenge: [UInt8]) throws(SASLClientError) -> [UInt8] {
        guard !failed else { throw .unexpectedChallenge }
        failed = true
        return []
    }
}

/// SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding ("n,,").
///
/// The password is used as UTF-8 without SASLprep; ASCII passwords, the
/// common case, are unaffected.
public struct SCRAMSHA256Exchange: SASLClientExchange {
    /// Random bytes behind the client nonce: 120 bits, base64-encoded to 20
    /// characters, the length of RFC 7677's example nonce.
    static let nonceBytes = 15
    /// Most iterations accepted from a server: PBKDF2 cost is the client's, so a hostile
    /// server must not be able to ask for minutes of CPU.
    static let maximumIterations = 1_000_000

    private let username: String
    private let password: String
    private let clientNonce: String
    private let crypto: any SASLCrypto
    private var step = 0                    /* 0: first sent next, 1: final sent next, 2: verify, 3: done */
    private var clientFirstBare = ""
    private var expectedServerSignature: [UInt8] = []

    /// An exchange with a given client nonce (tests use the RFC 7677 example's).
    public init(username: String, password: String, clientNonce: String, crypto: any SASLCrypto) {
        self.username = username
        self.password = password
        self.clientNonce = clientNonce
        self.crypto = crypto
    }

    public var mechanism: SASLMechanism { .scramSHA256 }
    public var isComplete: Bool { step == 3 }

    public mutating func initialResponse() -> [UInt8]? {
        clientFirstBare = "n=\(SCRAMSHA256Exchange.escape(username)),r=\(clientNonce)"
        step = 1
        return Array("n,,\(clientFirstBare)".utf8)
    }

    public mutating func respond(to challenge: [UInt8]) throws(SASLClientError) -> [UInt8] {
        switch step {
        case 0:
            /* The server wanted to speak first: send client-first now. */
            guard challenge.isEmpty else { throw .malformedChallenge("SCRAM server spoke first") }
            return initialResponse()!
        case 1:
            return try clientFinal(serverFirst: challenge)
        case 2:
            try verify(serverFinal: challenge)
            step = 3
            return []
        default:
            throw .unexpectedChallenge
        }
    }

    /// clientFinal - check server-first, derive the keys, prove we know the password.
    private mutating func clientFinal(serverFirst bytes: [UInt8]) throws(SASLClientError) -> [UInt8] {
        let serverFirst = String(decoding: bytes, as: UTF8.self)
        let attributes = try SCRAMSHA256Exchange.attributes(serverFirst)
        guard attributes.first?.key != "m" else { throw .malformedChallenge("mandatory extension m=") }
        guard let nonce = attributes.first(where: { $0.key == "r" })?.value,
              nonce.hasPrefix(clientNonce), nonce.utf8.count > clientNonce.utf8.count else {
            throw .malformedChallenge("server nonce does not extend ours")
        }
        guard let saltText = attributes.first(where: { $0.key == "s" })?.value,
              let salt = Base64.decode(saltText), !salt.isEmpty else {
            throw .malformedChallenge("salt")
        }
        guard let iterationText = attributes.first(where: { $0.key == "i" })?.value,
              let iterations = Int(iterationText), iterations >= 1, iterations <= SCRAMSHA256Exchange.maximumIterations else {
            throw .malformedChallenge("iteration count")
        }

        let salted = crypto.pbkdf2SHA256(password: Array(password.utf8), salt: salt, iterations: iterations)
        let clientKey = crypto.hmacSHA256(key: salted, message: Array("Client Key".utf8))
        let storedKey = crypto.sha256(clientKey)
        let withoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let clientSignature = crypto.hmacSHA256(key: storedKey, message: authMessage)
        let proof = zip(clientKey, clientSignature).map { $0 ^ $1 }
        let serverKey = crypto.hmacSHA256(key: salted, message: Array("Server Key".utf8))
        expectedServerSignature = crypto.hmacSHA256(key: serverKey, message: authMessage)
        step = 2
        return Array("\(withoutProof),p=\(Base64.encode(proof))".utf8)
    }

    /// verify - the server's final message must carry the signature only it can compute.
    private func verify(serverFinal bytes: [UInt8]) throws(SASLClientError) {
        let attributes = try SCRAMSHA256Exchange.attributes(String(decoding: bytes, as: UTF8.self))
        if let error = attributes.first(where: { $0.key == "e" })?.value { throw .serverError(error) }
        guard let text = attributes.first(where: { $0.key == "v" })?.value, let signature = Base64.decode(text) else {
            throw .malformedChallenge("server-final without v=")
        }
        guard signature == expectedServerSignature else { throw .serverNotAuthenticated }
    }

    /// attributes - "a=value,b=value" as ordered pairs; values may contain "=".
    private static func attributes(_ text: String) throws(SASLClientError) -> [(key: String, value: String)] {
        var result: [(key: String, value: String)] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard part.count >= 2, part.dropFirst().first == "=" else { throw .malformedChallenge(String(text.prefix(80))) }
            result.append((String(part.prefix(1)), String(part.dropFirst(2))))
        }
        return result
    }

    /// escape - saslname: "=" and "," written as =3D and =2C.
    private static func escape(_ name: String) -> String {
        var escaped = ""
        for character in name {
            switch character {
            case "=": escaped += "=3D"
            case ",": escaped += "=2C"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}

/// hexDigits - lowercase hexadecimal of `bytes`, as bytes.
func hexDigits(_ bytes: [UInt8]) -> [UInt8] {
    let digits = Array("0123456789abcdef".utf8)
    var output: [UInt8] = []
    output.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        output.append(digits[Int(byte >> 4)])
        output.append(digits[Int(byte & 15)])
    }
    return output
}
