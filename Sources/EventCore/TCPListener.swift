// TCPListener.swift - a listening TCP socket that hands accepted connections to a closure

import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// A listening TCP socket on one loop.
///
/// Confined to its loop's thread. With `reusePort`, several listeners (one per
/// loop thread) bind the same address and the kernel spreads new connections
/// over them (`SO_REUSEPORT`). A failed accept (out of file descriptors) is
/// counted and skipped; the listener keeps listening.
public final class TCPListener: HandleOwner {
    private let loop: Loop
    private var tcp: UnsafeMutablePointer<uv_tcp_t>?   /* owned; freed in handleDidClose */
    private let inboundLimit: Int
    private var onAccept: ((TCPConnection) -> Void)?     /* nil once closed */
    /// Accepts that failed (EMFILE and the like) since the listener opened.
    public private(set) var failedAccepts = 0
    /// The bound address (with the real port when 0 was asked for).
    public private(set) var localAddress: SocketAddress

    /// Bind `address` and listen; `onAccept` gets each new connection (not yet reading).
    public init(
        loop: Loop,
        address: SocketAddress,
        backlog: Int32 = 511,
        reusePort: Bool = false,
        inboundLimit: Int = TCPConnection.defaultInboundLimit,
        onAccept: @escaping (TCPConnection) -> Void
    ) throws(IOError) {
        self.loop = loop
        self.inboundLimit = inboundLimit
        self.onAccept = onAccept
        self.localAddress = address
        let tcp = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let initialized = uv_tcp_init_ex(loop.raw, tcp, UInt32(address.family))
        if initialized < 0 {
            tcp.deallocate()
            throw IOError(initialized, "socket")
        }
        self.tcp = tcp
        retainOwner(self, in: asHandle(tcp))
        do throws(IOError) {
            if reusePort {
                var fd: uv_os_fd_t = -1
                try check(uv_fileno(asHandle(tcp), &fd), "uv_fileno")
                var on: Int32 = 1
                if setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                    throw IOError(-errno, "setsockopt SO_REUSEPORT")
                }
            }
            try address.withSockaddr { sockaddr throws(IOError) in
                try check(uv_tcp_bind(tcp, sockaddr, 0), "bind \(address)")
            }
            try check(uv_listen(asStream(tcp), backlog, listenerConnectionCallback), "listen \(address)")
        } catch {
            close()
            throw error
        }
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getsockname(tcp, $0, &length) }
        }
        if named == 0, let bound = SocketAddress(storage: storage) { localAddress = bound }
    }

    /// incoming - a connection is waiting in the backlog.
    fileprivate func incoming(status: Int32) {
        guard status >= 0, let tcp else {
            failedAccepts += 1
            return
        }
        do {
            guard let onAccept else { return }
            onAccept(try TCPConnection.accept(loop: loop, from: asStream(tcp), inboundLimit: inboundLimit))
        } catch {
            failedAccepts += 1
        }
    }

    /// close - stop listening and release the socket.
    ///
    /// Also lets go of `onAccept`, so a closure that captures the listener's
    /// owner (which holds the listener) does not keep both alive for ever.
    public func close() {
        onAccept = nil
        guard let tcp else { return }
        closeHandle(asHandle(tcp))
    }

    func handleDidClose() {
        tcp?.deallocate()
        tcp = nil
    }

    func closeForShutdown() { close() }
}

private func listenerConnectionCallback(_ server: UnsafeMutablePointer<uv_stream_t>?, _ status: Int32) {
    guard let server, server.pointee.data != nil else { return }
    owner(of: asHandle(server), as: TCPListener.self).incoming(status: status)
}
