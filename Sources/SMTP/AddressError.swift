// AddressError.swift - why a mailbox, path or xtext was refused
//
// Every address that reaches the wire passes through MailAddress, so every
// refusal is one of these cases, raised before a byte of the address is
// written anywhere. A server session answers all of them with 501 and 5.1.3
// (recipient) or 5.1.7 (sender); 501 is also RFC 5321 §4.5.3.1.10's reply for
// "path too long". A client treats them as a permanent failure of that
// recipient: retrying cannot make the address valid.

/// A mailbox, path or xtext that is not acceptable, and why.
///
/// A value; safe to send between threads. The `String` payloads are short
/// fixed phrases (e.g. "consecutive dots"), stable enough for tests and logs.
public enum AddressError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No octets at all.
    case empty
    /// No "@" after the local part.
    case missingAt
    /// The local part as written (quotes included) is over 64 octets; the payload is its length.
    case localPartTooLong(Int)
    /// The domain is over 255 octets; the payload is its length.
    case domainTooLong(Int)
    /// The path `<local@domain>` (brackets included) is over 256 octets; the payload is its length.
    case pathTooLong(Int)
    /// The local part is neither a dot-atom nor a quoted string; the payload says what is wrong.
    case invalidLocalPart(String)
    /// The domain is not a sequence of LDH or U-labels; the payload says what is wrong.
    case invalidDomain(String)
    /// A bracketed address literal is not an IPv4 or "IPv6:" address; the payload is its text.
    case invalidAddressLiteral(String)
    /// A control octet (CR, LF, NUL, ..., DEL) or an angle bracket, anywhere; the payload is the octet.
    case forbiddenCharacter(UInt8)
    /// The octets are not well-formed UTF-8 (RFC 3629).
    case invalidUTF8
    /// Text that is not xtext (RFC 3461 §4); the payload says what is wrong.
    case invalidXText(String)

    public var description: String {
        switch self {
        case .empty: return "empty address"
        case .missingAt: return "no \"@\" in address"
        case .localPartTooLong(let length): return "local part of \(length) octets exceeds 64"
        case .domainTooLong(let length): return "domain of \(length) octets exceeds 255"
        case .pathTooLong(let length): return "path of \(length) octets exceeds 256"
        case .invalidLocalPart(let why): return "invalid local part: \(why)"
        case .invalidDomain(let why): return "invalid domain: \(why)"
        case .invalidAddressLiteral(let text): return "invalid address literal: \(text)"
        case .forbiddenCharacter(let octet):
            let hex = String(octet, radix: 16, uppercase: true)
            return "forbidden character 0x\(octet < 16 ? "0" : "")\(hex) in address"
        case .invalidUTF8: return "address is not valid UTF-8"
        case .invalidXText(let why): return "invalid xtext: \(why)"
        }
    }
}
