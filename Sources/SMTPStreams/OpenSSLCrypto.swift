// OpenSSLCrypto.swift - SASL's hashes and randomness from OpenSSL, for sessions on real connections

public import SMTP
import EventCore

/// `SASLCrypto` backed by OpenSSL (through EventCore's `Digests`).
///
/// Stateless; safe from any thread.
public struct OpenSSLCrypto: SASLCrypto {
    public init() {}
    public func hmacMD5(key: [UInt8], message: [UInt8]) -> [UInt8] { Digests.hmacMD5(key: key, message: message) }
    public func sha256(_ message: [UInt8]) -> [UInt8] { Digests.sha256(message) }
    public func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] { Digests.hmacSHA256(key: key, message: message) }
    public func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        Digests.pbkdf2SHA256(password: password, salt: salt, iterations: iterations)
    }
    public func randomBytes(_ count: Int) -> [UInt8] { Digests.randomBytes(count) }
}
