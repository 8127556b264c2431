// EchoPeers.swift - echo server and checking client handlers for stream tests

public import EventCore

/// Writes back every byte it reads; closes when the peer finishes sending.
///
/// Confined to the loop thread of the stream it handles. Reuses one outgoing
/// buffer, so a steady echo allocates nothing per read.
public final class EchoServerHandler: ByteStreamHandler {
    private var out = ByteBuffer(capacity: 64 * 1024)
    /// Bytes echoed so far.
    public private(set) var echoed = 0
    private let onClose: ((Int) -> Void)?

    public init(onClose: ((Int) -> Void)? = nil) { self.onClose = onClose }

    public func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        out.clear()
        out.append(contentsOf: bytes)
        stream.write(out)
        echoed += bytes.count
        return bytes.count
    }

    public func streamReadEOF(_ stream: any ByteStream) { stream.shutdownWrite() }

    public func streamClosed(_ stream: any ByteStream, error: (any Error)?) { onClose?(echoed) }
}

/// The byte at offset `index` of the test pattern for connection `seed`.
@inline(__always)
public func patternByte(seed: Int, index: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: (index &* 31) ^ (index >> 8) ^ seed)
}

/// Sends `total` pattern bytes in `chunk`-sized writes and checks every byte echoed back.
///
/// Confined to its stream's loop thread. Reports (bytes verified, mismatches)
/// once, when the whole pattern came back or the stream closed.
public final class EchoCheckingClient: ByteStreamHandler {
    private let seed: Int
    private let total: Int
    private let chunk: Int
    private var sent = 0
    private var received = 0
    private var mismatches = 0
    private var reported = false
    private let report: (_ verified: Int, _ mismatches: Int) -> Void

    public init(seed: Int, total: Int, chunk: Int = 16 * 1024, report: @escaping (Int, Int) -> Void) {
        self.seed = seed
        self.total = total
        self.chunk = chunk
        self.report = report
    }

    /// start - begin reading and sending on `stream`.
    public func start(on stream: any ByteStream) {
        stream.handler = self
        stream.startReading()
        sendMore(stream)
    }

    private func sendMore(_ stream: any ByteStream) {
        while sent < total && stream.isWritable {
            let count = Swift.min(chunk, total - sent)
            var buffer = ByteBuffer(capacity: count)
            buffer.withUnsafeMutableWritableBytes(minimumCapacity: count) { tail in
                for offset in 0..<count { tail[offset] = patternByte(seed: seed, index: sent + offset) }
                return count
            }
            sent += count
            stream.write(buffer)
        }
    }

    public func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        for (offset, byte) in bytes.enumerated() where byte != patternByte(seed: seed, index: received + offset) {
            mismatches += 1
        }
        received += bytes.count
        if received >= total { finish(stream) }
        return bytes.count
    }

    public func streamWritable(_ stream: any ByteStream) { sendMore(stream) }

    public func streamReadEOF(_ stream: any ByteStream) { finish(stream) }

    public func streamClosed(_ stream: any ByteStream, error: (any Error)?) {
        if !reported {
            reported = true
            report(received, mismatches + (received == total ? 0 : 1))
        }
    }

    private func finish(_ stream: any ByteStream) {
        if !reported {
            reported = true
            report(received, mismatches)
        }
        stream.close()
    }
}
