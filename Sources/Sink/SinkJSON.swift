// SinkJSON.swift - JSON text for the record lines and the statistics file, and the wall clock
//
// The record writer emits one line per accepted message, possibly hundreds
// of thousands a second, so it builds the text straight into a reused byte
// array instead of going through Foundation's encoder. Only what the sink
// writes is supported: objects, arrays, strings, integers, decimals,
// booleans and null.

#if canImport(Glibc)
import Glibc
#endif

/// Appends JSON text to a byte array.
///
/// A value used by one thread at a time. The caller writes keys and values
/// in order; `comma` handling is automatic within one object or array.
struct JSONWriter {
    var bytes: [UInt8] = []
    private var needsComma = false          /* a value was written at the current level */

    init(capacity: Int = 512) {
        bytes.reserveCapacity(capacity)
    }

    /// reset - empty the text, keeping the storage.
    mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        needsComma = false
    }

    /* Structure: objects and arrays; the writer puts the commas in. */
    mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    /// key - an object member's name; the value follows.
    mutating func key(_ name: String) {
        separate()
        quoted(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /* Values: each one is separated from the one before by a comma when needed. */
    mutating func string(_ value: String) { separate(); quoted(value); needsComma = true }
    mutating func string(_ value: String?) { if let value { string(value) } else { null() } }
    mutating func integer(_ value: Int) { separate(); bytes.append(contentsOf: String(value).utf8); needsComma = true }
    mutating func bool(_ value: Bool) { separate(); bytes.append(contentsOf: (value ? "true" : "false").utf8); needsComma = true }
    mutating func null() { separate(); bytes.append(contentsOf: "null".utf8); needsComma = true }

    /// decimal - a number with up to three decimals (rates, seconds).
    mutating func decimal(_ value: Double) {
        separate()
        let thousandths = (value * 1000).rounded()
        guard thousandths.isFinite, abs(thousandths) < 9e15 else {
            bytes.append(contentsOf: "0".utf8)
            needsComma = true
            return
        }
        let whole = Int(thousandths)
        if whole < 0 { bytes.append(UInt8(ascii: "-")) }
        bytes.append(contentsOf: String(abs(whole) / 1000).utf8)
        bytes.append(UInt8(ascii: "."))
        digits(abs(whole) % 1000, width: 3)
        needsComma = true
    }

    /// newline - end a JSON line.
    mutating func newline() {
        bytes.append(0x0A)
        needsComma = false
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    /// quoted - a string literal: quotes, backslashes and control characters escaped, UTF-8 kept.
    private mutating func quoted(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20, 0x7F:
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(hexDigit(byte >> 4))
                bytes.append(hexDigit(byte & 0xF))
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// digits - `value` in decimal, zero-padded to `width`.
    mutating func digits(_ value: Int, width: Int) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
            rest %= divisor
            divisor /= 10
        }
    }

    /// timestamp - the wall clock now as an RFC 3339 string with milliseconds, in UTC.
    mutating func timestamp() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        separate()
        bytes.append(UInt8(ascii: "\""))
        digits(Int(parts.tm_year) + 1900, width: 4)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, width: 2)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), width: 2)
        bytes.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), width: 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), width: 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), width: 2)
        bytes.append(UInt8(ascii: "."))
        digits(Int(now.tv_nsec) / 1_000_000, width: 3)
        bytes.append(contentsOf: [UInt8(ascii: "Z"), UInt8(ascii: "\"")])
        needsComma = true
    }
}

/// hexDigit - one lowercase hexadecimal digit.
@inline(__always)
func hexDigit(_ value: UInt8) -> UInt8 {
    value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
}
