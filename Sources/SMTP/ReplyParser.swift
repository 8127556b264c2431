// ReplyParser.swift - SMTP replies from a byte stream, one complete line at a time
//
// The parser consumes whole lines only and keeps the lines of a multi-line
// reply in progress, so the stream keeps at most one partial line for it. A
// line ends with CRLF; a bare LF is accepted too, as every deployed client
// does. Limits follow RFC 5321 §4.5.3.1.5 in spirit: a reply line may exceed
// 512 octets (servers do), up to `maximumLineLength`; a whole reply may not
// exceed `maximumReplyLength` (64 KiB by default).

#if canImport(Glibc)
import Glibc
#endif

/// Incremental parser of server replies.
///
/// A value owned by one session; not shared between threads while in use.
public struct ReplyParser: Sendable {
    /// Longest reply line tolerated, CRLF excluded.
    public let maximumLineLength: Int
    /// Longest whole reply tolerated.
    public let maximumReplyLength: Int

    private var code = 0                    /* code of the reply in progress, 0 when none */
    private var firstText = ""              /* its first line's text */
    private var enhanced: EnhancedStatus?   /* parsed from the first line */
    private var moreLines: [String] = []    /* its later lines */
    private var replyLength = 0             /* octets of the reply so far */

    public init(maximumLineLength: Int = 4096, maximumReplyLength: Int = 65_536) {
        self.maximumLineLength = maximumLineLength
        self.maximumReplyLength = maximumReplyLength
    }

    /// True while a multi-line reply has started and not ended.
    public var isInsideReply: Bool { code != 0 }

    /// parse - the next complete reply at the start of `bytes`, and how many bytes were consumed.
    ///
    /// Returns nil (with the bytes of complete continuation lines consumed)
    /// when the reply is not complete yet. Throws on a malformed reply; the
    /// parser is then unusable, as is the session.
    public mutating func parse(_ bytes: UnsafeRawBufferPointer) throws(SMTPProtocolError) -> (Reply?, consumed: Int) {
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            guard let found = memchr(rest.baseAddress!, 0x0A, rest.count) else {
                if rest.count > maximumLineLength + 1 { throw .replyLineTooLong(rest.count) }
                return (nil, offset)
            }
            let newline = UnsafeRawPointer(found) - rest.baseAddress!
            var end = newline
            if end > 0 && rest[end - 1] == 0x0D { end -= 1 }
            if end > maximumLineLength { throw .replyLineTooLong(end) }
            replyLength += newline + 1
            if replyLength > maximumReplyLength { throw .replyTooLong(replyLength) }
            offset += newline + 1
            if let reply = try line(UnsafeRawBufferPointer(rebasing: rest[..<end])) {
                return (reply, offset)
            }
        }
        return (nil, offset)
    }

    /// line - take one reply line; the reply when it was the last one.
    private mutating func line(_ line: UnsafeRawBufferPointer) throws(SMTPProtocolError) -> Reply? {
        guard line.count >= 3,
              line[0] >= UInt8(ascii: "2"), line[0] <= UInt8(ascii: "5"),
              line[1] &- 0x30 < 10, line[2] &- 0x30 < 10 else {
            throw .malformedReply(String(decoding: line.prefix(80), as: UTF8.self))
        }
        let lineCode = Int(line[0] - 0x30) * 100 + Int(line[1] - 0x30) * 10 + Int(line[2] - 0x30)
        let last: Bool
        switch line.count > 3 ? line[3] : UInt8(ascii: " ") {
        case UInt8(ascii: " "): last = true
        case UInt8(ascii: "-"): last = false
        default: throw .malformedReply(String(decoding: line.prefix(80), as: UTF8.self))
        }
        let textBytes = line.count > 4 ? UnsafeRawBufferPointer(rebasing: line[4...]) : UnsafeRawBufferPointer(start: nil, count: 0)
        let text = String(decoding: textBytes, as: UTF8.self)
        if code == 0 {
            code = lineCode
            firstText = text
            enhanced = EnhancedStatus.parse(textBytes).flatMap { status, length in
                length == textBytes.count || textBytes[length] == UInt8(ascii: " ") ? status : nil
            }
        } else {
            guard lineCode == code else { throw .mismatchedReplyCodes(code, lineCode) }
            moreLines.append(text)
        }
        guard last else { return nil }
        let reply = Reply(code: code, enhanced: enhanced, text: firstText, additionalLines: moreLines)
        code = 0
        firstText = ""
        enhanced = nil
        moreLines = []
        replyLength = 0
        return reply
    }
}
