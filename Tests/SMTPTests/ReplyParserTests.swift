// ReplyParserTests.swift - replies from bytes: single, multi-line, split, enhanced codes, limits

import SMTP
import CarrierTesting
import Testing

/// parseAll - every complete reply in `text`, fed in pieces of `step` bytes as a stream would.
private func parseAll(_ text: String, step: Int = .max) throws -> [Reply] {
    var parser = ReplyParser()
    var buffered: [UInt8] = []
    var replies: [Reply] = []
    let bytes = Array(text.utf8)
    var fed = 0
    while fed < bytes.count {
        let next = min(bytes.count, fed + step)
        buffered += bytes[fed..<next]
        fed = next
        while true {
            let (reply, consumed) = try buffered.withUnsafeBytes { try parser.parse($0) }
            buffered.removeFirst(consumed)
            guard let reply else { break }
            replies.append(reply)
        }
    }
    return replies
}

@Suite("Reply parser")
struct ReplyParserTests {
    @Test func singleLineWithEnhancedCode() throws {
        let replies = try parseAll("250 2.1.0 Sender ok\r\n")
        #expect(replies == [Reply(code: 250, enhanced: EnhancedStatus(2, 1, 0), text: "2.1.0 Sender ok")])
    }

    @Test func multiLineKeepsEveryLine() throws {
        let replies = try parseAll("250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 CHUNKING\r\n")
        #expect(replies.count == 1)
        #expect(replies[0].code == 250)
        #expect(replies[0].lines == ["mx.example.test", "PIPELINING", "SIZE 10240000", "CHUNKING"])
        #expect(replies[0].enhanced == nil)
    }

    @Test func bareCodeAndBareLF() throws {
        let replies = try parseAll("250\r\n354 go ahead\n221 2.0.0 Bye\r\n")
        #expect(replies.map(\.code) == [250, 354, 221])
        #expect(replies[0].text == "")
        #expect(replies[2].enhanced == EnhancedStatus(2, 0, 0))
    }

    /// Any split of the input yields the same replies.
    @Test(arguments: [1, 2, 3, 5, 7, 64])
    func splitAnywhere(step: Int) throws {
        let text = "220 mx ESMTP\r\n250-a\r\n250 b\r\n550 5.1.1 <x@y>: Recipient address rejected\r\n"
        #expect(try parseAll(text, step: step) == parseAll(text))
    }

    @Test func enhancedCodeMustBeFollowedBySpaceOrEnd() throws {
        #expect(try parseAll("250 2.1.0x ok\r\n")[0].enhanced == nil)
        #expect(try parseAll("250 2.1.0\r\n")[0].enhanced == EnhancedStatus(2, 1, 0))
        #expect(try parseAll("550 5.1.1234 x\r\n")[0].enhanced == nil)
        #expect(try parseAll("550 6.1.1 x\r\n")[0].enhanced == nil)
    }

    @Test func malformedLinesAreProtocolErrors() {
        #expect(throws: SMTPProtocolError.self) { try parseAll("25 short\r\n") }
        #expect(throws: SMTPProtocolError.self) { try parseAll("abc def\r\n") }
        #expect(throws: SMTPProtocolError.self) { try parseAll("250*weird\r\n") }
        #expect(throws: SMTPProtocolError.self) { try parseAll("650 out of range\r\n") }
    }

    @Test func mixedCodesInOneReplyAreAnError() {
        #expect(throws: SMTPProtocolError.mismatchedReplyCodes(250, 251)) { try parseAll("250-a\r\n251 b\r\n") }
    }

    @Test func longLinesAreToleratedUpToTheBound() throws {
        let long = "250 " + String(repeating: "x", count: 3000) + "\r\n"
        #expect(try parseAll(long)[0].text.utf8.count == 3000)
        let tooLong = "250 " + String(repeating: "x", count: 5000) + "\r\n"
        #expect(throws: SMTPProtocolError.self) { try parseAll(tooLong) }
        /* Without a line end at all, the bound still applies. */
        #expect(throws: SMTPProtocolError.self) { try parseAll(String(repeating: "2", count: 5000)) }
    }

    @Test func wholeReplyIsBounded() {
        let line = "250-" + String(repeating: "y", count: 1000) + "\r\n"
        #expect(throws: SMTPProtocolError.self) { try parseAll(String(repeating: line, count: 70) + "250 end\r\n") }
    }
}

@Suite("Base64")
struct Base64Tests {
    @Test(arguments: ["", "f", "fo", "foo", "foob", "fooba", "foobar"])
    func roundTripsRFC4648Vectors(text: String) throws {
        let encoded = Base64.encode(Array(text.utf8))
        #expect(Base64.decode(encoded) == Array(text.utf8))
    }

    @Test func knownEncodings() {
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.encode([0, 0x75, 0x73, 0x65, 0x72]) == "AHVzZXI=")
    }

    @Test(arguments: ["Zm9", "Zm9v YmFy", "Zm=v", "Zm9vYg", "Zg==Zg==", "Zh==", "Zm9=", "*m9v", "Zm9v\r\n"])
    func rejectsAnythingNotStrict(text: String) {
        #expect(Base64.decode(text) == nil)
    }
}

@Suite("Digests")
struct DigestTests {
    /// RFC 2202 test case 2 (HMAC-MD5) and RFC 4231 test case 2 (HMAC-SHA-256).
    @Test func hmacVectors() {
        let key = Array("Jefe".utf8), message = Array("what do ya want for nothing?".utf8)
        #expect(hex(CarrierTesting.TestCrypto().hmacMD5(key: key, message: message)) == "750c783e6ab0b503eaa86e310a5db738")
        #expect(hex(TestCrypto().hmacSHA256(key: key, message: message))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    /// RFC 7677's SCRAM-SHA-256 example depends on PBKDF2; check PBKDF2 against RFC 7914 §11.
    @Test func pbkdf2Vector() {
        let derived = TestCrypto().pbkdf2SHA256(password: Array("passwd".utf8), salt: Array("salt".utf8), iterations: 1)
        #expect(hex(derived) == "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    }
}

/// hex - lowercase hexadecimal of `bytes`.
func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
}
