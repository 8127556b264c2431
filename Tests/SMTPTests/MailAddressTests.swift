// MailAddressTests.swift - mailboxes: valid forms, every refusal with its exact error, limits, injection

import SMTP
import Testing

/// A label-shaped domain of exactly `length` octets: labels of at most 63 letters joined by dots.
private func domain(length: Int) -> String {
    var labels: [String] = []
    var left = length
    while left > 64 {
        labels.append(String(repeating: "a", count: 63))
        left -= 64
    }
    if left == 64 {
        labels.append(String(repeating: "b", count: 62))
        left = 1
    }
    labels.append(String(repeating: "c", count: left))
    return labels.joined(separator: ".")
}

/// parseBytes - MailAddress.parse over raw octets (for inputs a String cannot hold).
private func parseBytes(_ bytes: [UInt8]) throws(AddressError) -> MailAddress {
    let result = bytes.withUnsafeBytes { raw in Result { () throws(AddressError) in try MailAddress.parse(raw) } }
    return try result.get()
}

@Suite("Mail addresses")
struct MailAddressTests {
    /// input, local part (unquoted), domain, canonical form, needs SMTPUTF8, domain kind.
    static let valid: [(String, String, String, String, Bool, MailAddress.DomainKind)] = [
        ("user@example.com", "user", "example.com", "user@example.com", false, .name),
        ("first.last+tag@sub.example.co.uk", "first.last+tag", "sub.example.co.uk", "first.last+tag@sub.example.co.uk", false, .name),
        ("!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~", "example.com", "!#$%&'*+-/=?^_`{|}~@example.com", false, .name),
        ("postmaster@localhost", "postmaster", "localhost", "postmaster@localhost", false, .name),
        ("User@Example.COM", "User", "Example.COM", "User@Example.COM", false, .name),
        ("a@b-c.d1", "a", "b-c.d1", "a@b-c.d1", false, .name),
        ("a@xn--mnchen-3ya.de", "a", "xn--mnchen-3ya.de", "a@xn--mnchen-3ya.de", false, .name),
        ("\"john doe\"@example.com", "john doe", "example.com", "\"john doe\"@example.com", false, .name),
        ("\"abc\"@example.com", "abc", "example.com", "abc@example.com", false, .name),
        ("\"a\\\"b\\\\c\"@example.com", "a\"b\\c", "example.com", "\"a\\\"b\\\\c\"@example.com", false, .name),
        ("\"\\a\\b\"@example.com", "ab", "example.com", "ab@example.com", false, .name),
        ("\"\"@example.com", "", "example.com", "\"\"@example.com", false, .name),
        ("\"a..b\"@example.com", "a..b", "example.com", "\"a..b\"@example.com", false, .name),
        ("\".a\"@example.com", ".a", "example.com", "\".a\"@example.com", false, .name),
        ("\"quoted@at\"@example.com", "quoted@at", "example.com", "\"quoted@at\"@example.com", false, .name),
        ("\"(comment) [x]; y:z,\"@example.com", "(comment) [x]; y:z,", "example.com", "\"(comment) [x]; y:z,\"@example.com", false, .name),
        ("user@[192.0.2.1]", "user", "[192.0.2.1]", "user@[192.0.2.1]", false, .ipv4Literal),
        ("user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]", false, .ipv6Literal),
        ("user@[ipv6:::1]", "user", "[ipv6:::1]", "user@[ipv6:::1]", false, .ipv6Literal),
        ("user@[IPv6:::ffff:192.0.2.1]", "user", "[IPv6:::ffff:192.0.2.1]", "user@[IPv6:::ffff:192.0.2.1]", false, .ipv6Literal),
        ("josé@example.com", "josé", "example.com", "josé@example.com", true, .name),
        ("user@münchen.de", "user", "münchen.de", "user@münchen.de", true, .internationalizedName),
        ("用户@例子.广告", "用户", "例子.广告", "用户@例子.广告", true, .internationalizedName),
        ("\"δοκιμή test\"@παράδειγμα.δοκιμή", "δοκιμή test", "παράδειγμα.δοκιμή", "\"δοκιμή test\"@παράδειγμα.δοκιμή", true, .internationalizedName),
    ]

    @Test(arguments: valid)
    func parsesValid(_ input: String, _ local: String, _ domain: String, _ canonical: String, _ utf8: Bool, _ kind: MailAddress.DomainKind) throws {
        let address = try MailAddress(parsing: input)
        #expect(address.localPart == local)
        #expect(address.domain == domain)
        #expect(address.description == canonical)
        #expect(address.path == "<" + canonical + ">")
        #expect(address.requiresSMTPUTF8 == utf8)
        #expect(address.domainKind == kind)
        #expect(address.isAddressLiteral == (kind == .ipv4Literal || kind == .ipv6Literal))

        /* The canonical form parses back to the same value, and the parts rebuild it. */
        #expect(try MailAddress(parsing: canonical) == address)
        #expect(try MailAddress(localPart: local, domain: domain) == address)
        #expect(try parseBytes(Array(input.utf8)) == address)
    }

    /// input, the exact error.
    static let invalid: [(String, AddressError)] = [
        ("", .empty),
        ("userexample.com", .missingAt),
        ("\"user\"", .missingAt),
        ("@example.com", .invalidLocalPart("empty")),
        ("user@", .invalidDomain("empty")),
        (".user@example.com", .invalidLocalPart("leading dot")),
        ("user.@example.com", .invalidLocalPart("trailing dot")),
        ("us..er@example.com", .invalidLocalPart("consecutive dots")),
        ("us er@example.com", .invalidLocalPart("character ' ' not allowed")),
        ("a\"b@example.com", .invalidLocalPart("character '\"' not allowed")),
        ("a\\b@example.com", .invalidLocalPart("character '\\' not allowed")),
        ("a(b)@example.com", .invalidLocalPart("character '(' not allowed")),
        ("a,b@example.com", .invalidLocalPart("character ',' not allowed")),
        ("\"abc@example.com", .invalidLocalPart("unterminated quoted string")),
        ("\"abc\\\"@example.com", .invalidLocalPart("unterminated quoted string")),
        ("\"abc\"x@example.com", .invalidLocalPart("text after the closing quote")),
        ("\"a\"\"b\"@example.com", .invalidLocalPart("text after the closing quote")),
        ("\"\\é\"@example.com", .invalidLocalPart("quoted-pair of a non-ASCII octet")),
        ("user@.example.com", .invalidDomain("empty label")),
        ("user@example..com", .invalidDomain("empty label")),
        ("user@example.com.", .invalidDomain("empty label")),
        ("user@-example.com", .invalidDomain("label starts with a hyphen")),
        ("user@example-.com", .invalidDomain("label ends with a hyphen")),
        ("user@exa_mple.com", .invalidDomain("character '_' not allowed")),
        ("user@exa mple.com", .invalidDomain("character ' ' not allowed")),
        ("a@b@c", .invalidDomain("character '@' not allowed")),
        ("user@" + String(repeating: "a", count: 64) + ".com", .invalidDomain("label of 64 octets exceeds 63")),
        ("user@[192.0.2.256]", .invalidAddressLiteral("[192.0.2.256]")),
        ("user@[192.0.2]", .invalidAddressLiteral("[192.0.2]")),
        ("user@[192.0.2.1", .invalidAddressLiteral("[192.0.2.1")),
        ("user@[]", .invalidAddressLiteral("[]")),
        ("user@[IPv6:]", .invalidAddressLiteral("[IPv6:]")),
        ("user@[IPv6:2001:db8::g]", .invalidAddressLiteral("[IPv6:2001:db8::g]")),
        ("user@[IPv6:192.0.2.1]", .invalidAddressLiteral("[IPv6:192.0.2.1]")),
        ("user@[2001:db8::1]", .invalidAddressLiteral("[2001:db8::1]")),
        ("user@[x-tag:anything]", .invalidAddressLiteral("[x-tag:anything]")),
        ("user@[192.0.2.1]x", .invalidAddressLiteral("[192.0.2.1]x")),

        /* Injection: each attempt is refused at its first forbidden octet. */
        ("a@b>\r\nRCPT TO:<c@d", .forbiddenCharacter(UInt8(ascii: ">"))),
        ("a@b\r\nRCPT TO:<c@d>", .forbiddenCharacter(0x0D)),
        ("a@b\nDATA", .forbiddenCharacter(0x0A)),
        ("a\u{0}@b", .forbiddenCharacter(0x00)),
        ("<a@b>", .forbiddenCharacter(UInt8(ascii: "<"))),
        ("\"a<b\"@example.com", .forbiddenCharacter(UInt8(ascii: "<"))),
        ("\"a>b\"@example.com", .forbiddenCharacter(UInt8(ascii: ">"))),
        ("\"a\tb\"@example.com", .forbiddenCharacter(0x09)),
        ("\"a\\\r\nb\"@example.com", .forbiddenCharacter(0x0D)),
        ("a@example.com\u{7F}", .forbiddenCharacter(0x7F)),
        ("a@exam\u{1B}ple.com", .forbiddenCharacter(0x1B)),
    ]

    @Test(arguments: invalid)
    func refusesInvalid(_ input: String, _ error: AddressError) {
        #expect(throws: error) { try MailAddress(parsing: input) }
        #expect(throws: error) { try parseBytes(Array(input.utf8)) }
    }

    @Test func refusesInvalidUTF8() {
        let inputs: [[UInt8]] = [
            [0x61, 0xC3, 0x40, 0x62],                 /* truncated two-octet sequence */
            [0x61, 0xC0, 0xAF, 0x40, 0x62],           /* overlong "/" */
            [0x61, 0x40, 0xED, 0xA0, 0x80],           /* UTF-16 surrogate */
            [0x61, 0x40, 0xF4, 0x90, 0x80, 0x80],     /* beyond U+10FFFF */
            [0xFF, 0x40, 0x62],
        ]
        for bytes in inputs {
            #expect(throws: AddressError.invalidUTF8) { try parseBytes(bytes) }
        }
    }

    @Test func localPartLimitIs64Octets() throws {
        let at64 = String(repeating: "l", count: 64)
        #expect(try MailAddress(parsing: at64 + "@example.com").localPart == at64)
        #expect(throws: AddressError.localPartTooLong(65)) { try MailAddress(parsing: at64 + "l@example.com") }

        /* The quotes count: the limit is on the local part as written. */
        let quoted62 = "\"" + String(repeating: "q", count: 61) + " \""
        #expect(try MailAddress(parsing: quoted62 + "@example.com").localPart.utf8.count == 62)
        #expect(throws: AddressError.localPartTooLong(65)) { try MailAddress(parsing: "\"" + String(repeating: "q", count: 62) + " \"@example.com") }

        /* UTF-8 counts in octets: 32 two-octet characters fit, 33 do not. */
        #expect(try MailAddress(parsing: String(repeating: "é", count: 32) + "@example.com").requiresSMTPUTF8)
        #expect(throws: AddressError.localPartTooLong(66)) { try MailAddress(parsing: String(repeating: "é", count: 33) + "@example.com") }
    }

    @Test func domainLimitIs255Octets() {
        #expect(domain(length: 255).utf8.count == 255)
        #expect(domain(length: 256).utf8.count == 256)

        /* A 255-octet domain is within the domain limit, so the path limit is what refuses it. */
        #expect(throws: AddressError.pathTooLong(259)) { try MailAddress(parsing: "a@" + domain(length: 255)) }
        #expect(throws: AddressError.domainTooLong(256)) { try MailAddress(parsing: "a@" + domain(length: 256)) }
    }

    @Test func pathLimitIs256OctetsWithBrackets() throws {
        let fits = try MailAddress(parsing: String(repeating: "l", count: 64) + "@" + domain(length: 189))
        #expect(fits.path.utf8.count == 256)
        #expect(throws: AddressError.pathTooLong(257)) {
            try MailAddress(parsing: String(repeating: "l", count: 64) + "@" + domain(length: 190))
        }
    }

    @Test func quotedAndBareFormsAreOneValue() throws {
        #expect(try MailAddress(parsing: "\"abc\"@x.test") == MailAddress(parsing: "abc@x.test"))
        #expect(try MailAddress(parsing: "abc@x.test") != MailAddress(parsing: "abc@X.test"))
        var seen = Set<MailAddress>()
        seen.insert(try MailAddress(parsing: "\"abc\"@x.test"))
        seen.insert(try MailAddress(parsing: "abc@x.test"))
        #expect(seen.count == 1)
    }

    @Test func partsThatCannotFormAnAddress() {
        #expect(throws: AddressError.forbiddenCharacter(0x0A)) { try MailAddress(localPart: "a\nb", domain: "x.test") }
        #expect(throws: AddressError.forbiddenCharacter(UInt8(ascii: ">"))) { try MailAddress(localPart: "a>b", domain: "x.test") }
        #expect(throws: AddressError.invalidDomain("empty label")) { try MailAddress(localPart: "a", domain: "x..test") }
    }

    @Test func reversePath() throws {
        #expect(try ReversePath(parsing: "") == .null)
        #expect(ReversePath.null.description == "<>")
        #expect(!ReversePath.null.requiresSMTPUTF8)
        let path = try ReversePath(parsing: "e=mc2@example.com")
        #expect(path == .mailbox(try MailAddress(parsing: "e=mc2@example.com")))
        #expect(path.description == "<e=mc2@example.com>")
        #expect(try ReversePath(parsing: "josé@example.com").requiresSMTPUTF8)
        let empty: [UInt8] = []
        #expect(try empty.withUnsafeBytes { try ReversePath.parse($0) } == .null)
        #expect(throws: AddressError.forbiddenCharacter(0x0D)) { try ReversePath(parsing: "a@b\r\n") }
    }

    @Test func errorsDescribeThemselves() {
        #expect(AddressError.forbiddenCharacter(0x0D).description == "forbidden character 0x0D in address")
        #expect(AddressError.localPartTooLong(65).description == "local part of 65 octets exceeds 64")
        #expect(AddressError.invalidDomain("empty label").description == "invalid domain: empty label")
    }
}
