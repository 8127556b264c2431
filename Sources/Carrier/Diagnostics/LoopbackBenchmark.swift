// LoopbackBenchmark.swift - measure the event core on this machine: echo round trips and bulk transfer
//
// `carrier demo` (until the delivery engine exists) and the Benchmarks package
// both drive this rig. A server loop thread and a client loop thread talk over
// loopback, in plaintext or TLS, so the figures include everything a real
// connection pays: syscalls, the loop, buffer handling, and for TLS the
// record layer on both ends.

import Dispatch
import EventCore
import Synchronization

/// A pair of loop threads (server and client) connected over loopback.
///
/// The rig's methods block the calling thread until the measured work is done
/// on the loops; call them from a thread that is not one of the rig's loops.
public final class LoopbackBenchmark: Sendable {
    /// Plaintext TCP or TLS (TLS 1.3, verified against a CA made at start-up).
    public enum Transport: String, Sendable { case tcp, tls }

    public let transport: Transport
    private let server: LoopThread
    private let client: LoopThread
    private let echoAddress: SocketAddress
    private let sinkAddress: SocketAddress
    private let clientTLS: TLSContext?

    /// start - spawn both loops and listen for echo and bulk connections.
    public static func start(transport: Transport) throws -> LoopbackBenchmark {
        SystemLimits.raiseOpenFileLimit()
        var serverTLS: TLSContext?
        var clientTLS: TLSContext?
        if transport == .tls {
            let authority = try TLSCertificate.makeAuthority(commonName: "Carrier benchmark CA")
            let leaf = try authority.issue(commonName: "localhost", dnsNames: ["localhost"])
            serverTLS = try TLSContext.server(TLSServerConfiguration(identity: .pem(leaf)))
            var configuration = TLSClientConfiguration()
            configuration.trustRoots = .pem(authority.certificatePEM)
            clientTLS = try TLSContext.client(configuration)
        }
        let server = try LoopThread.start(name: "bench-server")
        let client = try LoopThread.start(name: "bench-client")
        let addresses = BlockingResult<Result<(SocketAddress, SocketAddress), IOError>>()
        server.execute { [serverTLS] loop in
            do throws(IOError) {
                let any = SocketAddress(ip: IPAddress("127.0.0.1")!, port: 0)
                let echo = try TCPListener(loop: loop, address: any) { accepted($0, serverTLS) { EchoHandler() } }
                let sink = try TCPListener(loop: loop, address: any) { accepted($0, serverTLS) { BulkSinkHandler() } }
                addresses.set(.success((echo.localAddress, sink.localAddress)))
            } catch {
                addresses.set(.failure(error))
            }
        }
        let (echo, sink) = try addresses.wait().get()
        return LoopbackBenchmark(transport: transport, server: server, client: client,
                                 echoAddress: echo, sinkAddress: sink, clientTLS: clientTLS)
    }

    private init(transport: Transport, server: LoopThread, client: LoopThread,
                 echoAddress: SocketAddress, sinkAddress: SocketAddress, clientTLS: TLSContext?) {
        self.transport = transport
        self.server = server
        self.client = client
        self.echoAddress = echoAddress
        self.sinkAddress = sinkAddress
        self.clientTLS = clientTLS
    }

    /// stop - close everything and join both threads.
    public func stop() {
        client.stopAndJoin()
        server.stopAndJoin()
    }

    /// A ready set of client connections for repeated round-trip runs.
    ///
    /// The clients live on the rig's client loop and are touched only there;
    /// this handle just names them for the calling thread, hence unchecked.
    public final class EchoSession: @unchecked Sendable {
        fileprivate let clients: [PingPongClient]
        fileprivate init(_ clients: [PingPongClient]) { self.clients = clients }
    }

    /// openEchoSession - connect (and handshake) `connections` echo clients.
    public func openEchoSession(connections: Int) throws -> EchoSession {
        let ready = BlockingResult<Result<EchoSession, BenchmarkError>>()
        client.execute { [echoAddress, clientTLS] loop in
            var clients: [PingPongClient] = []
            var failed = false
            for _ in 0..<connections {
                connectStream(loop, to: echoAddress, tls: clientTLS) { result in
                    switch result {
                    case .success(let stream):
                        clients.append(PingPongClient(stream: stream))
                    case .failure(let error):
                        if !failed { ready.set(.failure(error)) }
                        failed = true
                    }
                    if clients.count == connections { ready.set(.success(EchoSession(clients))) }
                }
            }
        }
        return try ready.wait().get()
    }

    /// roundTrips - every session client sends `messageSize` bytes and waits for the echo,
    /// `perConnection` times; returns the elapsed nanoseconds for all of them.
    public func roundTrips(_ session: EchoSession, perConnection: Int, messageSize: Int) -> UInt64 {
        let done = BlockingResult<UInt64>()
        client.execute { _ in
            let start = MonotonicClock.nanoseconds()
            var remaining = session.clients.count
            let message = ByteBuffer(bytes: [UInt8](repeating: 0x2a, count: messageSize))
            for client in session.clients {
                client.run(message: message, times: perConnection) {
                    remaining -= 1
                    if remaining == 0 { done.set(MonotonicClock.nanoseconds() - start) }
                }
            }
        }
        return done.wait()
    }

    /// connections - open `count` connections (with a full TLS handshake when TLS), `concurrency`
    /// at a time, closing each once established; returns the elapsed nanoseconds.
    public func connections(_ count: Int, concurrency: Int = 1) throws -> UInt64 {
        let done = BlockingResult<Result<UInt64, BenchmarkError>>()
        client.execute { [echoAddress, clientTLS] loop in
            let start = MonotonicClock.nanoseconds()
            var started = 0
            var finished = 0
            func next() {
                guard started < count else { return }
                started += 1
                connectStream(loop, to: echoAddress, tls: clientTLS) { result in
                    switch result {
                    case .success(let stream):
                        stream.close()
                        finished += 1
                        if finished == count { done.set(.success(MonotonicClock.nanoseconds() - start)) }
                        next()
                    case .failure(let error):
                        done.set(.failure(error))
                    }
                }
            }
            for _ in 0..<max(1, min(concurrency, count)) { next() }
        }
        return try done.wait().get()
    }

    /// A connection kept open for repeated bulk transfers.
    ///
    /// Its sender lives on the rig's client loop and is touched only there;
    /// this handle just names it for the calling thread, hence unchecked.
    public final class BulkSession: @unchecked Sendable {
        fileprivate let sender: BulkSender
        fileprivate init(_ sender: BulkSender) { self.sender = sender }
    }

    /// openBulkSession - connect (and handshake) one connection to the bulk sink.
    public func openBulkSession() throws -> BulkSession {
        let ready = BlockingResult<Result<BulkSession, BenchmarkError>>()
        client.execute { [sinkAddress, clientTLS] loop in
            connectStream(loop, to: sinkAddress, tls: clientTLS) { result in
                ready.set(result.map { BulkSession(BulkSender(stream: $0)) })
            }
        }
        return try ready.wait().get()
    }

    /// bulk - send `bytes` one way on the session's connection; returns nanoseconds
    /// until the server confirmed receiving all of them.
    public func bulk(_ session: BulkSession, bytes: Int) -> UInt64 {
        let done = BlockingResult<UInt64>()
        client.execute { _ in
            session.sender.send(bytes) { done.set($0) }
        }
        return done.wait()
    }
}

/// Why a benchmark could not run.
public struct BenchmarkError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// accepted - serve one accepted connection, after a TLS handshake when configured.
private func accepted(_ connection: TCPConnection, _ tls: TLSContext?, _ makeHandler: @escaping () -> any ByteStreamHandler) {
    guard let tls else {
        connection.handler = makeHandler()
        connection.startReading()
        return
    }
    TLSConnection.server(over: connection, context: tls) { result in
        guard case .success(let stream) = result else { return }
        stream.handler = makeHandler()
        stream.startReading()
    }
}

/// connectStream - a connected client stream, TLS when a context is given.
private func connectStream(
    _ loop: Loop, to address: SocketAddress, tls: TLSContext?,
    _ completion: @escaping (Result<any ByteStream, BenchmarkError>) -> Void
) {
    TCPConnection.connect(loop: loop, to: address, timeoutMilliseconds: 10_000) { result in
        switch result {
        case .failure(let error):
            completion(.failure(BenchmarkError(description: "connect: \(error)")))
        case .success(let tcp):
            guard let tls else { return completion(.success(tcp)) }
            TLSConnection.client(over: tcp, context: tls, serverName: "localhost") { outcome in
                switch outcome {
                case .success(let stream): completion(.success(stream))
                case .failure(let error): completion(.failure(BenchmarkError(description: "\(error)")))
                }
            }
        }
    }
}

/// Echoes every byte back, reusing one buffer (no allocation per read).
private final class EchoHandler: ByteStreamHandler {
    private var out = ByteBuffer(capacity: 64 * 1024)
    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        out.clear()
        out.append(contentsOf: bytes)
        stream.write(out)
        return bytes.count
    }
    func streamReadEOF(_ stream: any ByteStream) { stream.close() }
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

/// Sends a message, waits for all of it to come back, repeats; loop-confined.
final class PingPongClient: ByteStreamHandler {
    private let stream: any ByteStream
    private var message = ByteBuffer()
    private var remaining = 0
    private var awaiting = 0
    private var finished: (() -> Void)?

    init(stream: any ByteStream) {
        self.stream = stream
        stream.handler = self
        stream.startReading()
    }

    func run(message: ByteBuffer, times: Int, finished: @escaping () -> Void) {
        self.message = message
        self.remaining = times
        self.finished = finished
        sendNext()
    }

    private func sendNext() {
        guard remaining > 0 else {
            finished?()
            finished = nil
            return
        }
        remaining -= 1
        awaiting = message.readableBytes
        stream.write(message)
    }

    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        awaiting -= bytes.count
        if awaiting <= 0 { sendNext() }
        return bytes.count
    }
    func streamReadEOF(_ stream: any ByteStream) {}
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

/// Reads frames of an 8-byte length and that many bytes; answers one byte per frame.
private final class BulkSinkHandler: ByteStreamHandler {
    private var remaining = 0                   /* payload bytes still due in this frame */
    private var inFrame = false
    private let ack = ByteBuffer(bytes: [1])

    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        var used = 0
        while used < bytes.count {
            if !inFrame {
                guard bytes.count - used >= 8 else { break }
                remaining = Int(UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: used, as: UInt64.self)))
                used += 8
                inFrame = true
            }
            let take = min(remaining, bytes.count - used)
            used += take
            remaining -= take
            if remaining == 0 {
                inFrame = false
                stream.write(ack)
            }
        }
        return used
    }
    func streamReadEOF(_ stream: any ByteStream) { stream.close() }
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

/// Sends a length frame of one shared 64 KiB chunk, repeated while writable; loop-confined.
final class BulkSender: ByteStreamHandler {
    private let stream: any ByteStream
    private let chunk = ByteBuffer(bytes: [UInt8](repeating: 0x55, count: 64 * 1024))
    private var remaining = 0
    private var start: UInt64 = 0
    private var done: ((UInt64) -> Void)?

    init(stream: any ByteStream) {
        self.stream = stream
        stream.handler = self
        stream.startReading()
    }

    func send(_ total: Int, done: @escaping (UInt64) -> Void) {
        self.done = done
        remaining = total
        start = MonotonicClock.nanoseconds()
        var header = ByteBuffer(capacity: 8)
        withUnsafeBytes(of: UInt64(total).bigEndian) { header.append(contentsOf: $0) }
        stream.write(header)
        pump()
    }

    private func pump() {
        while remaining > 0 && stream.isWritable {
            let count = min(chunk.readableBytes, remaining)
            stream.write(chunk.prefix(count))
            remaining -= count
        }
    }

    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        let elapsed = MonotonicClock.nanoseconds() - start
        done?(elapsed)
        done = nil
        return bytes.count
    }
    func streamWritable(_ stream: any ByteStream) { pump() }
    func streamReadEOF(_ stream: any ByteStream) {}
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

/// A value produced on a loop thread and awaited by the calling thread.
final class BlockingResult<Value: Sendable>: Sendable {
    private let slot = Mutex<Value?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    func set(_ value: Value) {
        let first = slot.withLock { current -> Bool in
            guard current == nil else { return false }
            current = value
            return true
        }
        if first { ready.signal() }
    }

    func wait() -> Value {
        ready.wait()
        return slot.withLock { $0! }
    }
}
