// TCPConnection.swift - a TCP stream on a libuv loop: connect, read, vectored write, close
//
// Reads land in the loop's shared slab and are shown to the handler in place;
// only bytes the handler leaves unconsumed are copied, into the connection's
// own buffer, and later reads go straight behind them. Writes first try
// uv_try_write, which on an idle socket sends everything at once with no
// request at all; whatever the kernel does not take goes into a pooled
// uv_write_t that keeps the buffers alive until libuv is done with them.

import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection (client or accepted) on one loop.
///
/// Confined to its loop's thread, like every handle. The connection keeps
/// itself alive while its handle is open; it is released after `close()` (or
/// a failure) once libuv's close callback has run, and then the handler hears
/// `streamClosed`. See `ByteStream` for the read and backpressure contract.
public final class TCPConnection: ByteStream, HandleOwner {
    private enum State { case connecting, open, closing, closed }

    /// The loop this connection belongs to.
    public let loop: Loop
    public var handler: (any ByteStreamHandler)?
    public var writeHighWaterMark = 1 << 20
    public private(set) var isWritable = true

    private var tcp: UnsafeMutablePointer<uv_tcp_t>?        /* owned; freed in handleDidClose */
    private var state: State
    private var closeError: (any Error)?                    /* reported with streamClosed */
    private let inbound: InboundBytes
    private var pending: [WriteRequest] = []                /* in flight, oldest first */
    private var pendingHead = 0                             /* index of the oldest in `pending` */
    private var pendingBytes = 0                            /* bytes in `pending`, until their callbacks */
    private var spare: [WriteRequest] = []                  /* completed, ready for reuse */
    private var connectTimer: LoopTimer?
    private var connectCompletion: ((Result<TCPConnection, IOError>) -> Void)?
    private var connectTimedOut = false
    private var reading = false
    private var writeShutdown = false                       /* shutdownWrite() was called */
    private var resumeTimer: LoopTimer?                     /* re-presents kept input after startReading */

    /// Most unconsumed input kept for a handler before the connection fails (default 4 MiB).
    public static let defaultInboundLimit = 4 << 20

    private init(loop: Loop, state: State, inboundLimit: Int) {
        self.loop = loop
        self.state = state
        self.inbound = InboundBytes(limit: inboundLimit)
    }

    /// connect - open a connection to `address`, optionally from a local `source` address.
    ///
    /// `completion` runs on the loop thread with the open connection, or with
    /// the error (`isTimeout` after `timeoutMilliseconds`, if non-zero), and
    /// never before `connect` returns: a failure known at once (no socket, a
    /// bad source address, a loop that is shutting down) is reported on the
    /// next loop turn. The returned connection may be closed to cancel the
    /// attempt; the completion then reports `ECANCELED`.
    @discardableResult
    public static func connect(
        loop: Loop,
        to address: SocketAddress,
        from source: SocketAddress? = nil,
        timeoutMilliseconds: UInt64 = 0,
        inboundLimit: Int = defaultInboundLimit,
        completion: @escaping (Result<TCPConnection, IOError>) -> Void
    ) -> TCPConnection {
        let connection = TCPConnection(loop: loop, state: .connecting, inboundLimit: inboundLimit)
        connection.connectCompletion = completion
        do throws(IOError) {
            if loop.isShuttingDown { throw IOError.cancelled("connect") }
            let tcp = try connection.openHandle(family: address.family)
            if let source {
                try source.withSockaddr { sockaddr throws(IOError) in
                    try check(uv_tcp_bind(tcp, sockaddr, 0), "bind \(source)")
                }
            }
            let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
            request.pointee.data = Unmanaged.passUnretained(connection).toOpaque()
            let result = address.withSockaddr { uv_tcp_connect(request, tcp, $0, tcpConnectCallback) }
            if result < 0 {
                request.deallocate()
                throw IOError(result, "connect \(address)")
            }
            if timeoutMilliseconds > 0 {
                let timer = LoopTimer(loop: loop)
                connection.connectTimer = timer
                timer.schedule(after: timeoutMilliseconds) { [unowned connection] _ in
                    connection.connectTimedOut = true
                    connection.close()
                }
            }
        } catch {
            connection.failConnect(error, later: true)
        }
        return connection
    }

    /// accepted - wrap a connection accepted by `TCPListener`.
    static func accept(loop: Loop, from server: UnsafeMutablePointer<uv_stream_t>, inboundLimit: Int) throws(IOError) -> TCPConnection {
        let connection = TCPConnection(loop: loop, state: .open, inboundLimit: inboundLimit)
        let tcp = try connection.openHandle(family: nil)
        let result = uv_accept(server, asStream(tcp))
        if result < 0 {
            connection.close()
            throw IOError(result, "accept")
        }
        uv_tcp_nodelay(tcp, 1)
        return connection
    }

    /// openHandle - allocate and initialise the uv_tcp_t (creating the socket when `family` is given).
    private func openHandle(family: Int32?) throws(IOError) -> UnsafeMutablePointer<uv_tcp_t> {
        let tcp = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let result = family.map { uv_tcp_init_ex(loop.raw, tcp, UInt32($0)) } ?? uv_tcp_init(loop.raw, tcp)
        if result < 0 {
            tcp.deallocate()
            state = .closed
            throw IOError(result, "socket")
        }
        self.tcp = tcp
        retainOwner(self, in: asHandle(tcp))
        return tcp
    }

    /// failConnect - report a failed connect once (now, or on the next turn) and close.
    private func failConnect(_ error: IOError, later: Bool = false) {
        connectTimer?.close()
        connectTimer = nil
        let completion = connectCompletion
        connectCompletion = nil
        if tcp != nil { close() } else { state = .closed }
        guard let completion else { return }
        if later {
            loop.nextTurn { completion(.failure(error)) }
        } else {
            completion(.failure(error))
        }
    }

    /// connected - the connect request finished with `status`.
    fileprivate func connected(status: Int32) {
        if status < 0 {
            failConnect(connectTimedOut ? .timedOut("connect") : IOError(status, "connect"))
            return
        }
        connectTimer?.close()
        connectTimer = nil
        if let tcp { uv_tcp_nodelay(tcp, 1) }
        state = .open
        let completion = connectCompletion
        connectCompletion = nil
        completion?(.success(self))
    }

    // MARK: ByteStream

    public var isOpen: Bool { state == .open }

    /// Bytes in write requests whose completion has not been reported yet.
    ///
    /// Counted until the write callback, not until the kernel took them:
    /// libuv reports even a write that finished at once on the next loop turn,
    /// and until then the request still holds its buffers. A producer that
    /// writes in a loop while `isWritable` would otherwise pile up memory
    /// without limit inside one callback.
    public var queuedWriteBytes: Int { pendingBytes }

    public var localAddress: SocketAddress? {
        guard let tcp else { return nil }
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getsockname(tcp, $0, &length) }
        }
        return result == 0 ? SocketAddress(storage: storage) : nil
    }

    public var remoteAddress: SocketAddress? {
        guard let tcp else { return nil }
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getpeername(tcp, $0, &length) }
        }
        return result == 0 ? SocketAddress(storage: storage) : nil
    }

    public func write(_ buffer: ByteBuffer) {
        guard state == .open, let tcp, !buffer.isEmpty else { return }
        withUnsafeTemporaryAllocation(of: uv_buf_t.self, capacity: 1) { bufs in
            bufs[0] = uv_buf_init(buffer.readPointer.assumingMemoryBound(to: CChar.self), UInt32(buffer.readableBytes))
            submit(tcp, bufs, CollectionOfOne(buffer))
        }
    }

    public func write(contentsOf buffers: [ByteBuffer]) {
        guard state == .open, let tcp else { return }
        withUnsafeTemporaryAllocation(of: uv_buf_t.self, capacity: buffers.count) { bufs in
            var count = 0
            for buffer in buffers where !buffer.isEmpty {
                bufs[count] = uv_buf_init(buffer.readPointer.assumingMemoryBound(to: CChar.self), UInt32(buffer.readableBytes))
                count += 1
            }
            if count > 0 {
                submit(tcp, UnsafeMutableBufferPointer(rebasing: bufs[..<count]), buffers)
            }
        }
    }

    /// submit - send what the kernel takes now; queue the rest in a write request.
    private func submit(
        _ tcp: UnsafeMutablePointer<uv_tcp_t>,
        _ bufs: UnsafeMutableBufferPointer<uv_buf_t>,
        _ owners: some Sequence<ByteBuffer>
    ) {
        var first = 0
        if pendingHead == pending.count {
            /* Nothing queued: the common case sends everything without a request. */
            let sent = uv_try_write(asStream(tcp), bufs.baseAddress, UInt32(bufs.count))
            if sent < 0 && sent != UV_EAGAIN.rawValue {
                fail(IOError(sent, "write"))
                return
            }
            var skip = Int(Swift.max(sent, 0))
            while first < bufs.count && skip >= Int(bufs[first].len) {
                skip -= Int(bufs[first].len)
                first += 1
            }
            if first == bufs.count { return }
            bufs[first].base += skip
            bufs[first].len -= numericCast(skip)
        }
        let request = spare.popLast() ?? WriteRequest()
        request.buffers.append(contentsOf: owners)
        request.byteCount = 0
        for index in first..<bufs.count { request.byteCount += Int(bufs[index].len) }
        request.request.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        let remaining = UnsafeMutableBufferPointer(rebasing: bufs[first...])
        let result = uv_write(request.request, asStream(tcp), remaining.baseAddress, UInt32(remaining.count), tcpWriteCallback)
        if result < 0 {
            request.buffers.removeAll(keepingCapacity: true)
            spare.append(request)
            fail(IOError(result, "write"))
            return
        }
        pending.append(request)
        pendingBytes += request.byteCount
        if isWritable && pendingBytes > writeHighWaterMark { isWritable = false }
    }

    /// written - the oldest write request completed with `status`.
    fileprivate func written(status: Int32) {
        let request = pending[pendingHead]
        pendingHead += 1
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
        } else if pendingHead >= 64 && pendingHead > pending.count / 2 {
            /* Writes never fully drained: drop the completed front so the array stays bounded. */
            pending.removeFirst(pendingHead)
            pendingHead = 0
        }
        pendingBytes -= request.byteCount
        request.buffers.removeAll(keepingCapacity: true)
        spare.append(request)
        if status < 0 {
            if status != UV_ECANCELED.rawValue { fail(IOError(status, "write")) }
            return
        }
        if !isWritable && pendingBytes <= writeHighWaterMark / 2 && state == .open {
            isWritable = true
            handler?.streamWritable(self)
        }
    }

    public func startReading() {
        guard state == .open, let tcp else { return }
        if !reading {
            let result = uv_read_start(asStream(tcp), tcpAllocCallback, tcpReadCallback)
            if result < 0 {
                fail(IOError(result, "read"))
                return
            }
            reading = true
        }
        if inbound.hasKept {
            let timer = resumeTimer ?? LoopTimer(loop: loop)
            resumeTimer = timer
            timer.schedule(after: 0) { [unowned self] _ in presentKept() }
        }
    }

    /// presentKept - show kept input again after reading resumed.
    private func presentKept() {
        guard state == .open, reading, inbound.hasKept, let handler else { return }
        if !inbound.presentKept(to: { handler.streamRead(self, $0) }) && state == .open {
            fail(IOError.inputOverLimit("read"))
        }
    }

    public func stopReading() {
        guard let tcp, reading else { return }
        uv_read_stop(asStream(tcp))
        reading = false
    }

    /// readBuffer - where libuv should put the next read (alloc callback).
    fileprivate func readBuffer() -> UnsafeMutableRawBufferPointer {
        inbound.hasKept ? inbound.readTarget(minimum: 16 * 1024) : loop.readSlab
    }

    /// didRead - a read callback with `count` bytes at `base`, or an error/EOF.
    fileprivate func didRead(_ count: Int, at base: UnsafeMutableRawPointer?) {
        guard state == .open else { return }
        if count < 0 {
            if count == Int(UV_EOF.rawValue) {
                stopReading()
                handler?.streamReadEOF(self)
            } else {
                fail(IOError(Int32(count), "read"))
            }
            return
        }
        guard count > 0, let base, let handler else { return }
        let within: Bool
        if base == loop.readSlab.baseAddress {
            within = inbound.present(UnsafeRawBufferPointer(start: base, count: count)) { handler.streamRead(self, $0) }
        } else {
            inbound.commitRead(count)
            within = inbound.presentKept { handler.streamRead(self, $0) }
        }
        if !within && state == .open { fail(IOError.inputOverLimit("read")) }
    }

    public func discardBufferedInput() {
        inbound.discard()
    }

    public func shutdownWrite() {
        guard state == .open, let tcp, !writeShutdown else { return }
        writeShutdown = true
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let result = uv_shutdown(request, asStream(tcp), tcpShutdownCallback)
        if result < 0 {
            request.deallocate()
            fail(IOError(result, "shutdown"))
        }
    }

    public func close() {
        guard state == .open || state == .connecting, let tcp else { return }
        state = .closing
        reading = false
        closeHandle(asHandle(tcp))
    }

    /// fail - close because of `error`; the handler hears it in `streamClosed`.
    func fail(_ error: any Error) {
        guard state == .open else { return }
        closeError = error
        close()
    }

    func handleDidClose() {
        tcp?.deallocate()
        tcp = nil
        state = .closed
        spare.removeAll()
        resumeTimer?.close()
        resumeTimer = nil
        connectTimer?.close()
        connectTimer = nil
        let handler = self.handler
        self.handler = nil
        handler?.streamClosed(self, error: closeError)
    }

    func closeForShutdown() { close() }
}

/// One pooled uv_write_t and the buffers it keeps alive.
final class WriteRequest {
    let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
    var buffers: [ByteBuffer] = []
    var byteCount = 0                   /* bytes this request writes */
    deinit { request.deallocate() }
}

private func tcpConnectCallback(_ request: UnsafeMutablePointer<uv_connect_t>?, _ status: Int32) {
    guard let request else { return }
    let connection = Unmanaged<TCPConnection>.fromOpaque(request.pointee.data!).takeUnretainedValue()
    request.deallocate()
    connection.connected(status: status)
}

private func tcpWriteCallback(_ request: UnsafeMutablePointer<uv_write_t>?, _ status: Int32) {
    guard let request else { return }
    Unmanaged<TCPConnection>.fromOpaque(request.pointee.data!).takeUnretainedValue().written(status: status)
}

private func tcpShutdownCallback(_ request: UnsafeMutablePointer<uv_shutdown_t>?, _ status: Int32) {
    request?.deallocate()
}

private func tcpAllocCallback(
    _ handle: UnsafeMutablePointer<uv_handle_t>?, _ suggested: Int, _ buf: UnsafeMutablePointer<uv_buf_t>?
) {
    guard let handle, let buf else { return }
    let target = owner(of: handle, as: TCPConnection.self).readBuffer()
    buf.pointee = uv_buf_init(target.baseAddress?.assumingMemoryBound(to: CChar.self), UInt32(target.count))
}

private func tcpReadCallback(
    _ stream: UnsafeMutablePointer<uv_stream_t>?, _ count: Int, _ buf: UnsafePointer<uv_buf_t>?
) {
    guard let stream, stream.pointee.data != nil else { return }
    let connection = owner(of: asHandle(stream), as: TCPConnection.self)
    connection.didRead(count, at: buf.flatMap { UnsafeMutableRawPointer($0.pointee.base) })
}
