// SocketAddress.swift - IPv4/IPv6 socket addresses and IP addresses

import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// An IP address, version 4 or 6, kept in network byte order.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt32)                                   /* network byte order */
    case v6(UInt64, UInt64)                           /* the 16 bytes, in memory order */

    /// Parse a textual address (`127.0.0.1`, `::1`); nil if it is not one.
    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(v4.s_addr)
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self = withUnsafeBytes(of: v6) { .v6($0.load(as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt64.self)) }
        } else {
            return nil
        }
    }

    /// The address from 4 or 16 raw bytes in network order.
    public init?(bytes: UnsafeRawBufferPointer) {
        switch bytes.count {
        case 4: self = .v4(bytes.loadUnaligned(as: UInt32.self))
        case 16: self = .v6(bytes.loadUnaligned(as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        default: return nil
        }
    }

    /// True for IPv6 addresses.
    public var isIPv6: Bool { if case .v6 = self { return true } else { return false } }

    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch self {
        case .v4(let raw):
            var address = in_addr(s_addr: raw)
            inet_ntop(AF_INET, &address, &text, socklen_t(text.count))
        case .v6(let high, let low):
            var words = (high, low)
            inet_ntop(AF_INET6, &words, &text, socklen_t(text.count))
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An IP address and port, as the sockets API wants it.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public let ip: IPAddress
    public let port: UInt16

    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Parse `127.0.0.1:25`, `[::1]:25`, or a bare address with `defaultPort`.
    public init?(_ text: String, defaultPort: UInt16? = nil) {
        var host = Substring(text)
        var portText: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if rest.hasPrefix(":") { portText = rest.dropFirst() } else if !rest.isEmpty { return nil }
        } else if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard let ip = IPAddress(String(host)) else { return nil }
        if let portText {
            guard let port = UInt16(portText) else { return nil }
            self.init(ip: ip, port: port)
        } else if let defaultPort {
            self.init(ip: ip, port: defaultPort)
        } else {
            return nil
        }
    }

    public var description: String {
        ip.isIPv6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// withSockaddr - the address as a `sockaddr` for a C call.
    func withSockaddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>) throws(E) -> R) throws(E) -> R {
        switch ip {
        case .v4(let raw):
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr = in_addr(s_addr: raw)
            return try withUnsafePointer(to: &address) { (p) throws(E) -> R in try p.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
        case .v6(let high, let low):
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &address.sin6_addr) { raw in
                raw.storeBytes(of: high, as: UInt64.self)
                raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
            }
            return try withUnsafePointer(to: &address) { (p) throws(E) -> R in try p.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
        }
    }

    /// init(storage:) - read back a kernel-filled `sockaddr_storage`.
    init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let address = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            self.init(ip: .v4(address.sin_addr.s_addr), port: UInt16(bigEndian: address.sin_port))
        case AF_INET6:
            let address = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            let ip = withUnsafeBytes(of: address.sin6_addr) { IPAddress(bytes: $0)! }
            self.init(ip: ip, port: UInt16(bigEndian: address.sin6_port))
        default:
            return nil
        }
    }

    /// The address family constant for socket calls.
    var family: Int32 { ip.isIPv6 ? AF_INET6 : AF_INET }
}
