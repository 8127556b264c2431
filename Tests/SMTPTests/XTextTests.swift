// XTextTests.swift - RFC 3461 xtext: golden encodings, strict decoding, round trips

import SMTP
import Testing

@Suite("xtext")
struct XTextTests {
    /// text, its xtext.
    static let golden: [(String, String)] = [
        ("e=mc2@example.com", "e+3Dmc2@example.com"),
        ("", ""),
        ("plain@example.com", "plain@example.com"),
        ("a+b", "a+2Bb"),
        ("a b", "a+20b"),
        ("tab\there", "tab+09here"),
        ("\r\n", "+0D+0A"),
        ("josé", "jos+C3+A9"),
        ("~!", "~!"),
        ("\u{7F}", "+7F"),
    ]

    @Test(arguments: golden)
    func encodesAndDecodes(_ text: String, _ xtext: String) throws {
        #expect(XText.encode(text) == xtext)
        #expect(try XText.decode(xtext) == text)
    }

    /// Every printable ASCII character but "+" and "=" stands for itself.
    @Test func xcharIsUnchanged() {
        let xchars = String(decoding: (UInt8(ascii: "!")...UInt8(ascii: "~")).filter { $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "=") }, as: UTF8.self)
        #expect(XText.encode(xchars) == xchars)
    }

    /// Every ASCII octet and a few multi-octet characters round-trip; the encoding holds only xchar and "+XX".
    @Test func roundTripsEveryASCIIOctetAndSomeUTF8() throws {
        var text = String(decoding: (0...127).map { UInt8($0) }, as: UTF8.self)
        text += "ñ€😀"
        let encoded = XText.encode(text)
        #expect(encoded.utf8.allSatisfy { $0 >= UInt8(ascii: "!") && $0 <= UInt8(ascii: "~") && $0 != UInt8(ascii: "=") })
        #expect(try XText.decode(encoded) == text)
    }

    /// input, exact error.
    static let invalid: [(String, AddressError)] = [
        ("a+2b", .invalidXText("\"+\" not followed by two uppercase hex digits")),
        ("a+2", .invalidXText("\"+\" not followed by two uppercase hex digits")),
        ("a+", .invalidXText("\"+\" not followed by two uppercase hex digits")),
        ("+G0", .invalidXText("\"+\" not followed by two uppercase hex digits")),
        ("a=b", .invalidXText("raw \"=\"")),
        ("a b", .invalidXText("octet outside \"!\"...\"~\"")),
        ("a\r\nb", .invalidXText("octet outside \"!\"...\"~\"")),
        ("jos\u{E9}", .invalidXText("octet outside \"!\"...\"~\"")),
        ("+C3", .invalidUTF8),
        ("+FF+FE", .invalidUTF8),
    ]

    @Test(arguments: invalid)
    func refusesInvalid(_ input: String, _ error: AddressError) {
        #expect(throws: error) { try XText.decode(input) }
    }
}
