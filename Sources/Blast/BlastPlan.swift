// BlastPlan.swift - a blast prepared for its workers: addresses, connection settings, messages, shares
//
// The coordinator builds one plan before any worker starts; every worker
// reads it and never writes it. It also fixes how the run is cut into
// per-thread shares so that no thread ever asks another for work:
//
//   - Worker k of T owns connection slots k, k+T, k+2T, ... (the slot number
//     picks its --source address, round-robin).
//   - Worker k sends message numbers k, k+T, k+2T, ...; with --messages N it
//     sends N/T of them, the first N%T workers one more, so the numbers used
//     are exactly 0 ..< N.
//   - Open loop at R messages/s: message n is due at start + n/R, so worker k
//     makes one due every T/R seconds, offset by k/R: together, R per second.
//     With --duration D the schedule holds the messages due before start + D
//     (at most --messages of them), shared like --messages; every one of them
//     counts, sent or not, so a target that falls behind cannot shorten it.

import EventCore
import SMTP
import SMTPStreams

/// What every worker of one run shares.
///
/// A value, immutable once built; safe to send between threads.
struct BlastPlan: Sendable {
    let configuration: BlastConfiguration
    let destinations: [BlastDestination]            /* connections start at the first */
    let connection: ClientConnectionConfiguration   /* serverName and source filled in per connection */
    let factory: BlastMessageFactory
    let threads: Int
    let interval: Double?                           /* open loop: nanoseconds between due times, run-wide */
    let scheduled: Int?                             /* messages the run is to send; nil: the clock alone ends it */

    init(_ configuration: BlastConfiguration, destinations: [BlastDestination], tls: TLSContext?,
         factory: BlastMessageFactory, threads: Int) {
        self.configuration = configuration
        self.destinations = destinations
        self.factory = factory
        self.threads = threads
        let interval = configuration.rate.map { 1e9 / $0 }
        self.interval = interval

        /* Open loop: the messages due before the deadline, if that is fewer than --messages. */
        if let interval, let duration = configuration.durationNanoseconds {
            scheduled = min(configuration.messages ?? .max, BlastPlan.dueBefore(duration, interval: interval))
        } else {
            scheduled = configuration.messages
        }

        /* One reply timeout for every wait; a big message gets the usual extra time per MiB. */
        var session = ClientConfiguration(heloName: configuration.heloName)
        session.tls = configuration.security == .startTLS ? .required : .never
        session.pipelining = configuration.pipelining
        session.chunking = configuration.chunking
        session.timeouts = .uniform(configuration.timeoutMilliseconds)
        session.timeouts.dataTerminationPerMebibyte = SMTPTimeouts().dataTerminationPerMebibyte
        if let authentication = configuration.authentication {
            session.credentials = authentication.credentials
            session.mechanisms = [authentication.mechanism]
            /* The operator asked for AUTH; over plaintext it goes as asked (test receivers). */
            session.allowPlaintextAuthentication = configuration.security == .plaintext
        }
        var connection = ClientConnectionConfiguration(session: session)
        connection.tls = configuration.security == .plaintext ? nil : tls
        connection.implicitTLS = configuration.security == .implicitTLS
        connection.connectTimeoutMilliseconds = configuration.timeoutMilliseconds
        connection.tlsHandshakeTimeoutMilliseconds = configuration.timeoutMilliseconds
        self.connection = connection
    }

    /// True for an open-loop (fixed rate) run.
    var isOpenLoop: Bool { interval != nil }

    /// slots - how many connection slots worker `k` owns.
    func slots(worker k: Int) -> Int {
        configuration.connections / threads + (k < configuration.connections % threads ? 1 : 0)
    }

    /// budget - how many messages worker `k` sends (open loop: makes due); nil when only the clock ends the run.
    func budget(worker k: Int) -> Int? {
        scheduled.map { $0 / threads + (k < $0 % threads ? 1 : 0) }
    }

    /// messageNumber - the run-wide number of worker `k`'s `local`-th message.
    @inline(__always)
    func messageNumber(worker k: Int, local: Int) -> Int {
        k + threads * local
    }

    /// due - open loop: when message `n` is due, in monotonic nanoseconds.
    @inline(__always)
    func due(_ n: Int, start: UInt64) -> UInt64 {
        start + BlastPlan.offset(n, interval: interval ?? 0)
    }

    /// offset - open loop: how long after the start message `n` is due, in nanoseconds.
    @inline(__always)
    private static func offset(_ n: Int, interval: Double) -> UInt64 {
        UInt64((Double(n) * interval).rounded())
    }

    /// dueBefore - open loop: how many messages are due less than `duration` nanoseconds after the start.
    ///
    /// Counted with the rounding `due` uses, so the schedule ends exactly where the deadline cuts it.
    private static func dueBefore(_ duration: UInt64, interval: Double) -> Int {
        let estimate = (Double(duration) / interval).rounded(.up)
        guard estimate < 1e15 else { return Int.max }   /* an absurd rate: no end but --messages */
        var count = Int(estimate)
        while count > 0 && offset(count - 1, interval: interval) >= duration { count -= 1 }
        while offset(count, interval: interval) < duration { count += 1 }
        return count
    }
}
