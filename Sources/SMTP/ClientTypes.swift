// ClientTypes.swift - what goes into and comes out of a client session

public import Bytes

/// Whether a client session upgrades to TLS with STARTTLS (RFC 3207).
public enum TLSPolicy: Sendable {
    /// Never send STARTTLS.
    case never
    /// Use STARTTLS when offered; continue in plaintext when it is not, or when it is refused.
    case opportunistic
    /// STARTTLS or nothing: a server that does not offer it, or refuses it, is a failure.
    case required
}

/// Which reply a client session is waiting for, to pick the timeout (RFC 5321 §4.5.3.2).
public enum ClientTimer: String, Sendable {
    case greeting, ehlo, startTLS, auth, rset, mail, rcpt, dataInitiation, dataTermination, quit
}

/// Client timeouts, in milliseconds; defaults from RFC 5321 §4.5.3.2.
///
/// A value; safe to send between threads. The DATA termination timeout grows
/// with the message: `dataTermination + dataTerminationPerMebibyte` per MiB,
/// so a large message on a slow link is not cut off while the server works.
public struct SMTPTimeouts: Sendable {
    public var greeting: UInt64 = 300_000
    public var command: UInt64 = 300_000            /* EHLO, HELO, STARTTLS, AUTH, RSET, MAIL, RCPT */
    public var dataInitiation: UInt64 = 120_000
    public var dataTermination: UInt64 = 600_000
    public var dataTerminationPerMebibyte: UInt64 = 60_000
    public var quit: UInt64 = 30_000

    public init() {}

    /// All timeouts scaled to `milliseconds`, for tests.
    public static func uniform(_ milliseconds: UInt64) -> SMTPTimeouts {
        var timeouts = SMTPTimeouts()
        timeouts.greeting = milliseconds
        timeouts.command = milliseconds
        timeouts.dataInitiation = milliseconds
        timeouts.dataTermination = milliseconds
        timeouts.dataTerminationPerMebibyte = 0
        timeouts.quit = milliseconds
        return timeouts
    }

    /// milliseconds - the timeout for `timer`, for a message of `messageSize` octets.
    func milliseconds(_ timer: ClientTimer, messageSize: Int = 0) -> UInt64 {
        switch timer {
        case .greeting: return greeting
        case .ehlo, .startTLS, .auth, .rset, .mail, .rcpt: return command
        case .dataInitiation: return dataInitiation
        case .dataTermination: return dataTermination + UInt64(messageSize >> 20) * dataTerminationPerMebibyte
        case .quit: return quit
        }
    }
}

/// How a client session behaves; one value per route or destination.
///
/// A value; safe to send between threads.
public struct ClientConfiguration: Sendable {
    /// The name sent with EHLO/HELO.
    public var heloName: String
    /// STARTTLS policy.
    public var tls: TLSPolicy = .opportunistic
    /// AUTH credentials; nil for none.
    public var credentials: SMTPCredentials?
    /// Mechanisms the client may use, whatever the server offers.
    public var mechanisms: [SASLMechanism] = SASLMechanism.allCases
    /// Send credentials over a connection without TLS. Off by default: only
    /// for a relay on a trusted network that offers no TLS at all.
    public var allowPlaintextAuthentication = false
    /// Pipeline commands (RFC 2920) when the server offers PIPELINING.
    public var pipelining = true
    /// Send bodies with BDAT (RFC 3030) when the server offers CHUNKING.
    public var chunking = true
    /// Timeouts for each wait.
    public var timeouts = SMTPTimeouts()
    /// Longest reply line and reply accepted from the server.
    public var maximumReplyLineLength = 4096
    public var maximumReplyLength = 65_536

    public init(heloName: String) {
        self.heloName = heloName
    }
}

/// A message body ready for the wire in both forms a session may need.
///
/// A value; the buffers are shared, never copied, by every transaction that
/// sends the same body. `dotStuffed` ends with the terminating ".\r\n".
public struct MessagePayload: Sendable {
    /// CRLF-normalised body ending in CRLF, without dot-stuffing (for BDAT).
    public let normalized: ByteBuffer
    /// The same, dot-stuffed and terminated (for DATA).
    public let dotStuffed: ByteBuffer
    /// True when the body holds octets above 127 (BODY=8BITMIME).
    public let has8BitData: Bool

    public init(normalized: ByteBuffer, dotStuffed: ByteBuffer, has8BitData: Bool) {
        self.normalized = normalized
        self.dotStuffed = dotStuffed
        self.has8BitData = has8BitData
    }

    /// Octets announced with SIZE=.
    public var size: Int { normalized.readableBytes }

    /// A payload encoded from a raw body: line endings normalised (or refused) and
    /// long lines refused (or folded) by `policy`, once for BDAT and once dot-stuffed for DATA.
    public init(encoding body: UnsafeRawBufferPointer, policy: EncoderPolicy = EncoderPolicy()) throws(EncodingError) {
        var raw = policy
        raw.dotStuffing = false
        var stuffed = policy
        stuffed.dotStuffing = true
        normalized = try MessageEncoder.encodeWhole(body, policy: raw)
        dotStuffed = try MessageEncoder.encodeWhole(body, policy: stuffed)
        has8BitData = MessageEncoder.containsEightBitOctets(body)
    }
}

/// DSN requests for one recipient (RFC 3461), sent only when the server offers DSN.
public struct RecipientDSN: Hashable, Sendable {
    /// NOTIFY: empty for NEVER, else any of SUCCESS, FAILURE, DELAY.
    public var notify: [String]?
    /// ORCPT: the original recipient, sent as rfc822;<xtext>.
    public var originalRecipient: String?

    public init(notify: [String]? = nil, originalRecipient: String? = nil) {
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// One message for one destination: the envelope and the body.
///
/// A value; safe to send between threads.
public struct OutboundMessage: Sendable {
    public var sender: ReversePath
    public var recipients: [MailAddress]
    public var payload: MessagePayload
    /// Per-recipient DSN requests, by index into `recipients` (missing: none).
    public var recipientDSN: [Int: RecipientDSN] = [:]
    /// RET=FULL or RET=HDRS, when asked for.
    public var dsnReturn: String?
    /// ENVID, when given.
    public var envelopeID: String?
    /// Who originally submitted the message, for MAIL FROM's AUTH= (nil: AUTH=<>).
    public var authenticatedSubmitter: MailAddress?
    /// The caller's name for this message, given back in its `TransactionResult`: results
    /// do not always come in the order the messages were handed over (one refused before
    /// anything is sent, or sent again without AUTH=, overtakes one in flight).
    public var reference: UInt64 = 0

    public init(sender: ReversePath, recipients: [MailAddress], payload: MessagePayload) {
        self.sender = sender
        self.recipients = recipients
        self.payload = payload
    }
}

/// What became of one recipient of a transaction.
public struct RecipientResult: Hashable, Sendable {
    /// Delivered (the server took responsibility), deferred (try again later) or bounced.
    public enum Disposition: Hashable, Sendable { case delivered, deferred, bounced }

    public let index: Int                   /* into OutboundMessage.recipients */
    public let disposition: Disposition
    public let reply: Reply                 /* the server's, or a local one (code and text say which) */

    public init(index: Int, disposition: Disposition, reply: Reply) {
        self.index = index
        self.disposition = disposition
        self.reply = reply
    }
}

/// The outcome of one transaction, recipient by recipient, in recipient order.
public struct TransactionResult: Hashable, Sendable {
    public let recipients: [RecipientResult]
    /// True when the server cannot have taken the message: it was still waiting its turn
    /// behind another when the session ended, or its commands were pipelined behind
    /// another's and the session ended before any reply to them and before its body was
    /// written. Every recipient is then deferred, and the caller may try it on another
    /// connection at once.
    public let notSent: Bool
    /// The `reference` of the message this is the result of.
    public let reference: UInt64

    public init(recipients: [RecipientResult], notSent: Bool = false, reference: UInt64 = 0) {
        self.recipients = recipients
        self.notSent = notSent
        self.reference = reference
    }
}

/// Why a client session ended other than by QUIT.
///
/// Each case says what the engine should do: `isTemporary` failures defer
/// (and may try the next MX), the others bounce or need an operator.
public enum ClientSessionError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The greeting was not 220 (421 busy, 554 no service): try the next host.
    case greetingRejected(Reply)
    /// EHLO and HELO were both refused.
    case heloRejected(Reply)
    /// TLS was required and the server did not offer STARTTLS (nil) or refused it.
    case tlsUnavailable(Reply?)
    /// The credentials were refused (535); the engine defers, never bounces.
    case authenticationFailed(Reply)
    /// AUTH failed for now (454).
    case authenticationTemporaryFailure(Reply)
    /// The server wants TLS before AUTH (538).
    case encryptionRequired(Reply)
    /// The server wants a password change first (432).
    case passwordTransitionNeeded(Reply)
    /// The server demands AUTH for this command (530).
    case authenticationRequired(Reply)
    /// No mechanism both sides allow, or credentials would cross in plaintext.
    case authenticationUnavailable(String)
    /// The SASL exchange itself failed (bad challenge, server not authenticated).
    case sasl(SASLClientError)
    /// 421 at any point: the server is closing the connection.
    case serviceClosing(Reply)
    /// The server broke the protocol; the connection cannot be reused.
    case protocolError(SMTPProtocolError)
    /// No reply within the timeout for this phase.
    case timeout(ClientTimer)
    /// The connection dropped while a reply was expected.
    case connectionLost

    /// True when the same delivery may succeed later or elsewhere.
    public var isTemporary: Bool {
        switch self {
        case .greetingRejected(let reply), .heloRejected(let reply): return !reply.isPermanentNegative
        case .tlsUnavailable, .authenticationFailed, .authenticationTemporaryFailure, .encryptionRequired,
             .passwordTransitionNeeded, .authenticationRequired, .authenticationUnavailable, .sasl,
             .serviceClosing, .protocolError, .timeout, .connectionLost:
            return true
        }
    }

    public var description: String {
        switch self {
        case .greetingRejected(let reply): return "greeting rejected: \(reply)"
        case .heloRejected(let reply): return "EHLO/HELO rejected: \(reply)"
        case .tlsUnavailable(let reply): return "TLS required but " + (reply.map { "STARTTLS refused: \($0)" } ?? "not offered")
        case .authenticationFailed(let reply): return "authentication failed: \(reply)"
        case .authenticationTemporaryFailure(let reply): return "authentication temporarily failed: \(reply)"
        case .encryptionRequired(let reply): return "encryption required for AUTH: \(reply)"
        case .passwordTransitionNeeded(let reply): return "password transition needed: \(reply)"
        case .authenticationRequired(let reply): return "authentication required: \(reply)"
        case .authenticationUnavailable(let why): return "cannot authenticate: \(why)"
        case .sasl(let error): return "\(error)"
        case .serviceClosing(let reply): return "server closing the connection: \(reply)"
        case .protocolError(let error): return "protocol error: \(error)"
        case .timeout(let timer): return "timeout waiting for the \(timer.rawValue) reply"
        case .connectionLost: return "connection lost"
        }
    }
}

/// What a client session asks its driver to do, in order.
public enum ClientAction: Sendable {
    /// Write these buffers, in order, as one vectored write.
    case send([ByteBuffer])
    /// Upgrade the connection to TLS now (buffered plaintext is discarded), then call `tlsEstablished()`.
    case startTLS
    /// (Re)arm the connection's timer; when it fires call `timeoutFired()`.
    case armTimer(ClientTimer, milliseconds: UInt64)
    /// Stop the timer: nothing is awaited.
    case cancelTimer
    /// The session is idle and can take a transaction (first time: handshake, TLS and AUTH are done).
    case ready
    /// A transaction is over; every recipient has a result.
    case completed(TransactionResult)
    /// The session failed; close the connection. Follows the `completed` of every transaction in flight.
    case failed(ClientSessionError)
    /// Close the connection (after QUIT, or after `failed`).
    case close
}
