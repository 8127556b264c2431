// BlastReport.swift - the outcome of a blast: figures, verdict, and the text summary
//
// Built once from the merged tallies and the time series; every output
// (the text summary here, JSON and HTML in their own files) reads the same
// fields, so the three always agree. Rates divide by the time from the start
// to the last completion, so the QUIT and close at the end do not count.

import EventCore
import SMTP

/// What a blast did.
///
/// A value; safe to send between threads.
public struct BlastReport: Sendable {
    /// The run's settings, as given.
    public let configuration: BlastConfiguration
    /// The addresses the connections used, in order of preference.
    public let destinations: [String]
    /// Loop threads used.
    public let threads: Int
    /// Seconds from the start (connections up) to the last completion.
    public let elapsedSeconds: Double
    /// Process CPU seconds (user + system) from warm-up to the end.
    public let cpuSeconds: Double
    /// Messages handed to a connection and completed, whatever the outcome.
    public let messagesAttempted: Int
    /// Messages with at least one recipient delivered (what the receiver accepted).
    public let messagesSent: Int
    /// Attempted messages with no recipient delivered.
    public let messagesFailed: Int
    /// Messages with no final reply: never handed over (the run ended first, or every
    /// connection gave up), or in flight when the deadline cut them off.
    public let messagesUnsent: Int
    /// Open loop: the unsent messages that were due before the run ended. Errors, timed
    /// end to end up to the end of the run; the rest of the unsent were never due.
    public let messagesOverdue: Int
    /// Octets of the messages sent.
    public let bytesSent: Int
    public let recipientsDelivered: Int     /* the server took them (2xx after the data) */
    public let recipientsDeferred: Int      /* refused by the server with 4xx */
    public let recipientsBounced: Int       /* refused by the server with 5xx */
    public let recipientsAborted: Int       /* cut off by a failed connection, no verdict */
    public let recipientsOverdue: Int       /* of the overdue messages (open loop) */
    public let connectionAttempts: Int      /* connections opened (connect started) */
    public let connectionsReady: Int        /* connections that got ready for mail */
    public let connectionsFailed: Int       /* connections that ended with an error */
    /// Latency figures per phase (ms).
    public let phases: [BlastPhase: LatencySummary]
    /// Replies per recipient, by code.
    public let replyCodes: [Int: Int]
    /// Replies per recipient, by enhanced code ("2.0.0").
    public let enhancedCodes: [String: Int]
    /// The error ledger (see BlastStatistics.swift): entries by type.
    public let errorTypes: [String: Int]
    /// About one point per second.
    public let timeSeries: [BlastSecond]

    init(configuration: BlastConfiguration, destinations: [BlastDestination], threads: Int, tally: BlastTally,
         series: [BlastSecond], elapsedSeconds: Double, cpuSeconds: Double) {
        self.configuration = configuration
        self.destinations = destinations.map { $0.address.description }
        self.threads = threads
        self.elapsedSeconds = elapsedSeconds
        self.cpuSeconds = cpuSeconds
        messagesAttempted = tally.messagesAttempted
        messagesSent = tally.messagesSent
        messagesFailed = tally.messagesAttempted - tally.messagesSent
        messagesUnsent = tally.messagesUnsent
        messagesOverdue = tally.messagesOverdue
        bytesSent = tally.bytesSent
        recipientsDelivered = tally.recipientsDelivered
        recipientsDeferred = tally.recipientsDeferred
        recipientsBounced = tally.recipientsBounced
        recipientsAborted = tally.recipientsAborted
        recipientsOverdue = tally.recipientsOverdue
        connectionAttempts = tally.connectionAttempts
        connectionsReady = tally.connectionsReady
        connectionsFailed = tally.connectionsFailed
        var phases: [BlastPhase: LatencySummary] = [:]
        for phase in BlastPhase.allCases { phases[phase] = tally.phases[phase.rawValue].summary }
        self.phases = phases
        var codes: [Int: Int] = [:]
        for (code, count) in tally.replyCodes.enumerated() where count > 0 { codes[code] = count }
        replyCodes = codes
        enhancedCodes = Dictionary(uniqueKeysWithValues: tally.enhancedCodes.map { ("\($0.key)", $0.value) })
        errorTypes = tally.errorTypes
        timeSeries = series
    }

    /// Entries in the error ledger.
    public var errors: Int { errorTypes.values.reduce(0, +) }

    /// Errors over the recipients attempted or overdue plus the failed connections; 0 when nothing was tried.
    public var errorRatio: Double {
        let attempted = recipientsDelivered + recipientsDeferred + recipientsBounced + recipientsAborted + recipientsOverdue
            + connectionsFailed
        return attempted == 0 ? 0 : Double(errors) / Double(attempted)
    }

    /// Messages sent per second.
    public var messagesPerSecond: Double { elapsedSeconds > 0 ? Double(messagesSent) / elapsedSeconds : 0 }

    /// Megabytes (10^6 octets) of messages sent per second.
    public var megabytesPerSecond: Double { elapsedSeconds > 0 ? Double(bytesSent) / 1e6 / elapsedSeconds : 0 }

    /// Process CPU microseconds per message sent; 0 when none was.
    public var cpuMicrosecondsPerMessage: Double { messagesSent > 0 ? cpuSeconds * 1e6 / Double(messagesSent) : 0 }

    /// True when the error ratio is within `--max-error-ratio`.
    public var passed: Bool { errorRatio <= configuration.maxErrorRatio }

    /// Why the run failed, for the exit message; nil when it passed.
    public var failureReason: String? {
        guard !passed else { return nil }
        let worst = errorTypes.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }
            .prefix(3).map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        return "error ratio \(BlastFormat.fixed(errorRatio, 4)) exceeds --max-error-ratio "
            + "\(BlastFormat.fixed(configuration.maxErrorRatio, 4)) (\(errors) errors: \(worst))"
    }

    /// The phases that recorded something, in order.
    var measuredPhases: [BlastPhase] { BlastPhase.allCases.filter { (phases[$0]?.count ?? 0) > 0 } }

    /// One line about the load's shape, for the summary and the HTML title.
    var shape: String {
        let loop = configuration.rate.map { "open loop at \(BlastFormat.fixed($0, 1))/s" }
            ?? "closed loop, window \(configuration.window)"
        let content: String
        switch configuration.content {
        case .generated(let size): content = "\(size)-octet messages"
        case .template: content = "template messages"
        }
        let security: String
        switch configuration.security {
        case .plaintext: security = "plaintext"
        case .startTLS: security = "STARTTLS"
        case .implicitTLS: security = "implicit TLS"
        }
        return "\(configuration.target): \(configuration.connections) connections on \(threads) threads, \(loop), "
            + "\(content), \(security)"
            + (configuration.authentication.map { ", AUTH \($0.mechanism.rawValue)" } ?? "")
            + (configuration.pipelining ? "" : ", no pipelining") + (configuration.chunking ? ", chunking" : "")
    }

    /// The latency table of the text summary: one row per phase that recorded something.
    private var phaseTable: [String] {
        guard !measuredPhases.isEmpty else { return [] }
        let columns = ["count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"].map { $0.leftPadded(10) }
        var rows = ["  " + "phase".rightPadded(16) + columns.joined()]
        for phase in measuredPhases {
            guard let summary = phases[phase] else { continue }
            let figures = [summary.p50, summary.p90, summary.p99, summary.p999, summary.max]
                .map { BlastFormat.fixed($0, 3).leftPadded(10) }.joined()
            rows.append("  " + phase.title.rightPadded(16) + "\(summary.count)".leftPadded(10) + figures)
        }
        return rows
    }

    /// The summary printed at the end of a run.
    public var text: String {
        var lines: [String] = []
        lines.append("carrier blast: \(shape)")
        lines.append("  elapsed      \(BlastFormat.fixed(elapsedSeconds, 3)) s (CPU \(BlastFormat.fixed(cpuSeconds, 3)) s, "
            + "\(BlastFormat.fixed(cpuMicrosecondsPerMessage, 1)) µs per message)")
        lines.append("  sent         \(messagesSent) messages, \(BlastFormat.fixed(messagesPerSecond, 1))/s, "
            + "\(BlastFormat.fixed(megabytesPerSecond, 2)) MB/s")
        let overdue = configuration.rate == nil ? "" : ", \(messagesOverdue) of them overdue"
        lines.append("  attempted    \(messagesAttempted) (failed \(messagesFailed), unsent \(messagesUnsent)\(overdue))")
        lines.append("  recipients   delivered \(recipientsDelivered), deferred \(recipientsDeferred), "
            + "bounced \(recipientsBounced), aborted \(recipientsAborted)"
            + (configuration.rate == nil ? "" : ", overdue \(recipientsOverdue)"))
        lines.append("  connections  \(connectionAttempts) opened, \(connectionsReady) ready, \(connectionsFailed) failed")
        lines.append("  errors       \(errors) (ratio \(BlastFormat.fixed(errorRatio, 4)), "
            + "limit \(BlastFormat.fixed(configuration.maxErrorRatio, 4)))")
        lines.append("")
        lines += phaseTable
        if !replyCodes.isEmpty {
            lines.append("")
            lines.append("  replies      " + replyCodes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "  "))
        }
        if !enhancedCodes.isEmpty {
            lines.append("  enhanced     " + enhancedCodes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "  "))
        }
        if !errorTypes.isEmpty {
            lines.append("  error types  " + errorTypes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "  "))
        }
        if let failureReason {
            lines.append("")
            lines.append("FAILED: \(failureReason)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
