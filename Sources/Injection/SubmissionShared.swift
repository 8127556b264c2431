// SubmissionShared.swift - what every thread of one SMTP listener shares
//
// Built once at start: the session settings for trusted and untrusted
// clients, the TLS context, the users, the spool, and the few counters that
// need one value across threads (open connections, per-client counts,
// messages being stored, statistics).

import Delivery
import Dispatch
import EventCore
import SMTP
import SMTPStreams
import Spool
import Synchronization

/// State shared by a listener's threads.
///
/// Immutable but for atomics and the mutex-guarded per-client counts; safe
/// from any thread (`TLSContext`, `SubmissionUsers` and `Spool` are each safe
/// to share, and the rest are values).
final class SubmissionShared: Sendable {
    let configuration: SubmissionConfiguration
    let spool: Spool
    /// The delivery log, for a `received` record per recipient of each stored message.
    let log: DeliveryLog?
    let crypto = OpenSSLCrypto()
    let tls: TLSContext?
    /// Connection settings by client kind: [trusted][loopback].
    private let settings: [[ServerConnectionConfiguration]]
    let openConnections = Atomic<Int>(0)
    let storing = Atomic<Int>(0)                    /* messages handed to the spool, not yet answered */
    let stopping = Atomic<Bool>(false)              /* stop() began: new transactions get 421 4.3.2 */
    private let perClient = Mutex<[IPAddress: Int]>([:])
    private let counters = Mutex(SubmissionStatistics())

    init(configuration: SubmissionConfiguration, tls: TLSContext?, spool: Spool, log: DeliveryLog? = nil) {
        self.configuration = configuration
        self.spool = spool
        self.log = log
        self.tls = tls
        var table: [[ServerConnectionConfiguration]] = []
        for trusted in [false, true] {
            var row: [ServerConnectionConfiguration] = []
            for loopback in [false, true] {
                var session = ServerConfiguration(hostname: configuration.hostname)
                session.maximumMessageSize = configuration.maximumMessageSize
                session.maximumRecipients = configuration.maximumRecipients
                session.startTLSAvailable = tls != nil
                session.authMechanisms = configuration.users == nil ? [] : [.scramSHA256, .plain, .login]
                session.requireAuthentication = !trusted
                /* AUTH over plaintext only on loopback; elsewhere 538 5.7.11 until STARTTLS (RFC 4954 §4). */
                session.allowPlaintextAuthentication = loopback
                session.commandTimeout = configuration.commandTimeoutMilliseconds
                session.dataTimeout = configuration.dataTimeoutMilliseconds
                var connection = ServerConnectionConfiguration(session: session)
                connection.tls = tls
                /* PLAIN and LOGIN derive a PBKDF2 key per check: one queue, off the loop threads,
                   so failed guesses cost at most one core and never stall other sessions. */
                connection.passwordQueue = SubmissionShared.passwordQueue
                row.append(connection)
            }
            table.append(row)
        }
        settings = table
    }

    /// Where every listener of the process checks PLAIN and LOGIN passwords.
    static let passwordQueue = DispatchQueue(label: "carrier-auth")

    /// connectionSettings - what a client at `address` gets.
    func connectionSettings(for address: IPAddress?) -> ServerConnectionConfiguration {
        guard let address else { return settings[0][0] }
        let trusted = configuration.trustedNetworks.contains { $0.contains(address) }
        return settings[trusted ? 1 : 0][NetworkPrefix.isLoopback(address) ? 1 : 0]
    }

    /// admit - count a new connection from `address`; nil when admitted, else why not.
    func admit(_ address: IPAddress?) -> String? {
        let open = openConnections.add(1, ordering: .relaxed).newValue
        if open > configuration.maximumConnections {
            openConnections.subtract(1, ordering: .relaxed)
            return "421 4.7.0 \(configuration.hostname) Error: too many connections\r\n"
        }
        if let address {
            let admitted = perClient.withLock { counts -> Bool in
                let now = counts[address, default: 0]
                guard now < configuration.maximumConnectionsPerClient else { return false }
                counts[address] = now + 1
                return true
            }
            if !admitted {
                openConnections.subtract(1, ordering: .relaxed)
                return "421 4.7.0 \(configuration.hostname) Error: too many connections from \(address)\r\n"
            }
        }
        count { $0.connections += 1 }
        return nil
    }

    /// release - a connection admitted for `address` closed.
    func release(_ address: IPAddress?) {
        openConnections.subtract(1, ordering: .relaxed)
        guard let address else { return }
        perClient.withLock { counts in
            let now = counts[address, default: 1] - 1
            counts[address] = now > 0 ? now : nil
        }
    }

    /// count - update the statistics.
    func count(_ change: (inout SubmissionStatistics) -> Void) {
        counters.withLock { change(&$0) }
    }

    var statistics: SubmissionStatistics {
        var statistics = counters.withLock { $0 }
        statistics.connectionsOpen = openConnections.load(ordering: .relaxed)
        return statistics
    }
}
