// Command.swift - SMTP commands as the server receives them, with their ESMTP parameters
//
// The server session works on these values, never on text: `CommandParser`
// turns a line into a `Command` or into the reply that rejects it, so every
// syntax decision is made in one place and the session only judges sequence
// and policy. ESMTP parameters (RFC 5321 §4.1.2 esmtp-param) are parsed here
// into typed fields, case-insensitively; a parameter whose extension the
// server did not advertise is still parsed and exposed, because whether it is
// acceptable depends on the EHLO reply the session sent, not on syntax.

/// One SMTP command from a client (RFC 5321 §4.1).
///
/// A value; safe to send between threads. Strings hold what the client sent,
/// already checked to be UTF-8 without control characters; verbs and
/// keywords are matched case-insensitively, so nothing here keeps their case.
public enum Command: Hashable, Sendable {
    /// HELO with the client's domain or address literal (any text; the session judges it).
    case helo(String)
    /// EHLO with the client's domain or address literal.
    case ehlo(String)
    /// MAIL FROM, the reverse path (`.null` for `<>`) and its parameters.
    case mail(ReversePath, MailParameters)
    /// RCPT TO, the forward path and its parameters. A source route is dropped.
    case rcpt(MailAddress, RecipientParameters)
    /// DATA.
    case data
    /// BDAT with the chunk size in octets; `last` for BDAT n LAST (RFC 3030).
    case bdat(size: Int, last: Bool)
    /// RSET.
    case rset
    /// NOOP (any argument is ignored, as RFC 5321 §4.1.1.9 allows).
    case noop
    /// QUIT.
    case quit
    /// VRFY with its argument as sent.
    case vrfy(String)
    /// HELP (any argument is ignored).
    case help
    /// STARTTLS (RFC 3207).
    case starttls
    /// AUTH (RFC 4954): the mechanism, uppercased, and the initial response as
    /// the raw base64 text the client sent ("=" stands for an empty response).
    case auth(mechanism: String, initialResponse: String?)
}

/// What the parser made of one command line: a command, or the reply that rejects it.
public enum CommandResult: Hashable, Sendable {
    case command(Command)
    case error(Reply)
    /// A BDAT line refused: its chunk of `size` octets follows and must be skipped, not read
    /// as commands (nil: the line did not say how many, and the connection must close).
    case refusedChunk(Reply, size: Int?)
}

/// What the parser made of one line sent during an AUTH exchange (RFC 4954 §4).
public enum AuthContinuation: Hashable, Sendable {
    /// The client's response, as the raw base64 text (possibly empty).
    case response(String)
    /// "*": the client cancels the exchange; the session answers 501.
    case cancel
    /// The line was not a response (too long, not base64, bad line end): send this reply.
    case error(Reply)
}

/// The ESMTP parameters of MAIL FROM that Carrier understands.
///
/// A value; safe to send between threads. Each field is nil (or false) when
/// the client did not send the parameter. Text values are xtext-decoded.
public struct MailParameters: Hashable, Sendable {
    /// BODY= (RFC 6152, RFC 3030).
    public enum Body: String, Hashable, Sendable {
        case sevenBit = "7BIT"
        case eightBitMIME = "8BITMIME"
        case binaryMIME = "BINARYMIME"
    }

    /// RET= (RFC 3461 §4.3): what a delivery status notification returns.
    public enum Return: String, Hashable, Sendable {
        case full = "FULL"
        case headers = "HDRS"
    }

    public var size: Int?           /* SIZE= declared octets (RFC 1870); Int.max when it overflows */
    public var body: Body?          /* BODY= */
    public var smtpUTF8: Bool       /* SMTPUTF8 (RFC 6531) */
    public var auth: String?        /* AUTH= submitter (RFC 4954 §5), decoded; "<>" when unknown */
    public var dsnReturn: Return?   /* RET= */
    public var envelopeID: String?  /* ENVID= (RFC 3461 §4.4), decoded */

    public init(size: Int? = nil, body: Body? = nil, smtpUTF8: Bool = false, auth: String? = nil,
                dsnReturn: Return? = nil, envelopeID: String? = nil) {
        self.size = size
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.auth = auth
        self.dsnReturn = dsnReturn
        self.envelopeID = envelopeID
    }
}

/// The ESMTP parameters of RCPT TO that Carrier understands (RFC 3461 DSN).
///
/// A value; safe to send between threads.
public struct RecipientParameters: Hashable, Sendable {
    /// NOTIFY= (RFC 3461 §4.1): when to send a notification; empty for NEVER.
    public struct Notify: OptionSet, Hashable, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        public static let never: Notify = []
        public static let success = Notify(rawValue: 1)
        public static let failure = Notify(rawValue: 2)
        public static let delay = Notify(rawValue: 4)
    }

    /// ORCPT= (RFC 3461 §4.2): the recipient as originally given.
    public struct OriginalRecipient: Hashable, Sendable {
        public var addressType: String  /* "rfc822", "utf-8", ... lowercased */
        public var address: String      /* xtext-decoded; RFC 6533 \x{..} escapes are kept as sent */

        public init(addressType: String, address: String) {
            self.addressType = addressType
            self.address = address
        }
    }

    public var notify: Notify?                          /* NOTIFY=; nil when not sent */
    public var originalRecipient: OriginalRecipient?    /* ORCPT= */

    public init(notify: Notify? = nil, originalRecipient: OriginalRecipient? = nil) {
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// A command line rejected while parsing, carrying the reply to send.
struct CommandRejection: Error {
    let reply: Reply

    init(_ code: Int, _ status: EnhancedStatus, _ message: String) {
        reply = Reply(code: code, enhanced: status, text: "\(status) \(message)")
    }

    static let syntaxError = EnhancedStatus(5, 5, 2)!       /* RFC 3463 X.5.2 */
    static let invalidArguments = EnhancedStatus(5, 5, 4)!  /* RFC 3463 X.5.4 */
}

extension MailParameters {
    /// parse - the parameters after MAIL FROM:<path>, separated by spaces.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(CommandRejection) -> MailParameters {
        var parameters = MailParameters()
        var seen: UInt8 = 0
        try ESMTPParameter.forEach(in: bytes) { (parameter) throws(CommandRejection) in
            /* Which one, and only once each. */
            let bit: UInt8
            switch parameter.keyword {
            case "SIZE": bit = 1
            case "BODY": bit = 2
            case "SMTPUTF8": bit = 4
            case "AUTH": bit = 8
            case "RET": bit = 16
            case "ENVID": bit = 32
            default: throw parameter.unsupported()
            }
            guard seen & bit == 0 else { throw parameter.duplicate() }
            seen |= bit

            switch parameter.keyword {
            case "SIZE":
                parameters.size = try parameter.number()
            case "BODY":
                guard let body = Body(rawValue: try parameter.upperValue()) else {
                    throw parameter.bad("use 7BIT, 8BITMIME or BINARYMIME")
                }
                parameters.body = body
            case "SMTPUTF8":
                guard parameter.value == nil else { throw parameter.bad("SMTPUTF8 takes no value") }
                parameters.smtpUTF8 = true
            case "AUTH":
                let value = try parameter.requiredValue()
                parameters.auth = value == "<>" ? value : try parameter.xtext(value)
            case "RET":
                guard let dsnReturn = Return(rawValue: try parameter.upperValue()) else {
                    throw parameter.bad("use FULL or HDRS")
                }
                parameters.dsnReturn = dsnReturn
            default:
                let envelopeID = try parameter.xtext(parameter.requiredValue())
                guard envelopeID.utf8.count <= 100 else { throw parameter.bad("longer than 100 characters") }
                parameters.envelopeID = envelopeID
            }
        }
        return parameters
    }
}

extension RecipientParameters {
    /// parse - the parameters after RCPT TO:<path>, separated by spaces.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(CommandRejection) -> RecipientParameters {
        var parameters = RecipientParameters()
        try ESMTPParameter.forEach(in: bytes) { (parameter) throws(CommandRejection) in
            switch parameter.keyword {
            case "NOTIFY":
                guard parameters.notify == nil else { throw parameter.duplicate() }
                parameters.notify = try notify(parameter)
            case "ORCPT":
                guard parameters.originalRecipient == nil else { throw parameter.duplicate() }
                let value = try parameter.requiredValue()
                /* addr-type ";" xtext, addr-type an atom (RFC 3461 §4.2). */
                let parts = value.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.allSatisfy(ESMTPParameter.isKeywordByte) else {
                    throw parameter.bad("use ORCPT=addr-type;address")
                }
                let type = parts[0].lowercased()
                let address = try parameter.xtext(String(parts[1]))
                guard !address.isEmpty else { throw parameter.bad("empty address") }
                parameters.originalRecipient = OriginalRecipient(addressType: type, address: address)
            default:
                throw parameter.unsupported()
            }
        }
        return parameters
    }

    /// notify - NEVER alone, or a comma list of SUCCESS, FAILURE and DELAY.
    private static func notify(_ parameter: ESMTPParameter) throws(CommandRejection) -> Notify {
        let value = try parameter.upperValue()
        if value == "NEVER" { return .never }
        var notify: Notify = []
        for element in value.split(separator: ",", omittingEmptySubsequences: false) {
            switch element {
            case "SUCCESS": notify.insert(.success)
            case "FAILURE": notify.insert(.failure)
            case "DELAY": notify.insert(.delay)
            default: throw parameter.bad("use NEVER, or any of SUCCESS, FAILURE and DELAY separated by commas")
            }
        }
        return notify
    }
}

/// One esmtp-param, `keyword[=value]`, checked for syntax, with the replies that reject it.
struct ESMTPParameter {
    let keyword: String                         /* uppercased */
    let value: String?                          /* as sent; nil without "=" */
    let word: Slice<UnsafeRawBufferPointer>     /* the whole parameter as sent */

    /// The parameter as sent, for reply texts (the line holds no control characters).
    var text: String { String(decoding: word, as: UTF8.self) }

    /// forEach - split `bytes` on spaces and hand each well-formed parameter to `body`.
    ///
    /// RFC 5321 §4.1.2: esmtp-keyword is (ALPHA / DIGIT) *(ALPHA / DIGIT / "-");
    /// esmtp-value is printable ASCII except "=" and space, plus UTF-8 beyond
    /// ASCII (RFC 6531). The line was already checked for control characters
    /// and valid UTF-8.
    static func forEach(in bytes: UnsafeRawBufferPointer,
                        _ body: (ESMTPParameter) throws(CommandRejection) -> Void) throws(CommandRejection) {
        var start = 0
        while start < bytes.count {
            /* One word up to the next space; runs of spaces are tolerated. */
            let end = bytes[start...].firstIndex(of: UInt8(ascii: " ")) ?? bytes.count
            defer { start = end + 1 }
            guard end > start else { continue }
            let word = bytes[start..<end]
            let equals = word.firstIndex(of: UInt8(ascii: "="))
            let keyword = word[..<(equals ?? end)]
            guard let first = keyword.first, first != UInt8(ascii: "-"), keyword.allSatisfy(isKeywordByte) else {
                throw CommandRejection(501, CommandRejection.invalidArguments, "Bad parameter syntax: \(String(decoding: word, as: UTF8.self))")
            }
            var value: String?
            if let equals {
                let bytes = word[(equals + 1)...]
                guard !bytes.isEmpty, !bytes.contains(UInt8(ascii: "=")) else {
                    throw CommandRejection(501, CommandRejection.invalidArguments, "Bad parameter syntax: \(String(decoding: word, as: UTF8.self))")
                }
                value = String(decoding: bytes, as: UTF8.self)
            }
            /* The keyword is ALPHA, DIGIT and "-" only: uppercase it octet by octet. */
            let upper = String(unsafeUninitializedCapacity: keyword.count) { buffer in
                for (offset, byte) in keyword.enumerated() {
                    buffer[offset] = byte &- UInt8(ascii: "a") < 26 ? byte &- 0x20 : byte
                }
                return keyword.count
            }
            try body(ESMTPParameter(keyword: upper, value: value, word: word))
        }
    }

    /// isKeywordByte - ALPHA, DIGIT or "-".
    static func isKeywordByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    /// unsupported - 555: a parameter this server does not know (RFC 5321 §4.1.1.11).
    func unsupported() -> CommandRejection {
        CommandRejection(555, CommandRejection.invalidArguments, "Unsupported option: \(text)")
    }

    /// duplicate - 501: the same parameter twice in one command.
    func duplicate() -> CommandRejection {
        CommandRejection(501, CommandRejection.invalidArguments, "Duplicate \(keyword) parameter")
    }

    /// bad - 501: a known parameter with a value it cannot take.
    func bad(_ why: String) -> CommandRejection {
        CommandRejection(501, CommandRejection.invalidArguments, "Bad \(keyword) parameter: \(text) (\(why))")
    }

    /// requiredValue - the value; a parameter without one is rejected.
    func requiredValue() throws(CommandRejection) -> String {
        guard let value else { throw bad("a value is required") }
        return value
    }

    /// upperValue - the value uppercased, for keywords compared case-insensitively.
    func upperValue() throws(CommandRejection) -> String {
        try requiredValue().uppercased()
    }

    /// number - a decimal count (SIZE); Int.max when it does not fit, so a
    /// huge declaration gets the session's "too big" reply, not a syntax error.
    func number() throws(CommandRejection) -> Int {
        let digits = try requiredValue().utf8
        guard digits.count <= 20, digits.allSatisfy({ $0 &- 0x30 < 10 }) else { throw bad("a number is required") }
        var result = 0
        for digit in digits {
            let (times10, overflow1) = result.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int(digit &- 0x30))
            if overflow1 || overflow2 { return .max }
            result = sum
        }
        return result
    }

    /// xtext - the decoded text of an xtext value (RFC 3461 §4, strict: see XText).
    ///
    /// "+00" and the like decode to control octets, which are refused: the
    /// decoded text is logged and may be echoed in replies and headers.
    func xtext(_ encoded: String) throws(CommandRejection) -> String {
        let decoded: String
        do { decoded = try XText.decode(encoded) } catch { throw bad("\(error)") }
        guard !decoded.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { throw bad("control character in xtext") }
        return decoded
    }
}
