// TLSConnection.swift - TLS over memory BIOs on top of a byte stream (implicit TLS and STARTTLS)
//
// OpenSSL never touches the socket. Ciphertext read by the transport is
// written into the SSL's read BIO; SSL_read decrypts into the loop's plaintext
// slab and the handler is shown the bytes in place, with the same
// consumed-count rule as plain TCP. SSL_write encrypts into the write BIO and
// we move what it holds to the transport as one buffer. So the event loop
// stays in charge of all I/O, and one code path serves implicit TLS (port 465)
// and an upgrade in the middle of a plaintext session (STARTTLS).
//
// The upgrade rule (RFC 3207 §5, CVE-2011-0411): when the TLS layer takes over
// a transport it discards every plaintext byte the transport still holds,
// including the rest of a read being delivered at that moment. Nothing a peer
// sent before the handshake can appear as data after it.

import COpenSSL
import CCarrierShims

/// A TLS session over another `ByteStream` (normally a `TCPConnection`).
///
/// Confined to its loop's thread. Created by `client(...)` or `server(...)`,
/// which take over the transport (its handler becomes this object) and start
/// the handshake; the completion runs once, with the connection ready for
/// application data or with a `TLSError` (the transport is closed then). After
/// that it behaves as any `ByteStream`; closing it closes the transport.
public final class TLSConnection: ByteStream, ByteStreamHandler {
    private enum State { case handshaking, open, closed }

    /// The stream carrying the ciphertext.
    public let transport: any ByteStream
    public var handler: (any ByteStreamHandler)?
    public var loop: Loop { transport.loop }

    let sessionCache: TLSSessionCache?      /* client: where new sessions go */
    let sessionKey: String?                 /* client: the destination's cache key */
    private let ssl: OpaquePointer          /* SSL*, freed in deinit; owns both BIOs */
    private let readBIO: OpaquePointer      /* ciphertext in */
    private let writeBIO: OpaquePointer     /* ciphertext out */
    private var state = State.handshaking
    private var closeError: (any Error)?
    private let inbound = InboundBytes(limit: TCPConnection.defaultInboundLimit)
    private var reading = false
    private var handshakeTimer: LoopTimer?
    private var completion: ((Result<TLSConnection, TLSError>) -> Void)?
    private var scratch = ByteBuffer()      /* coalesces small vectored writes into one record */
    private var resumeTimer: LoopTimer?     /* delivers data held back while reading was stopped */

    /// client - start a client handshake over `transport`.
    ///
    /// `serverName` is sent as SNI (unless it is an IP literal) and checked
    /// against the certificate when the context verifies peers. With a
    /// `sessionCache`, a session stored under `sessionKey` (default: the server
    /// name) is offered for resumption and new ones are stored there.
    @discardableResult
    public static func client(
        over transport: any ByteStream,
        context: TLSContext,
        serverName: String?,
        sessionCache: TLSSessionCache? = nil,
        sessionKey: String? = nil,
        handshakeTimeoutMilliseconds: UInt64 = 30_000,
        completion: @escaping (Result<TLSConnection, TLSError>) -> Void
    ) -> TLSConnection? {
        precondition(!context.isServer, "client handshake with a server context")
        guard let connection = TLSConnection(
            transport: transport, context: context,
            sessionCache: sessionCache, sessionKey: sessionKey ?? serverName, completion: completion)
        else { return nil }
        connection.configureClient(serverName: serverName, verify: context.verifiesPeer)
        connection.begin(timeout: handshakeTimeoutMilliseconds)
        return connection
    }

    /// server - start a server handshake over `transport` (after accept, or after a STARTTLS 220).
    @discardableResult
    public static func server(
        over transport: any ByteStream,
        context: TLSContext,
        handshakeTimeoutMilliseconds: UInt64 = 30_000,
        completion: @escaping (Result<TLSConnection, TLSError>) -> Void
    ) -> TLSConnection? {
        precondition(context.isServer, "server handshake with a client context")
        guard let connection = TLSConnection(
            transport: transport, context: context, sessionCache: nil, sessionKey: nil, completion: completion)
        else { return nil }
        SSL_set_accept_state(connection.ssl)
        connection.begin(timeout: handshakeTimeoutMilliseconds)
        return connection
    }

    private init?(
        transport: any ByteStream,
        context: TLSContext,
        sessionCache: TLSSessionCache?,
        sessionKey: String?,
        completion: @escaping (Result<TLSConnection, TLSError>) -> Void
    ) {
        guard let ssl = SSL_new(context.raw) else {
            transport.close()
            completion(.failure(.fromQueue("SSL_new")))
            return nil
        }
        guard let readBIO = BIO_new(BIO_s_mem()), let writeBIO = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            transport.close()
            completion(.failure(.fromQueue("BIO_new")))
            return nil
        }
        /* An empty read BIO means "wait for more", not end of file. */
        _ = carrier_BIO_set_mem_eof_return(readBIO, -1)
        _ = carrier_BIO_set_mem_eof_return(writeBIO, -1)
        SSL_set_bio(ssl, readBIO, writeBIO)
        self.transport = transport
        self.ssl = ssl
        self.readBIO = readBIO
        self.writeBIO = writeBIO
        self.sessionCache = sessionCache
        self.sessionKey = sessionKey
        self.completion = completion
        _ = carrier_SSL_set_app_data(ssl, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit { SSL_free(ssl) }

    /// configureClient - SNI, name checks and the cached session for this destination.
    private func configureClient(serverName: String?, verify: Bool) {
        SSL_set_connect_state(ssl)
        if let serverName {
            if IPAddress(serverName) != nil {
                if verify { X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName) }
            } else {
                _ = carrier_SSL_set_tlsext_host_name(ssl, serverName)
                SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                if verify { _ = SSL_set1_host(ssl, serverName) }
            }
        }
        if let key = sessionKey, let session = sessionCache?.session(for: key) {
            _ = SSL_set_session(ssl, session.raw)
        }
    }

    /// begin - take over the transport, drop its plaintext leftovers, start handshaking.
    private func begin(timeout: UInt64) {
        transport.discardBufferedInput()
        transport.handler = self
        if timeout > 0 {
            let timer = LoopTimer(loop: transport.loop)
            handshakeTimer = timer
            timer.schedule(after: timeout) { [unowned self] _ in fail(TLSError.handshakeTimeout) }
        }
        transport.startReading()
        advance()
    }

    // MARK: Progress

    /// advance - run the handshake or read application data, then flush what OpenSSL wrote.
    private func advance() {
        if state == .handshaking {
            let result = SSL_do_handshake(ssl)
            if result != 1 {
                let error = SSL_get_error(ssl, result)
                if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE {
                    flush()
                } else {
                    flush()
                    fail(TLSError.handshakeFailure(ssl))
                }
                return
            }
            state = .open
            handshakeTimer?.close()
            handshakeTimer = nil
            flush()
            let completion = self.completion
            self.completion = nil
            completion?(.success(self))
        }
        if state == .open && reading { readPlaintext() }
        flush()
    }

    /// readPlaintext - decrypt every complete record and show it to the handler.
    private func readPlaintext() {
        while state == .open && reading, let handler {
            let target = inbound.hasKept ? inbound.readTarget(minimum: 16 * 1024) : loop.plaintextSlab
            let count = SSL_read(ssl, target.baseAddress, Int32(target.count))
            if count <= 0 {
                let error = SSL_get_error(ssl, count)
                if error == SSL_ERROR_ZERO_RETURN {
                    reading = false
                    handler.streamReadEOF(self)
                } else if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE {
                    fail(TLSError.fromQueue("read failed"))
                }
                return
            }
            let within: Bool
            if inbound.hasKept {
                inbound.commitRead(Int(count))
                within = inbound.presentKept { handler.streamRead(self, $0) }
            } else {
                within = inbound.present(UnsafeRawBufferPointer(start: target.baseAddress, count: Int(count))) {
                    handler.streamRead(self, $0)
                }
            }
            if !within { fail(IOError.inputOverLimit("read")) }
        }
    }

    /// flush - move the ciphertext OpenSSL produced to the transport as one buffer.
    private func flush() {
        let pending = Int(BIO_ctrl_pending(writeBIO))
        guard pending > 0 else { return }
        var out = ByteBuffer(capacity: pending)
        out.withUnsafeMutableWritableBytes(minimumCapacity: pending) { tail in
            Int(Swift.max(0, BIO_read(writeBIO, tail.baseAddress, Int32(pending))))
        }
        transport.write(out)
    }

    /// fail - end the connection with `error`; a pending handshake reports it.
    private func fail(_ error: any Error) {
        guard state != .closed else { return }
        let wasHandshaking = state == .handshaking
        state = .closed
        closeError = error
        handshakeTimer?.close()
        handshakeTimer = nil
        transport.close()
        if wasHandshaking, let completion {
            self.completion = nil
            completion(.failure(error as? TLSError ?? .protocolError(String(describing: error))))
        }
    }

    // MARK: ByteStream

    public var queuedWriteBytes: Int { transport.queuedWriteBytes }
    public var writeHighWaterMark: Int {
        get { transport.writeHighWaterMark }
        set { transport.writeHighWaterMark = newValue }
    }
    public var isWritable: Bool { transport.isWritable }
    public var isOpen: Bool { state == .open && transport.isOpen }
    public var localAddress: SocketAddress? { transport.localAddress }
    public var remoteAddress: SocketAddress? { transport.remoteAddress }

    /// True when the handshake resumed a cached session instead of a full handshake.
    public var isSessionReused: Bool { SSL_session_reused(ssl) == 1 }

    /// True when the peer's chain and name verified (meaningful even when not enforced).
    public var peerVerified: Bool { SSL_get_verify_result(ssl) == X509_V_OK && SSL_get0_peer_certificate(ssl) != nil }

    /// The negotiated protocol, e.g. "TLSv1.3".
    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// The negotiated cipher suite, e.g. "TLS_AES_256_GCM_SHA384".
    public var cipherSuite: String {
        SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? ""
    }

    public func write(_ buffer: ByteBuffer) {
        guard state == .open, !buffer.isEmpty else { return }
        encrypt(buffer.readableView)
        flush()
    }

    public func write(contentsOf buffers: [ByteBuffer]) {
        guard state == .open else { return }
        let total = buffers.reduce(0) { $0 + $1.readableBytes }
        if buffers.count > 1 && total <= 16 * 1024 {
            /* Several small pieces (SMTP commands) become one record, not one each. */
            scratch.clear()
            for buffer in buffers { scratch.append(buffer) }
            encrypt(scratch.readableView)
        } else {
            for buffer in buffers where !buffer.isEmpty { encrypt(buffer.readableView) }
        }
        flush()
    }

    /// encrypt - SSL_write all of `bytes` into the write BIO (a memory BIO takes everything).
    private func encrypt(_ bytes: UnsafeRawBufferPointer) {
        guard state == .open, bytes.count > 0 else { return }
        let written = SSL_write(ssl, bytes.baseAddress, Int32(bytes.count))
        if written <= 0 { fail(TLSError.fromQueue("write failed")) }
    }

    public func startReading() {
        guard state != .closed, !reading else { return }
        reading = true
        transport.startReading()
        /*
         * Plaintext may be waiting from before a stop: kept bytes, a decrypted
         * record, or ciphertext in the read BIO. Deliver it on the next loop
         * turn, never from inside this call.
         */
        if state == .open && (inbound.hasKept || SSL_pending(ssl) > 0 || BIO_ctrl_pending(readBIO) > 0) {
            let timer = resumeTimer ?? LoopTimer(loop: loop)
            resumeTimer = timer
            timer.schedule(after: 0) { [unowned self] _ in resume() }
        }
    }

    /// resume - deliver held-back input after reading restarted.
    private func resume() {
        guard state == .open, reading, let handler else { return }
        if inbound.hasKept && !inbound.presentKept(to: { handler.streamRead(self, $0) }) {
            fail(IOError.inputOverLimit("read"))
            return
        }
        advance()
    }

    public func stopReading() {
        reading = false
        if state == .open { transport.stopReading() }
    }

    public func shutdownWrite() {
        guard state == .open else { return }
        _ = SSL_shutdown(ssl)
        flush()
        transport.shutdownWrite()
    }

    public func discardBufferedInput() {
        inbound.discard()
    }

    public func close() {
        guard state != .closed else { return }
        if state == .handshaking {
            fail(TLSError.protocolError("closed during handshake"))
            return
        }
        /*
         * Send close_notify first (best effort: the transport tries to write it
         * at once). Besides telling the peer the data is complete, it keeps the
         * session resumable: OpenSSL marks a session bad when its connection is
         * freed without a shutdown having been sent.
         */
        _ = SSL_shutdown(ssl)
        flush()
        state = .closed
        transport.close()
    }

    // MARK: ByteStreamHandler (events from the transport)

    public func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard state != .closed else { return bytes.count }
        if BIO_write(readBIO, bytes.baseAddress, Int32(bytes.count)) != Int32(bytes.count) {
            fail(TLSError.fromQueue("buffering ciphertext"))
            return bytes.count
        }
        advance()
        return bytes.count
    }

    public func streamReadEOF(_ stream: any ByteStream) {
        if state == .handshaking {
            fail(TLSError.protocolError("peer closed the connection during the handshake"))
        } else if state == .open {
            reading = false
            handler?.streamReadEOF(self)
        }
    }

    public func streamWritable(_ stream: any ByteStream) {
        if state == .open { handler?.streamWritable(self) }
    }

    public func streamClosed(_ stream: any ByteStream, error: (any Error)?) {
        if state == .handshaking {
            fail(TLSError.protocolError("connection closed during the handshake: \(error.map { String(describing: $0) } ?? "by peer")"))
        }
        state = .closed
        handshakeTimer?.close()
        handshakeTimer = nil
        resumeTimer?.close()
        resumeTimer = nil
        let handler = self.handler
        self.handler = nil
        handler?.streamClosed(self, error: closeError ?? error)
    }
}
