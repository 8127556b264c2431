// CommandParser.swift - SMTP commands from a byte stream, one CRLF-terminated line at a time
//
// The server session hands in whatever the connection delivered and gets
// back at most one command (or the reply that rejects it) plus the number of
// octets to drop. Only whole lines are parsed; an incomplete line stays in
// the caller's buffer, and a line over the limit (RFC 5321 §4.5.3.1.4: 512
// octets with CRLF; RFC 4954 §4: 12,288 for AUTH) is answered as soon as the
// limit is passed and then skipped, however many reads its rest takes, so
// the caller never holds more than one line's worth for it.
//
// Commands must end in CRLF (RFC 5321 §2.3.8). Unlike the reply parser,
// which accepts a bare LF from servers, this parser rejects a line ending in
// bare LF, and a CR anywhere inside a line: a server that reads lines
// differently from the MTA behind it is the opening SMTP smuggling uses.
// Such a line is answered with 500 5.5.2 and consumed, and parsing goes on.
//
// Replies follow Postfix's wording where it has one. The table:
//   500 5.5.6  line too long
//   500 5.5.2  unknown verb, empty line, bare LF, bare CR, NUL or other
//              control octet, invalid UTF-8
//   502 5.5.1  a known verb Carrier does not implement (EXPN, TURN, ...)
//   501 5.5.2  command syntax (missing argument, path without "<...>", ...)
//   501 5.5.4  bad BDAT size; bad or duplicate ESMTP parameter value
//   555 5.5.4  unknown ESMTP parameter (RFC 5321 §4.1.1.11)
//   501 5.1.7  bad sender address; 501 5.1.3 bad recipient address

#if canImport(Glibc)
import Glibc
#endif

/// Incremental parser of client command lines, for a server session.
///
/// A value owned by one server session; not shared between threads while in
/// use. Feed it the unconsumed input from the front: after every call drop
/// `consumed` octets, whatever the result; a nil result means more input is
/// needed (it may still consume octets: the skipped rest of an over-long
/// line). Call again while results come, to take pipelined commands in
/// order. Invariant: `consumed` never exceeds the input, and the parser keeps
/// no bytes of its own, only whether it is skipping an over-long line.
public struct CommandParser: Sendable {
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
    public static let maximumCommandLineLength = 512
    /// Longest AUTH command or AUTH response line, CRLF included (RFC 4954 §4).
    public static let maximumAuthLineLength = 12_288

    /// The mailbox `RCPT TO:<Postmaster>` stands for; nil refuses that form.
    public let postmaster: MailAddress?

    private var discarding = false      /* skipping the rest of an over-long line already answered */

    /// A parser; `postmaster` is the address `RCPT TO:<Postmaster>` (no
    /// domain, RFC 5321 §4.1.1.3, which servers must accept) delivers to.
    public init(postmaster: MailAddress? = nil) {
        self.postmaster = postmaster
    }

    /// True while the rest of an over-long line is being skipped.
    public var isDiscardingLine: Bool { discarding }

    /// parse - the next command at the start of `bytes`, and how many octets to drop.
    public mutating func parse(_ bytes: UnsafeRawBufferPointer) -> (CommandResult?, consumed: Int) {
        let (line, consumed) = nextLine(bytes, isAuth: false)
        guard let line else { return (nil, consumed) }
        do {
            return (.command(try command(line.content())), consumed)
        } catch {
            switch line {
            case .complete(let content) where CommandParser.isBDAT(content):
                return (.refusedChunk(error.reply, size: CommandParser.chunkSize(content)), consumed)
            case .tooLong(_, bdat: true):
                return (.refusedChunk(error.reply, size: nil), consumed)
            default:
                return (.error(error.reply), consumed)
            }
        }
    }

    /// isBDAT - whether a line's verb is BDAT (in any case), however wrong the rest.
    static func isBDAT(_ line: UnsafeRawBufferPointer) -> Bool {
        guard line.count >= 4, equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: line[..<4]), "BDAT") else { return false }
        return line.count == 4 || line[4] == UInt8(ascii: " ")
    }

    /// chunkSize - the chunk size a refused BDAT line announces, when it gives one that fits
    /// (1 to 18 digits right after the verb); nil otherwise.
    static func chunkSize(_ line: UnsafeRawBufferPointer) -> Int? {
        guard line.count > 5 else { return nil }
        let argument = line[5...]
        let digits = argument.prefix { $0 &- 0x30 < 10 }
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        return digits.reduce(0) { $0 * 10 + Int($1 &- 0x30) }
    }

    /// authContinuation - the client's next line during an AUTH exchange (RFC 4954 §4).
    ///
    /// Use this instead of `parse` after a 334 challenge. The line is a
    /// base64 response (up to 12,288 octets with CRLF), possibly empty, or
    /// "*" to cancel. Anything else is answered 501 5.5.2, as RFC 4954 asks
    /// of a response that cannot be decoded; the session then ends the
    /// exchange. Decoding stays with the session (Base64.decode is strict).
    public mutating func authContinuation(_ bytes: UnsafeRawBufferPointer) -> (AuthContinuation?, consumed: Int) {
        let (line, consumed) = nextLine(bytes, isAuth: true)
        guard let line else { return (nil, consumed) }
        do throws(CommandRejection) {
            let content = try line.content()
            if content.count == 1 && content[0] == UInt8(ascii: "*") { return (.cancel, consumed) }
            guard content.allSatisfy(CommandParser.isBase64Byte) else {
                throw CommandRejection(501, CommandRejection.syntaxError, "Cannot Base64-decode client response")
            }
            return (.response(String(decoding: content, as: UTF8.self)), consumed)
        } catch {
            return (.error(error.reply), consumed)
        }
    }

    /// A line found at the front of the input.
    private enum Line {
        case complete(UnsafeRawBufferPointer)   /* without its CRLF */
        case tooLong(limit: Int, bdat: Bool)    /* bdat: the line began with BDAT */
        case bareLineFeed

        /// content - the line's octets, or the rejection of a line that has none to offer.
        func content() throws(CommandRejection) -> UnsafeRawBufferPointer {
            switch self {
            case .complete(let content):
                return content
            case .tooLong(let limit, _):
                throw CommandRejection(500, EnhancedStatus(5, 5, 6)!, "Line too long (limit \(limit) octets)")
            case .bareLineFeed:
                throw CommandRejection(500, CommandRejection.syntaxError, "Bare <LF> received; end commands with <CR><LF>")
            }
        }
    }

    /// nextLine - frame the next line: skip an over-long line's rest, find LF within the limit.
    private mutating func nextLine(_ bytes: UnsafeRawBufferPointer, isAuth: Bool) -> (Line?, consumed: Int) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return (nil, 0) }

        /* The rest of a line already answered as too long goes, up to and including its LF. */
        var offset = 0
        if discarding {
            guard let newline = memchr(base, 0x0A, bytes.count) else { return (nil, bytes.count) }
            offset = UnsafeRawPointer(newline) - UnsafeRawPointer(base) + 1
            discarding = false
        }
        let start = base + offset
        let available = bytes.count - offset
        guard available > 0 else { return (nil, offset) }

        /* Look for the LF only as far as the limit allows; an AUTH line may be longer. */
        let rest = UnsafeRawBufferPointer(start: start, count: available)
        let limit = isAuth || CommandParser.startsWithAuth(rest)
            ? CommandParser.maximumAuthLineLength : CommandParser.maximumCommandLineLength
        guard let found = memchr(start, 0x0A, min(available, limit)) else {
            guard available >= limit else { return (nil, offset) }
            /* Over the limit: answer now, and drop the line through its LF if it is here, else all of it. */
            if let newline = memchr(start + limit, 0x0A, available - limit) {
                return (.tooLong(limit: limit, bdat: CommandParser.isBDAT(rest)), UnsafeRawPointer(newline) - UnsafeRawPointer(base) + 1)
            }
            discarding = true
            return (.tooLong(limit: limit, bdat: CommandParser.isBDAT(rest)), bytes.count)
        }
        let newline = UnsafeRawPointer(found) - UnsafeRawPointer(start)
        let consumed = offset + newline + 1
        guard newline > 0, rest[newline - 1] == 0x0D else { return (.bareLineFeed, consumed) }
        return (.complete(UnsafeRawBufferPointer(rebasing: rest[..<(newline - 1)])), consumed)
    }

    /// startsWithAuth - true when `bytes` opens with "AUTH " in any case.
    private static func startsWithAuth(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 5 && bytes[4] == UInt8(ascii: " ")
            && Verb(UnsafeRawBufferPointer(rebasing: bytes[..<4])) == .auth
    }

    /// command - one complete line, CRLF removed, as a command.
    private func command(_ line: UnsafeRawBufferPointer) throws(CommandRejection) -> Command {
        try CommandParser.checkCharacters(line)
        guard !line.isEmpty else { throw CommandRejection(500, CommandRejection.syntaxError, "Empty command line") }

        /* The verb runs to the first space; the argument follows it, leading spaces dropped. */
        let space = line.firstIndex(of: UInt8(ascii: " ")) ?? line.count
        guard let verb = Verb(UnsafeRawBufferPointer(rebasing: line[..<space])) else {
            throw CommandRejection(500, CommandRejection.syntaxError, "Command unrecognized")
        }
        let argument = CommandParser.trimmed(UnsafeRawBufferPointer(rebasing: line[space...]))

        switch verb {
        case .helo, .ehlo:
            guard !argument.isEmpty else { throw verb.usage("hostname") }
            let domain = String(decoding: argument, as: UTF8.self)
            return verb == .helo ? .helo(domain) : .ehlo(domain)
        case .mail:
            return try mail(argument)
        case .rcpt:
            return try rcpt(argument)
        case .data, .rset, .quit, .starttls:
            guard argument.isEmpty else { throw verb.usage(nil) }
            switch verb {
            case .data: return .data
            case .rset: return .rset
            case .quit: return .quit
            default: return .starttls
            }
        case .noop:
            return .noop
        case .help:
            return .help
        case .vrfy:
            guard !argument.isEmpty else { throw verb.usage("address") }
            return .vrfy(String(decoding: argument, as: UTF8.self))
        case .bdat:
            return try CommandParser.bdat(argument)
        case .auth:
            return try CommandParser.auth(argument)
        case .expn, .turn, .etrn, .atrn, .send, .soml, .saml:
            throw CommandRejection(502, EnhancedStatus(5, 5, 1)!, "Command not implemented")
        }
    }

    /// mail - MAIL FROM:<reverse-path> [parameters].
    private func mail(_ argument: UnsafeRawBufferPointer) throws(CommandRejection) -> Command {
        let (mailbox, parameters) = try CommandParser.path(argument, keyword: "FROM:", verb: .mail)
        /* 501 5.1.7: RFC 3463 "bad sender's mailbox address syntax". */
        func bad(_ why: String) -> CommandRejection {
            CommandRejection(501, EnhancedStatus(5, 1, 7)!, "Bad sender address syntax: \(why)")
        }
        let reversePath: ReversePath
        switch mailbox {
        case .invalidRoute: throw bad("invalid source route")
        case .mailbox(let bytes) where bytes.isEmpty: reversePath = .null
        case .mailbox(let bytes):
            do { reversePath = .mailbox(try MailAddress.parse(bytes)) } catch { throw bad("\(error)") }
        }
        return .mail(reversePath, try MailParameters.parse(parameters))
    }

    /// rcpt - RCPT TO:<forward-path> [parameters].
    private func rcpt(_ argument: UnsafeRawBufferPointer) throws(CommandRejection) -> Command {
        let (mailbox, parameters) = try CommandParser.path(argument, keyword: "TO:", verb: .rcpt)
        /* 501 5.1.3: RFC 3463 "bad destination mailbox address syntax". */
        func bad(_ why: String) -> CommandRejection {
            CommandRejection(501, EnhancedStatus(5, 1, 3)!, "Bad recipient address syntax: \(why)")
        }
        let address: MailAddress
        switch mailbox {
        case .invalidRoute: throw bad("invalid source route")
        case .mailbox(let bytes) where bytes.isEmpty: throw bad("empty path")
        case .mailbox(let bytes) where CommandParser.equalsIgnoringCase(bytes, "POSTMASTER"):
            guard let postmaster else { throw bad("<Postmaster> needs a domain here") }
            address = postmaster
        case .mailbox(let bytes):
            do { address = try MailAddress.parse(bytes) } catch { throw bad("\(error)") }
        }
        return .rcpt(address, try RecipientParameters.parse(parameters))
    }

    /// What stood between the angle brackets of a path, source route removed.
    private enum PathContent {
        case mailbox(UnsafeRawBufferPointer)    /* empty for "<>" */
        case invalidRoute
    }

    /// path - split `FROM:<...> params` (or `TO:`) into the mailbox octets and the parameters.
    ///
    /// The brackets are required (RFC 5321 §4.1.2 Path); spaces between the
    /// colon and "<" are tolerated, as Postfix tolerates them, because
    /// deployed clients send `MAIL FROM: <a@b>`. A source route
    /// `<@a,@b:user@d>` is checked and dropped (RFC 5321 §4.1.1.3 and
    /// appendix C: servers accept and ignore it). The first ">" ends the
    /// path: MailAddress refuses angle brackets even in quoted local parts.
    private static func path(_ argument: UnsafeRawBufferPointer, keyword: StaticString, verb: Verb)
        throws(CommandRejection) -> (PathContent, parameters: UnsafeRawBufferPointer) {
        /* The reply is built only when it is needed: this runs for every MAIL and RCPT. */
        func usage() -> CommandRejection { verb.usage("\(keyword)<address>") }
        let keywordLength = keyword.utf8CodeUnitCount
        guard argument.count > keywordLength,
              equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: argument[..<keywordLength]), keyword) else { throw usage() }
        let afterColon = trimmed(UnsafeRawBufferPointer(rebasing: argument[keywordLength...]))
        guard afterColon.first == UInt8(ascii: "<"),
              let close = afterColon.firstIndex(of: UInt8(ascii: ">")) else { throw usage() }
        let parameters = UnsafeRawBufferPointer(rebasing: afterColon[(close + 1)...])
        guard parameters.isEmpty || parameters[0] == UInt8(ascii: " ") else { throw usage() }

        var inside = UnsafeRawBufferPointer(rebasing: afterColon[1..<close])
        if inside.first == UInt8(ascii: "@") {
            guard let colon = inside.firstIndex(of: UInt8(ascii: ":")),
                  isSourceRoute(UnsafeRawBufferPointer(rebasing: inside[..<colon])),
                  colon + 1 < inside.count else { return (.invalidRoute, parameters) }
            inside = UnsafeRawBufferPointer(rebasing: inside[(colon + 1)...])
        }
        return (.mailbox(inside), parameters)
    }

    /// isSourceRoute - `@domain` *( "," `@domain` ), each domain LDH labels separated by dots.
    private static func isSourceRoute(_ route: UnsafeRawBufferPointer) -> Bool {
        var hops = 0
        for hop in route.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            guard hop.first == UInt8(ascii: "@") else { return false }
            for label in hop.dropFirst().split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
                guard let first = label.first, let last = label.last,
                      first != UInt8(ascii: "-"), last != UInt8(ascii: "-"),
                      label.allSatisfy(ESMTPParameter.isKeywordByte) else { return false }
            }
            hops += 1
        }
        return hops > 0
    }

    /// bdat - BDAT chunk-size [LAST] (RFC 3030 §2).
    ///
    /// A size that does not fit in 18 digits is refused with 501 5.5.4; the
    /// session cannot know how many octets of chunk follow, so it should
    /// close the connection after sending the reply.
    private static func bdat(_ argument: UnsafeRawBufferPointer) throws(CommandRejection) -> Command {
        let space = argument.firstIndex(of: UInt8(ascii: " ")) ?? argument.count
        let digits = argument[..<space]
        let marker = trimmed(UnsafeRawBufferPointer(rebasing: argument[space...]))
        guard !digits.isEmpty, digits.allSatisfy({ $0 &- 0x30 < 10 }),
              marker.isEmpty || (marker.count == 4 && equalsIgnoringCase(marker, "LAST")) else {
            throw Verb.bdat.usage("chunk-size [LAST]")
        }
        guard digits.count <= 18 else {
            throw CommandRejection(501, CommandRejection.invalidArguments, "Bad BDAT chunk size (more than 18 digits)")
        }
        let size = digits.reduce(0) { $0 * 10 + Int($1 &- 0x30) }
        return .bdat(size: size, last: !marker.isEmpty)
    }

    /// auth - AUTH mechanism [initial-response] (RFC 4954 §4).
    ///
    /// The mechanism is a SASL name (RFC 4422 §3.1: 1 to 20 of A-Z, 0-9, "-",
    /// "_"), accepted in any case and uppercased. The initial response is
    /// base64 or "=", kept as text for the session to decode strictly.
    private static func auth(_ argument: UnsafeRawBufferPointer) throws(CommandRejection) -> Command {
        let space = argument.firstIndex(of: UInt8(ascii: " ")) ?? argument.count
        let mechanism = argument[..<space]
        let response = trimmed(UnsafeRawBufferPointer(rebasing: argument[space...]))
        guard (1...20).contains(mechanism.count),
              mechanism.allSatisfy({ ESMTPParameter.isKeywordByte($0) || $0 == UInt8(ascii: "_") }),
              response.allSatisfy(isBase64Byte) else {
            throw Verb.auth.usage("mechanism [initial-response]")
        }
        return .auth(mechanism: String(decoding: mechanism, as: UTF8.self).uppercased(),
                     initialResponse: response.isEmpty ? nil : String(decoding: response, as: UTF8.self))
    }

    /// checkCharacters - refuse NUL, CR and other control octets, and invalid UTF-8.
    ///
    /// Printable ASCII is skipped eight octets at a time; only a word holding
    /// something else is looked at octet by octet. Non-ASCII lines are then
    /// validated as UTF-8 once (RFC 6531 allows UTF-8 in addresses).
    private static func checkCharacters(_ line: UnsafeRawBufferPointer) throws(CommandRejection) {
        var nonASCII = false
        var index = 0
        while let found = firstUnprintable(line, from: index) {
            let byte = line[found]
            switch byte {
            case 0x00:
                throw CommandRejection(500, CommandRejection.syntaxError, "NUL character in command line")
            case 0x0D:
                throw CommandRejection(500, CommandRejection.syntaxError, "Bare <CR> in command line")
            case 0x01..<0x20, 0x7F:
                let hex = String(byte, radix: 16, uppercase: true)
                throw CommandRejection(500, CommandRejection.syntaxError,
                                       "Control character 0x\(byte < 16 ? "0" : "")\(hex) in command line")
            default:
                nonASCII = true
            }
            index = found + 1
        }
        if nonASCII && String(validating: line, as: UTF8.self) == nil {
            throw CommandRejection(500, CommandRejection.syntaxError, "Invalid UTF-8 in command line")
        }
    }

    /// firstUnprintable - index of the first octet at or after `start` outside 0x20...0x7E.
    private static func firstUnprintable(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        var index = start
        /* A word has an octet < 0x20, = 0x7F or >= 0x80 exactly when this mask is non-zero. */
        while index + 8 <= bytes.count {
            let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            let delete = word ^ (ones &* 0x7F)
            let below = (word &- ones &* 0x20) & ~word
            let isDelete = (delete &- ones) & ~delete
            if (below | isDelete | word) & highs != 0 { break }
            index += 8
        }
        while index < bytes.count {
            if bytes[index] &- 0x20 > 0x5E { return index }
            index += 1
        }
        return nil
    }

    /// trimmed - `bytes` without leading and trailing spaces.
    private static func trimmed(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        guard let first = bytes.firstIndex(where: { $0 != UInt8(ascii: " ") }),
              let last = bytes.lastIndex(where: { $0 != UInt8(ascii: " ") }) else {
            return UnsafeRawBufferPointer(rebasing: bytes[0..<0])
        }
        return UnsafeRawBufferPointer(rebasing: bytes[first...last])
    }

    /// equalsIgnoringCase - `bytes` equal `upper` (uppercase ASCII) in any case.
    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ upper: StaticString) -> Bool {
        guard bytes.count == upper.utf8CodeUnitCount else { return false }
        let expected = UnsafeRawBufferPointer(start: upper.utf8Start, count: upper.utf8CodeUnitCount)
        return zip(bytes, expected).allSatisfy { byte, want in
            byte == want || (want &- UInt8(ascii: "A") < 26 && byte == want | 0x20)
        }
    }

    /// isBase64Byte - the base64 alphabet and "=".
    private static func isBase64Byte(_ byte: UInt8) -> Bool {
        ESMTPParameter.isKeywordByte(byte) && byte != UInt8(ascii: "-")
            || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "=")
    }
}

/// The verbs the parser knows, each as its four or eight uppercase ASCII octets.
private enum Verb: UInt64 {
    case helo = 0x4845_4C4F                 /* HELO */
    case ehlo = 0x4548_4C4F                 /* EHLO */
    case mail = 0x4D41_494C                 /* MAIL */
    case rcpt = 0x5243_5054                 /* RCPT */
    case data = 0x4441_5441                 /* DATA */
    case bdat = 0x4244_4154                 /* BDAT */
    case rset = 0x5253_4554                 /* RSET */
    case noop = 0x4E4F_4F50                 /* NOOP */
    case quit = 0x5155_4954                 /* QUIT */
    case vrfy = 0x5652_4659                 /* VRFY */
    case help = 0x4845_4C50                 /* HELP */
    case auth = 0x4155_5448                 /* AUTH */
    case starttls = 0x5354_4152_5454_4C53   /* STARTTLS */
    case expn = 0x4558_504E                 /* EXPN, and below: known, not implemented */
    case turn = 0x5455_524E                 /* TURN */
    case etrn = 0x4554_524E                 /* ETRN */
    case atrn = 0x4154_524E                 /* ATRN */
    case send = 0x5345_4E44                 /* SEND */
    case soml = 0x534F_4D4C                 /* SOML */
    case saml = 0x5341_4D4C                 /* SAML */

    /// A verb from its octets in any case; nil for anything else.
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 4 || bytes.count == 8 else { return nil }
        var code: UInt64 = 0
        for byte in bytes {
            code = code << 8 | UInt64(byte &- UInt8(ascii: "a") < 26 ? byte - 0x20 : byte)
        }
        self.init(rawValue: code)
    }

    /// The verb as written in replies.
    var name: String {
        withUnsafeBytes(of: rawValue.bigEndian) { String(decoding: $0.drop { $0 == 0 }, as: UTF8.self) }
    }

    /// usage - 501 5.5.2 "Syntax: VERB arguments".
    func usage(_ arguments: String?) -> CommandRejection {
        CommandRejection(501, CommandRejection.syntaxError, "Syntax: \(name)" + (arguments.map { " " + $0 } ?? ""))
    }
}
