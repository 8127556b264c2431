// ClientSession.swift - the client side of one SMTP connection, without I/O
//
// The session is a state machine in the style of swift-nio's protocol state
// machines: the driver feeds it the bytes it reads, the end of a TLS upgrade,
// a timer firing or the connection closing, and it answers with actions
// (write these buffers, upgrade to TLS, arm a timer, a transaction is done).
// It never touches a socket, a clock or a thread, so every path is tested
// with golden transcripts.
//
// Every command sent pushes the reply it awaits onto a FIFO; each reply that
// arrives pops the oldest. That one mechanism serves one-command-at-a-time
// and RFC 2920 pipelining alike: pipelining only changes how many commands
// go out in one write. This file holds the connection phases (greeting,
// EHLO/HELO, STARTTLS, AUTH, QUIT); ClientSession+Transaction.swift holds
// mail transactions.

import Bytes

/// One client SMTP connection: handshake, TLS upgrade, AUTH, transactions, QUIT.
///
/// A value owned by the driver of one connection and used on that
/// connection's thread. Methods append actions to the caller's array; the
/// driver performs them in order. After `failed` or `close`, the session
/// ignores further input.
public struct ClientSession: Sendable {
    enum Phase: Equatable {
        case connecting         /* start() not called yet */
        case greeting           /* waiting for 220 */
        case ehlo               /* EHLO sent */
        case helo               /* EHLO refused, HELO sent */
        case startTLS           /* STARTTLS sent */
        case upgrading          /* 220 to STARTTLS; the driver is doing the TLS handshake */
        case authenticating     /* AUTH exchange in progress */
        case ready              /* open for transactions */
        case quitting           /* QUIT sent */
        case closed             /* failed or quit; nothing more happens */
    }

    /// What a reply in the FIFO answers.
    enum Expectation: Equatable {
        case greeting, ehlo, helo, startTLS, auth, quit
        case rset
        case mail(UInt64)               /* transaction serial */
        case rcpt(UInt64, Int)          /* transaction serial, recipient index */
        case data(UInt64)               /* 354 or a refusal */
        case dataEnd(UInt64)            /* the final reply after the dot or BDAT LAST */
        case emptyData(UInt64)          /* the reply to a lone "." sent after every RCPT failed */

        var timer: ClientTimer {
            switch self {
            case .greeting: return .greeting
            case .ehlo, .helo: return .ehlo
            case .startTLS: return .startTLS
            case .auth: return .auth
            case .quit: return .quit
            case .rset: return .rset
            case .mail: return .mail
            case .rcpt: return .rcpt
            case .data: return .dataInitiation
            case .dataEnd, .emptyData: return .dataTermination
            }
        }
    }

    public let configuration: ClientConfiguration
    let crypto: any SASLCrypto
    var phase = Phase.connecting
    var parser: ReplyParser
    var expected: [Expectation] = []                /* replies awaited, oldest at expectedHead */
    var expectedHead = 0
    var repliesSeen = 0                             /* replies handled so far: numbers the oldest expectation */
    var timerArmedFor: Int?                         /* repliesSeen when the timer was armed; nil when off */
    /// What the server offered in its last EHLO reply (nil after HELO).
    public internal(set) var capabilities: Capabilities?
    /// True once TLS is up on this connection.
    public internal(set) var isTLS = false
    /// True once AUTH succeeded.
    public internal(set) var isAuthenticated = false
    var authCandidates: [SASLMechanism] = []        /* mechanisms still to try, strongest first */
    var exchange: (any SASLClientExchange)?         /* the AUTH exchange in progress */
    var saslCancelled: SASLClientError?             /* set when we answered a challenge with "*" */
    var omitsAuthParameter = false                  /* the server refused MAIL's AUTH= (555): leave it out */
    var transactions: [ActiveTransaction] = []      /* sent, not completed, oldest first */
    var waiting: [OutboundMessage] = []             /* handed over, not sent yet */
    var nextSerial: UInt64 = 0
    var transactionsStarted = 0
    var commands = ByteBuffer()                     /* reused for every command write */

    /// A session with `configuration`; `crypto` serves CRAM-MD5 and SCRAM.
    public init(configuration: ClientConfiguration, crypto: any SASLCrypto) {
        self.configuration = configuration
        self.crypto = crypto
        self.parser = ReplyParser(maximumLineLength: configuration.maximumReplyLineLength,
                                  maximumReplyLength: configuration.maximumReplyLength)
    }

    /// How far the connection got before it could carry mail, for timing each phase.
    public enum Stage: Hashable, Sendable {
        case greeting, ehlo, startTLS, authentication, ready, closed
    }

    /// The stage the session is in now.
    public var stage: Stage {
        switch phase {
        case .connecting, .greeting: return .greeting
        case .ehlo, .helo: return .ehlo
        case .startTLS, .upgrading: return .startTLS
        case .authenticating: return .authentication
        case .ready: return .ready
        case .quitting, .closed: return .closed
        }
    }

    /// True while the session can carry further transactions (not failed, not quitting).
    public var isUsable: Bool { phase != .closed && phase != .quitting }

    /// True when ready and nothing is in flight or waiting.
    public var isIdle: Bool { phase == .ready && transactions.isEmpty && waiting.isEmpty }

    /// Whether commands are pipelined on this connection (offered and allowed).
    var pipelines: Bool { configuration.pipelining && capabilities?.pipelining == true }

    // MARK: Events from the driver

    /// start - the TCP (or implicit TLS) connection is open: wait for the greeting.
    public mutating func start(implicitTLS: Bool = false, into actions: inout [ClientAction]) {
        guard phase == .connecting else { return }
        isTLS = implicitTLS
        phase = .greeting
        expect(.greeting, into: &actions)
        rearmTimer(into: &actions)
    }

    /// receive - bytes from the server; returns how many were consumed.
    ///
    /// After the 220 reply to STARTTLS nothing more is consumed: the driver
    /// upgrades the connection and discards whatever plaintext followed
    /// (RFC 3207 §5, CVE-2011-0411).
    public mutating func receive(_ bytes: UnsafeRawBufferPointer, into actions: inout [ClientAction]) -> Int {
        var consumed = 0
        while consumed < bytes.count && phase != .closed && phase != .upgrading {
            let reply: Reply?
            let used: Int
            do throws(SMTPProtocolError) {
                (reply, used) = try parser.parse(UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
            } catch {
                fail(.protocolError(error), into: &actions)
                return bytes.count
            }
            consumed += used
            guard let reply else { break }
            handle(reply, into: &actions)
        }
        return phase == .closed ? bytes.count : consumed
    }

    /// tlsEstablished - the driver finished the TLS handshake after our STARTTLS.
    public mutating func tlsEstablished(into actions: inout [ClientAction]) {
        guard phase == .upgrading else { return }
        isTLS = true
        /* RFC 3207 §4.2: forget everything learnt before TLS and start over with EHLO. */
        capabilities = nil
        parser = ReplyParser(maximumLineLength: configuration.maximumReplyLineLength,
                             maximumReplyLength: configuration.maximumReplyLength)
        sendEHLO(into: &actions)
        rearmTimer(into: &actions)
    }

    /// timeoutFired - the timer armed for the oldest awaited reply expired.
    public mutating func timeoutFired(into actions: inout [ClientAction]) {
        guard phase != .closed, let head = oldestExpectation else { return }
        fail(.timeout(head.timer), into: &actions)
    }

    /// connectionClosed - the connection is gone (EOF, reset, TLS failure).
    public mutating func connectionClosed(into actions: inout [ClientAction]) {
        guard phase != .closed else { return }
        if phase == .quitting || (oldestExpectation == nil && transactions.isEmpty && waiting.isEmpty) {
            phase = .closed
            return
        }
        fail(.connectionLost, into: &actions)
    }

    /// quit - say goodbye once the transactions in flight are done.
    public mutating func quit(into actions: inout [ClientAction]) {
        switch phase {
        case .closed, .quitting:
            return
        case .ready where transactions.isEmpty && waiting.isEmpty:
            phase = .quitting
            commands.clear()
            commands.append("QUIT\r\n")
            actions.append(.send([commands]))
            expect(.quit, into: &actions)
            rearmTimer(into: &actions)
        default:
            /* Mid-handshake or with work in flight: just close; nothing is lost by not saying QUIT. */
            failWaiting(reason: localReply(421, 4, 4, 2, "session closed before the message was sent"), into: &actions)
            phase = .closed
            actions.append(.close)
        }
    }

    // MARK: Replies

    /// handle - one complete reply: match it with the oldest expectation.
    mutating func handle(_ reply: Reply, into actions: inout [ClientAction]) {
        guard let expectation = popExpectation() else {
            /* An unsolicited 421 is the server hanging up (RFC 5321 §3.8); anything else is a protocol error. */
            fail(reply.code == 421 ? .serviceClosing(reply) : .protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        if reply.code == 421 && expectation != .quit && expectation != .greeting {
            fail(.serviceClosing(reply), into: &actions)
            return
        }
        switch expectation {
        case .greeting: greeting(reply, into: &actions)
        case .ehlo: ehloReply(reply, into: &actions)
        case .helo: heloReply(reply, into: &actions)
        case .startTLS: startTLSReply(reply, into: &actions)
        case .auth: authReply(reply, into: &actions)
        case .quit:
            phase = .closed
            timerArmedFor = nil
            actions.append(.cancelTimer)
            actions.append(.close)
        case .rset: rsetReply(reply, into: &actions)
        case .mail(let serial): mailReply(reply, serial: serial, into: &actions)
        case .rcpt(let serial, let index): rcptReply(reply, serial: serial, index: index, into: &actions)
        case .data(let serial): dataReply(reply, serial: serial, into: &actions)
        case .dataEnd(let serial): dataEndReply(reply, serial: serial, into: &actions)
        case .emptyData(let serial): emptyDataReply(reply, serial: serial, into: &actions)
        }
        if phase != .closed { rearmTimer(into: &actions) }
    }

    private mutating func greeting(_ reply: Reply, into actions: inout [ClientAction]) {
        guard reply.code == 220 else {
            fail(reply.isPositiveCompletion || reply.isPositiveIntermediate
                 ? .protocolError(.unexpectedReply(reply)) : .greetingRejected(reply), into: &actions)
            return
        }
        sendEHLO(into: &actions)
    }

    private mutating func sendEHLO(into actions: inout [ClientAction]) {
        phase = .ehlo
        commands.clear()
        commands.append("EHLO \(configuration.heloName)\r\n")
        actions.append(.send([commands]))
        expect(.ehlo, into: &actions)
    }

    private mutating func ehloReply(_ reply: Reply, into actions: inout [ClientAction]) {
        if reply.code == 500 || reply.code == 502 {
            /* A server without ESMTP: fall back to HELO and to plain SMTP (RFC 5321 §3.2). */
            phase = .helo
            commands.clear()
            commands.append("HELO \(configuration.heloName)\r\n")
            actions.append(.send([commands]))
            expect(.helo, into: &actions)
            return
        }
        guard reply.code == 250 else {
            fail(reply.isPositiveIntermediate ? .protocolError(.unexpectedReply(reply)) : .heloRejected(reply), into: &actions)
            return
        }
        let offered = Capabilities(ehloReply: reply)
        capabilities = offered
        afterGreetingExchange(into: &actions)
    }

    private mutating func heloReply(_ reply: Reply, into actions: inout [ClientAction]) {
        guard reply.code == 250 else {
            fail(reply.isPositiveIntermediate ? .protocolError(.unexpectedReply(reply)) : .heloRejected(reply), into: &actions)
            return
        }
        capabilities = nil
        afterGreetingExchange(into: &actions)
    }

    /// afterGreetingExchange - EHLO/HELO done: STARTTLS, then AUTH, then ready.
    private mutating func afterGreetingExchange(into actions: inout [ClientAction]) {
        if !isTLS && configuration.tls != .never {
            if capabilities?.startTLS == true {
                phase = .startTLS
                commands.clear()
                commands.append("STARTTLS\r\n")
                actions.append(.send([commands]))
                expect(.startTLS, into: &actions)
                return
            }
            if configuration.tls == .required {
                fail(.tlsUnavailable(nil), into: &actions)
                return
            }
        }
        beginAuthentication(into: &actions)
    }

    private mutating func startTLSReply(_ reply: Reply, into actions: inout [ClientAction]) {
        guard reply.code == 220 else {
            if configuration.tls == .required || reply.isPositiveCompletion || reply.isPositiveIntermediate {
                fail(reply.code / 100 == 4 || reply.code / 100 == 5 ? .tlsUnavailable(reply)
                     : .protocolError(.unexpectedReply(reply)), into: &actions)
                return
            }
            /* Opportunistic: a refused STARTTLS means plaintext, as in Postfix's "may" level. */
            beginAuthentication(into: &actions)
            return
        }
        phase = .upgrading
        timerArmedFor = nil
        actions.append(.cancelTimer)
        actions.append(.startTLS)
    }

    // MARK: AUTH (RFC 4954)

    /// beginAuthentication - pick mechanisms and start the first, or go straight to ready.
    mutating func beginAuthentication(into actions: inout [ClientAction]) {
        guard let credentials = configuration.credentials else {
            becomeReady(into: &actions)
            return
        }
        guard isTLS || configuration.allowPlaintextAuthentication else {
            fail(.authenticationUnavailable("refusing to send credentials over a connection without TLS"), into: &actions)
            return
        }
        authCandidates = SASLMechanism.candidates(
            offered: capabilities?.authMechanisms ?? [], allowed: configuration.mechanisms, secret: credentials.secret)
        guard !authCandidates.isEmpty else {
            let offered = capabilities?.authMechanisms.joined(separator: " ") ?? "none"
            fail(.authenticationUnavailable("no usable mechanism (server offers: \(offered))"), into: &actions)
            return
        }
        startNextMechanism(credentials, into: &actions)
    }

    /// startNextMechanism - send AUTH for the strongest mechanism not tried yet.
    private mutating func startNextMechanism(_ credentials: SMTPCredentials, into actions: inout [ClientAction]) {
        let mechanism = authCandidates.removeFirst()
        var exchange = makeExchange(mechanism, credentials, crypto: crypto)
        phase = .authenticating
        commands.clear()
        commands.append("AUTH \(mechanism.rawValue)")
        if let initial = exchange.initialResponse() {
            commands.append(" ")
            commands.append(initial.isEmpty ? "=" : Base64.encode(initial))
        }
        commands.append("\r\n")
        self.exchange = exchange
        saslCancelled = nil
        actions.append(.send([commands]))
        expect(.auth, into: &actions)
    }

    private mutating func authReply(_ reply: Reply, into actions: inout [ClientAction]) {
        switch reply.code {
        case 334:
            challenge(reply, into: &actions)
        case 235:
            guard saslCancelled == nil else {
                fail(.sasl(saslCancelled!), into: &actions)
                return
            }
            guard exchange?.isComplete == true else {
                /* SCRAM: success without the server's proof means the server was never authenticated. */
                fail(.sasl(.serverNotAuthenticated), into: &actions)
                return
            }
            exchange = nil
            isAuthenticated = true
            becomeReady(into: &actions)
        case 534, 504:
            /* Mechanism too weak (534) or not available after all (504): try the next one. */
            if let error = saslCancelled {
                fail(.sasl(error), into: &actions)
            } else if let credentials = configuration.credentials, !authCandidates.isEmpty {
                startNextMechanism(credentials, into: &actions)
            } else {
                fail(.authenticationUnavailable("every mechanism refused: \(reply)"), into: &actions)
            }
        case 535: fail(saslCancelled.map { .sasl($0) } ?? .authenticationFailed(reply), into: &actions)
        case 454: fail(.authenticationTemporaryFailure(reply), into: &actions)
        case 538: fail(.encryptionRequired(reply), into: &actions)
        case 432: fail(.passwordTransitionNeeded(reply), into: &actions)
        default:
            if let error = saslCancelled {
                fail(.sasl(error), into: &actions)
            } else if reply.isPositiveCompletion || reply.isPositiveIntermediate {
                fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            } else {
                fail(.authenticationFailed(reply), into: &actions)
            }
        }
    }

    /// challenge - answer a 334 with the mechanism's response, or cancel with "*".
    private mutating func challenge(_ reply: Reply, into actions: inout [ClientAction]) {
        commands.clear()
        if saslCancelled != nil || exchange == nil {
            /* A challenge after we cancelled, or after the exchange ended: nothing sane follows. */
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        guard let decoded = Base64.decode(reply.text) else {
            cancelExchange(.malformedChallenge("challenge is not base64"), into: &actions)
            return
        }
        do throws(SASLClientError) {
            let response = try exchange!.respond(to: decoded)
            commands.append(Base64.encode(response))
            commands.append("\r\n")
            actions.append(.send([commands]))
            expect(.auth, into: &actions)
        } catch {
            cancelExchange(error, into: &actions)
        }
    }

    /// cancelExchange - send "*" (RFC 4954 §4) and fail once the server confirms.
    private mutating func cancelExchange(_ error: SASLClientError, into actions: inout [ClientAction]) {
        saslCancelled = error
        commands.clear()
        commands.append("*\r\n")
        actions.append(.send([commands]))
        expect(.auth, into: &actions)
    }

    /// becomeReady - open for transactions; send any that were handed over early, else say ready.
    mutating func becomeReady(into actions: inout [ClientAction]) {
        phase = .ready
        sendWaiting(into: &actions)
    }

    // MARK: The reply FIFO

    /// expect - await one more reply; the timer follows once the current event is handled.
    mutating func expect(_ expectation: Expectation, into actions: inout [ClientAction]) {
        expected.append(expectation)
    }

    var oldestExpectation: Expectation? {
        expectedHead < expected.count ? expected[expectedHead] : nil
    }

    mutating func popExpectation() -> Expectation? {
        guard expectedHead < expected.count else { return nil }
        let head = expected[expectedHead]
        expectedHead += 1
        repliesSeen += 1
        if expectedHead == expected.count {
            expected.removeAll(keepingCapacity: true)
            expectedHead = 0
        }
        return head
    }

    /// rearmTimer - time the oldest awaited reply (each reply its own window), or stop the
    /// timer when none is awaited; nothing when that is already so.
    mutating func rearmTimer(into actions: inout [ClientAction]) {
        guard let head = oldestExpectation else {
            if timerArmedFor != nil {
                timerArmedFor = nil
                actions.append(.cancelTimer)
            }
            return
        }
        guard timerArmedFor != repliesSeen else { return }
        timerArmedFor = repliesSeen
        var size = 0
        if case .dataEnd(let serial) = head, let active = transactions.first(where: { $0.serial == serial }) {
            size = active.message.payload.size
        }
        actions.append(.armTimer(head.timer, milliseconds: configuration.timeouts.milliseconds(head.timer, messageSize: size)))
    }

    // MARK: Failure

    /// fail - end the session: every transaction in flight or waiting gets a result first.
    mutating func fail(_ error: ClientSessionError, into actions: inout [ClientAction]) {
        guard phase != .closed else { return }
        let reason: Reply
        switch error {
        case .serviceClosing(let reply), .greetingRejected(let reply), .heloRejected(let reply),
             .authenticationFailed(let reply), .authenticationTemporaryFailure(let reply),
             .encryptionRequired(let reply), .passwordTransitionNeeded(let reply), .authenticationRequired(let reply),
             .tlsUnavailable(.some(let reply)):
            /* Recipients are deferred with the server's own words, whatever its code. */
            reason = reply
        case .timeout(let timer):
            reason = localReply(421, 4, 4, 2, "timeout waiting for the \(timer.rawValue) reply")
        case .connectionLost:
            reason = localReply(421, 4, 4, 2, "connection lost")
        default:
            reason = localReply(451, 4, 4, 0, "session failed: \(error)")
        }
        failWaiting(reason: reason, into: &actions)
        phase = .closed
        expected.removeAll()
        expectedHead = 0
        timerArmedFor = nil
        actions.append(.cancelTimer)
        actions.append(.failed(error))
        actions.append(.close)
    }

    /// localReply - a reply the client makes up to describe a local failure.
    func localReply(_ code: Int, _ statusClass: UInt8, _ subject: UInt16, _ detail: UInt16, _ text: String) -> Reply {
        let status = EnhancedStatus(statusClass, subject, detail)
        return Reply(code: code, enhanced: status, text: "\(status.map { "\($0) " } ?? "")\(text)")
    }
}
