// DNSTestResponder.swift - a tiny authoritative UDP DNS server on loopback, for resolver tests
//
// Tests need DNS answers they choose, including the unpleasant ones (SERVFAIL,
// silence), without touching the network. The responder binds 127.0.0.1 on a
// port the kernel picks, answers from a table on its own thread with plain
// POSIX sockets, and knows only what a resolver test asks: one question of
// type A, MX or AAAA. It polls its socket with a short timeout so `stop()`
// returns within about `pollMilliseconds` even when no query arrives.

public import EventCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A question type the responder serves, with its DNS code.
public enum DNSTestQueryType: UInt16, Sendable {
    case a = 1
    case mx = 15
    case aaaa = 28
}

/// One record in an answer, with its TTL in seconds.
///
/// A value; safe to send between threads. Records are sent as given, so a
/// table may deliberately answer a question with records of another type.
public enum DNSTestRecord: Hashable, Sendable {
    case mx(preference: UInt16, host: String, ttl: UInt32)
    case a(IPAddress, ttl: UInt32)
    case aaaa(IPAddress, ttl: UInt32)
}

/// What the responder does with a question.
///
/// A value; safe to send between threads. A name that has entries only for
/// other types gets NOERROR with no answers; a name with no entry at all gets
/// NXDOMAIN.
public enum DNSTestBehaviour: Sendable {
    /// NOERROR with these records (the owner name points back to the question).
    case answer([DNSTestRecord])
    /// Rcode 3: the name does not exist.
    case nxdomain
    /// Rcode 2: the server failed.
    case servfail
    /// No reply at all, so the client times out.
    case drop
}

/// A failure to set up the responder's socket or thread.
///
/// A value; safe to send between threads.
public struct DNSTestResponderError: Error, Sendable, CustomStringConvertible {
    public let description: String  /* the call that failed and why */
}

/// An authoritative DNS server for tests, on UDP 127.0.0.1 and a kernel-chosen port.
///
/// Owns one UDP socket (bound in `init`, so `port` is known at once) and,
/// between `start()` and `stop()`, one thread that answers from the table.
/// Every method is safe from any thread: the table and counters sit behind a
/// `Mutex` or in atomics, and the socket is read only by the responder thread.
/// `stop()` returns within about `pollMilliseconds`; the socket is closed then.
public final class DNSTestResponder: Sendable {
    private enum State {
        case ready
        case running(pthread_t)
        case stopped
    }

    private struct Key: Hashable {
        let name: String    /* lowercase, no trailing dot */
        let type: UInt16
    }

    /// The UDP port the responder listens on (on 127.0.0.1).
    public let port: UInt16
    private let fd: Int32
    private let table = Mutex<[Key: DNSTestBehaviour]>([:])
    private let state = Mutex<State>(.ready)
    private let stopping = Atomic<Bool>(false)
    private let received = Atomic<Int>(0)

    /// How long the responder thread waits in poll() before it looks at the stop flag.
    public static let pollMilliseconds: Int32 = 50

    /// Bind a UDP socket on 127.0.0.1 with a kernel-chosen port; call `start()` to answer.
    public init() throws(DNSTestResponderError) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Self.failure("socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            let error = Self.failure("bind 127.0.0.1:0")
            Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.port = UInt16(bigEndian: address.sin_port)
    }

    deinit {
        if case .stopped = state.withLock({ $0 }) { return }
        Glibc.close(fd)
    }

    /// The server as `DNSConfiguration.servers` wants it: `127.0.0.1:port`.
    public var server: String { "127.0.0.1:\(port)" }

    /// How many well-formed questions arrived so far (answered or not).
    public var queriesReceived: Int { received.load(ordering: .relaxed) }

    /// set - answer questions for (`name`, `type`) with `behaviour` from now on.
    public func set(_ name: String, _ type: DNSTestQueryType, _ behaviour: DNSTestBehaviour) {
        let key = Key(name: Self.canonical(name), type: type.rawValue)
        table.withLock { $0[key] = behaviour }
    }

    /// start - spawn the responder thread; idempotent while running.
    public func start() throws(DNSTestResponderError) {
        try state.withLock { (state: inout State) throws(DNSTestResponderError) in
            guard case .ready = state else { return }
            let context = Unmanaged.passRetained(self).toOpaque()
            var thread = pthread_t()
            let created = pthread_create(&thread, nil, responderThreadMain, context)
            if created != 0 {
                Unmanaged<DNSTestResponder>.fromOpaque(context).release()
                throw DNSTestResponderError(description: "pthread_create: \(String(cString: strerror(created)))")
            }
            state = .running(thread)
        }
    }

    /// stop - end the responder thread, wait for it and close the socket; idempotent.
    public func stop() {
        let previous = state.withLock { state -> State in
            defer { state = .stopped }
            return state
        }
        switch previous {
        case .stopped:
            return
        case .running(let thread):
            stopping.store(true, ordering: .relaxed)
            pthread_join(thread, nil)
        case .ready:
            break
        }
        Glibc.close(fd)
    }

    /// serve - the thread body: answer datagrams until asked to stop.
    fileprivate func serve() {
        var buffer = [UInt8](repeating: 0, count: 1500)
        while !stopping.load(ordering: .relaxed) {
            var watch = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&watch, 1, Self.pollMilliseconds) > 0 else { continue }
            var peer = sockaddr_storage()
            var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let count = withUnsafeMutablePointer(to: &peer) { peerPointer in
                peerPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, &buffer, buffer.count, 0, $0, &peerLength)
                }
            }
            guard count > 0, let reply = reply(to: buffer[..<count]) else { continue }
            _ = withUnsafePointer(to: &peer) { peerPointer in
                peerPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, reply, reply.count, 0, $0, peerLength)
                }
            }
        }
    }

    /// reply - the response to one query datagram; nil to stay silent (bad query or `.drop`).
    private func reply(to query: ArraySlice<UInt8>) -> [UInt8]? {
        let query = Array(query)
        /* A query: QR clear, exactly one question, whose name we read label by label. */
        guard query.count >= 12, query[2] & 0x80 == 0, query[4] == 0, query[5] == 1 else { return nil }
        var labels: [String] = []
        var offset = 12
        while offset < query.count, query[offset] != 0 {
            let length = Int(query[offset])
            guard length <= 63, offset + 1 + length < query.count else { return nil }
            labels.append(String(decoding: query[(offset + 1)...(offset + length)], as: UTF8.self))
            offset += 1 + length
        }
        let questionEnd = offset + 5
        guard questionEnd <= query.count else { return nil }
        received.add(1, ordering: .relaxed)
        let name = Self.canonical(labels.joined(separator: "."))
        let type = UInt16(query[offset + 1]) << 8 | UInt16(query[offset + 2])

        /* Known (name, type): its behaviour; a known name: no data; anything else: NXDOMAIN. */
        let behaviour = table.withLock { table -> DNSTestBehaviour in
            if let entry = table[Key(name: name, type: type)] { return entry }
            return table.keys.contains { $0.name == name } ? .answer([]) : .nxdomain
        }
        let records: [DNSTestRecord]
        let rcode: UInt8
        switch behaviour {
        case .drop: return nil
        case .nxdomain: (records, rcode) = ([], 3)
        case .servfail: (records, rcode) = ([], 2)
        case .answer(let answers): (records, rcode) = (answers, 0)
        }

        /* Header: same ID, opcode and RD; QR and AA set; one question; our answers. */
        var out: [UInt8] = Array(query[0..<2])
        out.append(0x80 | (query[2] & 0x79) | 0x04)
        out.append(rcode)
        out += [0, 1] + Self.bytes(UInt16(records.count)) + [0, 0, 0, 0]
        out += query[12..<questionEnd]
        for record in records {
            /* The owner name is a compression pointer to the question name at offset 12. */
            out += [0xC0, 0x0C]
            let rdata: [UInt8]
            let type: UInt16
            let ttl: UInt32
            switch record {
            case .mx(let preference, let host, let recordTTL):
                (type, ttl, rdata) = (DNSTestQueryType.mx.rawValue, recordTTL, Self.bytes(preference) + Self.encodeName(host))
            case .a(let address, let recordTTL):
                (type, ttl, rdata) = (DNSTestQueryType.a.rawValue, recordTTL, Self.addressBytes(address))
            case .aaaa(let address, let recordTTL):
                (type, ttl, rdata) = (DNSTestQueryType.aaaa.rawValue, recordTTL, Self.addressBytes(address))
            }
            out += Self.bytes(type) + [0, 1] + Self.bytes(UInt16(ttl >> 16)) + Self.bytes(UInt16(ttl & 0xFFFF))
            out += Self.bytes(UInt16(rdata.count)) + rdata
        }
        return out
    }

    /// canonical - a name as table keys hold it: lowercase, no trailing dot.
    private static func canonical(_ name: String) -> String {
        var name = name.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }

    /// encodeName - `host` in wire format, uncompressed; "" or "." is the root.
    private static func encodeName(_ host: String) -> [UInt8] {
        var out: [UInt8] = []
        for label in host.split(separator: ".") {
            out.append(UInt8(min(label.utf8.count, 63)))
            out += label.utf8.prefix(63)
        }
        out.append(0)
        return out
    }

    /// addressBytes - the 4 or 16 network-order bytes of `address`.
    private static func addressBytes(_ address: IPAddress) -> [UInt8] {
        switch address {
        case .v4(let raw): return withUnsafeBytes(of: raw) { Array($0) }
        case .v6(let high, let low): return withUnsafeBytes(of: (high, low)) { Array($0) }
        }
    }

    /// bytes - a 16-bit value in network order.
    private static func bytes(_ value: UInt16) -> [UInt8] {
        [UInt8(value >> 8), UInt8(value & 0xFF)]
    }

    /// failure - an error for `call` from the current errno.
    private static func failure(_ call: String) -> DNSTestResponderError {
        DNSTestResponderError(description: "\(call): \(String(cString: strerror(errno)))")
    }
}

/// responderThreadMain - the responder thread: serve, then drop the reference `start` took.
private func responderThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let responder = Unmanaged<DNSTestResponder>.fromOpaque(argument!).takeRetainedValue()
    responder.serve()
    return nil
}
