// SinkShared.swift - what every loop thread of one sink shares
//
// Built once by `SinkServer.start` from the configuration: the SMTP offer,
// the TLS context, the credentials, the rules and their replies, the output
// files, and the three process-wide counters that need one value across
// threads (open connections for --max-connections, and the connection and
// data-phase numbers the greeting and disconnect decisions are keyed by).

import EventCore
import SMTP
import SMTPStreams
import Synchronization

/// The state all of one sink's threads read, and its few shared counters.
///
/// Immutable but for the atomics; safe from any thread (`TLSContext`,
/// `StaticCredentialStore`, `SinkRateLimiter` and `SinkRecorder` are each
/// safe to share, and everything else is a value).
final class SinkShared: Sendable {
    let configuration: SinkConfiguration
    let connection: ServerConnectionConfiguration  /* what each ServerConnection gets */
    let credentials: StaticCredentialStore?
    let crypto = OpenSSLCrypto()
    let rules: SinkRules
    let limiter: SinkRateLimiter?                   /* nil without rate-limit rules */
    let recorder: SinkRecorder?                     /* --record */
    let needsHeaders: Bool                          /* record, or end-of-data faults: read Message-ID and X-Carrier-Id */
    let greetingRefusal: Reply                      /* --greeting-421-rate */
    let storeFailure = Reply(code: 451, enhanced: EnhancedStatus(4, 3, 0),
                             text: "4.3.0 Error: cannot store the message in the Maildir")
    let openConnections = Atomic<Int>(0)            /* sessions open now, all threads */
    let connectionNumbers = Atomic<UInt64>(0)       /* last connection number given */
    let dataPhaseNumbers = Atomic<UInt64>(0)        /* last data phase number given */

    init(configuration: SinkConfiguration, tls: TLSContext?, recorder: SinkRecorder?) {
        self.configuration = configuration
        var session = ServerConfiguration(hostname: configuration.hostname)
        session.greetingText = "ESMTP Carrier sink"
        session.maximumMessageSize = configuration.maximumMessageSize
        session.maximumRecipients = configuration.maximumRecipients
        session.startTLSAvailable = tls != nil && !configuration.implicitTLS
        session.requireTLS = configuration.requireTLS
        session.requireAuthentication = configuration.requireAuthentication
        if !configuration.users.isEmpty {
            session.authMechanisms = [.scramSHA256, .cramMD5, .plain, .login]
            /* A test tool: AUTH over plaintext is allowed, so AUTH can be load-tested without TLS. */
            session.allowPlaintextAuthentication = true
        }
        /* Injected refusals are not the client's errors: never hang up on it for "too many errors". */
        session.maximumErrors = .max
        var connection = ServerConnectionConfiguration(session: session)
        connection.tls = tls
        connection.implicitTLS = configuration.implicitTLS
        connection.replyDelayMilliseconds = configuration.replyDelayMilliseconds
        self.connection = connection
        credentials = configuration.users.isEmpty ? nil : StaticCredentialStore(passwords: configuration.users, crypto: crypto)
        rules = SinkRules(faults: configuration.faults, domainRules: configuration.domainRules)
        limiter = rules.limits.isEmpty ? nil : SinkRateLimiter(limits: rules.limits)
        self.recorder = recorder
        needsHeaders = recorder != nil || configuration.faults.refusesSome
        greetingRefusal = Reply(code: 421, enhanced: EnhancedStatus(4, 3, 2),
                                text: "4.3.2 \(configuration.hostname) Service not available, closing connection (carrier sink fault injection)")
    }
}
