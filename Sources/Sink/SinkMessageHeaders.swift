// SinkMessageHeaders.swift - the two header fields the sink looks at: Message-ID and X-Carrier-Id
//
// The record names each message by its Message-ID and by the X-Carrier-Id a
// Carrier sender puts in, and the end-of-data fault decision is keyed by
// them. Only the header section is scanned (up to the first empty line), a
// line at a time with memchr, and only when recording or end-of-data faults
// are on; the default path never looks inside a message.

#if canImport(Glibc)
import Glibc
#endif

/// The identifying header fields of one message.
struct SinkMessageHeaders {
    var messageID: String?              /* Message-ID's value, unfolded and trimmed */
    var carrierID: String?              /* X-Carrier-Id's value, unfolded and trimmed */

    /// parse - find the fields in the header section of `body` (the first occurrence of each).
    init(parsing body: UnsafeRawBufferPointer) {
        guard let base = body.baseAddress else { return }
        let end = body.count
        var line = 0
        while line < end {
            /* One physical line: [line, lineEnd), the CRLF or LF excluded. */
            let next = memchr(base + line, 0x0A, end - line).map { UnsafeRawPointer($0) - UnsafeRawPointer(base) } ?? end
            var lineEnd = next
            if lineEnd > line && body[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            if lineEnd == line { return }       /* the empty line: the body starts */
            let field = SinkMessageHeaders.field(body, line, lineEnd)
            if field != .other {
                /* The value: the rest of this line and of every continuation line, unfolded. */
                var value: [UInt8] = []
                let colon = memchr(base + line, Int32(UInt8(ascii: ":")), lineEnd - line)!
                var start = UnsafeRawPointer(colon) - UnsafeRawPointer(base) + 1
                var stop = lineEnd
                var after = min(next + 1, end)
                while true {
                    value.append(contentsOf: body[start..<stop])
                    guard after < end, body[after] == 0x20 || body[after] == 0x09 else { break }
                    let following = memchr(base + after, 0x0A, end - after).map { UnsafeRawPointer($0) - UnsafeRawPointer(base) } ?? end
                    start = after
                    stop = following > after && body[following - 1] == 0x0D ? following - 1 : following
                    after = min(following + 1, end)
                }
                let text = SinkMessageHeaders.trimmed(value)
                if field == .messageID && messageID == nil { messageID = text }
                if field == .carrierID && carrierID == nil { carrierID = text }
                if messageID != nil && carrierID != nil { return }
            }
            line = next + 1
        }
    }

    private enum Field { case messageID, carrierID, other }

    /// field - which of our fields the line [start, end) opens, by its name before ':'.
    private static func field(_ body: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Field {
        /// named - true when the line starts with `name` (lowercase) and a colon, ignoring case.
        func named(_ name: StaticString) -> Bool {
            let count = name.utf8CodeUnitCount
            guard end - start > count, body[start + count] == UInt8(ascii: ":") else { return false }
            let expected = UnsafeRawBufferPointer(start: name.utf8Start, count: count)
            for index in 0..<count where asciiLowercase(body[start + index]) != expected[index] { return false }
            return true
        }
        if named("message-id") { return .messageID }
        if named("x-carrier-id") { return .carrierID }
        return .other
    }

    /// trimmed - the value without surrounding spaces and tabs, as text.
    private static func trimmed(_ value: [UInt8]) -> String {
        var lower = 0
        var upper = value.count
        while lower < upper && (value[lower] == 0x20 || value[lower] == 0x09) { lower += 1 }
        while upper > lower && (value[upper - 1] == 0x20 || value[upper - 1] == 0x09) { upper -= 1 }
        return String(decoding: value[lower..<upper], as: UTF8.self)
    }
}
