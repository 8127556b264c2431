// MailAddress.swift - mailboxes per RFC 5321 §4.1.2, RFC 5322 §3.4.1 and RFC 6531
//
// An address is the one piece of user input that is copied verbatim into a
// command line (`RCPT TO:<...>`), so a lenient parser here is an injection
// hole: a CR LF inside a recipient starts a new command, a ">" ends the path
// early. Every address is therefore parsed into this type first, and the
// parser refuses control octets and angle brackets anywhere, even inside a
// quoted local part where RFC 5321's qtextSMTP would admit "<" and ">": no
// deliverable mailbox needs them, and accepting them would make each writer
// of a path responsible for escaping. Length limits are RFC 5321 §4.5.3.1's
// (local part 64, domain 255, path 256 octets, brackets included), checked on
// the text as written.
//
// A quoted local part is stored unquoted ("a b" is kept as `a b`) and quoted
// again only when it is not a dot-atom, so `"abc"@x` and `abc@x` are the same
// value and print as the latter, as RFC 5321 §4.1.2 asks of senders. Domains
// are kept as written (case included); whoever groups by domain folds case.

#if canImport(Glibc)
import Glibc
#endif

/// A mailbox `local-part@domain`, validated.
///
/// A value; safe to send between threads. Invariant: `description` is a
/// well-formed RFC 5321 mailbox of at most 254 octets (a path of at most 256)
/// holding no control octet and no angle bracket, so it can be written into a
/// command line as is.
public struct MailAddress: Hashable, Sendable, CustomStringConvertible {
    /// What kind of domain follows the "@".
    public enum DomainKind: Hashable, Sendable {
        /// LDH labels only (letters, digits, hyphens): plain ASCII.
        case name
        /// At least one U-label (UTF-8, RFC 6531): needs SMTPUTF8 on the wire.
        case internationalizedName
        /// An IPv4 address literal such as `[192.0.2.1]`.
        case ipv4Literal
        /// An IPv6 address literal such as `[IPv6:2001:db8::1]`.
        case ipv6Literal
    }

    public let localPart: String            /* unquoted: no surrounding quotes, quoted-pairs resolved */
    public let domain: String               /* as written; an address literal keeps its brackets */
    public let domainKind: DomainKind       /* LDH name, name with U-labels, or literal */
    private let localPartIsASCII: Bool      /* false when the local part holds UTF-8 */

    /// Parse a bare mailbox `local@domain` (no angle brackets, no source route).
    public init(parsing text: String) throws(AddressError) {
        var text = text
        let result = text.withUTF8 { utf8 in
            Result { () throws(AddressError) in try MailAddress.parse(UnsafeRawBufferPointer(utf8)) }
        }
        self = try result.get()
    }

    /// A mailbox from its parts; `localPart` unquoted, quoted here when it needs to be.
    public init(localPart: String, domain: String) throws(AddressError) {
        try self.init(parsing: MailAddress.written(localPart) + "@" + domain)
    }

    private init(localPart: String, domain: String, domainKind: DomainKind, localPartIsASCII: Bool) {
        self.localPart = localPart
        self.domain = domain
        self.domainKind = domainKind
        self.localPartIsASCII = localPartIsASCII
    }

    /// `local@domain`, the local part quoted when it is not a dot-atom.
    public var description: String { MailAddress.written(localPart) + "@" + domain }

    /// `<local@domain>`, as a MAIL or RCPT command carries it.
    public var path: String { "<" + description + ">" }

    /// True when any octet is non-ASCII: the address may only go to a server offering SMTPUTF8.
    public var requiresSMTPUTF8: Bool { !localPartIsASCII || domainKind == .internationalizedName }

    /// True when the domain is a bracketed IPv4 or IPv6 literal (no MX lookup applies).
    public var isAddressLiteral: Bool { domainKind == .ipv4Literal || domainKind == .ipv6Literal }

    /// parse - a bare mailbox from raw octets, as the server command parser finds it between "<" and ">".
    ///
    /// Nothing is kept from `bytes` but the validated copy. Checks run in this
    /// order, so the error names the first problem: emptiness, forbidden
    /// octets, UTF-8, the "@", lengths, local part syntax, domain syntax.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(AddressError) -> MailAddress {
        guard let base = bytes.baseAddress, bytes.count > 0 else { throw .empty }
        let count = bytes.count

        /* Injection guard before anything else: no control octet or angle bracket survives. */
        var nonASCII = false
        for byte in bytes {
            if byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "<") || byte == UInt8(ascii: ">") {
                throw .forbiddenCharacter(byte)
            }
            if byte >= 0x80 { nonASCII = true }
        }
        if nonASCII && String(validating: bytes, as: UTF8.self) == nil { throw .invalidUTF8 }

        /* Find the "@" that ends the local part: after a quoted string's closing quote, else the first one. */
        let quoted = bytes[0] == UInt8(ascii: "\"")
        let at: Int
        if quoted {
            guard let closing = closingQuote(bytes) else { throw .invalidLocalPart("unterminated quoted string") }
            guard closing + 1 < count else { throw .missingAt }
            guard bytes[closing + 1] == UInt8(ascii: "@") else { throw .invalidLocalPart("text after the closing quote") }
            at = closing + 1
        } else {
            guard let found = memchr(base, Int32(UInt8(ascii: "@")), count) else { throw .missingAt }
            at = UnsafeRawPointer(found) - base
        }

        /* RFC 5321 §4.5.3.1 limits, on the text as written. */
        guard at <= 64 else { throw .localPartTooLong(at) }
        guard count - at - 1 <= 255 else { throw .domainTooLong(count - at - 1) }
        guard count + 2 <= 256 else { throw .pathTooLong(count + 2) }

        /* The local part: a dot-atom as is, or a quoted string unquoted. */
        let local = UnsafeRawBufferPointer(rebasing: bytes[..<at])
        let localPart: String
        if quoted {
            localPart = try unquote(local)
        } else {
            if let problem = dotAtomProblem(local) { throw .invalidLocalPart(problem) }
            localPart = String(decoding: local, as: UTF8.self)
        }

        /* The domain: an address literal or labels. */
        let domainBytes = UnsafeRawBufferPointer(rebasing: bytes[(at + 1)...])
        let kind = try domainKind(domainBytes)
        return MailAddress(
            localPart: localPart,
            domain: String(decoding: domainBytes, as: UTF8.self),
            domainKind: kind,
            localPartIsASCII: !localPart.utf8.contains { $0 >= 0x80 }
        )
    }

    /// written - a local part as it goes on the wire: itself when a dot-atom, else a quoted string.
    private static func written(_ localPart: String) -> String {
        if dotAtomProblem(localPart.utf8) == nil { return localPart }
        var text = "\""
        for scalar in localPart.unicodeScalars {
            if scalar == "\"" || scalar == "\\" { text.unicodeScalars.append("\\") }
            text.unicodeScalars.append(scalar)
        }
        text += "\""
        return text
    }

    /// closingQuote - index of the quote that closes the quoted string opening `bytes`, honouring quoted-pairs.
    private static func closingQuote(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var index = 1
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\\"): index += 2
            case UInt8(ascii: "\""): return index
            default: index += 1
            }
        }
        return nil
    }

    /// unquote - the content of a quoted string (quotes included in `quoted`), per qtextSMTP / quoted-pairSMTP.
    ///
    /// Control octets were refused already; what is left to check is that a
    /// backslash escapes printable ASCII only (RFC 6531 adds UTF-8 to qtext,
    /// not to quoted-pair).
    private static func unquote(_ quoted: UnsafeRawBufferPointer) throws(AddressError) -> String {
        var content: [UInt8] = []
        content.reserveCapacity(quoted.count - 2)
        var index = 1
        while index < quoted.count - 1 {
            var byte = quoted[index]
            if byte == UInt8(ascii: "\\") {
                index += 1
                byte = quoted[index]
                guard byte < 0x80 else { throw .invalidLocalPart("quoted-pair of a non-ASCII octet") }
            }
            content.append(byte)
            index += 1
        }
        return String(decoding: content, as: UTF8.self)
    }

    /// dotAtomProblem - nil when `bytes` is a dot-atom (RFC 5322 atext, plus UTF-8 per RFC 6531), else why not.
    private static func dotAtomProblem(_ bytes: some Collection<UInt8>) -> String? {
        guard let first = bytes.first else { return "empty" }
        if first == UInt8(ascii: ".") { return "leading dot" }
        var previousDot = false
        for byte in bytes {
            if byte == UInt8(ascii: ".") {
                if previousDot { return "consecutive dots" }
                previousDot = true
                continue
            }
            previousDot = false
            guard isAtext(byte) else { return "character \(quotedCharacter(byte)) not allowed" }
        }
        return previousDot ? "trailing dot" : nil
    }

    /// isAtext - RFC 5322 atext, with every non-ASCII octet admitted (RFC 6531 UTF8-non-ascii, validated earlier).
    private static func isAtext(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#")...UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"),
             UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "="), UInt8(ascii: "?"),
             UInt8(ascii: "^")...UInt8(ascii: "`"), UInt8(ascii: "{")...UInt8(ascii: "~"):
            return true
        default:
            return byte >= 0x80
        }
    }

    /// quotedCharacter - a printable ASCII octet for an error message, e.g. `' '`.
    private static func quotedCharacter(_ byte: UInt8) -> String {
        "'" + String(Character(Unicode.Scalar(byte))) + "'"
    }

    /// domainKind - validate a domain (labels or address literal) and say which kind it is.
    private static func domainKind(_ bytes: UnsafeRawBufferPointer) throws(AddressError) -> DomainKind {
        guard let first = bytes.first else { throw .invalidDomain("empty") }
        if first == UInt8(ascii: "[") { return try addressLiteral(bytes) }

        /* Labels: LDH (RFC 5321 sub-domain) or U-labels; 1...63 octets, no hyphen at either end. */
        var kind = DomainKind.name
        var labelStart = 0
        for index in 0...bytes.count {
            let byte = index < bytes.count ? bytes[index] : UInt8(ascii: ".")
            if byte == UInt8(ascii: ".") {
                let length = index - labelStart
                if length == 0 { throw .invalidDomain("empty label") }
                if length > 63 { throw .invalidDomain("label of \(length) octets exceeds 63") }
                if bytes[labelStart] == UInt8(ascii: "-") { throw .invalidDomain("label starts with a hyphen") }
                if bytes[index - 1] == UInt8(ascii: "-") { throw .invalidDomain("label ends with a hyphen") }
                labelStart = index + 1
                continue
            }
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
                break
            case 0x80...:
                kind = .internationalizedName
            default:
                throw .invalidDomain("character \(quotedCharacter(byte)) not allowed")
            }
        }
        return kind
    }

    /// addressLiteral - check `[IPv4]` or `[IPv6:addr]` (RFC 5321 §4.1.3) with inet_pton.
    ///
    /// General address literals (`[tag:text]`) name no registered tag and no
    /// route this engine could take, so they are refused.
    private static func addressLiteral(_ bytes: UnsafeRawBufferPointer) throws(AddressError) -> DomainKind {
        let text = String(decoding: bytes, as: UTF8.self)
        guard bytes.count >= 3, bytes[bytes.count - 1] == UInt8(ascii: "]") else { throw .invalidAddressLiteral(text) }
        var inner = UnsafeRawBufferPointer(rebasing: bytes[1..<(bytes.count - 1)])
        var family = AF_INET
        let tag = "ipv6:".utf8
        if inner.count > tag.count, zip(inner.prefix(tag.count), tag).allSatisfy({ $0 | 0x20 == $1 | 0x20 }) {
            family = AF_INET6
            inner = UnsafeRawBufferPointer(rebasing: inner[tag.count...])
        }

        /* inet_pton wants a NUL-terminated string and room for the widest address. */
        let parsed = withUnsafeTemporaryAllocation(byteCount: inner.count + 1, alignment: 1) { text in
            text.copyMemory(from: inner)
            text[inner.count] = 0
            var address = (UInt64(0), UInt64(0))
            return withUnsafeMutableBytes(of: &address) { out in
                inet_pton(family, text.baseAddress!.assumingMemoryBound(to: CChar.self), out.baseAddress) == 1
            }
        }
        guard parsed else { throw .invalidAddressLiteral(text) }
        return family == AF_INET6 ? .ipv6Literal : .ipv4Literal
    }
}

/// The reverse-path of MAIL FROM: a mailbox, or the null path `<>` of bounces (RFC 5321 §4.5.5).
///
/// A value; safe to send between threads.
public enum ReversePath: Hashable, Sendable, CustomStringConvertible {
    /// `<>`: no address to send a bounce to.
    case null
    /// `<local@domain>`.
    case mailbox(MailAddress)

    /// Parse what stood between the angle brackets: nothing for the null path, else a mailbox.
    public init(parsing text: String) throws(AddressError) {
        self = text.isEmpty ? .null : .mailbox(try MailAddress(parsing: text))
    }

    /// parse - the raw octets between the angle brackets of `MAIL FROM:<...>`; none is the null path.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(AddressError) -> ReversePath {
        bytes.isEmpty ? .null : .mailbox(try MailAddress.parse(bytes))
    }

    /// The path with its brackets, as MAIL FROM carries it: `<>` or `<local@domain>`.
    public var description: String {
        switch self {
        case .null: return "<>"
        case .mailbox(let address): return address.path
        }
    }

    /// True when the mailbox needs SMTPUTF8; never for the null path.
    public var requiresSMTPUTF8: Bool {
        switch self {
        case .null: return false
        case .mailbox(let address): return address.requiresSMTPUTF8
        }
    }
}
