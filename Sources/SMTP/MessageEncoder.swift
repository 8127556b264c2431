// MessageEncoder.swift - a message body as DATA or BDAT puts it on the wire
//
// RFC 5321 §4.5.2 and §2.3.8: on the wire every line ends in CRLF, a line
// that starts with "." gets a second one (so no body line can read as the
// end-of-data "."), and the body ends with CRLF "." CRLF. Bodies come from
// templates, files and HTTP requests with every line-ending convention, and
// a bare CR or LF on the wire is what SMTP smuggling (2023) exploits: the
// receiving MTA and the next hop disagree about where the message ends. So
// the encoder either turns each bare CR or LF into CRLF (`normalize`, the
// default for a sender) or refuses the body (`reject`).
//
// The encoder streams: a body may arrive in chunks split anywhere (between CR
// and LF, before a dot at a line start, in the middle of a long line), and
// the state that spans a split is four fields. The hot path is a newsletter
// body that is already clean: it is scanned with memchr for line ends and
// copied in runs of whole lines, so only a dot at a line start, a bare line
// ending or a fold breaks a run; 8-bit detection reads eight octets at a time.
//
// Folding (`LongLines.fold`) is a last resort. RFC 5321 §4.5.3.1.6 allows
// 1000 octets per line, CRLF included; a longer line is refused by many
// servers. Folding inserts CRLF and a space, header style: in a header that
// is undone by unfolding, but in a body the receiver sees an extra line break
// and space, which changes the content, breaks a DKIM body hash computed
// before encoding, and can split a URL or a base64 blob. Bodies should be
// made transport-safe (quoted-printable or base64) upstream; `reject` is the
// default so a campaign with long lines fails at injection, visibly.

#if canImport(Glibc)
import Glibc
#endif
public import Bytes

/// How a MessageEncoder treats line endings, long lines and dots.
///
/// A value; safe to send between threads.
public struct EncoderPolicy: Hashable, Sendable {
    /// What a CR not followed by LF, or an LF not preceded by CR, becomes.
    public enum BareLineEndings: Hashable, Sendable {
        /// It becomes CRLF.
        case normalize
        /// The body is refused with `EncodingError.bareLineEnding`.
        case reject
    }

    /// What a line longer than `maximumLineLength` does.
    public enum LongLines: Hashable, Sendable {
        /// The body is refused with `EncodingError.lineTooLong`.
        case reject
        /// CRLF and a space are inserted (see the file comment for what that costs).
        case fold
    }

    public var bareLineEndings: BareLineEndings     /* lone CR or LF: normalize or reject */
    public var longLines: LongLines                 /* over-long line: reject or fold */
    public var maximumLineLength: Int               /* octets per line, CRLF and stuffed dot excluded; >= 2 */
    public var dotStuffing: Bool                    /* true for DATA; false for BDAT, which sends raw octets */

    public init(
        bareLineEndings: BareLineEndings = .normalize,
        longLines: LongLines = .reject,
        maximumLineLength: Int = 998,
        dotStuffing: Bool = true
    ) {
        self.bareLineEndings = bareLineEndings
        self.longLines = longLines
        self.maximumLineLength = maximumLineLength
        self.dotStuffing = dotStuffing
    }
}

/// Why a body could not be encoded.
///
/// A value; safe to send between threads.
public enum EncodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A lone CR or LF under `BareLineEndings.reject`; `offset` is its 0-based position in the body.
    case bareLineEnding(offset: Int)
    /// A line over the limit under `LongLines.reject`; `lineNumber` counts body lines from 1.
    case lineTooLong(lineNumber: Int)

    public var description: String {
        switch self {
        case .bareLineEnding(let offset): return "bare CR or LF at body offset \(offset)"
        case .lineTooLong(let lineNumber): return "body line \(lineNumber) is too long"
        }
    }
}

/// Streaming encoder of one message body into DATA (or BDAT) wire form.
///
/// A value owned by one transaction, used from one thread at a time. Feed the
/// body with `encode(_:into:)` in chunks of any size, then call
/// `finish(into:)` once. When a call throws, `out` is left as it was before
/// that call and the encoder only rethrows the same error from then on; the
/// transaction must be abandoned (the body should be encoded before DATA is
/// sent, which `encodeWhole` does).
public struct MessageEncoder: Sendable {
    public let policy: EncoderPolicy                /* fixed for the whole body */
    public private(set) var bytesIn = 0             /* body octets taken */
    public private(set) var bytesOut = 0            /* wire octets written, terminator included */
    public private(set) var has8BitData = false     /* an octet >= 0x80 was seen: BODY=8BITMIME needed */
    private var lineLength = 0                      /* content octets of the current body line so far */
    private var lineNumber = 1                      /* number of the current body line, from 1 */
    private var atLineStart = true                  /* the next octet is the first of a line */
    private var pendingCR = false                   /* the last chunk ended in CR, already written */
    private var failure: EncodingError?             /* the error that stopped this encoder */
    private var finished = false                    /* finish(into:) ran */

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let dot = UInt8(ascii: ".")

    public init(policy: EncoderPolicy = EncoderPolicy()) {
        precondition(policy.maximumLineLength >= 2, "a folded line needs room for the space and one octet")
        self.policy = policy
    }

    /// encode - append the wire form of the next body chunk to `out`.
    public mutating func encode(_ chunk: UnsafeRawBufferPointer, into out: inout ByteBuffer) throws(EncodingError) {
        precondition(!finished, "MessageEncoder.encode after finish")
        if let failure { throw failure }
        guard let base = chunk.baseAddress, chunk.count > 0 else { return }
        if !has8BitData { has8BitData = MessageEncoder.containsEightBitOctets(chunk) }

        /* One reservation per chunk; only a body full of bare endings or dot lines grows it again. */
        let before = out.readableBytes
        out.reserveWritable(chunk.count + chunk.count >> 5 + 8)
        do {
            try encodeLines(base, count: chunk.count, into: &out)
        } catch {
            failure = error
            out = out.prefix(before)
            throw error
        }
        bytesIn += chunk.count
        bytesOut += out.readableBytes - before
    }

    /// finish - end the last line with CRLF if it is open and, when dot-stuffing, append `.` CRLF.
    ///
    /// An empty body gives just the terminator: the empty message.
    public mutating func finish(into out: inout ByteBuffer) throws(EncodingError) {
        precondition(!finished, "MessageEncoder.finish called twice")
        if let failure { throw failure }
        let before = out.readableBytes

        /* A CR that ended the body is a bare one: complete it or refuse it. */
        if pendingCR {
            guard policy.bareLineEndings == .normalize else {
                failure = .bareLineEnding(offset: bytesIn - 1)
                throw .bareLineEnding(offset: bytesIn - 1)
            }
            pendingCR = false
            out.append(MessageEncoder.lf)
        } else if !atLineStart {
            out.append(MessageEncoder.cr)
            out.append(MessageEncoder.lf)
        }
        if policy.dotStuffing { out.append(".\r\n") }
        finished = true
        bytesOut += out.readableBytes - before
    }

    /// encodeWhole - the complete wire form of `body`, for a body encoded once and sent many times.
    ///
    /// The result is sized for the body, so a clean body costs one allocation.
    public static func encodeWhole(
        _ body: UnsafeRawBufferPointer,
        policy: EncoderPolicy = EncoderPolicy()
    ) throws(EncodingError) -> ByteBuffer {
        var encoder = MessageEncoder(policy: policy)
        var out = ByteBuffer(capacity: body.count + body.count >> 5 + 16)
        try encoder.encode(body, into: &out)
        try encoder.finish(into: &out)
        return out
    }

    /// encodeWhole - the complete wire form of the readable bytes of `body`.
    public static func encodeWhole(_ body: ByteBuffer, policy: EncoderPolicy = EncoderPolicy()) throws(EncodingError) -> ByteBuffer {
        try body.withUnsafeReadableBytes { bytes throws(EncodingError) in try encodeWhole(bytes, policy: policy) }
    }

    /// containsEightBitOctets - true when any octet is >= 0x80, read eight octets at a time.
    public static func containsEightBitOctets(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return false }
        let high: UInt64 = 0x8080_8080_8080_8080
        let count = bytes.count
        var index = 0

        /* Four words per step, one branch per 32 octets. */
        while index + 32 <= count {
            let word = base.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: index + 8, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: index + 16, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: index + 24, as: UInt64.self)
            if word & high != 0 { return true }
            index += 32
        }

        /* The tail: whole words, then single octets (bit 7 of an octet lands on 0x80). */
        var word: UInt64 = 0
        while index + 8 <= count {
            word |= base.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < count {
            word |= UInt64(base.load(fromByteOffset: index, as: UInt8.self))
            index += 1
        }
        return word & high != 0
    }

    /// encodeLines - the line loop: find each line end with memchr, copy clean runs whole.
    ///
    /// `runStart` is the first octet not yet copied to `out`; a run is copied
    /// only when something must be inserted after it.
    private mutating func encodeLines(_ base: UnsafeRawPointer, count: Int, into out: inout ByteBuffer) throws(EncodingError) {
        var position = 0
        var runStart = 0

        /* A CR that ended the last chunk: CRLF if this one starts with LF, else a bare CR. */
        if pendingCR {
            pendingCR = false
            if base.load(as: UInt8.self) == MessageEncoder.lf {
                position = 1
            } else {
                try bareLineEnding(at: bytesIn - 1)
                out.append(MessageEncoder.lf)
            }
            endLine()
        }

        while position < count {
            /* Dot-stuffing: a line that starts with "." gets a second one in front. */
            if atLineStart {
                atLineStart = false
                if policy.dotStuffing && base.load(fromByteOffset: position, as: UInt8.self) == MessageEncoder.dot {
                    copy(base, runStart, position, into: &out)
                    out.append(MessageEncoder.dot)
                    runStart = position
                }
            }

            /* The line runs to the next LF, or to the first CR before it. */
            let newline = memchr(base + position, Int32(MessageEncoder.lf), count - position)
            let lineEnd = newline.map { UnsafeRawPointer($0) - base } ?? count
            if let found = memchr(base + position, Int32(MessageEncoder.cr), lineEnd - position) {
                let crIndex = UnsafeRawPointer(found) - base
                try content(base, from: position, to: crIndex, runStart: &runStart, into: &out)
                if crIndex + 1 == count {
                    /* CR ends the chunk: the next chunk says whether it is CRLF. */
                    pendingCR = true
                    position = count
                } else if crIndex + 1 == lineEnd {
                    /* CRLF: the common case, nothing to copy yet. */
                    position = lineEnd + 1
                    endLine()
                } else {
                    /* A bare CR: CR is kept, LF is inserted after it. */
                    try bareLineEnding(at: bytesIn + crIndex)
                    copy(base, runStart, crIndex + 1, into: &out)
                    out.append(MessageEncoder.lf)
                    runStart = crIndex + 1
                    position = crIndex + 1
                    endLine()
                }
            } else if newline != nil {
                /* A bare LF: CR is inserted before it. */
                try content(base, from: position, to: lineEnd, runStart: &runStart, into: &out)
                try bareLineEnding(at: bytesIn + lineEnd)
                copy(base, runStart, lineEnd, into: &out)
                out.append(MessageEncoder.cr)
                runStart = lineEnd
                position = lineEnd + 1
                endLine()
            } else {
                /* The chunk ends inside a line. */
                try content(base, from: position, to: count, runStart: &runStart, into: &out)
                position = count
            }
        }
        copy(base, runStart, count, into: &out)
    }

    /// content - account for line content `[from, to)`; fold or refuse when the line grows past the limit.
    @inline(__always)
    private mutating func content(
        _ base: UnsafeRawPointer, from: Int, to: Int, runStart: inout Int, into out: inout ByteBuffer
    ) throws(EncodingError) {
        var from = from
        let limit = policy.maximumLineLength
        while lineLength + (to - from) > limit {
            guard policy.longLines == .fold else { throw .lineTooLong(lineNumber: lineNumber) }

            /* Fill the line to the limit, then continue on a line that starts with a space. */
            let split = from + (limit - lineLength)
            copy(base, runStart, split, into: &out)
            out.append("\r\n ")
            runStart = split
            from = split
            lineLength = 1
        }
        lineLength += to - from
    }

    /// bareLineEnding - refuse a lone CR or LF at body offset `offset` unless normalizing.
    @inline(__always)
    private func bareLineEnding(at offset: Int) throws(EncodingError) {
        if policy.bareLineEndings == .reject { throw .bareLineEnding(offset: offset) }
    }

    /// endLine - a line ended: the next octet starts a new one.
    @inline(__always)
    private mutating func endLine() {
        lineLength = 0
        lineNumber += 1
        atLineStart = true
    }

    /// copy - append body octets `[from, to)` to `out` in one memcpy.
    @inline(__always)
    private func copy(_ base: UnsafeRawPointer, _ from: Int, _ to: Int, into out: inout ByteBuffer) {
        if to > from { out.append(contentsOf: UnsafeRawBufferPointer(start: base + from, count: to - from)) }
    }
}
