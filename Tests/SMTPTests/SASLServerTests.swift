// SASLServerTests.swift - what a SCRAM-SHA-256 exchange tells about who exists

import CarrierTesting
import SMTP
import Testing

@Suite("SASL server")
struct SASLServerTests {
    /// serverFirst - the salt in the server-first message for `user`.
    static func salt(for user: String, store: any SMTPCredentialStore, crypto: TestCrypto) -> String? {
        var exchange = SASLServerMechanism.scramSHA256.makeExchange(store: store, crypto: crypto, hostname: "mx.test")
        guard case .challenge(let bytes) = exchange.start(initialResponse: Array("n,,n=\(user),r=abcdef".utf8)) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.split(separator: ",").first { $0.hasPrefix("s=") }.map(String.init)
    }

    /// A user who exists has the same salt at every try; so must one who does not (a new
    /// random salt per try told the two apart), while two unknown users get different ones.
    @Test func anUnknownUsersSaltIsAsStableAsAKnownOnes() throws {
        /* Random bytes that differ at every call, as real ones do. */
        let crypto = TestCrypto(randomValues: (0..<64).map { [UInt8($0), 0x5A] })
        let store = StaticCredentialStore(passwords: ["alice": "s3cret"], crypto: crypto)
        let known = try #require(Self.salt(for: "alice", store: store, crypto: crypto))
        #expect(Self.salt(for: "alice", store: store, crypto: crypto) == known)
        let unknown = try #require(Self.salt(for: "mallory", store: store, crypto: crypto))
        #expect(Self.salt(for: "mallory", store: store, crypto: crypto) == unknown, "an unknown user's salt changed between tries")
        #expect(Self.salt(for: "trudy", store: store, crypto: crypto) != unknown)
    }
}
