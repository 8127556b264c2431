// ServerTypes.swift - what goes into and comes out of a server session

public import Bytes

/// How a server session behaves: what it offers and what it demands.
///
/// A value; safe to send between threads. Extensions default to on; TLS and
/// AUTH default to off until a driver that can do them turns them on.
public struct ServerConfiguration: Sendable {
    /// The name in the greeting and the EHLO reply.
    public var hostname: String
    /// Text after the hostname in the 220 greeting.
    public var greetingText = "ESMTP Carrier"
    /// Largest message accepted (SIZE); 0 means no limit.
    public var maximumMessageSize = 50 << 20
    /// Most recipients in one transaction; more get 452 4.5.3.
    public var maximumRecipients = 1_000
    /// Offer STARTTLS (the driver has a certificate).
    public var startTLSAvailable = false
    /// Refuse mail until STARTTLS (530 5.7.0).
    public var requireTLS = false
    /// Mechanisms offered with AUTH; empty for no AUTH.
    public var authMechanisms: [SASLServerMechanism] = []
    /// Refuse mail until AUTH (530 5.7.0).
    public var requireAuthentication = false
    /// Accept AUTH without TLS; off answers 538 5.7.11 (the listener turns it on for loopback).
    public var allowPlaintextAuthentication = false
    /// Bare CR or LF in DATA: refuse the message (550 5.6.0) or turn it into CRLF.
    public var bareLineEndings: EncoderPolicy.BareLineEndings = .reject
    public var pipelining = true
    public var chunking = true
    public var eightBitMIME = true
    public var smtpUTF8 = true
    public var dsn = true
    public var enhancedStatusCodes = true
    /// Idle time allowed between commands (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    public var commandTimeout: UInt64 = 300_000
    /// Idle time allowed inside DATA or BDAT (RFC 5321 §4.5.3.2.6: 3 minutes per block).
    public var dataTimeout: UInt64 = 180_000
    /// Errors tolerated on one connection before 421 and close (a defence against junk).
    public var maximumErrors = 20

    public init(hostname: String) {
        self.hostname = hostname
    }
}

/// What a session knows about its client, for policy decisions.
public struct ServerSessionView: Sendable {
    public let heloName: String?
    public let isTLS: Bool
    public let authenticatedUser: String?
    public let recipientCount: Int
}

/// Decisions a server makes about one connection's mail, synchronously.
///
/// Owned by the connection's driver and called on its thread. Every method
/// answers nil to accept, or the reply that refuses (with its code and
/// enhanced code). The defaults accept everything.
public protocol ServerPolicy: AnyObject {
    /// greeting - nil for the normal 220; a 421 or 554 refuses the connection.
    func greeting() -> Reply?
    /// mail - a MAIL FROM that passed the protocol checks.
    func mail(from sender: ReversePath, parameters: MailParameters, session: ServerSessionView) -> Reply?
    /// recipient - an RCPT TO that passed the protocol checks.
    func recipient(_ recipient: MailAddress, parameters: RecipientParameters, session: ServerSessionView) -> Reply?
}

extension ServerPolicy {
    public func greeting() -> Reply? { nil }
    public func mail(from sender: ReversePath, parameters: MailParameters, session: ServerSessionView) -> Reply? { nil }
    public func recipient(_ recipient: MailAddress, parameters: RecipientParameters, session: ServerSessionView) -> Reply? { nil }
}

/// A policy that accepts everything the protocol allows.
public final class AcceptAllPolicy: ServerPolicy {
    public init() {}
}

/// A message received in full, waiting for the driver to store it.
public struct ReceivedMessage: Sendable {
    public let heloName: String?
    public let sender: ReversePath
    public let mailParameters: MailParameters
    public let recipients: [(address: MailAddress, parameters: RecipientParameters)]
    /// The body: dots unstuffed, every line ending CRLF.
    public let body: ByteBuffer
    public let isTLS: Bool
    public let authenticatedUser: String?
    /// The client greeted with EHLO (not HELO).
    public let extendedHello: Bool

    public init(heloName: String?, sender: ReversePath, mailParameters: MailParameters,
                recipients: [(address: MailAddress, parameters: RecipientParameters)], body: ByteBuffer,
                isTLS: Bool, authenticatedUser: String?, extendedHello: Bool = true) {
        self.heloName = heloName
        self.sender = sender
        self.mailParameters = mailParameters
        self.recipients = recipients
        self.body = body
        self.isTLS = isTLS
        self.authenticatedUser = authenticatedUser
        self.extendedHello = extendedHello
    }
}

/// What a server session asks its driver to do, in order.
public enum ServerAction: Sendable {
    /// Write these bytes (one or more replies, batched as RFC 2920 allows).
    case send(ByteBuffer)
    /// Upgrade to TLS now; pipelined input after STARTTLS is discarded. Call `tlsEstablished()` after.
    case startTLS
    /// (Re)arm the idle timer; when it fires call `timeoutFired()`.
    case armTimer(milliseconds: UInt64)
    /// Stop the idle timer (while a message is being stored).
    case cancelTimer
    /// A message is complete: store it, then call `messageAccepted` or `messageRejected`.
    /// Stop reading until then; what was already read stays with the stream.
    case deliver(ReceivedMessage)
    /// AUTH succeeded for this user.
    case authenticated(String)
    /// PLAIN or LOGIN: check `password` with the credential store (off the loop thread if
    /// it is slow), then call `passwordChecked`. Stop reading until then.
    case verifyPassword(username: String, password: String)
    /// Close the connection (after QUIT, a refusal, a timeout or too many errors).
    case close
}
