// QueueCommand.swift - `carrier queue stats|list`: read a spool offline

import ArgumentParser
import Spool
#if canImport(Glibc)
import Glibc
#endif

/// `carrier queue`: inspect a spool without changing it (safe while the engine runs).
struct QueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Inspect a spool (read-only; works while the engine runs).",
        subcommands: [QueueStats.self, QueueList.self]
    )
}

/// Options shared by the queue subcommands.
struct SpoolLocation: ParsableArguments {
    @Option(help: ArgumentHelp("The spool's folder.", valueName: "dir"))
    var spool = "Queue"

    /// open - the spool, read-only, or a clear error.
    func open() throws -> Spool {
        do {
            return try Spool(SpoolConfiguration(directory: spool, readOnly: true))
        } catch {
            throw ValidationError("cannot read the spool: \(error)")
        }
    }
}

/// `carrier queue stats`: counts by state, domain and campaign, and what recovery found.
struct QueueStats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Pending recipients by state, domain and campaign; segment files and their size."
    )

    @OptionGroup var location: SpoolLocation

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Option(help: ArgumentHelp("Domains and campaigns listed in text output (largest first).", valueName: "n"))
    var top = 20

    func run() throws {
        let spool = try location.open()
        var totals = ShardCounts()
        for shard in spool.shards { totals.merge(shard.counts()) }
        let reports = spool.recoveryReports
        if json {
            print(statsJSON(totals, shards: spool.shards.count, reports: reports))
            return
        }
        print("spool \(location.spool): \(spool.shards.count) shards, \(totals.segments) segments, \(totals.bytes) bytes")
        print("messages with pending recipients: \(totals.messages)")
        print("pending: \(totals.pending) (never tried: \(totals.pending - totals.deferred), deferred: \(totals.deferred))")
        print("final outcomes still on disk: delivered \(totals.delivered), bounced \(totals.bounced), expired \(totals.expired), cancelled \(totals.cancelled)")
        for (title, counts) in [("by domain", totals.byDomain), ("by campaign", totals.byCampaign)] where !counts.isEmpty {
            print(title + ":")
            for (name, count) in counts.sorted(by: { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }).prefix(top) {
                print("  \(name.isEmpty ? "(none)" : name)  \(count)")
            }
        }
        for report in reports where !report.quarantined.isEmpty || !report.affectedMessages.isEmpty {
            print("shard \(report.shard): damaged: \(report.quarantined.joined(separator: "; ")); affected messages: \(report.affectedMessages.map(\.description).joined(separator: " "))")
        }
    }
}

/// `carrier queue list`: one line per pending recipient.
struct QueueList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List pending recipients: key, state, attempts, next attempt, domain, campaign, address."
    )

    @OptionGroup var location: SpoolLocation

    @Option(help: ArgumentHelp("Only recipients at this domain.", valueName: "domain"))
    var domain: String?

    @Option(help: ArgumentHelp("Only recipients in this state: pending (all), new (never tried) or deferred.", valueName: "state"))
    var state: String?

    func validate() throws {
        if let state, !["pending", "new", "deferred"].contains(state) {
            throw ValidationError("--state must be pending, new or deferred (final recipients are not kept)")
        }
    }

    func run() throws {
        let spool = try location.open()
        let domain = self.domain?.lowercased()
        let state = self.state ?? "pending"
        for shard in spool.shards {
            let rows: [(PendingRecipient, NewRecipient)]
            do {
                rows = try shard.pendingWithAddresses { pending in
                    if let domain, pending.domain != domain { return false }
                    switch state {
                    case "new": return pending.attempts == 0
                    case "deferred": return pending.attempts > 0
                    default: return true
                    }
                }
            } catch {
                throw ValidationError("cannot read shard \(shard.index): \(error)")
            }
            for (pending, recipient) in rows {
                let kind = pending.attempts == 0 ? "new" : "deferred"
                print("\(pending.key) \(kind) attempts=\(pending.attempts) next=\(isoTime(pending.nextAttempt)) \(pending.domain) campaign=\(pending.campaign.isEmpty ? "-" : pending.campaign) \(recipient.address)")
            }
        }
    }
}

/// isoTime - milliseconds since the epoch as UTC ISO 8601.
func isoTime(_ milliseconds: Int64) -> String {
    var seconds = time_t(milliseconds / 1000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
}

/// statsJSON - the stats as one JSON object.
func statsJSON(_ totals: ShardCounts, shards: Int, reports: [RecoveryReport]) -> String {
    func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
    func object(_ counts: [String: Int]) -> String {
        "{" + counts.sorted { $0.key < $1.key }.map { "\(quote($0.key)):\($0.value)" }.joined(separator: ",") + "}"
    }
    let damaged = reports.flatMap(\.quarantined).map(quote).joined(separator: ",")
    let affected = reports.flatMap(\.affectedMessages).map { quote($0.description) }.joined(separator: ",")
    return """
        {"shards":\(shards),"segments":\(totals.segments),"bytes":\(totals.bytes),"messages":\(totals.messages),\
        "pending":\(totals.pending),"deferred":\(totals.deferred),"delivered":\(totals.delivered),"bounced":\(totals.bounced),\
        "expired":\(totals.expired),"cancelled":\(totals.cancelled),"by_domain":\(object(totals.byDomain)),\
        "by_campaign":\(object(totals.byCampaign)),"quarantined":[\(damaged)],"affected_messages":[\(affected)]}
        """
}
