// NetworkPrefix.swift - an address block such as 127.0.0.0/8 or ::1/128, for "trusted networks"
//
// The SMTP listener lets clients from its configured networks submit without
// AUTH (Postfix's mynetworks). A prefix is parsed from CIDR text and tested
// against a client's address; IPv4-mapped IPv6 clients (::ffff:a.b.c.d) are
// tested as the IPv4 address they carry.

public import EventCore

/// An IP address block in CIDR notation.
///
/// A value; safe to send between threads.
public struct NetworkPrefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    /// The loopback blocks, 127.0.0.0/8 and ::1/128: the default trusted networks.
    public static let loopback: [NetworkPrefix] = [NetworkPrefix("127.0.0.0/8")!, NetworkPrefix("::1/128")!]

    /// Parse `10.0.0.0/8`, `::1/128`, or a bare address (a block of one); nil if malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        let maximum = address.isIPv6 ? 128 : 32
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...maximum).contains(length), !parts[1].hasPrefix("+") else { return nil }
            self.length = length
        } else {
            length = maximum
        }
        self.address = address
    }

    /// contains - true when `candidate` lies in this block.
    public func contains(_ candidate: IPAddress) -> Bool {
        switch (address, NetworkPrefix.unmapped(candidate)) {
        case (.v4(let block), .v4(let other)):
            guard length > 0 else { return true }
            let mask = UInt32.max << (32 - UInt32(length))
            return UInt32(bigEndian: block) & mask == UInt32(bigEndian: other) & mask
        case (.v6(let blockHigh, let blockLow), .v6(let high, let low)):
            let (mh, ml) = NetworkPrefix.mask6(length)
            return UInt64(bigEndian: blockHigh) & mh == UInt64(bigEndian: high) & mh
                && UInt64(bigEndian: blockLow) & ml == UInt64(bigEndian: low) & ml
        default:
            return false
        }
    }

    public var description: String { "\(address)/\(length)" }

    /// True when `candidate` is a loopback address (127/8, ::1, or ::ffff:127.x.x.x).
    public static func isLoopback(_ candidate: IPAddress) -> Bool {
        loopback.contains { $0.contains(candidate) }
    }

    /// mask6 - the two 64-bit halves of an IPv6 netmask of `length` bits, in host order.
    private static func mask6(_ length: Int) -> (UInt64, UInt64) {
        let high: UInt64 = length >= 64 ? .max : (length == 0 ? 0 : UInt64.max << UInt64(64 - length))
        let low: UInt64 = length <= 64 ? 0 : (length == 128 ? .max : UInt64.max << UInt64(128 - length))
        return (high, low)
    }

    /// unmapped - ::ffff:a.b.c.d as the IPv4 address a.b.c.d; anything else as it is.
    static func unmapped(_ candidate: IPAddress) -> IPAddress {
        guard case .v6(let high, let low) = candidate, high == 0 else { return candidate }
        let word = UInt64(bigEndian: low)
        guard word >> 32 == 0xFFFF else { return candidate }
        return .v4(UInt32(truncatingIfNeeded: word).bigEndian)
    }
}
