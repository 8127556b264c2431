// TOML.swift - the subset of TOML that Carrier's configuration files use
//
// The local package set has no TOML library that resolves offline (TOMLKit needs
// swift-checkit, which is not there), so this reads the part of TOML 1.0 the shaping
// and engine files need: comments, [tables] and [[arrays of tables]] with dotted and
// quoted names, key = value with basic and literal strings, integers (with _), floats,
// booleans and one-line arrays. Anything else is an error naming the line, never a guess.

/// A TOML value of the supported subset.
public enum TOMLValue: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    case array([TOMLValue])

    public var description: String {
        switch self {
        case .string(let text): "\"\(text)\""
        case .integer(let number): "\(number)"
        case .float(let number): "\(number)"
        case .boolean(let flag): "\(flag)"
        case .array(let items): "[" + items.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// One `key = value` line: the table it is in (each `[[array]]` entry numbered), its key,
/// value and line number.
public struct TOMLEntry: Sendable, Equatable {
    public var table: [String]
    public var key: String
    public var value: TOMLValue
    public var line: Int

    public init(table: [String], key: String, value: TOMLValue, line: Int) {
        self.table = table
        self.key = key
        self.value = value
        self.line = line
    }
}

/// A configuration file that cannot be read, with the line (1-based; 0 for the file).
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

/// parseTOML - the entries of a document, in order.
public func parseTOML(_ text: String, file: String = "<config>") throws(ConfigurationError) -> [TOMLEntry] {
    var entries: [TOMLEntry] = []
    var table: [String] = []
    var arrayCounts: [[String]: Int] = [:]
    var seen: Set<[String]> = []
    for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = number + 1
        var scanner = TOMLScanner(Array(rawLine.utf8), file: file, line: line)
        scanner.skipSpace()
        if scanner.atEndOrComment { continue }
        if scanner.peek == UInt8(ascii: "[") {
            scanner.advance()
            let isArray = scanner.peek == UInt8(ascii: "[")
            if isArray { scanner.advance() }
            var path = try scanner.keyPath()
            try scanner.expect("]")
            if isArray {
                try scanner.expect("]")
                let index = arrayCounts[path, default: 0]
                arrayCounts[path] = index + 1
                path.append(String(index))
            } else if !seen.insert(path).inserted {
                throw ConfigurationError(file: file, line: line, "table [\(path.joined(separator: "."))] is defined twice")
            }
            table = path
            scanner.skipSpace()
            guard scanner.atEndOrComment else { throw scanner.error("unexpected text after the table name") }
            continue
        }
        let keyPath = try scanner.keyPath()
        scanner.skipSpace()
        try scanner.expect("=")
        scanner.skipSpace()
        let value = try scanner.value()
        scanner.skipSpace()
        guard scanner.atEndOrComment else { throw scanner.error("unexpected text after the value") }
        let fullTable = table + keyPath.dropLast()
        let key = keyPath.last!
        if entries.contains(where: { $0.table == fullTable && $0.key == key }) {
            throw ConfigurationError(file: file, line: line, "key \(key) is set twice in [\(fullTable.joined(separator: "."))]")
        }
        entries.append(TOMLEntry(table: fullTable, key: key, value: value, line: line))
    }
    return entries
}

/// Reads one line.
struct TOMLScanner {
    let bytes: [UInt8]
    let file: String
    let line: Int
    var position = 0

    init(_ bytes: [UInt8], file: String, line: Int) {
        var bytes = bytes
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        self.bytes = bytes
        self.file = file
        self.line = line
    }

    var peek: UInt8? { position < bytes.count ? bytes[position] : nil }
    var atEndOrComment: Bool { peek == nil || peek == UInt8(ascii: "#") }
    mutating func advance() { position += 1 }

    func error(_ message: String) -> ConfigurationError { ConfigurationError(file: file, line: line, message) }

    mutating func skipSpace() {
        while let byte = peek, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { advance() }
    }

    mutating func expect(_ character: Character) throws(ConfigurationError) {
        skipSpace()
        guard let byte = peek, byte == character.asciiValue else { throw error("expected \"\(character)\"") }
        advance()
    }

    /// keyPath - a dotted key: bare (A-Z a-z 0-9 _ -) or quoted parts.
    mutating func keyPath() throws(ConfigurationError) -> [String] {
        var parts: [String] = []
        while true {
            skipSpace()
            if peek == UInt8(ascii: "\"") || peek == UInt8(ascii: "'") {
                parts.append(try string())
            } else {
                let start = position
                while let byte = peek, byte.isBareKey { advance() }
                guard position > start else { throw error("expected a key") }
                parts.append(String(decoding: bytes[start..<position], as: UTF8.self))
            }
            skipSpace()
            guard peek == UInt8(ascii: ".") else { return parts }
            advance()
        }
    }

    mutating func value() throws(ConfigurationError) -> TOMLValue {
        guard let byte = peek else { throw error("expected a value") }
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            return .string(try string())
        case UInt8(ascii: "["):
            advance()
            var items: [TOMLValue] = []
            while true {
                skipSpace()
                if peek == UInt8(ascii: "]") { advance(); return .array(items) }
                items.append(try value())
                skipSpace()
                if peek == UInt8(ascii: ",") { advance(); continue }
                guard peek == UInt8(ascii: "]") else { throw error("expected \",\" or \"]\" in the array (arrays must fit on one line)") }
            }
        default:
            let start = position
            while let byte = peek, byte != UInt8(ascii: " "), byte != UInt8(ascii: "\t"), byte != UInt8(ascii: ","),
                  byte != UInt8(ascii: "]"), byte != UInt8(ascii: "#") { advance() }
            let word = String(decoding: bytes[start..<position], as: UTF8.self)
            if word == "true" { return .boolean(true) }
            if word == "false" { return .boolean(false) }
            let digits = word.replacingUnderscores()
            if let number = Int(digits) { return .integer(number) }
            if digits.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let number = Double(digits) { return .float(number) }
            throw error(word.isEmpty ? "expected a value" : "not a value this file format reads: \(word)")
        }
    }

    /// string - a basic ("...", with \" \\ \n \t \r \uXXXX escapes) or literal ('...') string.
    mutating func string() throws(ConfigurationError) -> String {
        let quote = peek!
        advance()
        var out: [UInt8] = []
        while let byte = peek {
            advance()
            if byte == quote { return String(decoding: out, as: UTF8.self) }
            guard quote == UInt8(ascii: "\""), byte == UInt8(ascii: "\\") else { out.append(byte); continue }
            guard let escaped = peek else { break }
            advance()
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(escaped)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "u"):
                guard position + 4 <= bytes.count, let code = UInt32(String(decoding: bytes[position..<(position + 4)], as: UTF8.self), radix: 16),
                      let scalar = Unicode.Scalar(code) else { throw error("bad \\u escape") }
                position += 4
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: throw error("unknown escape \\\(Character(Unicode.Scalar(escaped)))")
            }
        }
        throw error("unterminated string")
    }
}

extension UInt8 {
    fileprivate var isBareKey: Bool {
        (self >= UInt8(ascii: "a") && self <= UInt8(ascii: "z")) || (self >= UInt8(ascii: "A") && self <= UInt8(ascii: "Z"))
            || (self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9")) || self == UInt8(ascii: "_") || self == UInt8(ascii: "-")
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
