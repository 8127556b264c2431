// TLSConnection.swift - TLS over memory BIOs on top of a byte stream (implicit TLS and STARTTLS)
//
// OpenSSL never touches the socket. Its BIO (TLSMemoryBIO) reads ciphertext
// straight from the chunk the transport is delivering and writes ciphertext
// straight into our outgoing buffer; OpenSSL keeps partial records itself.
// SSL_read decrypts into the loop's plaintext slab and the handler is shown
// the bytes in place, with the same consumed-count rule as plain TCP. The
// event loop stays in charge of all I/O, and one code path serves implicit
// TLS (port 465) and an upgrade in the middle of a plaintext session (STARTTLS).
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
/// the handshake; the completion runs once, never before the call returns,
/// with the connection ready for application data or with a `TLSError` (the
/// transport is closed then). After that it behaves as any `ByteStream`;
/// closing it sends close_notify and closes the transport.
public final class TLSConnection: ByteStream, ByteStreamHandler {
    private enum State { case handshaking, open, closed }

    /// The stream carrying the ciphertext.
    public let transport: any ByteStream
    public var handler: (any ByteStreamHandler)?
    public var loop: Loop { transport.loop }

    let sessionCache: TLSSessionCache?      /* client: where new sessions go */
    let sessionCacheKey: String?            /* client: context scope + destination */
    private let ssl: OpaquePointer          /* SSL*, freed in deinit; owns the BIO */
    private let verifiesPeer: Bool          /* client context enforces verification */
    private var state = State.handshaking
    private var closeError: (any Error)?
    private var reading = false
    private var peerFinished = false        /* close_notify received: EOF reported, input ignored */
    private var discardRequested = false    /* discardBufferedInput() during a delivery */
    private var completion: ((Result<TLSConnection, TLSError>) -> Void)?
    private var handshakeTimer: LoopTimer?
    private var resumeTimer: LoopTimer?     /* delivers input held back while reading was stopped */

    private var cipherInput = UnsafeRawBufferPointer(start: nil, count: 0)  /* unread part of the chunk being delivered */
    private var pendingCiphertext = ByteBuffer()  /* ciphertext kept across deliveries; read before cipherInput */
    private let inbound = InboundBytes(limit: TCPConnection.defaultInboundLimit)
    private var scratch = ByteBuffer()      /* coalesces small vectored writes into one record */
    private var ciphertext = ByteBuffer()   /* written by the BIO, handed to the transport by flush() */
    private var handedOver: [ByteBuffer] = [] /* earlier ciphertext buffers, reused once the transport lets go */

    /// client - start a client handshake over `transport`.
    ///
    /// `serverName` is sent as SNI (unless it is an IP literal) and checked
    /// against the certificate when the context verifies peers; a verifying
    /// context without a name fails with `.configuration`. With a
    /// `sessionCache`, a session stored for this context and `sessionKey`
    /// (default: the server name) is taken out and offered for resumption
    /// (TLS 1.3 tickets are single-use), and new ones are stored there.
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
        let key = (sessionKey ?? serverName).map { "\(context.cacheScope)|\($0)" }
        guard let connection = TLSConnection(
            transport: transport, context: context,
            sessionCache: sessionCache, sessionCacheKey: key, completion: completion)
        else { return nil }
        if let error = connection.configureClient(serverName: serverName) {
            connection.fail(error)
            return nil
        }
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
            transport: transport, context: context, sessionCache: nil, sessionCacheKey: nil, completion: completion)
        else { return nil }
        SSL_set_accept_state(connection.ssl)
        connection.begin(timeout: handshakeTimeoutMilliseconds)
        return connection
    }

    private init?(
        transport: any ByteStream,
        context: TLSContext,
        sessionCache: TLSSessionCache?,
        sessionCacheKey: String?,
        completion: @escaping (Result<TLSConnection, TLSError>) -> Void
    ) {
        let failure: TLSError?
        if !transport.isOpen {
            failure = .transport(.cancelled("TLS handshake: the connection is already closed"))
        } else if let ssl = SSL_new(context.raw) {
            self.transport = transport
            self.ssl = ssl
            self.verifiesPeer = context.verifiesPeer
            self.sessionCache = sessionCache
            self.sessionCacheKey = sessionCacheKey
            self.completion = completion
            _ = carrier_SSL_set_app_data(ssl, Unmanaged.passUnretained(self).toOpaque())
            guard let bio = TLSMemoryBIO.make(for: self) else {
                fail(TLSError.fromQueue("BIO_new"))
                return nil
            }
            /* One BIO for both directions: SSL_set_bio takes its single reference. */
            SSL_set_bio(ssl, bio, bio)
            return
        } else {
            failure = .fromQueue("SSL_new")
        }
        /* Never report from inside the call that asked. */
        transport.close()
        let failed = failure!
        transport.loop.nextTurn { completion(.failure(failed)) }
        return nil
    }

    deinit { SSL_free(ssl) }

    /// configureClient - SNI, name checks and the cached session; an error when a check cannot be set.
    private func configureClient(serverName: String?) -> TLSError? {
        SSL_set_connect_state(ssl)
        guard let serverName else {
            return verifiesPeer ? .configuration("certificate verification needs a server name") : nil
        }
        ERR_clear_error()
        if IPAddress(serverName) != nil {
            if verifiesPeer && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName) != 1 {
                return .configurationFromQueue("checking IP address \(serverName)")
            }
        } else {
            if carrier_SSL_set_tlsext_host_name(ssl, serverName) != 1 {
                return .configurationFromQueue("server name \(serverName)")
            }
            SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
            if verifiesPeer && SSL_set1_host(ssl, serverName) != 1 {
                return .configurationFromQueue("checking host name \(serverName)")
            }
        }
        if let key = sessionCacheKey, let session = sessionCache?.take(for: key) {
            /* A session that cannot be set just means a full handshake. */
            if SSL_set_session(ssl, session.raw) != 1 { ERR_clear_error() }
        }
        return nil
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
            ERR_clear_error()
            let result = SSL_do_handshake(ssl)
            if result != 1 {
                let error = SSL_get_error(ssl, result)
                flush()
                if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE {
                    fail(TLSError.handshakeFailure(ssl, verifying: verifiesPeer))
                }
                return
            }
            state = .open
            handshakeTimer?.close()
            handshakeTimer = nil
            /* Until the user starts reading, leave further ciphertext with the transport. */
            if !reading { transport.stopReading() }
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
        while state == .open && reading && !peerFinished, let handler {
            let target = inbound.hasKept ? inbound.readTarget(minimum: 16 * 1024) : loop.plaintextSlab
            ERR_clear_error()
            let count = SSL_read(ssl, target.baseAddress, Int32(target.count))
            if count <= 0 {
                let error = SSL_get_error(ssl, count)
                if error == SSL_ERROR_ZERO_RETURN {
                    /* close_notify: report end of stream once; anything after it is ignored. */
                    peerFinished = true
                    reading = false
                    transport.stopReading()
                    handler.streamReadEOF(self)
                } else if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE {
                    fail(TLSError.fromQueue("read failed"))
                }
                return
            }
            discardRequested = false
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
            if discardRequested { dropBufferedInput() }
        }
    }

    /// dropBufferedInput - after a discard: forget the chunk being delivered and what OpenSSL holds.
    private func dropBufferedInput() {
        discardRequested = false
        cipherInput = UnsafeRawBufferPointer(start: nil, count: 0)
        pendingCiphertext.clear()
        while state == .open {
            ERR_clear_error()
            if SSL_read(ssl, loop.plaintextSlab.baseAddress, Int32(loop.plaintextSlab.count)) <= 0 { break }
        }
        ERR_clear_error()
    }

    /// flush - hand the ciphertext OpenSSL produced to the transport as one buffer.
    ///
    /// Buffers are recycled rather than freed: a buffer the transport sent at
    /// once is free again immediately, one it queued is free after its write
    /// completes. While the transport is backlogged (bulk transfer) up to
    /// `maximumHandedOver` buffers circulate; allocating and freeing a 64 KiB
    /// buffer per write instead makes the allocator hand back fresh pages, and
    /// the page faults cost more than the encryption. Once the queue is empty
    /// only one spare is kept.
    private func flush() {
        guard !ciphertext.isEmpty else { return }
        transport.write(ciphertext)
        if handedOver.count < TLSConnection.maximumHandedOver { handedOver.append(ciphertext) }
        if transport.queuedWriteBytes == 0 && handedOver.count > 1 { handedOver.removeFirst(handedOver.count - 1) }
        ciphertext = ByteBuffer()
        for index in handedOver.indices where handedOver[index].isUniquelyReferenced() {
            ciphertext = handedOver.remove(at: index)
            ciphertext.clear()
            break
        }
    }

    /// Most ciphertext buffers kept for reuse while the transport is backlogged.
    private static let maximumHandedOver = 32

    /// bioWrite - the BIO's write: take ciphertext for the transport.
    func bioWrite(_ source: UnsafeRawPointer, count: Int) {
        ciphertext.append(contentsOf: UnsafeRawBufferPointer(start: source, count: count))
    }

    /// bioRead - the BIO's read: copy kept ciphertext, then the chunk being delivered; 0 when both are used up.
    func bioRead(into destination: UnsafeMutableRawPointer, count: Int) -> Int {
        if !pendingCiphertext.isEmpty {
            let taken = Swift.min(count, pendingCiphertext.readableBytes)
            destination.copyMemory(from: pendingCiphertext.readPointer, byteCount: taken)
            pendingCiphertext.moveReaderIndex(forwardBy: taken)
            return taken
        }
        let taken = Swift.min(count, cipherInput.count)
        guard taken > 0, let base = cipherInput.baseAddress else { return 0 }
        destination.copyMemory(from: base, byteCount: taken)
        cipherInput = UnsafeRawBufferPointer(rebasing: cipherInput[taken...])
        return taken
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
            let failure: TLSError
            if let error = error as? TLSError {
                failure = error
            } else if let error = error as? IOError {
                failure = .transport(error)
            } else {
                failure = .protocolError(String(describing: error))
            }
            completion(.failure(failure))
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

    /// encrypt - SSL_write all of `bytes`; the BIO takes every record at once.
    private func encrypt(_ bytes: UnsafeRawBufferPointer) {
        guard state == .open, bytes.count > 0 else { return }
        /* Room for the records and their headers and tags, so appends never regrow. */
        ciphertext.reserveWritable(bytes.count + (bytes.count / 16_384 + 1) * 64)
        ERR_clear_error()
        let written = SSL_write(ssl, bytes.baseAddress, Int32(bytes.count))
        if written <= 0 { fail(TLSError.fromQueue("write failed")) }
    }

    public func startReading() {
        guard state != .closed, !reading, !peerFinished else { return }
        reading = true
        /* Ciphertext left unconsumed stays with the transport, which shows it again. */
        transport.startReading()
        /*
         * Input may be waiting from before a stop: kept plaintext, the rest of
         * a decrypted record, or buffered ciphertext. Deliver it on the next
         * loop turn, never from inside this call.
         */
        if state == .open && (inbound.hasKept || SSL_pending(ssl) > 0 || !pendingCiphertext.isEmpty) {
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
        sendCloseNotify()
        transport.shutdownWrite()
    }

    /// sendCloseNotify - queue close_notify (once; OpenSSL ignores a repeat) and flush it.
    private func sendCloseNotify() {
        ERR_clear_error()
        if SSL_shutdown(ssl) < 0 { ERR_clear_error() }
        flush()
    }

    public func discardBufferedInput() {
        inbound.discard()
        discardRequested = true
    }

    public func close() {
        guard state != .closed else { return }
        if state == .handshaking {
            fail(IOError.cancelled("TLS handshake: closed by the caller"))
            return
        }
        /*
         * Send close_notify first (best effort: the transport tries to write it
         * at once). Besides telling the peer the data is complete, it keeps the
         * session resumable: OpenSSL marks a session bad when its connection is
         * freed without a shutdown having been sent.
         */
        sendCloseNotify()
        state = .closed
        transport.close()
    }

    // MARK: ByteStreamHandler (events from the transport)

    public func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard state != .closed && !peerFinished else { return bytes.count }
        /* Not reading: leave the ciphertext with the transport (it stopped reading too). */
        if state == .open && !reading { return 0 }
        cipherInput = bytes
        advance()
        if state != .closed && !cipherInput.isEmpty {
            pendingCiphertext.append(contentsOf: cipherInput)
        }
        cipherInput = UnsafeRawBufferPointer(start: nil, count: 0)
        return bytes.count
    }

    public func streamReadEOF(_ stream: any ByteStream) {
        if state == .handshaking {
            fail(IOError.endOfStream("TLS handshake: the peer closed the connection"))
        } else if state == .open && !peerFinished {
            /* FIN without close_notify: still the end of the stream, reported once. */
            peerFinished = true
            reading = false
            handler?.streamReadEOF(self)
        }
    }

    public func streamWritable(_ stream: any ByteStream) {
        if state == .open { handler?.streamWritable(self) }
    }

    public func streamClosed(_ stream: any ByteStream, error: (any Error)?) {
        if state == .handshaking {
            fail(error ?? IOError.endOfStream("TLS handshake: the connection closed"))
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
