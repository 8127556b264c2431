// XText.swift - RFC 3461 §4 xtext, the encoding of ESMTP parameter values
//
// `AUTH=` (RFC 4954 §5), `ENVID=` and `ORCPT=` (RFC 3461) carry addresses and
// identifiers inside a command line, where "=" separates keyword from value
// and space separates parameters. xtext keeps such values on one token: every
// octet outside "!"..."~", and "+" and "=" themselves, becomes "+" and two
// uppercase hex digits. Decoding is strict (uppercase hex only, as the ABNF
// says, and no raw octet outside xchar): the decoded value is trusted by the
// server session, so a sloppy decoder would let a peer smuggle octets we
// never checked.

/// Encoding and decoding of xtext.
public enum XText {
    private static let hexDigits: [UInt8] = Array("0123456789ABCDEF".utf8)

    /// encode - the xtext form of `text`'s UTF-8 octets, e.g. `e=mc2@example.com` → `e+3Dmc2@example.com`.
    public static func encode(_ text: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if byte >= UInt8(ascii: "!") && byte <= UInt8(ascii: "~") && byte != UInt8(ascii: "+") && byte != UInt8(ascii: "=") {
                output.append(byte)
            } else {
                output.append(UInt8(ascii: "+"))
                output.append(hexDigits[Int(byte >> 4)])
                output.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// decode - the text an xtext stands for; throws on anything but xchar and "+XX", or on invalid UTF-8.
    public static func decode(_ text: String) throws(AddressError) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw .invalidXText("\"+\" not followed by two uppercase hex digits")
                }
                output.append(high << 4 | low)
            case UInt8(ascii: "="):
                throw .invalidXText("raw \"=\"")
            case UInt8(ascii: "!")...UInt8(ascii: "~"):
                output.append(byte)
            default:
                throw .invalidXText("octet outside \"!\"...\"~\"")
            }
        }
        guard let decoded = String(validating: output, as: UTF8.self) else { throw .invalidUTF8 }
        return decoded
    }

    /// hexValue - the value of an uppercase hex digit, nil for anything else.
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
