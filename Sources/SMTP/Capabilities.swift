// Capabilities.swift - the ESMTP extensions a server offers in its EHLO reply
//
// The client decides from these what it may send: pipelined commands, SIZE=,
// BODY=, SMTPUTF8, BDAT, STARTTLS, AUTH, DSN parameters. The server session
// builds its EHLO reply from the same value, so both sides read and write
// one vocabulary. Parsing is lenient, as deployed servers are varied: any
// case, extra spaces, lines that are not keywords are skipped, and the
// pre-RFC 2554 "AUTH=PLAIN LOGIN" form (old Microsoft servers) counts as AUTH.

/// The extensions of one EHLO reply (RFC 5321 §4.1.1.1, §2.2.2).
///
/// A value; safe to send between threads. Forget it after STARTTLS: the
/// server may offer different extensions over TLS (RFC 3207 §4.2).
public struct Capabilities: Hashable, Sendable {
    public var pipelining: Bool             /* PIPELINING (RFC 2920) */
    public var size: Int?                   /* SIZE (RFC 1870): the limit; 0 when none is stated */
    public var eightBitMIME: Bool           /* 8BITMIME (RFC 6152) */
    public var smtpUTF8: Bool               /* SMTPUTF8 (RFC 6531) */
    public var chunking: Bool               /* CHUNKING: BDAT (RFC 3030) */
    public var binaryMIME: Bool             /* BINARYMIME (RFC 3030) */
    public var startTLS: Bool               /* STARTTLS (RFC 3207) */
    public var enhancedStatusCodes: Bool    /* ENHANCEDSTATUSCODES (RFC 2034) */
    public var dsn: Bool                    /* DSN (RFC 3461) */
    public var authMechanisms: [String]     /* AUTH (RFC 4954): SASL names, uppercased, in offered order */
    public var keywords: [String: [String]] /* every other keyword, uppercased, with its parameters */

    public init(pipelining: Bool = false, size: Int? = nil, eightBitMIME: Bool = false, smtpUTF8: Bool = false,
                chunking: Bool = false, binaryMIME: Bool = false, startTLS: Bool = false,
                enhancedStatusCodes: Bool = false, dsn: Bool = false, authMechanisms: [String] = [],
                keywords: [String: [String]] = [:]) {
        self.pipelining = pipelining
        self.size = size
        self.eightBitMIME = eightBitMIME
        self.smtpUTF8 = smtpUTF8
        self.chunking = chunking
        self.binaryMIME = binaryMIME
        self.startTLS = startTLS
        self.enhancedStatusCodes = enhancedStatusCodes
        self.dsn = dsn
        self.authMechanisms = authMechanisms
        self.keywords = keywords
    }

    /// The capabilities in a 250 reply to EHLO: one keyword per line after the first.
    ///
    /// The first line is the server's name and greeting, not a keyword. A
    /// SIZE parameter that is not a number counts as "no limit stated" (0);
    /// one too large for an Int is Int.max.
    public init(ehloReply reply: Reply) {
        self.init()
        for line in reply.additionalLines {
            let words = line.split(separator: " ")
            guard let first = words.first else { continue }
            let parameters = words.dropFirst().map(String.init)

            /* The old AUTH=MECH form carries its first mechanism in the keyword. */
            let keyword = first.uppercased()
            if keyword.hasPrefix("AUTH=") {
                addMechanisms([String(keyword.dropFirst(5))] + parameters)
                continue
            }
            guard keyword.utf8.first != UInt8(ascii: "-"), keyword.utf8.allSatisfy(ESMTPParameter.isKeywordByte) else { continue }

            switch keyword {
            case "PIPELINING": pipelining = true
            case "SIZE": size = parameters.first.map(Capabilities.limit) ?? 0
            case "8BITMIME": eightBitMIME = true
            case "SMTPUTF8": smtpUTF8 = true
            case "CHUNKING": chunking = true
            case "BINARYMIME": binaryMIME = true
            case "STARTTLS": startTLS = true
            case "ENHANCEDSTATUSCODES": enhancedStatusCodes = true
            case "DSN": dsn = true
            case "AUTH": addMechanisms(parameters)
            default: keywords[keyword] = parameters
            }
        }
    }

    /// ehloReplyLines - the text of each line of a 250 EHLO reply offering these capabilities.
    ///
    /// The first line is `domain` (the server's name and any greeting); the
    /// known keywords follow in Postfix's order, then the others sorted, so
    /// the reply is the same byte for byte on every connection.
    public func ehloReplyLines(domain: String) -> [String] {
        var lines = [domain]
        if pipelining { lines.append("PIPELINING") }
        if let size { lines.append(size > 0 ? "SIZE \(size)" : "SIZE") }
        if startTLS { lines.append("STARTTLS") }
        if !authMechanisms.isEmpty { lines.append((["AUTH"] + authMechanisms).joined(separator: " ")) }
        if enhancedStatusCodes { lines.append("ENHANCEDSTATUSCODES") }
        if eightBitMIME { lines.append("8BITMIME") }
        if dsn { lines.append("DSN") }
        if smtpUTF8 { lines.append("SMTPUTF8") }
        if chunking { lines.append("CHUNKING") }
        if binaryMIME { lines.append("BINARYMIME") }
        for (keyword, parameters) in keywords.sorted(by: { $0.key < $1.key }) {
            lines.append(([keyword] + parameters).joined(separator: " "))
        }
        return lines
    }

    /// addMechanisms - add SASL names, uppercased, each once.
    private mutating func addMechanisms(_ names: [String]) {
        for name in names.map({ $0.uppercased() }) where !name.isEmpty && !authMechanisms.contains(name) {
            authMechanisms.append(name)
        }
    }

    /// limit - a SIZE parameter: its number, Int.max when too large, 0 when not a number.
    private static func limit(_ text: String) -> Int {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 &- 0x30 < 10 }) else { return 0 }
        return Int(text) ?? .max
    }
}
