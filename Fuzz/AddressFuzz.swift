// AddressFuzz.swift - libFuzzer harness for MailAddress.parse and XText (Sources/SMTP/MailAddress.swift, XText.swift)
//
// An address is parsed from one buffer, not a stream, so there is no
// chunking here. What must hold for any accepted address: its written form
// is at most 254 octets with no control octet or angle bracket (it goes
// into command lines as is), and parsing that form again gives the same
// address. For xtext: decoding what encoding made gives the text back.

import SMTP

@_cdecl("LLVMFuzzerTestOneInput")
public func addressFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)

    /* Addresses: validity of what is accepted, and a stable round trip. */
    if let address = try? MailAddress.parse(input) {
        let written = address.description
        require(written.utf8.count <= 254 && address.path.utf8.count <= 256, "too long: \(written)")
        require(!written.utf8.contains { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "<") || $0 == UInt8(ascii: ">") },
                "unsafe octet in \(written)")
        let again = try? MailAddress(parsing: written)
        require(again == address, "round trip of \(written) gave \(String(describing: again))")
        require(again?.description == written, "written form of \(written) changed")
    }
    if let path = try? ReversePath.parse(input) {
        require(size == 0 ? path == .null : path != .null, "null path from \(size) octets")
    }

    /* xtext: decode(encode(text)) is the text; decoding accepts only what encoding could make. */
    let text = String(decoding: input, as: UTF8.self)
    let encoded = XText.encode(text)
    require(encoded.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "=") }, "encoded \(encoded)")
    require((try? XText.decode(encoded)) == text, "xtext round trip of \(text)")
    if let decoded = try? XText.decode(text) {
        require((try? XText.decode(XText.encode(decoded))) == decoded, "xtext re-decoding of \(text)")
    }
    return 0
}
