// SinkRecorder.swift - the --record file: one JSON line per accepted message
//
// Tests check exactly-once delivery and rate limits from the receiver's side
// by reading these lines, so a line must never be torn or interleaved with
// another thread's. Each loop thread builds its line in its own buffer and
// hands the finished line over under one lock; the lock's holder appends it
// to a shared buffer and writes that out once it passes 64 KiB. The server's
// ticker flushes the rest once a second, and `close()` at exit.

import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Appends JSON lines to a file for several loop threads.
///
/// Safe from any thread: everything goes through one mutex, held for a
/// memcpy (and, once per 64 KiB, a write into the page cache). Writes are
/// not fsynced: the record is a test log, not a durable queue.
final class SinkRecorder: Sendable {
    private struct State {
        var fd: Int32                   /* -1 once closed */
        var pending: [UInt8] = []       /* whole lines not yet written */
        var failure: String?            /* the first write error, reported once */
    }

    /// Size of the shared buffer that triggers a write.
    static let flushThreshold = 64 * 1024

    let path: String
    private let state: Mutex<State>

    /// Open (or create) `path` for appending.
    init(path: String) throws(SinkError) {
        self.path = path
        var initial = State(fd: try openForAppend(path))
        initial.pending.reserveCapacity(SinkRecorder.flushThreshold * 2)
        state = Mutex(initial)
    }

    /// append - add one finished line (it ends with a newline).
    func append(_ line: [UInt8]) {
        state.withLock { state in
            state.pending.append(contentsOf: line)
            if state.pending.count >= SinkRecorder.flushThreshold { write(&state) }
        }
    }

    /// flush - write whatever is buffered.
    func flush() {
        state.withLock { write(&$0) }
    }

    /// close - flush and close the file; later appends are dropped.
    func close() {
        state.withLock { state in
            write(&state)
            if state.fd >= 0 { Glibc.close(state.fd) }
            state.fd = -1
        }
    }

    /// write - empty the buffer into the file (lock held); a failure is reported once and the data dropped.
    private func write(_ state: inout State) {
        guard !state.pending.isEmpty else { return }
        defer { state.pending.removeAll(keepingCapacity: true) }
        guard state.fd >= 0 else { return }
        let written = state.pending.withUnsafeBytes { writeAll(state.fd, $0) }
        if !written && state.failure == nil {
            state.failure = systemReason()
            writeStandardError("carrier sink: writing \(path) failed: \(state.failure!); record lines are being lost\n")
        }
    }
}
