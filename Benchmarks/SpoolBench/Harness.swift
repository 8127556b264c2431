// Harness.swift - concurrent producers that each wait for a durable acknowledgement
//
// Every workload is measured the same way: `producers` OS threads start
// together, and each submits its share of the messages one at a time, blocking
// until the store acknowledges that message as durable. The time from a
// submit to its acknowledgement (CLOCK_MONOTONIC) is that message's latency;
// all latencies are kept and sorted, so the percentiles are exact. Throughput
// is messages over the wall time from the start signal to the last thread's
// exit.

import Foundation
import Synchronization

/// ProducerResult - one workload's line in the results table.
struct ProducerResult: Sendable {
    let name: String               // workload, as printed in the table
    let messages: Int              // messages acknowledged
    let wallSeconds: Double        // start signal to last producer done
    let messagesPerSecond: Double  // messages / wallSeconds
    let p50Milliseconds: Double    // median acknowledgement latency
    let p99Milliseconds: Double    // 99th percentile acknowledgement latency
    let maxMilliseconds: Double    // slowest acknowledgement
}

/// BenchMessage - what every workload stores: one sender, one recipient, a 2,048-byte body.
struct BenchMessage: Sendable {
    static let bodySize = 2_048

    let sender: String     // reverse path, without angle brackets
    let recipient: String  // the one forward path
    let body: [UInt8]      // bodySize bytes of CRLF-terminated text
}

/// MessageSource - the same messages in every workload and every run.
///
/// Each producer has one body, built up front and shared by all its messages (arrays are
/// copy-on-write, so handing one to a store copies no bytes); recipients differ per message.
struct MessageSource: Sendable {
    private let bodies: [[UInt8]]  // indexed by producer

    /// init - build one body per producer.
    init(producers: Int) {
        bodies = (0..<producers).map(MessageSource.body(producer:))
    }

    /// message - producer `producer`'s message number `index`.
    func message(producer: Int, index: Int) -> BenchMessage {
        BenchMessage(sender: "producer\(producer)@source.test",
                     recipient: "rcpt\(index)-\(producer)@dest.test",
                     body: bodies[producer])
    }

    /// body - headers, then lines of pseudo-random printable text, cut to exactly bodySize.
    private static func body(producer: Int) -> [UInt8] {
        var text = Array("From: <producer\(producer)@source.test>\r\nSubject: SpoolBench \(producer)\r\n\r\n".utf8)
        var state = UInt64(producer) &* 0x9E37_79B9_7F4A_7C15 | 1
        while text.count < BenchMessage.bodySize {
            for _ in 0..<76 {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17  // xorshift64
                text.append(UInt8(0x21 + state % 94))
            }
            text.append(contentsOf: [0x0D, 0x0A])
        }
        text.removeLast(text.count - BenchMessage.bodySize + 2)
        text.append(contentsOf: [0x0D, 0x0A])
        return text
    }
}

/// monotonicNanoseconds - CLOCK_MONOTONIC now, in nanoseconds.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// runProducers - run `messages` submissions spread over `producers` threads and time each one.
///
/// `submit(producer, index)` must return only once the message is acknowledged; `producer`
/// is the thread's number (0..<producers), `index` the message's number within that
/// producer's share. Shares differ by at most one, so exactly `messages` are submitted.
/// `submit` is called from the producer threads, concurrently.
func runProducers(name: String, producers: Int, messages: Int,
                  submit: @escaping @Sendable (_ producer: Int, _ index: Int) -> Void) -> ProducerResult {
    precondition(producers > 0 && messages >= producers, "need at least one message per producer")
    let gate = StartGate()
    let latencies = Mutex<[UInt64]>([])
    latencies.withLock { $0.reserveCapacity(messages) }

    /* Threads first, all parked on the gate, so thread creation is not timed. */
    var threads: [pthread_t] = []
    for producer in 0..<producers {
        let share = messages / producers + (producer < messages % producers ? 1 : 0)
        threads.append(spawnThread {
            var mine: [UInt64] = []
            mine.reserveCapacity(share)
            gate.wait()
            for index in 0..<share {
                let start = monotonicNanoseconds()
                submit(producer, index)
                mine.append(monotonicNanoseconds() - start)
            }
            latencies.withLock { $0.append(contentsOf: mine) }
        })
    }

    let start = monotonicNanoseconds()
    gate.open()
    for thread in threads {
        pthread_join(thread, nil)
    }
    let wall = Double(monotonicNanoseconds() - start) / 1e9

    return producerResult(name: name, messages: messages, wall: wall, latencies: latencies.withLock { $0 })
}

/// producerResult - a run's figures, with exact percentiles: nearest rank over every
/// latency (nanoseconds), sorted.
func producerResult(name: String, messages: Int, wall: Double, latencies: [UInt64]) -> ProducerResult {
    let sorted = latencies.sorted()
    precondition(sorted.count == messages, "a producer lost latencies")
    func milliseconds(atFraction fraction: Double) -> Double {
        let rank = max(1, Int((fraction * Double(sorted.count)).rounded(.up)))
        return Double(sorted[rank - 1]) / 1e6
    }
    return ProducerResult(name: name, messages: messages, wallSeconds: wall,
                          messagesPerSecond: Double(messages) / wall,
                          p50Milliseconds: milliseconds(atFraction: 0.50),
                          p99Milliseconds: milliseconds(atFraction: 0.99),
                          maxMilliseconds: Double(sorted[sorted.count - 1]) / 1e6)
}

/// runLoopProducers - `messages` messages from `producers` logical producers spread over
/// `loops` threads that play event loops (the way SMTP or HTTP injectors run): each
/// producer keeps one message outstanding; the store's completion, on the store's own
/// thread, only posts the producer back to its loop's mailbox, and the loop thread records
/// the latency and submits that producer's next message. No thread blocks per message.
/// `submit` gets the producer, the message's number within its share and `done`, which the
/// store's completion must call.
func runLoopProducers(name: String, producers: Int, messages: Int, loops: Int,
                      submit: @escaping @Sendable (_ producer: Int, _ index: Int, _ done: @escaping @Sendable () -> Void) -> Void) -> ProducerResult {
    precondition(producers > 0 && messages >= producers && loops > 0, "need at least one message per producer")

    /// One logical producer: its share, its position and the start time of its message.
    final class Producer: @unchecked Sendable {
        /* @unchecked: a producer has one message outstanding, so its fields are touched by
           one thread at a time, handed over through the loop's mailbox lock. */
        let number: Int
        let share: Int
        var index = 0
        var started: UInt64 = 0
        var latencies: [UInt64] = []
        init(number: Int, share: Int) { self.number = number; self.share = share; latencies.reserveCapacity(share) }
    }
    /// A loop's mailbox: producers whose message was acknowledged.
    final class Mailbox: @unchecked Sendable {
        /* @unchecked: `ready` is only touched with `condition` locked. */
        let condition = NSCondition()
        var ready: [Producer] = []
        func post(_ producer: Producer) {
            condition.lock()
            ready.append(producer)
            if ready.count == 1 { condition.signal() }
            condition.unlock()
        }
        func take() -> [Producer] {
            condition.lock()
            while ready.isEmpty { condition.wait() }
            let out = ready
            ready.removeAll(keepingCapacity: true)
            condition.unlock()
            return out
        }
    }

    let all = (0..<producers).map { Producer(number: $0, share: messages / producers + ($0 < messages % producers ? 1 : 0)) }
    let mailboxes = (0..<loops).map { _ in Mailbox() }
    @Sendable func send(_ producer: Producer, via mailbox: Mailbox) {
        producer.started = monotonicNanoseconds()
        submit(producer.number, producer.index) { mailbox.post(producer) }
    }
    let gate = StartGate()
    var threads: [pthread_t] = []
    for loop in 0..<loops {
        let mine = all.filter { $0.number % loops == loop }
        let mailbox = mailboxes[loop]
        threads.append(spawnThread {
            gate.wait()
            for producer in mine { send(producer, via: mailbox) }
            var active = mine.count
            while active > 0 {
                for producer in mailbox.take() {
                    producer.latencies.append(monotonicNanoseconds() - producer.started)
                    producer.index += 1
                    if producer.index < producer.share { send(producer, via: mailbox) } else { active -= 1 }
                }
            }
        })
    }
    let start = monotonicNanoseconds()
    gate.open()
    for thread in threads { pthread_join(thread, nil) }
    let wall = Double(monotonicNanoseconds() - start) / 1e9
    return producerResult(name: name, messages: messages, wall: wall, latencies: all.flatMap(\.latencies))
}

/// markdownHeader - the results table's heading and separator lines.
func markdownHeader() -> String {
    "| workload | messages/s | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|"
}

/// markdownRow - one result as a row of the table `markdownHeader` opens.
func markdownRow(_ result: ProducerResult) -> String {
    let rate = groupedThousands(Int(result.messagesPerSecond.rounded()))
    let ms = { (value: Double) in String(format: "%.2f", value) }
    return "| \(result.name) | \(rate) | \(ms(result.p50Milliseconds)) | \(ms(result.p99Milliseconds)) | \(ms(result.maxMilliseconds)) |"
}

/// groupedThousands - 1234567 as "1,234,567", the way Benchmarks/README.md writes counts.
func groupedThousands(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var out = ""
    for (offset, digit) in digits.enumerated() {
        if offset > 0 && (digits.count - offset) % 3 == 0 { out.append(",") }
        out.append(digit)
    }
    return value < 0 ? "-" + out : out
}

/// StartGate - holds producer threads until every one exists, then releases them together.
///
/// `@unchecked Sendable`: `isOpen` is only read or written with `condition` locked.
final class StartGate: @unchecked Sendable {
    private let condition = NSCondition()
    private var isOpen = false

    /// wait - block the calling thread until `open` was called.
    func wait() {
        condition.lock()
        while !isOpen { condition.wait() }
        condition.unlock()
    }

    /// open - release every waiting thread and every later caller of `wait`.
    func open() {
        condition.lock()
        isOpen = true
        condition.broadcast()
        condition.unlock()
    }
}

/// spawnThread - start a joinable OS thread running `body`; join it with pthread_join.
func spawnThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let status = pthread_create(&thread, nil, { context in
        let body = Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue()
        body.run()
        return nil
    }, context)
    precondition(status == 0, "pthread_create failed: \(status)")
    return thread
}

/// ThreadBody - a thread's closure, boxed to cross pthread_create as a raw pointer.
private final class ThreadBody: Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}
