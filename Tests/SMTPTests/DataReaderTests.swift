// DataReaderTests.swift - the DATA stream: unstuffing, the one true end of data, smuggling, limits

import Bytes
import SMTP
import Testing

/// What reading one DATA stream gave.
private struct Outcome: Equatable, CustomStringConvertible {
    var body: String                /* the body read, as text */
    var consumed: Int               /* octets consumed in total */
    var finished: Bool              /* the end of data was found */
    var failure: DataError?         /* why the message is refused, if it is */
    var longLines = 0               /* lines over 998 octets */

    var description: String { "body \(body.debugDescription), consumed \(consumed), finished \(finished), failure \(failure.map(String.init(describing:)) ?? "none")" }
}

/// read - feed `wire` to a new reader at `cuts` (ascending offsets) until it reports the end.
private func read(_ wire: String, _ reader: DataReader = DataReader(), cuts: [Int] = []) -> Outcome {
    let bytes = Array(wire.utf8)
    var reader = reader
    var body = ByteBuffer()
    var consumed = 0
    var start = 0
    for end in cuts + [bytes.count] {
        let (taken, finished) = bytes[start..<end].withUnsafeBytes { reader.read($0, into: &body) }
        consumed += taken
        if finished { return Outcome(body: body.description, consumed: consumed, finished: true, failure: reader.failure, longLines: reader.longLineCount) }
        start = end
    }
    return Outcome(body: body.description, consumed: consumed, finished: false, failure: reader.failure, longLines: reader.longLineCount)
}

private let normalizing = DataReader(bareLineEndings: .normalize)

@Suite("DATA reader")
struct DataReaderTests {
    /// wire, body, octets consumed (everything up to and including the terminator).
    static let golden: [(String, String, Int)] = [
        ("Hello\r\n.\r\n", "Hello\r\n", 10),
        (".\r\n", "", 3),
        (".\r\nQUIT\r\n", "", 3),
        ("\r\n.\r\n", "\r\n", 5),
        ("..\r\n.\r\n", ".\r\n", 7),
        ("..x\r\n.y\r\nz.\r\n.\r\nRSET\r\n", ".x\r\ny\r\nz.\r\n", 16),
        ("a\r\n...\r\n.\r\n", "a\r\n..\r\n", 11),
        ("é\r\n.\r\nMAIL FROM:<>\r\n", "é\r\n", 7),
    ]

    @Test(arguments: golden)
    func readsToTheTerminator(_ wire: String, _ body: String, _ consumed: Int) {
        #expect(read(wire) == Outcome(body: body, consumed: consumed, finished: true, failure: nil))
    }

    /// SMTP smuggling: none of these is an end of data; only the real CRLF "." CRLF at the end is.
    static let smuggling: [(String, String, DataError)] = [
        ("a\n.\nMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n", .bareLineEnding(offset: 1)),
        ("a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n", .bareLineEnding(offset: 1)),
        ("a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n", .bareLineEnding(offset: 4)),
        ("a\r.\rMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n", .bareLineEnding(offset: 1)),
        ("a\r.\r\nMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n", .bareLineEnding(offset: 1)),
        ("a\r\n.\rMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n", .bareLineEnding(offset: 4)),
        (".\nx\r\n.\r\n", ".\r\nx\r\n", .bareLineEnding(offset: 1)),
        (".\rx\r\n.\r\n", ".\r\nx\r\n", .bareLineEnding(offset: 1)),
        ("\n.\r\nx\r\n.\r\n", "\r\n.\r\nx\r\n", .bareLineEnding(offset: 0)),
        ("x\n..\r\n.\r\n", "x\r\n.\r\n", .bareLineEnding(offset: 1)),
    ]

    @Test(arguments: smuggling)
    func neverEndsOnABareLineEnding(_ wire: String, _ normalizedBody: String, _ error: DataError) {
        let count = wire.utf8.count

        /* Under `reject` the message is read to its real end and refused; the body is not delivered. */
        let refused = read(wire)
        #expect(refused.finished)
        #expect(refused.consumed == count)
        #expect(refused.failure == error)

        /* Under `normalize` the same stream is one message with CRLF line endings. */
        #expect(read(wire, normalizing) == Outcome(body: normalizedBody, consumed: count, finished: true, failure: nil))
    }

    @Test func refusedMessageStopsGrowingTheBody() {
        let outcome = read("first\r\nbare\nthen a great deal more text\r\n.\r\n")
        #expect(outcome.failure == .bareLineEnding(offset: 11))
        #expect(outcome.body == "first\r\nbare")
        #expect(DataError.bareLineEnding(offset: 11).replyCode == 550)
        #expect(DataError.bareLineEnding(offset: 11).enhancedStatus == EnhancedStatus(5, 6, 0))
    }

    @Test func messageTooLargeIsReadToTheEnd() {
        let limited = DataReader(maximumMessageSize: 10)
        #expect(read("0123456789\r\n.\r\n", DataReader(maximumMessageSize: 12)).failure == nil)
        let outcome = read("0123456789\r\n.\r\nQUIT\r\n", limited)
        #expect(outcome.finished)
        #expect(outcome.consumed == 15)
        #expect(outcome.failure == .messageTooLarge(limit: 10))
        #expect(outcome.body == "0123456789")
        #expect(outcome.failure?.replyCode == 552)
        #expect(outcome.failure?.enhancedStatus == EnhancedStatus(5, 3, 4))
    }

    @Test func unfinishedStreamConsumesEverything() {
        for wire in ["abc", "abc\r\n", "abc\r\n.", "abc\r\n.\r", "abc\n.\n", "abc\r\n..\r\n"] {
            let outcome = read(wire)
            #expect(!outcome.finished, "\(wire.debugDescription)")
            #expect(outcome.consumed == wire.utf8.count)
        }
    }

    @Test func longLinesAreCountedNotRefused() {
        let long = String(repeating: "x", count: 999)
        let outcome = read(long + "\r\n" + String(repeating: "y", count: 998) + "\r\n." + long + "\r\n.\r\n")
        #expect(outcome.failure == nil)
        #expect(outcome.longLines == 2)
        #expect(outcome.body.utf8.count == 999 + 998 + 999 + 6)
    }

    @Test func countersAfterTheEnd() {
        var reader = DataReader()
        var body = ByteBuffer()
        let wire = Array("..a\r\nb\r\n.\r\nNOOP\r\n".utf8)
        let (consumed, finished) = wire.withUnsafeBytes { reader.read($0, into: &body) }
        #expect(finished && reader.isFinished)
        #expect(consumed == 11)
        #expect(reader.bytesRead == 11)
        #expect(reader.messageSize == 7)
        #expect(body.description == ".a\r\nb\r\n")
    }

    /// Every two-chunk and three-chunk split of these streams reads the same as the whole.
    static let splitInputs: [String] = golden.map(\.0) + smuggling.map(\.0) + [
        "a\r\r\n.\r\n",
        "x\r\n.\r.\r\n.\r\n",
        "..\r\n.\r\n",
    ]

    @Test(arguments: splitInputs)
    func splitAnywhere(_ wire: String) {
        let count = wire.utf8.count
        for reader in [DataReader(), normalizing, DataReader(maximumMessageSize: 4)] {
            let whole = read(wire, reader)
            for first in 0...count {
                #expect(read(wire, reader, cuts: [first]) == whole, "cut at \(first)")
                for second in first...count {
                    #expect(read(wire, reader, cuts: [first, second]) == whole, "cuts at \(first), \(second)")
                }
            }
            #expect(read(wire, reader, cuts: Array(0...count)) == whole, "one octet at a time")
        }
    }
}
