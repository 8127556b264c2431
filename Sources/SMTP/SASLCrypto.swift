// SASLCrypto.swift - the hash functions SASL mechanisms need, supplied by the caller
//
// CRAM-MD5 needs HMAC-MD5; SCRAM-SHA-256 needs SHA-256, HMAC-SHA-256 and
// PBKDF2, plus random nonces. The SMTP module does no I/O and links no crypto
// library; the engine passes in an implementation backed by OpenSSL
// (`EventCore.OpenSSLCrypto`), and tests pass one with a fixed nonce so
// golden transcripts are exact.

/// Hashes and randomness for SASL mechanisms.
///
/// Implementations must be safe to call from any thread.
public protocol SASLCrypto: Sendable {
    /// HMAC-MD5 of `message` under `key` (16 bytes).
    func hmacMD5(key: [UInt8], message: [UInt8]) -> [UInt8]
    /// SHA-256 of `message` (32 bytes).
    func sha256(_ message: [UInt8]) -> [UInt8]
    /// HMAC-SHA-256 of `message` under `key` (32 bytes).
    func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8]
    /// PBKDF2-HMAC-SHA-256 of `password` with `salt` and `iterations`, 32 bytes.
    func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8]
    /// `count` unpredictable bytes (SCRAM nonces, salts).
    func randomBytes(_ count: Int) -> [UInt8]
}
