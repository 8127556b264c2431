// Base64.swift - strict RFC 4648 base64 for SASL exchanges
//
// AUTH challenges and responses are base64 (RFC 4954 §4). A lenient decoder
// (skipping whitespace or junk, accepting missing padding) would let a
// malformed or hostile peer steer the exchange with bytes we never checked,
// so decoding here is strict: only the alphabet, length a multiple of four,
// padding only at the end, and unused bits zero (canonical encoding).

/// Strict base64 encoding and decoding.
public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// The value of each byte in the alphabet; 0xFF for every other byte.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(value) }
        return table
    }()

    /// encode - the base64 text of `bytes`, padded.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        var output = [UInt8]()
        output.reserveCapacity((input.count + 2) / 3 * 4)
        var index = 0
        while index + 3 <= input.count {
            let group = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
            for shift in stride(from: 18, through: 0, by: -6) { output.append(alphabet[Int(group >> UInt32(shift) & 63)]) }
            index += 3
        }
        let left = input.count - index
        if left > 0 {
            let group = UInt32(input[index]) << 16 | (left == 2 ? UInt32(input[index + 1]) << 8 : 0)
            output.append(alphabet[Int(group >> 18 & 63)])
            output.append(alphabet[Int(group >> 12 & 63)])
            output.append(left == 2 ? alphabet[Int(group >> 6 & 63)] : UInt8(ascii: "="))
            output.append(UInt8(ascii: "="))
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// decode - the bytes of strict base64 `text`; nil when it is not exactly that.
    public static func decode(_ text: some Collection<UInt8>) -> [UInt8]? {
        let input = Array(text)
        guard input.count % 4 == 0 else { return nil }
        var output = [UInt8]()
        output.reserveCapacity(input.count / 4 * 3)
        var index = 0
        while index < input.count {
            let last = index + 4 == input.count
            let a = values[Int(input[index])], b = values[Int(input[index + 1])]
            let cByte = input[index + 2], dByte = input[index + 3]
            guard a != 0xFF, b != 0xFF else { return nil }
            if last && dByte == UInt8(ascii: "=") {
                if cByte == UInt8(ascii: "=") {
                    /* One byte: the low 4 bits of b must be zero. */
                    guard b & 0x0F == 0 else { return nil }
                    output.append(a << 2 | b >> 4)
                } else {
                    let c = values[Int(cByte)]
                    guard c != 0xFF, c & 0x03 == 0 else { return nil }
                    output.append(a << 2 | b >> 4)
                    output.append(b << 4 | c >> 2)
                }
            } else {
                let c = values[Int(cByte)], d = values[Int(dByte)]
                guard c != 0xFF, d != 0xFF else { return nil }
                output.append(a << 2 | b >> 4)
                output.append(b << 4 | c >> 2)
                output.append(c << 6 | d)
            }
            index += 4
        }
        return output
    }

    /// decode - strict base64 in a String.
    public static func decode(_ text: String) -> [UInt8]? {
        decode(text.utf8)
    }
}
