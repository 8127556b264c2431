// DataReader.swift - the server side of DATA: unstuff dots, find the one true end of data
//
// After the 354 reply the client sends the body, dot-stuffed, ended by a line
// holding a single "." (RFC 5321 §4.5.2). The end of data is CRLF "." CRLF
// and nothing else: the data begins right after the DATA command's CRLF, so a
// first line of "." ends an empty message. The SMTP smuggling advisories of
// December 2023 showed what happens when a server also accepts LF "." LF,
// LF "." CRLF, CRLF "." LF or CR "." CR: a sender hides a second message
// inside the first, and the next hop (which reads the line endings strictly)
// delivers it with forged envelope and headers. This reader ends data only on
// a real CRLF, a ".", and a real CRLF.
//
// Bare CR or LF inside the data is either refused (`reject`, the default) or
// turned into CRLF (`normalize`). A refused message, like one over the size
// limit, is still read to its real end, so the session stays in step with
// the client and can answer after the terminator (550 5.6.0, 552 5.3.4) and
// go on with the next command. That is why `read` does not throw: the first
// problem is recorded in `failure`, the body stops growing, and the caller
// looks at `failure` when `read` reports the end. Lines over 998 octets are
// not refused on receipt (Postel; the next hop may fold or refuse), only
// counted in `longLineCount`.
//
// The state machine steps octet by octet only where it must (at a line
// start, around a CR); inside a line the reader finds the next CR or LF with
// memchr and copies runs of whole lines to the body.

#if canImport(Glibc)
import Glibc
#endif
public import Bytes

/// Why a message read with DataReader cannot be accepted.
///
/// A value; safe to send between threads.
public enum DataError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A lone CR or LF under `reject`; `offset` is its 0-based position in the data stream.
    case bareLineEnding(offset: Int)
    /// The body grew past `limit` octets.
    case messageTooLarge(limit: Int)

    /// The reply code the server answers after the terminator.
    public var replyCode: Int {
        switch self {
        case .bareLineEnding: return 550
        case .messageTooLarge: return 552
        }
    }

    /// The enhanced status code of that reply (RFC 3463): 5.6.0 or 5.3.4.
    public var enhancedStatus: EnhancedStatus {
        switch self {
        case .bareLineEnding: return EnhancedStatus(5, 6, 0)!
        case .messageTooLarge: return EnhancedStatus(5, 3, 4)!
        }
    }

    public var description: String {
        switch self {
        case .bareLineEnding(let offset): return "bare CR or LF at data offset \(offset)"
        case .messageTooLarge(let limit): return "message exceeds \(limit) octets"
        }
    }
}

/// Reader of the DATA stream of one message: dot-unstuffing, CRLF "." CRLF detection.
///
/// A value owned by one server session, used from its loop thread; make a
/// new one for each DATA command. Feed it the bytes that follow the 354
/// reply; it consumes all of them until the end of data, then reports how
/// many it took, so whatever follows (pipelined commands) stays the
/// session's. The body gets the message with dots unstuffed and every line
/// ending CRLF, the final line's CRLF included.
public struct DataReader: Sendable {
    /// Where the reader is between two octets.
    private enum State: Hashable, Sendable {
        case lineStart(afterCRLF: Bool)     /* next octet starts a line; after a real CRLF (or at the start)? */
        case dot(afterCRLF: Bool)           /* a "." began the line and is held back */
        case dotCR                          /* "." CR began a line after CRLF: LF ends the data */
        case inLine                         /* inside a line */
        case cr                             /* a CR ended the last chunk and is held back */
        case finished                       /* the end of data was read */
    }

    public let bareLineEndings: EncoderPolicy.BareLineEndings   /* lone CR or LF: reject or normalize */
    public let maximumMessageSize: Int                          /* body octets before messageTooLarge */
    public private(set) var failure: DataError?                 /* first reason to refuse; body frozen since */
    public private(set) var bytesRead = 0                       /* data octets consumed, terminator included */
    public private(set) var messageSize = 0                     /* body octets, unstuffed and normalized */
    public private(set) var longLineCount = 0                   /* lines over 998 octets, CRLF excluded */
    private var state = State.lineStart(afterCRLF: true)        /* the data starts after DATA's CRLF */
    private var lineLength = 0                                  /* body octets of the current line so far */

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let dot = UInt8(ascii: ".")

    public init(bareLineEndings: EncoderPolicy.BareLineEndings = .reject, maximumMessageSize: Int = .max) {
        self.bareLineEndings = bareLineEndings
        self.maximumMessageSize = maximumMessageSize
    }

    /// True once the end of data was read.
    public var isFinished: Bool { state == .finished }

    /// read - consume data octets, appending the body to `body`, up to and including the end of data.
    ///
    /// Returns how many octets of `bytes` were consumed (all of them unless
    /// the end of data was found) and whether the end was found. Check
    /// `failure` then: when it is set, `body` holds an incomplete message to
    /// discard, and the reply is `failure.replyCode`.
    public mutating func read(_ bytes: UnsafeRawBufferPointer, into body: inout ByteBuffer) -> (consumed: Int, finished: Bool) {
        precondition(state != .finished, "DataReader.read after the end of data")
        guard let base = bytes.baseAddress, bytes.count > 0 else { return (0, false) }
        let count = bytes.count
        var position = 0
        var runStart = 0

        while position < count {
            let byte = base.load(fromByteOffset: position, as: UInt8.self)
            switch state {
            case .lineStart(let afterCRLF):
                /* A "." at a line start is held back until the next octet says what it is. */
                state = .inLine
                if byte == DataReader.dot {
                    emit(base, runStart, position, into: &body)
                    position += 1
                    runStart = position
                    state = .dot(afterCRLF: afterCRLF)
                }

            case .dot(let afterCRLF):
                if byte == DataReader.cr && afterCRLF {
                    /* CRLF "." CR: the end if LF follows. */
                    position += 1
                    runStart = position
                    state = .dotCR
                } else if byte == DataReader.cr || byte == DataReader.lf {
                    /* A lone "." after a bare ending, or before a bare LF: content, never the end. */
                    emit(".", into: &body)
                    lineLength += 1
                    state = .inLine
                } else {
                    /* "." and more on the line: the dot was stuffing, drop it. */
                    state = .inLine
                }

            case .dotCR:
                if byte == DataReader.lf {
                    state = .finished
                    bytesRead += position + 1
                    return (position + 1, true)
                }
                /* "." then a bare CR: the dot is content, the CR a bare ending. */
                emit(".", into: &body)
                lineLength += 1
                bareLineEnding(at: bytesRead + position - 1, into: &body)
                state = .lineStart(afterCRLF: false)

            case .cr:
                /* The CR that ended the last chunk: CRLF if LF follows, else a bare CR. */
                if byte == DataReader.lf {
                    emit("\r\n", into: &body)
                    position += 1
                    runStart = position
                    endLine()
                    state = .lineStart(afterCRLF: true)
                } else {
                    bareLineEnding(at: bytesRead + position - 1, into: &body)
                    state = .lineStart(afterCRLF: false)
                }

            case .inLine:
                position = scanLine(base, count: count, from: position, runStart: &runStart, into: &body)

            case .finished:
                preconditionFailure("DataReader state finished inside read")
            }
        }
        emit(base, runStart, count, into: &body)
        bytesRead += count
        return (count, false)
    }

    /// scanLine - from inside a line to the next line start (or the chunk end); returns the new position.
    ///
    /// The line runs to the next LF, or to the first CR before it. CRLF inside
    /// the chunk stays in the run; a CR at the chunk end is held back.
    private mutating func scanLine(
        _ base: UnsafeRawPointer, count: Int, from position: Int, runStart: inout Int, into body: inout ByteBuffer
    ) -> Int {
        let newline = memchr(base + position, Int32(DataReader.lf), count - position)
        let lineEnd = newline.map { UnsafeRawPointer($0) - base } ?? count
        if let found = memchr(base + position, Int32(DataReader.cr), lineEnd - position) {
            let crIndex = UnsafeRawPointer(found) - base
            lineLength += crIndex - position
            if crIndex + 1 == count {
                emit(base, runStart, crIndex, into: &body)
                runStart = count
                state = .cr
                return count
            }
            if crIndex + 1 == lineEnd {
                endLine()
                state = .lineStart(afterCRLF: true)
                return lineEnd + 1
            }
            /* A bare CR inside the chunk. */
            emit(base, runStart, crIndex, into: &body)
            bareLineEnding(at: bytesRead + crIndex, into: &body)
            runStart = crIndex + 1
            state = .lineStart(afterCRLF: false)
            return crIndex + 1
        }
        if newline != nil {
            /* A bare LF. */
            lineLength += lineEnd - position
            emit(base, runStart, lineEnd, into: &body)
            bareLineEnding(at: bytesRead + lineEnd, into: &body)
            runStart = lineEnd + 1
            state = .lineStart(afterCRLF: false)
            return lineEnd + 1
        }
        lineLength += count - position
        return count
    }

    /// bareLineEnding - a lone CR or LF ended a line: record the failure, or write CRLF for it.
    private mutating func bareLineEnding(at offset: Int, into body: inout ByteBuffer) {
        if bareLineEndings == .reject && failure == nil { failure = .bareLineEnding(offset: offset) }
        emit("\r\n", into: &body)
        endLine()
    }

    /// endLine - count the line that just ended if it was long, and start the next.
    private mutating func endLine() {
        if lineLength > 998 { longLineCount += 1 }
        lineLength = 0
    }

    /// emit - append body octets `[from, to)` of the chunk, unless the message is already refused.
    private mutating func emit(_ base: UnsafeRawPointer, _ from: Int, _ to: Int, into body: inout ByteBuffer) {
        guard to > from else { return }
        emit(UnsafeRawBufferPointer(start: base + from, count: to - from), into: &body)
    }

    /// emit - append a fixed string (CRLF, ".") to the body.
    private mutating func emit(_ text: StaticString, into body: inout ByteBuffer) {
        emit(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount), into: &body)
    }

    /// emit - append octets to the body, counting them against the size limit.
    ///
    /// A refused body keeps what it held, and an oversized one exactly its
    /// first `maximumMessageSize` octets, however the stream was split.
    private mutating func emit(_ octets: UnsafeRawBufferPointer, into body: inout ByteBuffer) {
        let room = maximumMessageSize - messageSize
        messageSize += octets.count
        guard failure == nil else { return }
        guard octets.count <= room else {
            failure = .messageTooLarge(limit: maximumMessageSize)
            body.append(contentsOf: UnsafeRawBufferPointer(rebasing: octets[..<room]))
            return
        }
        body.append(contentsOf: octets)
    }
}
