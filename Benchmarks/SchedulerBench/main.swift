// main.swift - SchedulerBench: one scheduler holding 100,000 domains and 10,000,000 pending
// recipients; scheduling decisions per second on one core, and memory per recipient
//
// Usage: SchedulerBench [--domains N] [--sites N] [--recipients N] [--decisions N]
// Prints a Markdown table. A decision is one `next(now:)` that hands out a transaction,
// followed by its `complete(...)`; each transaction carries one recipient
// (max_recipients_per_transaction = 1), the most decisions per recipient there can be.

import Foundation
import Scheduler
import CMalloc

func arguments() -> [String: Int] {
    var values = ["domains": 100_000, "sites": 1_000, "recipients": 10_000_000, "decisions": 4_000_000, "campaigns": 10]
    var rest = CommandLine.arguments.dropFirst()
    while let flag = rest.popFirst() {
        guard flag.hasPrefix("--"), let value = rest.popFirst().flatMap(Int.init), value > 0, values[String(flag.dropFirst(2))] != nil else {
            FileHandle.standardError.write(Data("usage: SchedulerBench [--domains N] [--sites N] [--recipients N] [--decisions N] [--campaigns N]\n".utf8))
            exit(2)
        }
        values[String(flag.dropFirst(2))] = value
    }
    return values
}

func heapInUse() -> Int { let info = mallinfo2(); return Int(info.uordblks) + Int(info.hblkhd) }

func seconds(_ start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

let options = arguments()
let domainCount = options["domains"]!, siteCount = options["sites"]!, recipientCount = options["recipients"]!
let decisionCount = options["decisions"]!, campaignCount = options["campaigns"]!

let shaping = Shaping(defaults: Limits(maxConnections: 20, initialConnections: 20, maxRecipientsPerTransaction: 1))
let before = heapInUse()
var scheduler = Scheduler(SchedulerConfiguration(shaping: shaping, retry: RetryPolicy(retryInterval: 60_000), rules: ResponseRule.defaults))
var now: Int64 = 1_800_000_000_000
let sites = (0..<siteCount).map { scheduler.site("site\($0)") }
let domains = (0..<domainCount).map { scheduler.domain("d\($0).test", site: sites[$0 % siteCount]) }

/* Bulk campaigns (10 by default, each over every domain) and 1% transactional mail. */
var start = DispatchTime.now().uptimeNanoseconds
for n in 0..<recipientCount {
    let transactional = n % 100 == 0
    let recipient = ScheduledRecipient(ref: RecipientRef(UInt64(n)), queued: now, campaign: transactional ? 0 : UInt32(1 + (n / domainCount) % campaignCount),
                                       priority: transactional ? .transactional : .bulk)
    scheduler.submit(recipient, domain: domains[n % domainCount], now: now)
}
let submitSeconds = seconds(start)
let perRecipient = Double(heapInUse() - before) / Double(recipientCount)

/* Decisions: hand out, complete at once; 1 in 20 fails temporarily and is deferred (a
   heap insert), so the retry path is in the mix. The clock moves 1 ms per 1,000. */
var decided = 0
var deferred = 0
start = DispatchTime.now().uptimeNanoseconds
while decided < decisionCount {
    guard let delivery = scheduler.next(now: now) else { break }
    decided += 1
    if decided % 20 == 0 {
        scheduler.complete(delivery, results: [.temporaryFailure(reply: "451 4.3.0 try later")], now: now)
        deferred += 1
    } else {
        scheduler.complete(delivery, results: [.delivered], now: now)
    }
    if decided % 1000 == 0 { now += 1 }
}
let decideSeconds = seconds(start)

func grouped(_ value: Int) -> String {
    let digits = String(value)
    var out = ""
    for (offset, character) in digits.enumerated() {
        if offset > 0 && (digits.count - offset) % 3 == 0 { out += "," }
        out.append(character)
    }
    return out
}

print("| scheduler (\(grouped(domainCount)) domains, \(grouped(siteCount)) sites) | amount | wall time | rate |")
print("|---|---:|---:|---:|")
print("| Submit (\(campaignCount) bulk campaigns + 1% transactional) | \(grouped(recipientCount)) recipients | \(String(format: "%.2f", submitSeconds)) s | \(grouped(Int(Double(recipientCount) / submitSeconds))) /s |")
print("| Decisions: next + complete, 1 recipient each, 5% deferred | \(grouped(decided)) decisions | \(String(format: "%.2f", decideSeconds)) s | \(grouped(Int(Double(decided) / decideSeconds))) /s |")
print("| Memory per pending recipient (scheduler; a reference is 20 octets) | \(String(format: "%.1f", perRecipient)) octets | | |")
FileHandle.standardError.write(Data("pending after the run: \(scheduler.pendingCount), deferred during it: \(deferred)\n".utf8))
