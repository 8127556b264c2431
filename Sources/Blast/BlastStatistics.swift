// BlastStatistics.swift - what a blast counts and times: per thread without locks, merged at the end
//
// Each worker thread owns a `BlastTally` and a `BlastSample` and writes them
// with plain stores; nothing is shared while the run goes on. Once a second
// the coordinator asks every worker for its sample (the last second's
// completions and end-to-end latencies) and each worker starts a fresh one;
// at the end it takes every tally and merges them. Latencies are recorded in
// microseconds into HdrHistograms with a fixed range (1 µs to one hour, three
// significant digits), so recording never allocates; a longer value is
// recorded as one hour.
//
// The error ledger has one unit per event, and `errors` is its sum:
// a connection that ended with an error (`connect_refused`,
// `tls_untrusted_issuer`, `session_connection_lost`, ...), a recipient the
// server refused (`reply_4xx`, `reply_5xx`), a recipient whose message
// was cut off by a failed connection (`recipient_aborted`), and in open loop
// a recipient whose message was due before the run ended but got no final
// reply by then (`recipient_overdue`). The error ratio divides that sum by
// the recipients attempted or overdue plus the failed connections.
//
// Overdue messages are what keeps open-loop figures honest when the target
// falls behind (coordinated omission, as wrk2 corrects it): each is timed end
// to end from its due time to the end of the run, as if it completed then,
// so the backlog shows in the percentiles instead of dropping out of them.
// Originally they were only counted unsent, and a run whose target carried a
// tenth of the rate passed with the latencies of the tenth it carried.

import Histogram
import SMTP
import SMTPStreams

/// The phases a blast times, each with its own histogram.
public enum BlastPhase: Int, CaseIterable, Sendable {
    case connect            /* TCP connect */
    case banner             /* connected to the 220 greeting */
    case ehlo               /* EHLO sent to its reply (twice per STARTTLS connection) */
    case tlsHandshake       /* STARTTLS 220 (or connect) to TLS up */
    case authentication     /* AUTH exchange */
    case handshake          /* connect start to ready for mail: all of the above */
    case transaction        /* message handed to the connection to its final reply */
    case endToEnd           /* open loop: due time to final reply (or run end); closed loop: as transaction */

    /// The key in JSON output.
    public var key: String {
        switch self {
        case .connect: return "connect"
        case .banner: return "banner"
        case .ehlo: return "ehlo"
        case .tlsHandshake: return "tls_handshake"
        case .authentication: return "auth"
        case .handshake: return "handshake"
        case .transaction: return "transaction"
        case .endToEnd: return "end_to_end"
        }
    }

    /// The name in text output.
    public var title: String {
        switch self {
        case .connect: return "connect"
        case .banner: return "banner"
        case .ehlo: return "EHLO"
        case .tlsHandshake: return "TLS handshake"
        case .authentication: return "AUTH"
        case .handshake: return "handshake total"
        case .transaction: return "transaction"
        case .endToEnd: return "end to end"
        }
    }
}

/// The latency figures of one phase, in milliseconds.
///
/// A value; safe to send between threads. All zero when nothing was recorded.
public struct LatencySummary: Sendable, Equatable {
    public let count: Int           /* values recorded */
    public let p50: Double          /* median */
    public let p90: Double
    public let p99: Double
    public let p999: Double         /* 99.9th percentile */
    public let max: Double          /* largest value recorded */
    public let mean: Double

    public init(count: Int, p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double) {
        self.count = count
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
        self.p999 = p999
        self.max = max
        self.mean = mean
    }
}

/// One latency histogram in microseconds, fed nanoseconds.
struct LatencyHistogram: Sendable {
    private var histogram: Histogram<UInt64>

    /// One hour: the longest value kept as measured.
    static let highestMicroseconds: UInt64 = 3_600_000_000

    init() {
        histogram = Histogram(lowestDiscernibleValue: 1, highestTrackableValue: LatencyHistogram.highestMicroseconds,
                              numberOfSignificantValueDigits: .three)
    }

    /// record - one value in nanoseconds (kept in microseconds, at most one hour).
    @inline(__always)
    mutating func record(nanoseconds: UInt64) {
        histogram.record(Swift.min(nanoseconds / 1_000, LatencyHistogram.highestMicroseconds))
    }

    /// add - every value of `other`.
    mutating func add(_ other: LatencyHistogram) {
        histogram.add(other.histogram)
    }

    /// Values recorded.
    var count: Int { Int(histogram.totalCount) }

    /// milliseconds - the value at `percentile` (0...100), in milliseconds; 0 when empty.
    func milliseconds(atPercentile percentile: Double) -> Double {
        histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(percentile)) / 1_000
    }

    /// The largest value recorded, in milliseconds; 0 when empty.
    var maxMilliseconds: Double {
        histogram.totalCount == 0 ? 0 : Double(histogram.maxRecorded) / 1_000
    }

    /// The figures for reports.
    var summary: LatencySummary {
        guard histogram.totalCount > 0 else { return LatencySummary(count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0) }
        return LatencySummary(count: count,
                              p50: milliseconds(atPercentile: 50), p90: milliseconds(atPercentile: 90),
                              p99: milliseconds(atPercentile: 99), p999: milliseconds(atPercentile: 99.9),
                              max: maxMilliseconds, mean: histogram.mean / 1_000)
    }
}

/// Everything one worker counted over the whole run.
///
/// A value owned by one worker thread until the end, then sent to the
/// coordinator and merged there.
struct BlastTally: Sendable {
    var phases = [LatencyHistogram](repeating: LatencyHistogram(), count: BlastPhase.allCases.count)
    var messagesAttempted = 0       /* handed to a connection and completed, one way or another */
    var messagesSent = 0            /* at least one recipient delivered */
    var messagesUnsent = 0          /* no final reply: never handed over, or cut off at the deadline */
    var messagesOverdue = 0         /* open loop: of those, due before the run ended (errors) */
    var bytesSent = 0               /* message octets of the messages sent */
    var recipientsDelivered = 0
    var recipientsDeferred = 0      /* refused with 4xx by the server */
    var recipientsBounced = 0       /* refused with 5xx by the server */
    var recipientsAborted = 0       /* cut off by a failed connection: no verdict from the server */
    var recipientsOverdue = 0       /* of the overdue messages */
    var connectionAttempts = 0
    var connectionsReady = 0        /* reached the point of carrying mail */
    var connectionsFailed = 0       /* ended with an error (handshake or later) */
    var replyCodes = [Int](repeating: 0, count: 600)    /* by reply code, per recipient */
    var enhancedCodes: [EnhancedStatus: Int] = [:]      /* by enhanced code, per recipient */
    var errorTypes: [String: Int] = [:]                 /* the ledger in the file comment */
    var lastCompletion: UInt64 = 0  /* when the last message completed (ns) */

    /// record - one phase's duration.
    @inline(__always)
    mutating func record(_ phase: BlastPhase, nanoseconds: UInt64) {
        phases[phase.rawValue].record(nanoseconds: nanoseconds)
    }

    /// count - the recipients of one finished transaction; returns (sent, errors) for the sample.
    ///
    /// `aborted` says the connection had failed: the results are the
    /// client's own deferrals, not replies, and are not counted as replies.
    mutating func count(_ result: TransactionResult, aborted: Bool) -> (sent: Bool, errors: Int) {
        messagesAttempted += 1
        var delivered = false
        var errors = 0
        for recipient in result.recipients {
            if recipient.disposition == .delivered {
                delivered = true
                recipientsDelivered += 1
            } else if aborted {
                recipientsAborted += 1
                errors += 1
                note("recipient_aborted")
                continue
            } else if recipient.disposition == .deferred {
                recipientsDeferred += 1
                errors += 1
                note("reply_4xx")
            } else {
                recipientsBounced += 1
                errors += 1
                note("reply_5xx")
            }
            let reply = recipient.reply
            if reply.code >= 0 && reply.code < replyCodes.count { replyCodes[reply.code] += 1 }
            if let enhanced = reply.enhanced { enhancedCodes[enhanced, default: 0] += 1 }
        }
        if delivered { messagesSent += 1 }
        return (delivered, errors)
    }

    /// connectionFailed - a connection ended with `error`.
    mutating func connectionFailed(_ error: ClientConnectionError) {
        connectionsFailed += 1
        note(BlastTally.errorKey(error))
    }

    /// overdue - open loop: a message with `recipients` recipients was due `nanoseconds` before the run ended, unanswered.
    mutating func overdue(recipients: Int, nanoseconds: UInt64) {
        messagesUnsent += 1
        messagesOverdue += 1
        recipientsOverdue += recipients
        note("recipient_overdue", count: recipients)
        record(.endToEnd, nanoseconds: nanoseconds)
    }

    /// note - `count` more errors of `type`.
    mutating func note(_ type: String, count: Int = 1) {
        errorTypes[type, default: 0] += count
    }

    /// merge - add another worker's tally.
    mutating func merge(_ other: BlastTally) {
        for phase in BlastPhase.allCases { phases[phase.rawValue].add(other.phases[phase.rawValue]) }
        messagesAttempted += other.messagesAttempted
        messagesSent += other.messagesSent
        messagesUnsent += other.messagesUnsent
        messagesOverdue += other.messagesOverdue
        bytesSent += other.bytesSent
        recipientsDelivered += other.recipientsDelivered
        recipientsDeferred += other.recipientsDeferred
        recipientsBounced += other.recipientsBounced
        recipientsAborted += other.recipientsAborted
        recipientsOverdue += other.recipientsOverdue
        connectionAttempts += other.connectionAttempts
        connectionsReady += other.connectionsReady
        connectionsFailed += other.connectionsFailed
        for code in other.replyCodes.indices { replyCodes[code] += other.replyCodes[code] }
        enhancedCodes.merge(other.enhancedCodes, uniquingKeysWith: +)
        errorTypes.merge(other.errorTypes, uniquingKeysWith: +)
        lastCompletion = max(lastCompletion, other.lastCompletion)
    }

    /// errorKey - the ledger name of a connection error.
    static func errorKey(_ error: ClientConnectionError) -> String {
        switch error {
        case .connect(let error):
            if error.isConnectionRefused { return "connect_refused" }
            if error.isTimeout { return "connect_timeout" }
            return "connect_failed"
        case .tls(let error):
            switch error {
            case .certificateExpired: return "tls_certificate_expired"
            case .untrustedIssuer: return "tls_untrusted_issuer"
            case .nameMismatch: return "tls_name_mismatch"
            case .handshakeTimeout: return "tls_handshake_timeout"
            case .protocolError: return "tls_protocol_error"
            case .transport: return "tls_transport"
            case .configuration: return "tls_configuration"
            }
        case .session(let error):
            switch error {
            case .greetingRejected: return "session_greeting_rejected"
            case .heloRejected: return "session_helo_rejected"
            case .tlsUnavailable: return "session_tls_unavailable"
            case .authenticationFailed: return "session_authentication_failed"
            case .authenticationTemporaryFailure: return "session_authentication_temporary_failure"
            case .encryptionRequired: return "session_encryption_required"
            case .passwordTransitionNeeded: return "session_password_transition_needed"
            case .authenticationRequired: return "session_authentication_required"
            case .authenticationUnavailable: return "session_authentication_unavailable"
            case .sasl: return "session_sasl"
            case .serviceClosing: return "session_service_closing"
            case .protocolError: return "session_protocol_error"
            case .timeout: return "session_timeout"
            case .connectionLost: return "session_connection_lost"
            }
        }
    }
}

/// What one worker did since the coordinator last asked.
///
/// A value; a fresh one starts every second on each worker.
struct BlastSample: Sendable {
    var sent = 0                    /* messages with a delivered recipient */
    var attempted = 0               /* messages completed */
    var errors = 0                  /* ledger entries */
    var endToEnd = LatencyHistogram()
    var backlog = 0                 /* open loop: messages due and not yet handed over, at sampling */

    /// merge - add another worker's sample of the same second.
    mutating func merge(_ other: BlastSample) {
        sent += other.sent
        attempted += other.attempted
        errors += other.errors
        endToEnd.add(other.endToEnd)
        backlog += other.backlog
    }
}
