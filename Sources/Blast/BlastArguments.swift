// BlastArguments.swift - the textual forms the command line takes: durations, rates, targets, AUTH
//
// The front end stays thin: it hands strings here and gets values or an
// error message written for the person who typed them. Kept in the Blast
// module so the parsing is tested with the rest of the load generator.

public import EventCore
import SMTP

/// Parsers for `carrier blast` option values.
public enum BlastArguments {
    /// duration - `60s`, `2m`, `1h`, `500ms` or a bare number of seconds, in nanoseconds.
    public static func duration(_ text: String) throws(BlastError) -> UInt64 {
        let units: [(suffix: String, nanoseconds: Double)] = [
            ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
        ]
        var number = Substring(text.trimmed)
        var scale = 1e9
        for unit in units where number.hasSuffix(unit.suffix) {
            number = number.dropLast(unit.suffix.count)
            scale = unit.nanoseconds
            break
        }
        guard let value = Double(number), value > 0, value.isFinite, value * scale < 1e18 else {
            throw .invalidConfiguration("\(text) is not a duration: write 60s, 2m, 1h or 500ms")
        }
        return UInt64(value * scale)
    }

    /// rate - `500/s`, `30000/m`, `100000/h` or a bare number per second, in messages per second.
    public static func rate(_ text: String) throws(BlastError) -> Double {
        let parts = text.trimmed.split(separator: "/", omittingEmptySubsequences: false)
        let per: Double
        switch parts.count == 2 ? String(parts[1]) : "s" {
        case "s", "sec": per = 1
        case "m", "min": per = 60
        case "h": per = 3600
        default: throw .invalidConfiguration("\(text) is not a rate: write 500/s, 3000/m or 100000/h")
        }
        guard parts.count <= 2, let value = Double(parts[0]), value > 0, value.isFinite else {
            throw .invalidConfiguration("\(text) is not a rate: write 500/s, 3000/m or 100000/h")
        }
        return value / per
    }

    /// target - `HOST:PORT`, `[IPv6]:PORT`, or a bare host with `defaultPort`.
    ///
    /// An IP literal becomes `.address`; anything else a `.host` resolved later.
    public static func target(_ text: String, defaultPort: UInt16) throws(BlastError) -> BlastTarget {
        let text = text.trimmed
        if let address = SocketAddress(text, defaultPort: defaultPort) { return .address(address) }
        var host = Substring(text)
        var port = defaultPort
        if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            guard let parsed = UInt16(host[host.index(after: colon)...]), parsed > 0 else {
                throw .invalidConfiguration("\(text): the port must be a number from 1 to 65535")
            }
            port = parsed
            host = host[..<colon]
        }
        let valid = !host.isEmpty && host.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7a) || byte == 0x2d || byte == 0x2e
        }
        guard valid else { throw .invalidConfiguration("\(text) is not HOST:PORT (a name, an IPv4 address or [IPv6])") }
        return .host(String(host), port: port)
    }

    /// authentication - `MECH:user:pass`; the password may itself hold colons.
    ///
    /// Mechanisms: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256, XOAUTH2 (the third part is the token).
    public static func authentication(_ text: String) throws(BlastError) -> BlastAuthentication {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty else {
            throw .invalidConfiguration("--auth wants MECH:user:pass, e.g. PLAIN:alice:secret")
        }
        guard let mechanism = SASLMechanism(rawValue: parts[0].uppercased()) else {
            let names = SASLMechanism.allCases.map(\.rawValue).joined(separator: ", ")
            throw .invalidConfiguration("--auth mechanism \(parts[0]) is not one of \(names)")
        }
        let user = String(parts[1])
        let secret = String(parts[2])
        let credentials = mechanism == .xoauth2
            ? SMTPCredentials(username: user, secret: .oauth2Token(secret))
            : SMTPCredentials.password(user, secret)
        return BlastAuthentication(mechanism: mechanism, credentials: credentials)
    }

    /// source - a local IP address to connect from.
    public static func source(_ text: String) throws(BlastError) -> IPAddress {
        var text = text.trimmed
        if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        guard let address = IPAddress(text) else {
            throw .invalidConfiguration("--source \(text) is not an IP address")
        }
        return address
    }
}

extension String {
    /// The string without leading and trailing spaces and tabs.
    var trimmed: String {
        let bytes = utf8.drop { $0 == 0x20 || $0 == 0x09 }
        let end = bytes.lastIndex { $0 != 0x20 && $0 != 0x09 }
        guard let end else { return "" }
        return String(self[bytes.startIndex...end])
    }
}
