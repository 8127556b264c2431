// SpoolWorkloads.swift - Carrier's spool under the same producers as SQLite, and the
// spool's bulk operations: campaign enqueue, outcome recording, recovery, memory

import Foundation
import Spool
import CSQLite
import Synchronization

/// runSpoolIndividual - `messages` single-recipient 2 KB messages from `producers` threads,
/// each waiting for its durable acknowledgement (group commit, `fsync` mode).
func runSpoolIndividual(directory: String, producers: Int, messages: Int, callbacks: Bool = false, loops: Int = 2) throws -> ProducerResult {
    let shards = ProcessInfo.processInfo.environment["SPOOL_SHARDS"].flatMap(Int.init) ?? SpoolConfiguration.processors
    let spool = try Spool(SpoolConfiguration(directory: directory + "/Queue", shards: shards, durability: .fsync))
    defer { spool.close() }
    let source = MessageSource(producers: producers)
    let name = "Carrier spool (fsync, \(spool.shards.count) shards, group commit)"
    let result: ProducerResult
    if callbacks {
        result = runLoopProducers(name: name + "; producers on \(loops) loop threads", producers: producers, messages: messages, loops: loops) { producer, index, done in
            let message = source.message(producer: producer, index: index)
            spool.enqueue(NewMessage(sender: message.sender, body: message.body, recipients: [NewRecipient(message.recipient)])) { result in
                if case .failure(let error) = result { fatalError("enqueue failed: \(error)") }
                done()
            }
        }
    } else {
        result = runProducers(name: name + "; blocked threads", producers: producers, messages: messages) { producer, index in
            let message = source.message(producer: producer, index: index)
            do {
                _ = try spool.enqueue(NewMessage(sender: message.sender, body: message.body, recipients: [NewRecipient(message.recipient)]))
            } catch {
                fatalError("enqueue failed: \(error)")
            }
        }
    }
    var pending = 0
    for shard in spool.shards { pending += shard.pendingCount }
    printNote("spool: \(pending) recipients pending after the run (expected \(messages))")
    guard pending == messages else { throw BenchFailure("spool holds \(pending) recipients, expected \(messages)") }
    return result
}

/// A benchmark that found something wrong.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// heapInUse - octets malloc has handed out and not got back, mmap-backed blocks included (glibc mallinfo2).
func heapInUse() -> Int { let info = mallinfo2(); return Int(info.uordblks) + Int(info.hblkhd) }

/// seconds - wall time of `body`.
func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = monotonicNanoseconds()
    try body()
    return Double(monotonicNanoseconds() - start) / 1e9
}

/// runSpoolBulk - the spool's bulk bars, one Markdown row each:
/// a 1,000,000-recipient campaign enqueued durably, recovery of that spool, memory per
/// pending recipient, and outcomes recorded per shard.
func runSpoolBulk(directory: String, recipients: Int) throws -> [String] {
    var rows: [String] = []
    let body = Array(("From: News <news@example.org>\r\nSubject: Spring\r\n\r\n" + String(repeating: "Lorem ipsum dolor sit amet. ", count: 1800) + "\r\n").utf8)
    let domains = ["gmail.test", "yahoo.test", "outlook.test", "icloud.test", "gmx.test", "web.test", "aol.test", "proton.test"]
    let recipientsList = (0..<recipients).map { "subscriber\($0)@\(domains[$0 % domains.count])" }

    /* 1. Campaign: one body, `recipients` recipients, durable before finish() returns. */
    let queue = directory + "/campaign"
    var spool: Spool? = try Spool(SpoolConfiguration(directory: queue, durability: .fsync))
    var receipt: CampaignReceipt?
    let enqueueTime = try seconds {
        let writer = spool!.campaign(sender: "news@example.org", body: body, metadata: MessageMetadata(campaign: "spring", priority: .bulk))
        for address in recipientsList { try writer.add(NewRecipient(address)) }
        receipt = try writer.finish()
    }
    guard receipt?.recipients == recipients else { throw BenchFailure("campaign stored \(receipt?.recipients ?? 0)") }
    let shards = spool!.shards.count
    rows.append(row("Campaign enqueue, fsync (\(body.count)-octet body, \(shards) shards)", recipients, "recipients", enqueueTime))
    spool!.close()
    spool = nil

    /* 2. Recovery of that spool, and the memory its index holds per pending recipient. */
    let before = heapInUse()
    var pending = 0
    let recoveryTime = try seconds {
        spool = try Spool(SpoolConfiguration(directory: queue, durability: .fsync))
        for shard in spool!.shards { pending += shard.pendingCount }
    }
    let perRecipient = Double(heapInUse() - before) / Double(max(1, pending))
    guard pending == recipients else { throw BenchFailure("recovered \(pending) of \(recipients) recipients") }
    rows.append(row("Recovery (open and replay, \(shards) shards)", pending, "pending recipients", recoveryTime))
    rows.append("| Memory per pending recipient after recovery (index + due heap + message table) | \(String(format: "%.0f", perRecipient)) octets | | |")

    /* 3. Outcomes on one shard: every pending recipient of shard 0 delivered, in batches of
       1,000 as a worker would record them, outcome durability `interval(100 ms)`. */
    let shard = spool!.shards[0]
    let keys = shard.pendingRecipients().map(\.key)
    let outstanding = DispatchGroup()
    let failures = Mutex<Int>(0)
    let outcomeTime = seconds {
        for start in stride(from: 0, to: keys.count, by: 1000) {
            let batch = keys[start..<min(start + 1000, keys.count)].map { ($0, Outcome.delivered(reply: "250 2.0.0 Ok: queued as 4XyZ")) }
            outstanding.enter()
            shard.record(batch) { result in
                if case .failure = result { failures.withLock { $0 += 1 } }
                outstanding.leave()
            }
        }
        outstanding.wait()
    }
    guard failures.withLock({ $0 }) == 0, shard.pendingCount == 0 else { throw BenchFailure("outcomes failed or left recipients pending") }
    rows.append(row("Outcomes recorded on one shard (delivered, batches of 1,000, interval 100 ms)", keys.count, "outcomes", outcomeTime))
    spool!.close()
    return rows
}

private func row(_ label: String, _ count: Int, _ unit: String, _ seconds: Double) -> String {
    "| \(label) | \(groupedThousands(count)) \(unit) | \(String(format: "%.3f", seconds)) s | \(groupedThousands(Int((Double(count) / seconds).rounded()))) /s |"
}
