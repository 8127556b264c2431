// TestCrypto.swift - SASL crypto for tests: OpenSSL digests and a scripted nonce

public import SMTP
import EventCore
import Synchronization

/// `SASLCrypto` backed by OpenSSL, whose "random" bytes come from a script.
///
/// Golden transcripts need the client's SCRAM nonce to be known in advance;
/// every `randomBytes` call returns the next scripted bytes (cycling), so a
/// transcript is exact. Safe from any thread.
public final class TestCrypto: SASLCrypto {
    private let script: Mutex<(values: [[UInt8]], next: Int)>

    /// A crypto whose random bytes are `values`, in turn.
    public init(randomValues values: [[UInt8]] = [Array("fixed-nonce-0123".utf8)]) {
        script = Mutex((values, 0))
    }

    public func hmacMD5(key: [UInt8], message: [UInt8]) -> [UInt8] { Digests.hmacMD5(key: key, message: message) }
    public func sha256(_ message: [UInt8]) -> [UInt8] { Digests.sha256(message) }
    public func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] { Digests.hmacSHA256(key: key, message: message) }
    public func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        Digests.pbkdf2SHA256(password: password, salt: salt, iterations: iterations)
    }

    public func randomBytes(_ count: Int) -> [UInt8] {
        script.withLock { script in
            let value = script.values[script.next % script.values.count]
            script.next += 1
            return Array((value + [UInt8](repeating: 0x41, count: max(0, count - value.count))).prefix(count))
        }
    }
}
