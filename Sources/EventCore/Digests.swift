// Digests.swift - hashes, HMACs, PBKDF2 and random bytes from OpenSSL
//
// SASL mechanisms (CRAM-MD5, SCRAM-SHA-256) need these; the SMTP module may
// not touch OpenSSL, so it asks for them through its `SASLCrypto` protocol
// and callers answer with these functions.

import COpenSSL

/// One-shot digests and randomness, safe from any thread.
public enum Digests {
    /// hmacMD5 - HMAC-MD5 (CRAM-MD5, RFC 2195).
    public static func hmacMD5(key: [UInt8], message: [UInt8]) -> [UInt8] {
        hmac(EVP_md5(), key: key, message: message)
    }

    /// hmacSHA256 - HMAC-SHA-256 (SCRAM-SHA-256, RFC 7677).
    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        hmac(EVP_sha256(), key: key, message: message)
    }

    /// sha256 - the SHA-256 digest of `message`.
    public static func sha256(_ message: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        _ = message.withUnsafeBufferPointer { SHA256($0.baseAddress, $0.count, &digest) }
        return digest
    }

    /// pbkdf2SHA256 - PBKDF2-HMAC-SHA-256, 32 bytes (SCRAM's SaltedPassword).
    public static func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: 32)
        let done = password.withUnsafeBufferPointer { passwordBytes in
            salt.withUnsafeBufferPointer { saltBytes in
                PKCS5_PBKDF2_HMAC(
                    passwordBytes.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) },
                    Int32(passwordBytes.count), saltBytes.baseAddress, Int32(saltBytes.count),
                    Int32(clamping: iterations), EVP_sha256(), 32, &output)
            }
        }
        precondition(done == 1, "PBKDF2 failed")
        return output
    }

    /// randomBytes - `count` bytes from OpenSSL's CSPRNG.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: count)
        precondition(RAND_bytes(&output, Int32(count)) == 1, "RAND_bytes failed")
        return output
    }

    private static func hmac(_ digest: OpaquePointer?, key: [UInt8], message: [UInt8]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let done = key.withUnsafeBufferPointer { keyBytes in
            message.withUnsafeBufferPointer { messageBytes in
                HMAC(digest, keyBytes.baseAddress, Int32(keyBytes.count),
                     messageBytes.baseAddress, messageBytes.count, &output, &length)
            }
        }
        precondition(done != nil, "HMAC failed")
        return Array(output.prefix(Int(length)))
    }
}
