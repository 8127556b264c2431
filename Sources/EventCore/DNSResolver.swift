// DNSResolver.swift - asynchronous MX, A and AAAA lookups with c-ares, driven by the libuv loop
//
// c-ares does no I/O of its own here. It tells us, through the socket-state
// callback, which sockets it wants watched for reading or writing; each such
// socket gets a uv_poll_t, and readiness comes back through ares_process_fd.
// Its timeouts come from one LoopTimer, re-armed from ares_timeout after every
// call into c-ares, whose firing lets c-ares retry or give up (ARES_SOCKET_BAD
// for both sockets means "only look at the clock").
//
// c-ares must never be re-entered destructively from its own callbacks: a
// completion that calls close() while ares_process_fd is on the stack would
// free the channel under c-ares. So calls into c-ares are counted, and a
// close() made inside one is finished when the outermost call returns.

import CCares
import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// One MX record: a mail exchanger for a domain.
///
/// A value; safe to send between threads.
public struct MXRecord: Hashable, Sendable {
    public let preference: UInt16   /* lower is tried first */
    public let host: String         /* lowercase, no trailing dot; "" for a null MX (RFC 7505) */
    public let ttl: UInt32          /* seconds the answer may be cached */

    public init(preference: UInt16, host: String, ttl: UInt32) {
        self.preference = preference
        self.host = host
        self.ttl = ttl
    }
}

/// One A or AAAA record: an address of a host.
///
/// A value; safe to send between threads.
public struct AddressRecord: Hashable, Sendable {
    public let address: IPAddress   /* IPv4 for A, IPv6 for AAAA */
    public let ttl: UInt32          /* seconds the answer may be cached */

    public init(address: IPAddress, ttl: UInt32) {
        self.address = address
        self.ttl = ttl
    }
}

/// How a `DNSResolver` finds and asks its servers.
///
/// A value; safe to send between threads. It is checked when the resolver is
/// made: servers must be IP addresses with an optional port.
public struct DNSConfiguration: Sendable {
    /// Servers to ask, in order: `127.0.0.1`, `127.0.0.1:5353`, `[::1]:53`. Empty: /etc/resolv.conf.
    public var servers: [String]
    /// How long one try waits for an answer; c-ares doubles it on each round over the servers.
    public var timeoutMilliseconds: Int
    /// How many rounds over the server list before a query times out. Only
    /// silence moves a query to the next server or round: a SERVFAIL or REFUSED
    /// answer is final for that query and reported as `serverFailure` / `refused`.
    public var tries: Int

    public init(servers: [String] = [], timeoutMilliseconds: Int = 5000, tries: Int = 2) {
        self.servers = servers
        self.timeoutMilliseconds = timeoutMilliseconds
        self.tries = tries
    }
}

/// An asynchronous DNS resolver for MX, A and AAAA records on one loop.
///
/// Confined to its loop's thread: make it, query it and close it there. It
/// owns one c-ares channel, one `uv_poll_t` per socket c-ares opens, and one
/// `LoopTimer` for c-ares's retries and timeouts. Queries go straight to the
/// configured servers (`ares_query`: no search list, no host aliases).
///
/// Each completion runs on the loop thread exactly once: with the records,
/// with the DNS answer as an error (`nxdomain`, `noData`), or with a failure
/// (`timeout`, `serverFailure`, `cancelled`, ...), and never before the query
/// method returns: a query that fails before anything is sent (a closed
/// resolver, a name c-ares refuses) completes on the next loop turn, as
/// `TCPConnection.connect` does.
///
/// While queries are in flight the resolver keeps itself alive. `close()`
/// completes every pending query with `.cancelled` and releases the channel,
/// its sockets and its timer. Loop shutdown reaches a resolver with queries
/// in flight through its sockets' polls and closes it; an idle resolver
/// closes itself when next asked, once its loop is shutting down. A resolver
/// dropped without `close()` releases its channel in `deinit`.
public final class DNSResolver {
    private enum State {
        case open
        case closing    /* close() was called inside a c-ares call; finished when it returns */
        case closed
    }

    /// The loop this resolver belongs to.
    public let loop: Loop
    private var channel: ares_channel?              /* owned; destroyed in finishClose or deinit */
    private let timer: LoopTimer                    /* c-ares's next retry or timeout */
    private var polls: [ares_socket_t: DNSSocketPoll] = [:]   /* one per socket c-ares watches */
    private var state = State.open
    private var depth = 0                           /* calls into c-ares now on the stack */
    private var issuing = false                     /* inside ares_query: completions wait a turn */

    /// ares_library_init's status; c-ares wants it called once per process, before any channel.
    private static let libraryStatus: Int32 = ares_library_init(ARES_LIB_INIT_ALL)

    /// Create a resolver on `loop` (on its thread) with `configuration`.
    public init(loop: Loop, configuration: DNSConfiguration = .init()) throws(DNSConfigurationError) {
        self.loop = loop
        self.timer = LoopTimer(loop: loop)
        do throws(DNSConfigurationError) {
            try openChannel(configuration)
        } catch {
            timer.close()
            throw error
        }
    }

    deinit {
        /*
         * Only reached with no query in flight (each holds the resolver), so
         * c-ares has no socket open and calls nothing back.
         */
        if let channel { ares_destroy(channel) }
        timer.close()
    }

    /// openChannel - check the configuration and create the channel with it.
    private func openChannel(_ configuration: DNSConfiguration) throws(DNSConfigurationError) {
        let status = Self.libraryStatus
        guard status == ARES_SUCCESS else { throw DNSConfigurationError("ares_library_init", status: status) }
        guard let timeout = Int32(exactly: configuration.timeoutMilliseconds), timeout > 0 else {
            throw DNSConfigurationError("DNS timeout of \(configuration.timeoutMilliseconds) ms (must be 1...\(Int32.max))", status: ARES_EBADSTR)
        }
        guard let tries = Int32(exactly: configuration.tries), tries > 0 else {
            throw DNSConfigurationError("DNS tries \(configuration.tries) (must be 1...\(Int32.max))", status: ARES_EBADSTR)
        }

        /* Parse the servers ourselves: a clear error names the bad entry, and no entry can smuggle a comma. */
        var servers: [String] = []
        for text in configuration.servers {
            guard let address = SocketAddress(text, defaultPort: 53) else {
                throw DNSConfigurationError("DNS server \"\(text)\" is not an IP address with optional port", status: ARES_EBADSTR)
            }
            servers.append(address.description)
        }

        /*
         * NOCHECKRESP: report SERVFAIL and REFUSED as the server said them.
         * Without it c-ares 1.18 treats both as "try the next server" and,
         * when every try has failed, says only "could not contact DNS
         * servers", which hides a broken zone behind a network-sounding error.
         */
        var options = ares_options()
        options.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_NOCHECKRESP
        options.timeout = timeout
        options.tries = tries
        options.sock_state_cb = dnsSocketStateCallback
        options.sock_state_cb_data = Unmanaged.passUnretained(self).toOpaque()
        let mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB
        var created: ares_channel?
        let initialized = ares_init_options(&created, &options, mask)
        guard initialized == ARES_SUCCESS, let created else {
            throw DNSConfigurationError("ares_init_options", status: initialized)
        }
        if !servers.isEmpty {
            let set = ares_set_servers_ports_csv(created, servers.joined(separator: ","))
            if set != ARES_SUCCESS {
                ares_destroy(created)
                throw DNSConfigurationError("DNS servers \(servers)", status: set)
            }
        }
        channel = created
    }

    /// queryMX - the MX records of `name`, sorted by preference (ties keep the server's order).
    public func queryMX(_ name: String, _ completion: @escaping (Result<[MXRecord], DNSError>) -> Void) {
        query(name, .mx, completion) { (message, name) throws(DNSError) in
            try DNSMessage.mxRecords(in: message, name: name)
        }
    }

    /// queryA - the IPv4 addresses of `name`, in the server's order.
    public func queryA(_ name: String, _ completion: @escaping (Result<[AddressRecord], DNSError>) -> Void) {
        query(name, .a, completion) { (message, name) throws(DNSError) in
            try DNSMessage.addressRecords(in: message, type: .a, name: name)
        }
    }

    /// queryAAAA - the IPv6 addresses of `name`, in the server's order.
    public func queryAAAA(_ name: String, _ completion: @escaping (Result<[AddressRecord], DNSError>) -> Void) {
        query(name, .aaaa, completion) { (message, name) throws(DNSError) in
            try DNSMessage.addressRecords(in: message, type: .aaaa, name: name)
        }
    }

    /// close - cancel every pending query (`.cancelled`) and release the channel, sockets and timer; idempotent.
    public func close() {
        guard state == .open else { return }
        if depth > 0 {
            state = .closing
            return
        }
        finishClose()
    }

    /// query - send one query; `parse` turns a successful response into records.
    private func query<Record>(
        _ name: String,
        _ type: DNSRecordType,
        _ completion: @escaping (Result<[Record], DNSError>) -> Void,
        parse: @escaping (UnsafeRawBufferPointer, String) throws(DNSError) -> [Record]
    ) {
        /* A loop that is shutting down has closed (or is closing) our timer: behave as closed. */
        if loop.isShuttingDown { close() }
        /* Failures known at once are reported on the next turn, never inside this call. */
        guard state == .open, let channel else {
            loop.nextTurn { completion(.failure(.cancelled(name))) }
            return
        }
        /* A C string ends at the first NUL; a name holding one would be asked as a different name. */
        guard !name.utf8.contains(0) else {
            loop.nextTurn { completion(.failure(DNSError(aresStatus: ARES_EBADNAME, name: name))) }
            return
        }
        let pending = DNSQuery(resolver: self) { status, message in
            guard status == ARES_SUCCESS, let message else {
                completion(.failure(DNSError(aresStatus: status, name: name)))
                return
            }
            do throws(DNSError) {
                completion(.success(try parse(message, name)))
            } catch {
                completion(.failure(error))
            }
        }
        let context = Unmanaged.passRetained(pending).toOpaque()
        issuing = true
        callingAres {
            ares_query(channel, name, Int32(DNSMessage.classIN), Int32(type.rawValue), dnsQueryCallback, context)
        }
        issuing = false
    }

    /// finish - a query's c-ares callback: report its outcome, or `.cancelled` once closing.
    fileprivate func finish(_ query: DNSQuery, status: Int32, message: UnsafeRawBufferPointer?) {
        let status = state == .open ? status : ARES_ECANCELLED
        let message = state == .open ? message : nil
        guard issuing else {
            query.deliver(status, message)
            return
        }
        /* c-ares answered inside ares_query (a name it rejects): report on the next turn. */
        let copy = message.map { Array($0) }
        loop.nextTurn {
            guard let copy else { return query.deliver(status, nil) }
            copy.withUnsafeBytes { query.deliver(status, $0) }
        }
    }

    /// process - let c-ares handle a ready socket (or only its clock, with ARES_SOCKET_BAD for both).
    fileprivate func process(read: ares_socket_t, write: ares_socket_t) {
        guard state == .open, let channel else { return }
        callingAres { ares_process_fd(channel, read, write) }
    }

    /// callingAres - run one call into c-ares; afterwards finish a deferred close or re-arm the timer.
    private func callingAres(_ body: () -> Void) {
        depth += 1
        body()
        depth -= 1
        guard depth == 0 else { return }
        if state == .closing {
            finishClose()
        } else {
            rearmTimer()
        }
    }

    /// rearmTimer - wake up when c-ares next needs the clock; stop the timer when nothing is pending.
    private func rearmTimer() {
        guard let channel else { return }
        var wait = timeval()
        guard let next = ares_timeout(channel, nil, &wait) else {
            timer.cancel()
            return
        }
        /* Round up: a timer that fires early finds nothing due and would spin until the deadline. */
        let milliseconds = UInt64(max(next.pointee.tv_sec, 0)) * 1000 + UInt64(max(next.pointee.tv_usec, 0) + 999) / 1000
        timer.schedule(after: milliseconds) { [weak self] _ in
            /* A strong reference for the call: a completion may drop the last other one. */
            guard let self else { return }
            self.process(read: ARES_SOCKET_BAD, write: ARES_SOCKET_BAD)
        }
    }

    /// finishClose - destroy the channel (its callbacks report `.cancelled`) and close what it used.
    private func finishClose() {
        state = .closed
        guard let channel else { return }
        /* Completions run inside ares_destroy; count it so a close() from one of them waits. */
        depth += 1
        ares_destroy(channel)
        depth -= 1
        self.channel = nil
        timer.close()
        /* ares_destroy reports (0, 0) for every socket it closes; whatever is left goes too. */
        for poll in polls.values { poll.close() }
        polls.removeAll()
    }

    /// socketStateChanged - c-ares wants `fd` watched for these events; (false, false) means it closes the socket.
    fileprivate func socketStateChanged(_ fd: ares_socket_t, readable: Bool, writable: Bool) {
        if !readable && !writable {
            /* Stop now: c-ares closes the descriptor as soon as we return, and may reuse its number. */
            polls.removeValue(forKey: fd)?.close()
            return
        }
        let poll: DNSSocketPoll
        if let existing = polls[fd] {
            poll = existing
        } else {
            /* If libuv cannot watch the socket, c-ares times the query out through the timer. */
            guard let created = DNSSocketPoll(loop: loop, fd: fd, resolver: self) else { return }
            polls[fd] = created
            poll = created
        }
        poll.watch(readable: readable, writable: writable)
    }
}

/// One query in flight: what to call with its outcome. Passed to c-ares as a retained `void *`.
///
/// Loop thread only. It holds the resolver, so a resolver with queries in
/// flight stays alive until they complete.
private final class DNSQuery {
    let resolver: DNSResolver
    let deliver: (Int32, UnsafeRawBufferPointer?) -> Void   /* c-ares status and response */

    init(resolver: DNSResolver, deliver: @escaping (Int32, UnsafeRawBufferPointer?) -> Void) {
        self.resolver = resolver
        self.deliver = deliver
    }
}

/// The uv_poll_t that watches one c-ares socket.
///
/// Loop thread only. Follows the `HandleOwner` contract: the handle holds the
/// owner until libuv's close callback. It holds its resolver, so the resolver
/// outlives every poll callback that calls into c-ares; closing the loop
/// closes the whole resolver through any of its polls.
private final class DNSSocketPoll: HandleOwner {
    private var handle: UnsafeMutablePointer<uv_poll_t>?   /* owned; freed in handleDidClose */
    let fd: ares_socket_t
    let resolver: DNSResolver

    /// init - start owning a uv_poll_t for `fd`; nil when libuv refuses the socket.
    init?(loop: Loop, fd: ares_socket_t, resolver: DNSResolver) {
        self.fd = fd
        self.resolver = resolver
        let handle = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
        if uv_poll_init_socket(loop.raw, handle, fd) < 0 {
            handle.deallocate()
            return nil
        }
        self.handle = handle
        retainOwner(self, in: asHandle(handle))
    }

    /// watch - poll for exactly these events.
    func watch(readable: Bool, writable: Bool) {
        guard let handle, uv_is_closing(asHandle(handle)) == 0 else { return }
        var events: Int32 = 0
        if readable { events |= Int32(UV_READABLE.rawValue) }
        if writable { events |= Int32(UV_WRITABLE.rawValue) }
        if uv_poll_start(handle, events, dnsPollCallback) < 0 {
            /* Not watched means never ready: the query times out through the timer. */
            close()
        }
    }

    /// ready - the socket is ready (or failed); let c-ares read or write it.
    fileprivate func ready(status: Int32, events: Int32) {
        /* On a poll error let c-ares try both ways: it sees the socket error and moves on. */
        let readable = status < 0 || events & Int32(UV_READABLE.rawValue) != 0
        let writable = status < 0 || events & Int32(UV_WRITABLE.rawValue) != 0
        resolver.process(read: readable ? fd : ARES_SOCKET_BAD, write: writable ? fd : ARES_SOCKET_BAD)
    }

    /// close - stop polling at once and release the handle.
    func close() {
        guard let handle, uv_is_closing(asHandle(handle)) == 0 else { return }
        uv_poll_stop(handle)
        closeHandle(asHandle(handle))
    }

    func handleDidClose() {
        handle?.deallocate()
        handle = nil
    }

    func closeForShutdown() { resolver.close() }
}

/// dnsSocketStateCallback - c-ares's socket-state callback; forwards to the resolver.
private func dnsSocketStateCallback(_ data: UnsafeMutableRawPointer?, _ fd: ares_socket_t, _ readable: Int32, _ writable: Int32) {
    guard let data else { return }
    Unmanaged<DNSResolver>.fromOpaque(data).takeUnretainedValue()
        .socketStateChanged(fd, readable: readable != 0, writable: writable != 0)
}

/// dnsQueryCallback - c-ares's query callback; takes back the query's reference and reports.
private func dnsQueryCallback(
    _ arg: UnsafeMutableRawPointer?, _ status: Int32, _ timeouts: Int32, _ abuf: UnsafeMutablePointer<UInt8>?, _ alen: Int32
) {
    guard let arg else { return }
    let query = Unmanaged<DNSQuery>.fromOpaque(arg).takeRetainedValue()
    let message = abuf.map { UnsafeRawBufferPointer(start: $0, count: Int(max(alen, 0))) }
    query.resolver.finish(query, status: status, message: message)
}

/// dnsPollCallback - libuv's poll callback; forwards to the socket's owner.
private func dnsPollCallback(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    guard let handle, handle.pointee.data != nil else { return }
    owner(of: asHandle(handle), as: DNSSocketPoll.self).ready(status: status, events: events)
}
