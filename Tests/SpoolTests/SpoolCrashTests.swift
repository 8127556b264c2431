// SpoolCrashTests.swift - SIGKILL a real process that enqueues and records outcomes,
// fifty times against one spool, and check after each kill that nothing acknowledged
// was lost and nothing finished came back

#if canImport(Glibc)
import Glibc
#endif
import Testing
import CarrierTesting
@testable import Spool

/// crashChildPath - SpoolCrashChild in the build products folder this test bundle runs from.
private func crashChildPath() -> String? { builtExecutable("SpoolCrashChild") }

/// What the child's output says about one recipient, accumulated over every run.
private struct RecipientHistory {
    /// Deferred outcomes the child tried (TRY lines: every one) and those it saw return (OUT).
    var deferredTried = 0
    var deferredAcknowledged = 0
    /// A final outcome was acknowledged / possibly landed (tried, kill came before OUT).
    var finalAcknowledged = false
    var finalTried = false
    /// The last outcome tried, and whether it was acknowledged: (kind, nextAttempt, acknowledged).
    var last: (kind: String, next: Int64, acknowledged: Bool)?
}

/// The child's acknowledgements, parsed from its output files.
private struct ChildLedger {
    var messages: [MessageID: [String]] = [:]
    var recipients: [RecipientKey: RecipientHistory] = [:]
    var enqueued = 0
    var outcomes = 0
    var compactions = 0
    var opens = 0
    var failures: [String] = []

    mutating func read(_ path: String) {
        guard let bytes = try? readWholeFile(path) else { return }
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        lines.removeLast() // a line without its newline was never finished: ignore it
        for raw in lines {
            let words = String(decoding: raw, as: UTF8.self).split(separator: " ").map(String.init)
            guard let verb = words.first else { continue }
            switch verb {
            case "OPEN": opens += 1
            case "CMP": compactions += 1
            case "ENQ" where words.count == 3:
                guard let id = MessageID(words[1]) else { failures.append("bad line: \(words)"); continue }
                messages[id] = words[2].split(separator: ",").map(String.init)
                enqueued += 1
            case "TRY" where words.count == 4, "OUT" where words.count == 4:
                guard let key = parseKey(words[1]), let next = Int64(words[3]) else { failures.append("bad line: \(words)"); continue }
                let acknowledged = verb == "OUT"
                var history = recipients[key, default: RecipientHistory()]
                if words[2] == "deferred" {
                    if acknowledged { history.deferredAcknowledged += 1 } else { history.deferredTried += 1 }
                } else {
                    if acknowledged { history.finalAcknowledged = true } else { history.finalTried = true }
                }
                history.last = (words[2], next, acknowledged)
                recipients[key] = history
                if acknowledged { outcomes += 1 }
            default:
                failures.append(String(decoding: raw, as: UTF8.self))
            }
        }
    }

    private func parseKey(_ text: String) -> RecipientKey? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let id = MessageID(String(parts[0])), let index = UInt32(parts[1]) else { return nil }
        return RecipientKey(message: id, index: index)
    }
}

@Suite("Spool crash recovery")
struct SpoolCrashTests {
    @Test("Fifty SIGKILLs of a process that enqueues and records outcomes lose nothing acknowledged")
    func sigkillLoop() throws {
        guard let child = crashChildPath() else {
            Issue.record("SpoolCrashChild is not next to the test bundle: build with `swift build --build-tests` first")
            return
        }
        let folder = TemporaryFolder("crash")
        defer { folder.remove() }
        /* Small segments: with many messages per segment, a segment holding final outcomes
           almost never goes dead while an older one lives, and the pins are never tested. */
        let configuration = SpoolConfiguration(directory: folder.path + "/Queue", shards: 2, segmentSize: 32 << 10,
                                               durability: .fsync, outcomeDurability: .fsync)
        var random = SeededRandom(seed: 0x5EED_C8A5)
        var ledger = ChildLedger()
        let started = monotonicMilliseconds()
        var kills = 0
        var truncated = 0
        var maxSegment = 0

        for run in 0..<50 {
            /* A bound on the whole test, whatever the machine: the kills are the count. */
            if monotonicMilliseconds() - started > 45_000 {
                print("SpoolCrashTests: stopping after \(run) kills (45 s bound)")
                break
            }
            let output = "\(folder.path)/child-\(run).log"
            let process = try ChildProcess(child, ["--dir", configuration.directory, "--seed", "\(run + 1)",
                                                   "--segment-size", "\(configuration.segmentSize)"], outputPath: output)
            usleep(UInt32.random(in: 20_000...300_000, using: &random))
            kill(process.pid, SIGKILL)
            let code = process.wait(seconds: 10)
            #expect(code == 128 + SIGKILL, "run \(run): the child exited with \(code.map(String.init) ?? "nothing") before the kill")
            kills += 1
            ledger.read(output)
            if !ledger.failures.isEmpty {
                Issue.record("run \(run): the child reported \(ledger.failures)")
                return
            }

            let spool = try Spool(configuration)
            defer { spool.close() }
            for report in spool.recoveryReports {
                #expect(report.quarantined.isEmpty, "run \(run): \(report.quarantined)")
                #expect(report.affectedMessages.isEmpty, "run \(run): affected \(report.affectedMessages)")
                truncated += report.truncatedBytes
            }
            var pending: [RecipientKey: PendingRecipient] = [:]
            for shard in spool.shards { for recipient in shard.pendingRecipients() { pending[recipient.key] = recipient } }
            for shard in spool.shards {
                maxSegment = max(maxSegment, segmentFiles(shard.directory).compactMap { Int($0.dropLast(4)) }.max() ?? 0)
            }

            var problems: [String] = []
            /* Every acknowledged recipient is pending, or finished by an outcome the child recorded. */
            for (id, addresses) in ledger.messages {
                var bodyChecked = Set<Int>()
                for (index, address) in addresses.enumerated() {
                    let key = RecipientKey(message: id, index: UInt32(index))
                    let history = ledger.recipients[key] ?? RecipientHistory()
                    guard let entry = pending[key] else {
                        if !history.finalAcknowledged && !history.finalTried { problems.append("\(key) (\(address)) was acknowledged and is gone") }
                        continue
                    }
                    let shard = spool.shard(for: entry.domain)
                    if (try? shard.recipient(key).address) != address { problems.append("\(key): address reads back as \(String(describing: try? shard.recipient(key)))") }
                    if bodyChecked.insert(shard.index).inserted {
                        let stored = try? shard.message(id)
                        if stored?.sender != "crash@example.org" || stored?.body.starts(with: Array("Subject: crash ".utf8)) != true {
                            problems.append("message \(id) does not read back from shard \(shard.index)")
                        }
                    }
                }
            }
            /* Final outcomes stay final; deferred ones keep their count and time. */
            for (key, history) in ledger.recipients {
                guard let entry = pending[key] else { continue }
                if history.finalAcknowledged { problems.append("\(key) was finished and is pending again"); continue }
                let low = history.deferredAcknowledged
                let high = history.deferredTried
                if entry.attempts < low || entry.attempts > high {
                    problems.append("\(key): \(entry.attempts) attempts, the child recorded \(low)...\(high) deferrals")
                }
                if let last = history.last, last.kind == "deferred", last.acknowledged, entry.nextAttempt != last.next {
                    problems.append("\(key): next attempt \(entry.nextAttempt), the child last recorded \(last.next)")
                }
            }
            /* Pending messages the child never acknowledged: at most the one enqueue in flight per run. */
            let unknown = Set(pending.keys.map(\.message)).subtracting(ledger.messages.keys)
            if unknown.count > run + 1 { problems.append("\(unknown.count) unacknowledged messages pending after \(run + 1) runs") }

            #expect(problems.isEmpty, "run \(run): \(problems.count) problems, first ones: \(problems.prefix(10))")
            if !problems.isEmpty { return }
        }
        print("SpoolCrashTests: \(kills) kills, \(ledger.opens) opens, \(ledger.enqueued) enqueues, \(ledger.outcomes) outcomes, "
              + "\(ledger.compactions) compactions, \(truncated) octets of torn tails cut, highest segment \(maxSegment)")
        #expect(kills >= 20)
        #expect(ledger.enqueued > 0)
    }
}
