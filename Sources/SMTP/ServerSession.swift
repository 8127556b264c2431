// ServerSession.swift - the server side of one SMTP connection, without I/O
//
// The test sink and the injection listener drive this state machine: bytes
// in, replies and decisions out. Pipelined commands are taken in order and
// their replies batched into one write per read (RFC 2920 §3.2). Three
// modes read the input differently: command lines (CommandParser), an AUTH
// exchange's response lines, and message data (DataReader for DATA, a byte
// count for BDAT). A finished message is handed to the driver, which stores
// it and only then lets the session answer 250: nothing is acknowledged
// before it is safe.

import Bytes

/// One server SMTP connection.
///
/// A value owned by the driver of one connection and used on its thread
/// (it holds the driver's policy object). Methods append actions to the
/// caller's array; the driver performs them in order.
public struct ServerSession {
    enum Mode {
        case greeting                   /* start() not called yet */
        case command                    /* reading command lines */
        case authResponse               /* reading a response to our 334 */
        case data                       /* reading DATA through the DataReader */
        case chunk(remaining: Int, last: Bool)  /* reading BDAT octets */
        case skipping(remaining: Int)   /* throwing away the chunk of a BDAT already refused */
        case awaitingDecision           /* a message is with the driver */
        case verifying                  /* a PLAIN/LOGIN password is with the driver (for `verifyingUser`) */
        case upgrading                  /* 220 to STARTTLS sent; the driver is doing TLS */
        case closed
    }

    /// The current mail transaction.
    struct Transaction {
        var sender: ReversePath
        var parameters: MailParameters
        var recipients: [(address: MailAddress, parameters: RecipientParameters)] = []
        var body = ByteBuffer()
        var chunkFailure: Reply?        /* BDAT: the first reason to refuse, answered at LAST */
        var usedBDAT = false            /* a BDAT came: DATA may not follow (RFC 3030 §2) */
    }

    public let configuration: ServerConfiguration
    let policy: any ServerPolicy
    let credentials: (any SMTPCredentialStore)?
    let crypto: any SASLCrypto
    var mode = Mode.greeting
    var parser = CommandParser()
    var heloName: String?
    var extendedHello = false                       /* EHLO rather than HELO (RFC 3848's ESMTP vs SMTP) */
    /// True once TLS is up on this connection.
    public private(set) var isTLS = false
    /// The user AUTH succeeded for.
    public private(set) var authenticatedUser: String?
    var transaction: Transaction?
    var reader = DataReader()
    var exchange: (any SASLServerExchange)?
    var errors = 0
    var out = ByteBuffer()                          /* replies batched for one write */
    var newlyAuthenticated: String?                 /* reported with the next flush */
    var passwordToCheck: (username: String, password: String)?  /* asked with the next flush */
    var verifyingUser: String?                      /* whose password the driver checks (kept out of Mode: a
                                                       payload that needs reference counting would make
                                                       every switch over the mode retain and release) */
    var closeRequested = false                      /* .close already emitted */

    /// A session; `credentials` serve AUTH when mechanisms are configured.
    public init(configuration: ServerConfiguration, policy: any ServerPolicy = AcceptAllPolicy(),
                credentials: (any SMTPCredentialStore)? = nil, crypto: any SASLCrypto) {
        self.configuration = configuration
        self.policy = policy
        self.credentials = credentials
        self.crypto = crypto
    }

    /// The capabilities this session offers now (STARTTLS disappears once TLS is up).
    public var capabilities: Capabilities {
        Capabilities(
            pipelining: configuration.pipelining,
            size: configuration.maximumMessageSize,
            eightBitMIME: configuration.eightBitMIME,
            smtpUTF8: configuration.smtpUTF8,
            chunking: configuration.chunking,
            startTLS: configuration.startTLSAvailable && !isTLS,
            enhancedStatusCodes: configuration.enhancedStatusCodes,
            dsn: configuration.dsn,
            authMechanisms: credentials == nil ? [] : configuration.authMechanisms.map(\.rawValue))
    }

    var view: ServerSessionView {
        ServerSessionView(heloName: heloName, isTLS: isTLS, authenticatedUser: authenticatedUser,
                          recipientCount: transaction?.recipients.count ?? 0)
    }

    // MARK: Events from the driver

    /// start - the connection is open (implicitly TLS for port 465): greet, or refuse.
    public mutating func start(implicitTLS: Bool = false, into actions: inout [ServerAction]) {
        guard case .greeting = mode else { return }
        isTLS = implicitTLS
        if let refusal = policy.greeting() {
            reply(refusal)
            mode = .closed
            flush(into: &actions)
            return
        }
        mode = .command
        reply(220, nil, "\(configuration.hostname) \(configuration.greetingText)")
        flush(into: &actions)
    }

    /// receive - bytes from the client; returns how many were consumed.
    ///
    /// Stops early, leaving the rest unconsumed, when a message goes to the
    /// driver (the rest is read again after its decision) or after STARTTLS
    /// (the rest is plaintext the driver discards).
    public mutating func receive(_ bytes: UnsafeRawBufferPointer, into actions: inout [ServerAction]) -> Int {
        var consumed = 0
        reading: while consumed < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[consumed...])
            switch mode {
            case .command:
                let (result, used) = parser.parse(rest)
                consumed += used
                guard let result else { break reading }
                switch result {
                case .command(let command): handle(command)
                case .error(let refusal): refuse(refusal)
                case .refusedChunk(let refusal, let size):
                    /* Its octets follow whatever we answer: skip them, or, when the line did
                       not say how many, close (they cannot be told from commands). */
                    refuse(refusal)
                    if case .closed = mode { break }
                    if let size { mode = .skipping(remaining: size) } else { mode = .closed }
                }
            case .authResponse:
                let (continuation, used) = parser.authContinuation(rest)
                consumed += used
                guard let continuation else { break reading }
                authContinued(continuation, into: &actions)
            case .data:
                let (used, finished) = reader.read(rest, into: &transaction!.body)
                consumed += used
                if finished { endOfData(into: &actions) } else { break reading }
            case .chunk(let remaining, let last):
                let take = min(remaining, rest.count)
                if transaction?.chunkFailure == nil {
                    transaction?.body.append(contentsOf: UnsafeRawBufferPointer(rebasing: rest[..<take]))
                }
                consumed += take
                if take < remaining {
                    mode = .chunk(remaining: remaining - take, last: last)
                    break reading
                }
                endOfChunk(last: last, into: &actions)
            case .skipping(let remaining):
                let take = min(remaining, rest.count)
                consumed += take
                if take < remaining {
                    mode = .skipping(remaining: remaining - take)
                    break reading
                }
                mode = .command
            case .greeting, .awaitingDecision, .verifying, .upgrading, .closed:
                break reading
            }
            if case .closed = mode { break reading }
        }
        /* A BDAT of 0 octets at the end of the input is complete without any (RFC 3030 §4.3
           ends a message with BDAT 0 LAST): answer it now, not when more comes. */
        if case .chunk(remaining: 0, let last) = mode { endOfChunk(last: last, into: &actions) }
        if case .skipping(remaining: 0) = mode { mode = .command }
        flush(into: &actions)
        return consumed
    }

    /// tlsEstablished - TLS is up after our 220: forget the plaintext session (RFC 3207 §4.2).
    public mutating func tlsEstablished(into actions: inout [ServerAction]) {
        guard case .upgrading = mode else { return }
        isTLS = true
        heloName = nil
        authenticatedUser = nil
        transaction = nil
        parser = CommandParser()
        mode = .command
        actions.append(.armTimer(milliseconds: configuration.commandTimeout))
    }

    /// messageAccepted - the driver stored the message; answer with `reply` (250 ... queued as ...).
    public mutating func messageAccepted(_ reply: Reply, into actions: inout [ServerAction]) {
        decided(reply, into: &actions)
    }

    /// messageRejected - the driver could not store the message (452 4.3.1 disk full, 451 4.3.0).
    public mutating func messageRejected(_ reply: Reply, into actions: inout [ServerAction]) {
        decided(reply, into: &actions)
    }

    /// passwordChecked - the driver checked the password a `verifyPassword` action asked
    /// about: 235 and authenticated, or 535.
    public mutating func passwordChecked(_ valid: Bool, into actions: inout [ServerAction]) {
        guard case .verifying = mode, let username = verifyingUser else { return }
        verifyingUser = nil
        mode = .command
        authStep(valid ? .success(username: username) : .failure(SASLReplies.badCredentials))
        flush(into: &actions)
    }

    /// timeoutFired - the client was idle too long.
    public mutating func timeoutFired(into actions: inout [ServerAction]) {
        guard !isClosed else { return }
        reply(421, EnhancedStatus(4, 4, 2), "\(configuration.hostname) Error: timeout exceeded")
        mode = .closed
        flush(into: &actions)
    }

    /// True while message octets (DATA or BDAT) are being read.
    public var isReceivingData: Bool {
        switch mode {
        case .data, .chunk: return true
        default: return false
        }
    }

    /// True once the session asked for the connection to be closed.
    public var isClosed: Bool {
        if case .closed = mode { return true }
        return false
    }

    private mutating func decided(_ answer: Reply, into actions: inout [ServerAction]) {
        guard case .awaitingDecision = mode else { return }
        transaction = nil
        mode = .command
        reply(answer)
        flush(into: &actions)
    }

    // MARK: Commands

    private mutating func handle(_ command: Command) {
        if configuration.requireTLS && !isTLS {
            switch command {
            case .ehlo, .helo, .starttls, .noop, .rset, .quit: break
            default: return refuse(530, EnhancedStatus(5, 7, 0), "Must issue a STARTTLS command first")
            }
        }
        switch command {
        case .ehlo(let domain):
            heloName = domain
            extendedHello = true
            transaction = nil
            let lines = capabilities.ehloReplyLines(domain: configuration.hostname)
            for (index, line) in lines.enumerated() {
                out.append(index == lines.count - 1 ? "250 \(line)\r\n" : "250-\(line)\r\n")
            }
        case .helo(let domain):
            heloName = domain
            extendedHello = false
            transaction = nil
            reply(250, nil, configuration.hostname)
        case .mail(let sender, let parameters): mail(sender, parameters)
        case .rcpt(let recipient, let parameters): rcpt(recipient, parameters)
        case .data: data()
        case .bdat(let size, let last): bdat(size: size, last: last)
        case .rset:
            transaction = nil
            reply(250, EnhancedStatus(2, 0, 0), "Ok")
        case .noop:
            reply(250, EnhancedStatus(2, 0, 0), "Ok")
        case .vrfy:
            reply(252, EnhancedStatus(2, 0, 0), "Cannot VRFY user, but will accept message and attempt delivery")
        case .help:
            reply(214, EnhancedStatus(2, 0, 0), "See RFC 5321")
        case .quit:
            reply(221, EnhancedStatus(2, 0, 0), "Bye")
            mode = .closed
        case .starttls: startTLS()
        case .auth(let mechanism, let initialResponse): auth(mechanism, initialResponse)
        }
    }

    private mutating func mail(_ sender: ReversePath, _ parameters: MailParameters) {
        guard heloName != nil else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: send HELO/EHLO first") }
        guard transaction == nil else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: nested MAIL command") }
        if configuration.requireAuthentication && authenticatedUser == nil {
            return refuse(530, EnhancedStatus(5, 7, 0), "Authentication required")
        }
        let limit = configuration.maximumMessageSize
        if let size = parameters.size, limit > 0, size > limit {
            return refuse(552, EnhancedStatus(5, 3, 4), "Message size exceeds fixed limit")
        }
        if parameters.smtpUTF8 && !configuration.smtpUTF8 {
            return refuse(555, EnhancedStatus(5, 5, 4), "SMTPUTF8 is not supported")
        }
        if parameters.body == .binaryMIME {
            return refuse(555, EnhancedStatus(5, 5, 4), "BODY=BINARYMIME is not supported")
        }
        if sender.requiresSMTPUTF8 && !parameters.smtpUTF8 {
            return refuse(553, EnhancedStatus(5, 6, 7), "Sender address needs the SMTPUTF8 parameter")
        }
        if let refusal = policy.mail(from: sender, parameters: parameters, session: view) { return refuse(refusal) }
        transaction = Transaction(sender: sender, parameters: parameters)
        reply(250, EnhancedStatus(2, 1, 0), "Ok")
    }

    private mutating func rcpt(_ recipient: MailAddress, _ parameters: RecipientParameters) {
        guard let current = transaction else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: need MAIL command") }
        guard current.recipients.count < configuration.maximumRecipients else {
            /* Not counted as an error: a client with a long list sends the rest in another
               transaction after this one's DATA (RFC 5321 §4.5.3.1.10), and must not lose
               the accepted ones to the error limit. */
            return reply(452, EnhancedStatus(4, 5, 3), "Error: too many recipients")
        }
        if recipient.requiresSMTPUTF8 && !current.parameters.smtpUTF8 {
            return refuse(553, EnhancedStatus(5, 6, 7), "Recipient address needs the SMTPUTF8 parameter")
        }
        if let refusal = policy.recipient(recipient, parameters: parameters, session: view) { return refuse(refusal) }
        transaction!.recipients.append((recipient, parameters))
        reply(250, EnhancedStatus(2, 1, 5), "Ok")
    }

    private mutating func data() {
        guard let current = transaction else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: need MAIL command") }
        guard !current.usedBDAT else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: DATA cannot follow BDAT in one transaction") }
        guard !current.recipients.isEmpty else { return refuse(554, EnhancedStatus(5, 5, 1), "Error: no valid recipients") }
        reader = DataReader(bareLineEndings: configuration.bareLineEndings,
                            maximumMessageSize: configuration.maximumMessageSize > 0 ? configuration.maximumMessageSize : .max)
        mode = .data
        reply(354, nil, "End data with <CR><LF>.<CR><LF>")
    }

    /// endOfData - the terminator arrived: refuse a broken message or hand it to the driver.
    private mutating func endOfData(into actions: inout [ServerAction]) {
        mode = .command
        if let failure = reader.failure {
            transaction = nil
            let text = failure.replyCode == 552 ? "Message size exceeds fixed limit" : "Error: bare <CR> or <LF> received in message data"
            return refuse(failure.replyCode, failure.enhancedStatus, text)
        }
        deliver(into: &actions)
    }

    private mutating func bdat(size: Int, last: Bool) {
        /* The chunk's octets follow whatever we answer: read them even to throw them away.
           Without a transaction there is nothing to add them to (and nothing may start one
           but MAIL, with its checks): refuse each such chunk and skip it. */
        guard transaction != nil else {
            refuse(503, EnhancedStatus(5, 5, 1), "Error: need MAIL command")
            if case .closed = mode { return }
            mode = .skipping(remaining: size)
            return
        }
        transaction!.usedBDAT = true
        if transaction!.recipients.isEmpty {
            transaction!.chunkFailure = transaction!.chunkFailure
                ?? Reply(code: 554, enhanced: EnhancedStatus(5, 5, 1), text: "5.5.1 Error: no valid recipients")
        }
        let limit = configuration.maximumMessageSize
        if limit > 0 && transaction!.body.readableBytes + size > limit && transaction!.chunkFailure == nil {
            transaction!.chunkFailure = Reply(code: 552, enhanced: EnhancedStatus(5, 3, 4), text: "5.3.4 Message size exceeds fixed limit")
            transaction!.body = ByteBuffer()
        }
        mode = .chunk(remaining: size, last: last)
    }

    /// endOfChunk - a BDAT chunk is in: acknowledge it, or at LAST hand the message over.
    private mutating func endOfChunk(last: Bool, into actions: inout [ServerAction]) {
        mode = .command
        let size = transaction?.body.readableBytes ?? 0
        if let failure = transaction?.chunkFailure {
            /* Every chunk of a refused message gets the refusal; LAST ends the transaction. */
            if last { transaction = nil }
            return refuse(failure)
        }
        guard last else {
            reply(250, EnhancedStatus(2, 0, 0), "\(size) octets received")
            return
        }
        deliver(into: &actions)
    }

    /// deliver - hand the finished message to the driver and wait for its decision.
    private mutating func deliver(into actions: inout [ServerAction]) {
        guard let current = transaction else { return }
        mode = .awaitingDecision
        flush(into: &actions)
        actions.append(.cancelTimer)
        actions.append(.deliver(ReceivedMessage(
            heloName: heloName, sender: current.sender, mailParameters: current.parameters,
            recipients: current.recipients, body: current.body, isTLS: isTLS, authenticatedUser: authenticatedUser,
            extendedHello: extendedHello)))
    }

    private mutating func startTLS() {
        guard configuration.startTLSAvailable else { return refuse(502, EnhancedStatus(5, 5, 1), "Error: command not implemented") }
        guard !isTLS else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: TLS already active") }
        guard transaction == nil else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: MAIL transaction in progress") }
        reply(220, EnhancedStatus(2, 0, 0), "Ready to start TLS")
        mode = .upgrading
    }

    // MARK: AUTH (RFC 4954)

    private mutating func auth(_ name: String, _ initialResponse: String?) {
        guard let credentials, !configuration.authMechanisms.isEmpty else {
            return refuse(503, EnhancedStatus(5, 5, 1), "Error: authentication not enabled")
        }
        guard authenticatedUser == nil else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: already authenticated") }
        guard transaction == nil else { return refuse(503, EnhancedStatus(5, 5, 1), "Error: MAIL transaction in progress") }
        guard isTLS || configuration.allowPlaintextAuthentication else {
            return refuse(538, EnhancedStatus(5, 7, 11), "Encryption required for requested authentication mechanism")
        }
        guard let mechanism = SASLServerMechanism(rawValue: name.uppercased()),
              configuration.authMechanisms.contains(mechanism) else {
            return refuse(504, EnhancedStatus(5, 5, 4), "Unsupported authentication mechanism")
        }
        var initial: [UInt8]?
        if let initialResponse {
            guard let decoded = initialResponse == "=" ? [] : Base64.decode(initialResponse) else {
                return refuse(501, EnhancedStatus(5, 5, 2), "Cannot Base64-decode client response")
            }
            initial = decoded
        }
        var exchange = mechanism.makeExchange(store: credentials, crypto: crypto, hostname: configuration.hostname)
        let step = exchange.start(initialResponse: initial)
        self.exchange = exchange
        authStep(step)
    }

    private mutating func authContinued(_ continuation: AuthContinuation, into actions: inout [ServerAction]) {
        switch continuation {
        case .cancel:
            exchange = nil
            mode = .command
            refuse(501, EnhancedStatus(5, 0, 0), "Authentication aborted")
        case .error(let refusal):
            exchange = nil
            mode = .command
            refuse(refusal)
        case .response(let text):
            guard let decoded = Base64.decode(text) else {
                exchange = nil
                mode = .command
                return refuse(501, EnhancedStatus(5, 5, 2), "Cannot Base64-decode client response")
            }
            let step = exchange!.respond(decoded)
            authStep(step)
        }
    }

    /// authStep - send a challenge, or finish the exchange.
    private mutating func authStep(_ step: SASLServerStep) {
        switch step {
        case .challenge(let challenge):
            mode = .authResponse
            out.append("334 ")
            out.append(Base64.encode(challenge))
            out.append(ServerSession.crlf)
        case .success(let username):
            exchange = nil
            mode = .command
            authenticatedUser = username
            newlyAuthenticated = username
            reply(235, EnhancedStatus(2, 7, 0), "Authentication successful")
        case .failure(let refusal):
            exchange = nil
            mode = .command
            refuse(refusal)
        case .verify(let username, let password):
            exchange = nil
            mode = .verifying
            verifyingUser = username
            passwordToCheck = (username, password)
        }
    }

    // MARK: Replies

    /// reply - queue one reply line; the enhanced code prefixes the text when enabled.
    ///
    /// Written straight into the batch, digit by digit: a busy sink answers a
    /// few hundred thousand commands a second, and formatting each line as a
    /// String first cost more than everything else the session does.
    mutating func reply(_ code: Int, _ status: EnhancedStatus?, _ text: String) {
        out.appendDecimal(code)
        out.append(UInt8(ascii: " "))
        if let status, configuration.enhancedStatusCodes {
            out.appendDecimal(Int(status.statusClass))
            out.append(UInt8(ascii: "."))
            out.appendDecimal(Int(status.subject))
            out.append(UInt8(ascii: "."))
            out.appendDecimal(Int(status.detail))
            out.append(UInt8(ascii: " "))
        }
        out.append(text)
        out.append(ServerSession.crlf)
    }

    /// reply - queue a reply made elsewhere (policy, parser, SASL), as it stands.
    mutating func reply(_ reply: Reply) {
        out.appendDecimal(reply.code)
        out.append(UInt8(ascii: " "))
        out.append(reply.text)
        out.append(ServerSession.crlf)
    }

    private static let crlf: StaticString = "\r\n"

    /// refuse - an error reply; too many of them close the connection.
    mutating func refuse(_ code: Int, _ status: EnhancedStatus?, _ text: String) {
        reply(code, status, text)
        countError()
    }

    mutating func refuse(_ refusal: Reply) {
        reply(refusal)
        countError()
    }

    private mutating func countError() {
        errors += 1
        if errors >= configuration.maximumErrors {
            reply(421, EnhancedStatus(4, 7, 0), "\(configuration.hostname) Error: too many errors")
            mode = .closed
        }
    }

    /// flush - write the batched replies, then close, upgrade or arm the timer as the mode says.
    mutating func flush(into actions: inout [ServerAction]) {
        if !out.isEmpty {
            actions.append(.send(out))
            out = ByteBuffer()
        }
        if let user = newlyAuthenticated {
            newlyAuthenticated = nil
            actions.append(.authenticated(user))
        }
        if let check = passwordToCheck {
            passwordToCheck = nil
            actions.append(.verifyPassword(username: check.username, password: check.password))
        }
        switch mode {
        case .closed: close(into: &actions)
        case .upgrading: actions.append(.startTLS)
        case .data, .chunk, .skipping: actions.append(.armTimer(milliseconds: configuration.dataTimeout))
        case .command, .authResponse: actions.append(.armTimer(milliseconds: configuration.commandTimeout))
        case .greeting, .awaitingDecision, .verifying: break
        }
    }

    private mutating func close(into actions: inout [ServerAction]) {
        mode = .closed
        guard !closeRequested else { return }
        closeRequested = true
        actions.append(.close)
    }
}

extension ByteBuffer {
    /// appendDecimal - a non-negative number as ASCII digits, without making a String.
    mutating func appendDecimal(_ value: Int) {
        precondition(value >= 0, "reply numbers are never negative")
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[19 - count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            } while rest > 0
            append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[(20 - count)...]))
        }
    }

    /// append - the UTF-8 of a static string (literals: no String, no allocation).
    mutating func append(_ text: StaticString) {
        text.withUTF8Buffer { append(contentsOf: UnsafeRawBufferPointer($0)) }
    }
}
