// SinkCounters.swift - per-thread counters the hot path bumps and the reporter sums
//
// Each loop thread has its own block of counters and is the only one that
// writes it, so a bump is a relaxed load and store of a cache line no other
// core writes: no lock and no contended read-modify-write per message. The
// reporter (and `SinkServer.statistics`) read every block with relaxed loads
// and add them up; a snapshot taken while mail flows may mix counts from
// slightly different instants, which a once-a-second counter line tolerates.

import Synchronization

/// One thread's counters.
///
/// Written only by its loop thread (single writer), read from any thread.
/// `@unchecked Sendable`: the storage is a fixed block of `Atomic<Int>` that
/// lives as long as this object, and every access goes through the atomics.
final class SinkCounters: @unchecked Sendable {
    /// The event counters; reply codes 200...599 follow them in the block.
    enum Slot: Int, CaseIterable {
        case connections            /* sessions started */
        case connectionsRefused     /* closed at once by --max-connections */
        case greetingsRefused       /* 421 greetings (--greeting-421-rate) */
        case messagesAccepted       /* 250 at end of data */
        case messagesRefused        /* 4xx/5xx at end of data (--tempfail-rate, --permfail-rate) */
        case messageRecipients      /* recipients of accepted messages */
        case recipientsAccepted     /* 250 to RCPT */
        case recipientsRefused      /* 4xx/5xx to RCPT from the sink's rules */
        case bytesAccepted          /* octets of accepted messages */
        case disconnects            /* data phases cut off (--disconnect-rate) */
    }

    private static let codeBase = Slot.allCases.count
    private static let slotCount = codeBase + 400
    private let counters: UnsafeMutablePointer<Atomic<Int>>    /* slotCount atomics, cache-line aligned */
    private let raw: UnsafeMutableRawPointer                    /* the allocation */

    init() {
        /* Own whole cache lines, so two threads' blocks never share one. */
        let bytes = (SinkCounters.slotCount * MemoryLayout<Atomic<Int>>.stride + 127) & ~127
        raw = .allocate(byteCount: bytes, alignment: 128)
        counters = raw.bindMemory(to: Atomic<Int>.self, capacity: SinkCounters.slotCount)
        for index in 0..<SinkCounters.slotCount { (counters + index).initialize(to: Atomic(0)) }
    }

    deinit {
        counters.deinitialize(count: SinkCounters.slotCount)
        raw.deallocate()
    }

    /// add - bump a counter (owning thread only: a plain load and store, no locked instruction).
    @inline(__always)
    func add(_ slot: Slot, _ amount: Int = 1) {
        bump(slot.rawValue, amount)
    }

    /// reply - count one reply with `code` (200...599; others are ignored).
    @inline(__always)
    func reply(_ code: Int) {
        guard code >= 200 && code < 600 else { return }
        bump(SinkCounters.codeBase + code - 200, 1)
    }

    @inline(__always)
    private func bump(_ index: Int, _ amount: Int) {
        let counter = counters + index
        counter.pointee.store(counter.pointee.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    /// value - one counter, from any thread.
    func value(_ slot: Slot) -> Int {
        counters[slot.rawValue].load(ordering: .relaxed)
    }

    /// addReplies - add this block's reply counts, by code, to `table` (from any thread).
    func addReplies(into table: inout [Int: Int]) {
        for code in 200..<600 {
            let count = counters[SinkCounters.codeBase + code - 200].load(ordering: .relaxed)
            if count > 0 { table[code, default: 0] += count }
        }
    }
}

/// A snapshot of what the sink has done since it started.
///
/// A value; safe to send between threads. Replies counted are those the
/// sink decides: the greeting (220 or 421), MAIL (250), each RCPT, each end
/// of data, and the 421 to a connection over `--max-connections`. Replies the
/// SMTP session gives on its own (EHLO, 354, AUTH, protocol errors, 221) are
/// not in `replies`.
public struct SinkStatistics: Hashable, Sendable {
    /// Seconds since the sink started.
    public var elapsedSeconds = 0.0
    /// Sessions open now.
    public var connectionsCurrent = 0
    /// Sessions started (connections refused by `--max-connections` excluded).
    public var connectionsTotal = 0
    /// Connections closed at once with 421 4.7.0 by `--max-connections`.
    public var connectionsRefused = 0
    /// Connections greeted with 421 (`--greeting-421-rate`).
    public var greetingsRefused = 0
    /// Messages answered 250 at end of data.
    public var messagesAccepted = 0
    /// Messages refused at end of data (`--tempfail-rate`, `--permfail-rate`).
    public var messagesRefused = 0
    /// Recipients of accepted messages, summed.
    public var messageRecipients = 0
    /// RCPT commands answered 250.
    public var recipientsAccepted = 0
    /// RCPT commands refused by the sink's rules (rates, domain rules, rate limits).
    public var recipientsRefused = 0
    /// Octets of accepted messages (as received: dots unstuffed, CRLF line ends).
    public var bytesAccepted = 0
    /// Data phases cut off by closing the connection (`--disconnect-rate`).
    public var disconnects = 0
    /// Replies the sink decided, by code.
    public var replies: [Int: Int] = [:]

    public init() {}

    /// Replies with a code from 200 to 299.
    public var replies2xx: Int { count(200..<300) }
    /// Replies with a code from 400 to 499.
    public var replies4xx: Int { count(400..<500) }
    /// Replies with a code from 500 to 599.
    public var replies5xx: Int { count(500..<600) }

    /// count - replies with a code in `range`.
    private func count(_ range: Range<Int>) -> Int {
        replies.reduce(0) { range.contains($1.key) ? $0 + $1.value : $0 }
    }

    /// sum - the statistics of several threads' counters.
    static func sum(_ blocks: [SinkCounters], connectionsCurrent: Int, elapsedSeconds: Double) -> SinkStatistics {
        var total = SinkStatistics()
        total.elapsedSeconds = elapsedSeconds
        total.connectionsCurrent = connectionsCurrent
        for block in blocks {
            total.connectionsTotal += block.value(.connections)
            total.connectionsRefused += block.value(.connectionsRefused)
            total.greetingsRefused += block.value(.greetingsRefused)
            total.messagesAccepted += block.value(.messagesAccepted)
            total.messagesRefused += block.value(.messagesRefused)
            total.messageRecipients += block.value(.messageRecipients)
            total.recipientsAccepted += block.value(.recipientsAccepted)
            total.recipientsRefused += block.value(.recipientsRefused)
            total.bytesAccepted += block.value(.bytesAccepted)
            total.disconnects += block.value(.disconnects)
            block.addReplies(into: &total.replies)
        }
        return total
    }
}
