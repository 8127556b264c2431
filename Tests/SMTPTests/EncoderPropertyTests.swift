// EncoderPropertyTests.swift - encode then decode random bodies: the normalized body comes back
//
// For thousands of seeded random bodies (random octets, every mix of CRLF, LF
// and CR, lines of dots, lines starting with ".", empty lines, long lines
// under the limit), the body is encoded in random chunks and the wire is read
// back with DataReader in other random chunks. The properties: the reader
// returns exactly the CRLF-normalized body (final CRLF added when missing);
// the wire holds no bare CR or LF and exactly one CRLF "." CRLF, at its end;
// re-encoding the normalized body gives the same wire. A failing case prints
// its seed.

import Bytes
import SMTP
import CarrierTesting
import Testing

/// randomBody - a body made of random lines, each at most 998 octets of content.
private func randomBody(_ random: inout SplitMix64) -> [UInt8] {
    var body: [UInt8] = []
    let lines = Int.random(in: 0...40, using: &random)
    let endings: [[UInt8]] = [[13, 10], [13, 10], [13, 10], [10], [13]]
    for index in 0..<lines {
        switch Int.random(in: 0..<8, using: &random) {
        case 0:
            /* Random octets, CR and LF included: endings of every kind, anywhere. */
            for _ in 0..<Int.random(in: 0...120, using: &random) { body.append(UInt8.random(in: 0...255, using: &random)) }
        case 1:
            /* A line of dots. */
            body += [UInt8](repeating: UInt8(ascii: "."), count: Int.random(in: 1...4, using: &random))
        case 2:
            /* A line starting with "." and text after it. */
            body.append(UInt8(ascii: "."))
            for _ in 0..<Int.random(in: 0...60, using: &random) { body.append(UInt8.random(in: 0x20...0x7E, using: &random)) }
        case 3:
            /* An empty line. */
            break
        case 4:
            /* A long line, under the limit. */
            for _ in 0..<Int.random(in: 900...998, using: &random) { body.append(UInt8.random(in: 0x21...0x7E, using: &random)) }
        default:
            /* Text, sometimes with UTF-8. */
            for _ in 0..<Int.random(in: 0...90, using: &random) { body.append(UInt8.random(in: 0x20...0x7E, using: &random)) }
            if Bool.random(using: &random) { body += Array("été ✓".utf8) }
        }
        if index < lines - 1 || Bool.random(using: &random) {
            body += endings[Int.random(in: 0..<endings.count, using: &random)]
        }
    }
    return body
}

/// randomCuts - ascending chunk boundaries in `0...count`, sizes drawn from a random scale.
private func randomCuts(_ count: Int, _ random: inout SplitMix64) -> [Int] {
    let scale = [1, 3, 16, 200, 4096][Int.random(in: 0..<5, using: &random)]
    var cuts: [Int] = []
    var at = 0
    while true {
        at += Int.random(in: 0...scale, using: &random)
        guard at < count else { return cuts }
        cuts.append(at)
    }
}

/// encodeInChunks - the wire form of `body` fed to one encoder at `cuts`.
private func encodeInChunks(_ body: [UInt8], cuts: [Int], policy: EncoderPolicy) throws -> [UInt8] {
    var encoder = MessageEncoder(policy: policy)
    var out = ByteBuffer()
    var start = 0
    for end in cuts + [body.count] {
        try body[start..<end].withUnsafeBytes { try encoder.encode($0, into: &out) }
        start = end
    }
    try encoder.finish(into: &out)
    #expect(encoder.bytesIn == body.count)
    #expect(encoder.bytesOut == out.readableBytes)
    #expect(encoder.has8BitData == body.contains { $0 >= 0x80 })
    return out.readableByteArray
}

/// decodeInChunks - the body DataReader reads from `wire` fed at `cuts`, and the octets it consumed.
private func decodeInChunks(_ wire: [UInt8], cuts: [Int]) -> (body: [UInt8], consumed: Int, finished: Bool, failure: DataError?) {
    var reader = DataReader()
    var body = ByteBuffer()
    var consumed = 0
    var start = 0
    for end in cuts + [wire.count] {
        let (taken, finished) = wire[start..<end].withUnsafeBytes { reader.read($0, into: &body) }
        consumed += taken
        if finished { return (body.readableByteArray, consumed, true, reader.failure) }
        #expect(taken == end - start)
        start = end
    }
    return (body.readableByteArray, consumed, false, reader.failure)
}

/// terminatorCount - how many times CRLF "." CRLF occurs in `wire`.
private func terminatorCount(_ wire: [UInt8]) -> Int {
    guard wire.count >= 5 else { return 0 }
    return (0...(wire.count - 5)).filter { wire[$0..<($0 + 5)].elementsEqual([13, 10, 46, 13, 10]) }.count
}

/// hasBareLineEnding - true when some CR is not followed by LF or some LF not preceded by CR.
private func hasBareLineEnding(_ wire: [UInt8]) -> Bool {
    for (index, byte) in wire.enumerated() {
        if byte == 13 && (index + 1 == wire.count || wire[index + 1] != 10) { return true }
        if byte == 10 && (index == 0 || wire[index - 1] != 13) { return true }
    }
    return false
}

@Suite("Encoder properties")
struct EncoderPropertyTests {
    /// 2,000 bodies in 8 parallel batches of 250, each batch with its own seeds.
    @Test(arguments: 0..<8)
    func encodeThenDecodeGivesTheNormalizedBody(batch: Int) throws {
        for index in 0..<250 {
            let seed = UInt64(batch * 250 + index) &* 0x2545_F491_4F6C_DD1D &+ 1
            var random = SplitMix64(seed: seed)
            let body = randomBody(&random)
            let expected = normalized(body)

            /* Encode in random chunks; the wire is clean and ends in the one terminator. */
            let wire = try encodeInChunks(body, cuts: randomCuts(body.count, &random), policy: EncoderPolicy())
            #expect(!hasBareLineEnding(wire), "seed \(seed)")
            if expected.isEmpty {
                #expect(wire == [46, 13, 10], "seed \(seed)")
            } else {
                #expect(terminatorCount(wire) == 1, "seed \(seed)")
                #expect(wire.suffix(5).elementsEqual([13, 10, 46, 13, 10]), "seed \(seed)")
                #expect(!wire.starts(with: [46, 13, 10]), "seed \(seed)")
            }

            /* Decode in other random chunks, with a pipelined command after the end of data. */
            let pipelined = wire + Array("QUIT\r\n".utf8)
            let decoded = decodeInChunks(pipelined, cuts: randomCuts(pipelined.count, &random))
            #expect(decoded.finished, "seed \(seed)")
            #expect(decoded.failure == nil, "seed \(seed)")
            #expect(decoded.consumed == wire.count, "seed \(seed)")
            #expect(decoded.body == expected, "seed \(seed)")

            /* The normalized body is a fixed point: it encodes to the same wire, even under `reject`. */
            let again = try encodeInChunks(expected, cuts: randomCuts(expected.count, &random), policy: EncoderPolicy(bareLineEndings: .reject))
            #expect(again == wire, "seed \(seed)")
        }
    }

    /// Without dot-stuffing (BDAT) the wire is the normalized body itself.
    @Test func bdatWireIsTheNormalizedBody() throws {
        var random = SplitMix64(seed: 0xBDA7)
        for _ in 0..<300 {
            let body = randomBody(&random)
            let wire = try encodeInChunks(body, cuts: randomCuts(body.count, &random), policy: EncoderPolicy(dotStuffing: false))
            #expect(wire == normalized(body))
        }
    }
}
