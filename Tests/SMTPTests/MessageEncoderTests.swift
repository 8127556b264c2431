// MessageEncoderTests.swift - the DATA/BDAT body encoder: golden bodies, policies, split invariance

import Bytes
import SMTP
import Testing

/// encode - the wire form of `body` fed in chunks cut at `cuts` (ascending offsets), or the error.
private func encode(_ body: [UInt8], policy: EncoderPolicy = EncoderPolicy(), cuts: [Int] = []) -> Result<[UInt8], EncodingError> {
    var encoder = MessageEncoder(policy: policy)
    var out = ByteBuffer()
    var start = 0
    for end in cuts + [body.count] {
        let chunk = Array(body[start..<end])
        let result = chunk.withUnsafeBytes { raw in Result { () throws(EncodingError) in try encoder.encode(raw, into: &out) } }
        if case .failure(let error) = result { return .failure(error) }
        start = end
    }
    do { try encoder.finish(into: &out) } catch { return .failure(error) }
    return .success(out.readableByteArray)
}

/// encode - the same for text.
private func encode(_ body: String, policy: EncoderPolicy = EncoderPolicy(), cuts: [Int] = []) -> Result<String, EncodingError> {
    encode(Array(body.utf8), policy: policy, cuts: cuts).map { String(decoding: $0, as: UTF8.self) }
}

private let folding = EncoderPolicy(longLines: .fold, maximumLineLength: 10)
private let strict = EncoderPolicy(bareLineEndings: .reject)
private let bdat = EncoderPolicy(dotStuffing: false)

@Suite("Message encoder")
struct MessageEncoderTests {
    /// body, policy, wire form.
    static let golden: [(String, EncoderPolicy, String)] = [
        ("Hello\r\nWorld\r\n", EncoderPolicy(), "Hello\r\nWorld\r\n.\r\n"),
        ("Hello\r\nWorld", EncoderPolicy(), "Hello\r\nWorld\r\n.\r\n"),
        ("Hello\nWorld\n", EncoderPolicy(), "Hello\r\nWorld\r\n.\r\n"),
        ("a\rb\r", EncoderPolicy(), "a\r\nb\r\n.\r\n"),
        ("a\r\rb", EncoderPolicy(), "a\r\n\r\nb\r\n.\r\n"),
        ("\r\r\n\n", EncoderPolicy(), "\r\n\r\n\r\n.\r\n"),
        ("\n\r", EncoderPolicy(), "\r\n\r\n.\r\n"),
        ("", EncoderPolicy(), ".\r\n"),
        ("\r\n", EncoderPolicy(), "\r\n.\r\n"),
        (".", EncoderPolicy(), "..\r\n.\r\n"),
        (".\r\n", EncoderPolicy(), "..\r\n.\r\n"),
        ("..x\r\n.y\r\nz.\r\n", EncoderPolicy(), "...x\r\n..y\r\nz.\r\n.\r\n"),
        ("a\r\n.\r\nb", EncoderPolicy(), "a\r\n..\r\nb\r\n.\r\n"),
        ("\n.\n", EncoderPolicy(), "\r\n..\r\n.\r\n"),
        ("a\r.b", EncoderPolicy(), "a\r\n..b\r\n.\r\n"),
        ("x", bdat, "x\r\n"),
        (".\n", bdat, ".\r\n"),
        ("", bdat, ""),
        ("0123456789", folding, "0123456789\r\n.\r\n"),
        ("0123456789A", folding, "0123456789\r\n A\r\n.\r\n"),
        ("0123456789ABCDEFGHIJKLMNO\r\n", folding, "0123456789\r\n ABCDEFGHI\r\n JKLMNO\r\n.\r\n"),
        (".123456789ABC\n", folding, "..123456789\r\n ABC\r\n.\r\n"),
        ("é\r\n", EncoderPolicy(), "é\r\n.\r\n"),
    ]

    @Test(arguments: golden)
    func goldenBodies(_ body: String, _ policy: EncoderPolicy, _ wire: String) {
        #expect(encode(body, policy: policy) == .success(wire))
    }

    /// body, exact error under `strict` (bare endings refused).
    static let refusedBareEndings: [(String, EncodingError)] = [
        ("ab\ncd", .bareLineEnding(offset: 2)),
        ("ab\rcd", .bareLineEnding(offset: 2)),
        ("ab\r", .bareLineEnding(offset: 2)),
        ("ab\r\ncd\n", .bareLineEnding(offset: 6)),
        ("\n", .bareLineEnding(offset: 0)),
        ("ab\r\r\n", .bareLineEnding(offset: 2)),
    ]

    @Test(arguments: refusedBareEndings)
    func refusesBareLineEndings(_ body: String, _ error: EncodingError) {
        #expect(encode(body, policy: strict) == .failure(error))
        #expect(encode("ok\r\nfine\r\n", policy: strict) == .success("ok\r\nfine\r\n.\r\n"))
    }

    @Test func lineLimitIs998OctetsByDefault() {
        let at998 = String(repeating: "x", count: 998)
        #expect(encode(at998 + "\r\n") == .success(at998 + "\r\n.\r\n"))
        #expect(encode("." + String(repeating: "x", count: 997)) == .success(".." + String(repeating: "x", count: 997) + "\r\n.\r\n"))
        #expect(encode(at998 + "x\r\n") == .failure(.lineTooLong(lineNumber: 1)))
        #expect(encode("a\nb\r\n" + at998 + "x") == .failure(.lineTooLong(lineNumber: 3)))
        #expect(encode("a\rb\r" + at998 + "\r\n" + at998 + "xx") == .failure(.lineTooLong(lineNumber: 4)))
    }

    @Test func foldingKeepsEveryLineWithinTheLimit() throws {
        let long = String(repeating: "0123456789", count: 300)
        let wire = try encode(long + "\r\n" + long, policy: EncoderPolicy(longLines: .fold)).get()
        let lines = wire.split(separator: "\r\n", omittingEmptySubsequences: false)
        #expect(lines.allSatisfy { $0.utf8.count <= 998 })
        #expect(lines.dropFirst().filter { $0.first == " " }.count == 6)
        #expect(wire.replacing("\r\n ", with: "") == long + "\r\n" + long + "\r\n.\r\n")
    }

    @Test func countersAndEightBitFlag() throws {
        var encoder = MessageEncoder()
        var out = ByteBuffer()
        let first = Array("Subject: hi\n\n.".utf8)
        try first.withUnsafeBytes { try encoder.encode($0, into: &out) }
        #expect(!encoder.has8BitData)
        #expect(encoder.bytesIn == first.count)
        let second = Array("café\n".utf8)
        try second.withUnsafeBytes { try encoder.encode($0, into: &out) }
        #expect(encoder.has8BitData)
        try encoder.finish(into: &out)
        #expect(out.description == "Subject: hi\r\n\r\n..café\r\n.\r\n")
        #expect(encoder.bytesIn == first.count + second.count)
        #expect(encoder.bytesOut == out.readableBytes)
    }

    /// An octet >= 0x80 is found wherever it sits relative to the eight-octet words.
    @Test func eightBitScanFindsEveryPosition() {
        for length in [0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100] {
            var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
            #expect(!bytes.withUnsafeBytes { MessageEncoder.containsEightBitOctets($0) })
            for position in 0..<length {
                bytes[position] = 0x80
                #expect(bytes.withUnsafeBytes { MessageEncoder.containsEightBitOctets($0) }, "length \(length) position \(position)")
                bytes[position] = 0x7F
                #expect(!bytes.withUnsafeBytes { MessageEncoder.containsEightBitOctets($0) })
                bytes[position] = UInt8(ascii: "a")
            }
        }
    }

    /// After a refusal, `out` is as it was and the encoder keeps refusing.
    @Test func failureLeavesOutputUntouched() {
        var encoder = MessageEncoder(policy: strict)
        var out = ByteBuffer(string: "MAIL FROM:<>\r\n")
        let body = Array("good line\r\nbad\nline\r\n".utf8)
        #expect(throws: EncodingError.bareLineEnding(offset: 14)) { try body.withUnsafeBytes { try encoder.encode($0, into: &out) } }
        #expect(out.description == "MAIL FROM:<>\r\n")
        #expect(throws: EncodingError.bareLineEnding(offset: 14)) { try encoder.finish(into: &out) }
        #expect(out.description == "MAIL FROM:<>\r\n")
    }

    @Test func encodeWholeFromAByteBuffer() throws {
        let body = ByteBuffer(string: "Hi\n.\nBye")
        let wire = try MessageEncoder.encodeWhole(body)
        #expect(wire.description == "Hi\r\n..\r\nBye\r\n.\r\n")
        #expect(throws: EncodingError.bareLineEnding(offset: 2)) { try MessageEncoder.encodeWhole(body, policy: strict) }
    }

    /// Inputs whose line endings, dots and long lines straddle chunk boundaries.
    static let tricky: [String] = [
        "a\r\nb\r\n",
        ".\r\n.\r\n..\r\n",
        "\r\r\n\n\r",
        ".a\n.b\r.c\r\n.",
        "line\r",
        "\r\n.\r\n",
        "é.\n.é\r",
        String(repeating: "x", count: 23) + "\r\n." + String(repeating: "y", count: 12) + "\r",
        "0123456789\r\n0123456789\r0123456789\n0123456789",
    ]

    /// Every two-chunk split, and every three-chunk split of short inputs, gives the unsplit result.
    @Test(arguments: tricky)
    func splitAnywhere(_ text: String) {
        let body = Array(text.utf8)
        for policy in [EncoderPolicy(), folding, strict, bdat, EncoderPolicy(bareLineEndings: .reject, longLines: .fold, maximumLineLength: 3)] {
            let whole = encode(body, policy: policy)
            for cut in 0...body.count {
                #expect(encode(body, policy: policy, cuts: [cut]) == whole, "cut at \(cut)")
            }
            #expect(encode(body, policy: policy, cuts: Array(0...body.count)) == whole, "one octet at a time")
            guard body.count <= 24 else { continue }
            for first in 0...body.count {
                for second in first...body.count {
                    #expect(encode(body, policy: policy, cuts: [first, second]) == whole, "cuts at \(first), \(second)")
                }
            }
        }
    }
}
