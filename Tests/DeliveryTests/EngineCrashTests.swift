// EngineCrashTests.swift - `carrier serve` killed with SIGKILL mid-campaign and restarted

import CarrierTesting
import Delivery
import Foundation
import Sink
import Spool
import Testing

/// carrierPath - the carrier executable in the build products folder this test bundle runs from.
func carrierPath() -> String? { builtExecutable("carrier") }

@Suite("Engine crashes", .serialized)
struct EngineCrashTests {
    /// Ten SIGKILLs at random moments of a campaign's delivery, each followed by a restart:
    /// every recipient arrives at least once, and the duplicates are no more than what can
    /// be in flight at a kill (transactions open, and outcomes not yet written to the spool).
    @Test func killedTenTimesDeliversEveryoneAtLeastOnce() throws {
        let carrier = try #require(carrierPath(), "the carrier executable is built next to the tests")
        let folder = TemporaryFolder("crash")
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl")
        defer { sink.stop() }
        let recipients = 20_000
        do {
            let spool = try Spool(SpoolConfiguration(directory: folder.path + "/Queue", shards: 2))
            _ = try enqueueCampaign(spool, count: recipients, domains: 50, body: "Subject: {{n}}\r\n\r\nHi {{n}}\r\n") { [("n", String($0))] }
            spool.close()
        }
        let arguments = ["serve", "--spool", folder.path + "/Queue", "--route", "*=127.0.0.1:\(sink.addresses[0].port)",
                         "--no-dns", "--quiet", "--drain", "--timeout", "60"]
        var random = SplitMix64(seed: 7)
        var kills = 0
        for _ in 0..<10 {
            let process = try ChildProcess(carrier, arguments, outputPath: folder.path + "/serve.out")
            usleep(UInt32(150_000 + random.next() % 250_000))
            if process.isRunning {
                kill(process.pid, SIGKILL)
                kills += 1
            }
            _ = process.wait(seconds: 10)
        }
        let last = try ChildProcess(carrier, arguments, outputPath: folder.path + "/serve.out")
        let code = last.wait(seconds: 90)
        #expect(code == 0, "the last run drains and exits 0")
        sink.stop()

        var counts: [String: Int] = [:]
        for record in try readSinkRecord(folder.path + "/record.jsonl") {
            for recipient in record.recipients { counts[recipient, default: 0] += 1 }
        }
        #expect(counts.count == recipients, "every recipient delivered at least once")
        let duplicates = counts.values.reduce(0) { $0 + $1 - 1 }
        /* In flight at a kill: up to 20 transactions per shard (the site's concurrency) plus
           the outcomes of one spool batch not yet written (interval durability writes them
           within 100 ms): bounded here by 2 x 20 + 2 x 500 per kill. */
        #expect(duplicates <= kills * (2 * 20 + 2 * 500), "\(duplicates) duplicates after \(kills) kills")
        print("crash test: \(kills) kills, \(duplicates) duplicate deliveries of \(recipients) recipients")
        let spool = try Spool(SpoolConfiguration(directory: folder.path + "/Queue", readOnly: true))
        #expect(spool.shards.reduce(0) { $0 + $1.pendingCount } == 0)
        #expect(spool.recoveryReports.allSatisfy { $0.quarantined.isEmpty })
    }

    /// SIGTERM drains: transactions in flight finish and are recorded, and the process exits 0.
    @Test func sigtermDrainsGracefully() throws {
        let carrier = try #require(carrierPath())
        let folder = TemporaryFolder("term")
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl") { $0.replyDelayMilliseconds = 20 }
        defer { sink.stop() }
        do {
            let spool = try Spool(SpoolConfiguration(directory: folder.path + "/Queue", shards: 2))
            _ = try enqueueCampaign(spool, count: 5_000, domains: 10, body: "Subject: {{n}}\r\n\r\nHi\r\n") { [("n", String($0))] }
            spool.close()
        }
        let process = try ChildProcess(carrier, ["serve", "--spool", folder.path + "/Queue", "--route", "*=127.0.0.1:\(sink.addresses[0].port)",
                                                 "--no-dns", "--quiet"], outputPath: folder.path + "/serve.out")
        usleep(700_000)
        kill(process.pid, SIGTERM)
        #expect(process.wait(seconds: 30) == 0)
        sink.stop()
        let delivered = try readSinkRecord(folder.path + "/record.jsonl").flatMap(\.recipients)
        let spool = try Spool(SpoolConfiguration(directory: folder.path + "/Queue", readOnly: true))
        let pending = spool.shards.reduce(0) { $0 + $1.pendingCount }
        /* Everything the sink took was recorded as delivered before the exit: no repeats owed. */
        #expect(delivered.count + pending == 5_000)
        #expect(delivered.count > 0 && pending > 0, "the signal came mid-campaign")
    }
}
