// DeliveryLog.swift - the delivery log: one JSON line per delivery event, written off the hot path
//
// Every attempt's outcome is logged, so a busy engine logs tens of thousands
// of lines a second from every shard thread. `append` therefore only encodes
// the line into a shared buffer under a mutex (no allocation, no system call);
// the file belongs to a serial dispatch queue, which writes the buffer out
// when it passes 64 KiB or 200 ms after the first line it holds, whichever
// comes first. No timer runs while the log is idle.
//
// Rotation is by size: before a line would take the file past `maxBytes`,
// `delivery.log` becomes `delivery.log.1` (the older ones shift up to
// `.keep`; the oldest is removed) and a new file starts. Lines are cut only at
// line ends, so no line is split between two files; a single line longer than
// `maxBytes` gets a file of its own.
//
// The log is not fsynced line by line: the spool is the durable record of
// outcomes, the log is for people and log shippers. `close()` syncs once. A
// write error is kept (`lastError`) and the lines of that write are dropped
// and counted (`droppedLines`), so a full disk cannot make the buffer grow
// without bound or stall the shards.

#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// One delivery event of one recipient, as a log line.
///
/// A value; safe to send between threads.
public struct DeliveryLogRecord: Sendable, Hashable {
    /// What happened to the recipient.
    public enum Event: String, Sendable, Hashable, CaseIterable {
        case received, delivered, deferred, bounced, expired
    }

    public var time: Int64                      /* wall clock, milliseconds since the epoch */
    public var event: Event
    public var messageID: String                /* the queue id */
    public var recipient: String
    public var campaign: String                 /* "" for none */
    public var site: String                     /* the destination queue (domain or next hop) */
    public var host: String?                    /* the server that answered */
    public var code: Int?                       /* its reply code */
    public var enhancedCode: String?            /* its enhanced status code, e.g. "5.1.1" */
    public var text: String?                    /* its reply text, or why no reply came */
    public var attempt: Int                     /* 1 for the first attempt; 0 for `received` */
    public var latencyMilliseconds: Double?     /* from connection or command start to the reply */
    public var nextAttempt: Int64?              /* milliseconds since the epoch, for `deferred` */

    public init(time: Int64, event: Event, messageID: String, recipient: String, campaign: String = "", site: String = "",
                host: String? = nil, code: Int? = nil, enhancedCode: String? = nil, text: String? = nil, attempt: Int = 0,
                latencyMilliseconds: Double? = nil, nextAttempt: Int64? = nil) {
        self.time = time
        self.event = event
        self.messageID = messageID
        self.recipient = recipient
        self.campaign = campaign
        self.site = site
        self.host = host
        self.code = code
        self.enhancedCode = enhancedCode
        self.text = text
        self.attempt = attempt
        self.latencyMilliseconds = latencyMilliseconds
        self.nextAttempt = nextAttempt
    }
}

/// A delivery log file that could not be opened, written or rotated.
///
/// A value; safe to send between threads.
public struct DeliveryLogError: Error, Hashable, Sendable, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var operation: String                /* "open", "write", "rename", ... */

    public init(path: String, errno: Int32, operation: String) {
        self.path = path
        self.errno = errno
        self.operation = operation
    }

    public var description: String { "\(path): \(operation): \(String(cString: strerror(errno)))" }
}

/// The delivery log: JSON Lines appended from any thread, written and rotated on a queue of its own.
///
/// Thread-safe: any thread may `append`; it never waits for the disk. The
/// file, its size and rotation belong to `queue`. `flush()` and `close()`
/// block the caller until the queue has written, so they are not for event
/// loop threads in the middle of work (at shutdown they are fine).
public final class DeliveryLog: Sendable {
    /// Buffered bytes that trigger a write without waiting for the timer.
    public static let writeThreshold = 64 * 1024
    /// How long a line may wait in the buffer.
    public static let writeDelayMilliseconds = 200

    public let path: String
    public let maxBytes: Int                    /* rotate before the file would pass this */
    public let keep: Int                        /* rotated files kept: path.1 ... path.keep */
    private let state: Mutex<Pending>
    private let queue = DispatchQueue(label: "carrier.delivery-log")
    private let output: Output

    /// What `append` shares with the queue.
    private struct Pending {
        var bytes: [UInt8] = []                 /* whole lines not yet written */
        var lines = 0                           /* lines in `bytes` */
        var writeScheduled = false              /* a write for the threshold is queued */
        var timerScheduled = false              /* a delayed write is queued */
        var closed = false                      /* appends are dropped */
        var dropped = 0                         /* lines lost to write errors or appended after close */
        var lastError: DeliveryLogError?
    }

    /// The open file. Only touched on `queue` (or in deinit, when nothing else can).
    private final class Output: @unchecked Sendable {
        /* @unchecked: confined to the log's queue, see above. */
        var fd: Int32
        var size: Int
        var spare: [UInt8] = []                 /* swapped with `Pending.bytes` to write without copying */

        init(fd: Int32, size: Int) {
            self.fd = fd
            self.size = size
        }
    }

    /// Open (or create) `path` for appending; an existing file's size counts towards `maxBytes`.
    public init(path: String, maxBytes: Int = 256 << 20, keep: Int = 5) throws(DeliveryLogError) {
        self.path = path
        self.maxBytes = max(maxBytes, 1)
        self.keep = max(keep, 0)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd < 0 { throw DeliveryLogError(path: path, errno: errno, operation: "open") }
        var status = stat()
        fstat(fd, &status)
        output = Output(fd: fd, size: Int(status.st_size))
        var pending = Pending()
        pending.bytes.reserveCapacity(DeliveryLog.writeThreshold * 2)
        state = Mutex(pending)
    }

    deinit {
        /* Nothing else holds the log (queued work retains it), so the queue is idle: write directly. */
        state.withLock { $0.closed = true }
        drain()
        if output.fd >= 0 {
            fsync(output.fd)
            Glibc.close(output.fd)
        }
    }

    /// append - log records in order; they are encoded before the lock is taken, so
    /// threads appending batches hardly wait for each other. Returns at once.
    public func append(contentsOf records: [DeliveryLogRecord]) {
        var encoded: [UInt8] = []
        encoded.reserveCapacity(records.count * 300)
        for record in records { DeliveryLog.encode(record, into: &encoded) }
        let action = state.withLock { pending -> (write: Bool, timer: Bool) in
            guard !pending.closed else {
                pending.dropped += records.count
                return (false, false)
            }
            pending.bytes.append(contentsOf: encoded)
            pending.lines += records.count
            var action = (write: false, timer: false)
            if pending.bytes.count >= DeliveryLog.writeThreshold, !pending.writeScheduled {
                pending.writeScheduled = true
                action.write = true
            } else if !pending.timerScheduled {
                pending.timerScheduled = true
                action.timer = true
            }
            return action
        }
        if action.write { queue.async { self.drain() } }
        if action.timer {
            queue.asyncAfter(deadline: .now() + .milliseconds(DeliveryLog.writeDelayMilliseconds)) {
                self.state.withLock { $0.timerScheduled = false }
                self.drain()
            }
        }
    }

    /// append - log one record; returns at once.
    public func append(_ record: DeliveryLogRecord) {
        append(contentsOf: [record])
    }

    /// flush - wait until every record appended before the call is in the file.
    public func flush() {
        queue.sync { drain() }
    }

    /// close - write what is buffered, sync and close the file; later appends are dropped. Idempotent.
    public func close() {
        state.withLock { $0.closed = true }
        queue.sync {
            drain()
            guard output.fd >= 0 else { return }
            fsync(output.fd)
            Glibc.close(output.fd)
            output.fd = -1
        }
    }

    /// The first write or rotation error, if any.
    public var lastError: DeliveryLogError? { state.withLock { $0.lastError } }

    /// Lines that never reached the file: lost to write errors, or appended after `close()`.
    public var droppedLines: Int { state.withLock { $0.dropped } }

    /// drain - write out the buffer (on `queue`): swap it with the spare, then write without the lock.
    private func drain() {
        let lines = state.withLock { pending -> Int in
            swap(&pending.bytes, &output.spare)
            pending.writeScheduled = false
            defer { pending.lines = 0 }
            return pending.lines
        }
        guard !output.spare.isEmpty else { return }
        if let error = write(output.spare) {
            report(error)
            state.withLock { $0.dropped += lines }
        }
        output.spare.removeAll(keepingCapacity: true)
    }

    /// write - whole lines to the file, rotating before one would take it past `maxBytes`.
    private func write(_ bytes: [UInt8]) -> DeliveryLogError? {
        /* A failed rotation left no file open: try again rather than lose every later line. */
        if output.fd < 0, let error = reopen() { return error }
        return bytes.withUnsafeBytes { bytes -> DeliveryLogError? in
            var offset = 0
            while offset < bytes.count {
                let room = maxBytes - output.size
                var end: Int
                if bytes.count - offset <= room {
                    end = bytes.count
                } else if room > 0, let newline = lastNewline(bytes, offset..<(offset + room)) {
                    end = newline + 1
                } else if output.size > 0 {
                    if let error = rotate() { return error }
                    continue
                } else {
                    /* A line longer than maxBytes: alone in a fresh file. */
                    end = firstNewline(bytes, offset..<bytes.count).map { $0 + 1 } ?? bytes.count
                }
                if let error = writeAll(UnsafeRawBufferPointer(rebasing: bytes[offset..<end])) { return error }
                output.size += end - offset
                offset = end
            }
            return nil
        }
    }

    /// writeAll - every byte to the file, retrying short writes and EINTR.
    private func writeAll(_ bytes: UnsafeRawBufferPointer) -> DeliveryLogError? {
        var done = 0
        while done < bytes.count {
            let written = Glibc.write(output.fd, bytes.baseAddress! + done, bytes.count - done)
            if written < 0 {
                if errno == EINTR { continue }
                return DeliveryLogError(path: path, errno: errno, operation: "write")
            }
            done += written
        }
        return nil
    }

    /// rotate - shift path.N to path.N+1 (dropping path.keep), path to path.1, and open a new path.
    ///
    /// A failed rename is reported (`lastError`) and writing goes on in
    /// whatever file `path` names; only a failed open fails the write.
    private func rotate() -> DeliveryLogError? {
        Glibc.close(output.fd)
        output.fd = -1
        if keep == 0 {
            unlink(path)
        } else {
            unlink(path + ".\(keep)")
            for index in stride(from: keep - 1, through: 1, by: -1) {
                if rename(path + ".\(index)", path + ".\(index + 1)") != 0 && errno != ENOENT {
                    report(DeliveryLogError(path: path + ".\(index)", errno: errno, operation: "rename"))
                }
            }
            if rename(path, path + ".1") != 0 && errno != ENOENT {
                report(DeliveryLogError(path: path, errno: errno, operation: "rename"))
            }
        }
        return reopen()
    }

    /// reopen - open `path` for appending as the current file, taking its size.
    private func reopen() -> DeliveryLogError? {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd < 0 { return DeliveryLogError(path: path, errno: errno, operation: "open") }
        var status = stat()
        fstat(fd, &status)
        output.fd = fd
        output.size = Int(status.st_size)
        return nil
    }

    /// report - keep the first error for `lastError`.
    private func report(_ error: DeliveryLogError) {
        state.withLock { pending in
            if pending.lastError == nil { pending.lastError = error }
        }
    }

    // MARK: JSON

    /// format - a record as its JSON line, without the line ending.
    public static func format(_ record: DeliveryLogRecord) -> String {
        var bytes: [UInt8] = []
        encode(record, into: &bytes)
        bytes.removeLast()
        return String(decoding: bytes, as: UTF8.self)
    }

    /// encode - append a record's JSON line, line ending included; nil fields are left out.
    static func encode(_ record: DeliveryLogRecord, into out: inout [UInt8]) {
        out.append(contentsOf: "{\"time\":".utf8)
        out.append(contentsOf: String(record.time).utf8)
        member("event", record.event.rawValue, &out)
        member("message_id", record.messageID, &out)
        member("recipient", record.recipient, &out)
        member("campaign", record.campaign, &out)
        member("site", record.site, &out)
        if let host = record.host { member("host", host, &out) }
        if let code = record.code { number("code", String(code), &out) }
        if let enhanced = record.enhancedCode { member("enhanced_code", enhanced, &out) }
        if let text = record.text { member("text", text, &out) }
        number("attempt", String(record.attempt), &out)
        if let latency = record.latencyMilliseconds, let text = decimal(latency) { number("latency_ms", text, &out) }
        if let next = record.nextAttempt { number("next_attempt", String(next), &out) }
        out.append(contentsOf: "}\n".utf8)
    }

    /// member - `,"key":"value"` with the value escaped.
    private static func member(_ key: String, _ value: String, _ out: inout [UInt8]) {
        out.append(contentsOf: ",\"".utf8)
        out.append(contentsOf: key.utf8)
        out.append(contentsOf: "\":".utf8)
        quoted(value, &out)
    }

    /// number - `,"key":number`.
    private static func number(_ key: String, _ text: String, _ out: inout [UInt8]) {
        out.append(contentsOf: ",\"".utf8)
        out.append(contentsOf: key.utf8)
        out.append(contentsOf: "\":".utf8)
        out.append(contentsOf: text.utf8)
    }

    /// quoted - a JSON string per RFC 8259 §7: quote and backslash escaped, control characters as \u00XX, UTF-8 as is.
    static func quoted(_ value: String, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.append(UInt8(ascii: "\\"))
                out.append(byte)
            case 0..<0x20:
                out.append(contentsOf: "\\u00".utf8)
                out.append(UInt8(ascii: "0") + (byte >> 4))
                out.append(byte & 0x0F < 10 ? UInt8(ascii: "0") + (byte & 0x0F) : UInt8(ascii: "a") + (byte & 0x0F) - 10)
            default:
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// decimal - a latency with at most three decimals and no trailing zeros; nil when not finite.
    static func decimal(_ value: Double) -> String? {
        let thousandths = (value * 1000).rounded()
        guard thousandths.isFinite, abs(thousandths) < 9e15 else { return nil }
        let whole = Int(thousandths)
        var text = (whole < 0 ? "-" : "") + String(abs(whole) / 1000)
        var fraction = abs(whole) % 1000
        if fraction != 0 {
            var digits = 3
            while fraction % 10 == 0 {
                fraction /= 10
                digits -= 1
            }
            let written = String(fraction)
            text += "." + String(repeating: "0", count: digits - written.count) + written
        }
        return text
    }
}

/// lastNewline - the index of the last LF in `range` of `bytes`, or nil (Glibc's memrchr is a GNU extension Swift does not see).
private func lastNewline(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
    range.reversed().first { bytes[$0] == 0x0A }
}

/// firstNewline - the index of the first LF in `range` of `bytes`, or nil.
private func firstNewline(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
    guard let base = bytes.baseAddress, !range.isEmpty,
          let found = memchr(base + range.lowerBound, 0x0A, range.count) else { return nil }
    return UnsafeRawPointer(found) - base
}
