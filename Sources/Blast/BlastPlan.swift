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

    init(_ configuration: BlastConfiguration, destinations: [BlastDestination], tls: TLSContext?,
         factory: BlastMessageFactory, threads: Int) {
        self.configuration = configuration
        self.destinations = destinations
        self.factory = factory
        self.threads = threads
        self.interval = configuration.rate.map { 1e9 / $0 }

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

    /// budget - how many messages worker `k` sends; nil without --messages.
    func budget(worker k: Int) -> Int? {
        configuration.messages.map { $0 / threads + (k < $0 % threads ? 1 : 0) }
    }

    /// messageNumber - the run-wide number of worker `k`'s `local`-th message.
    @inline(__always)
    func messageNumber(worker k: Int, local: Int) -> Int {
        k + threads * local
    }

    /// due - open loop: when message `n` is due, in monotonic nanoseconds.
    @inline(__always)
    func due(_ n: Int, start: UInt64) -> UInt64 {
        start + UInt64((Double(n) * (interval ?? 0)).rounded())
    }
}
