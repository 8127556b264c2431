// ByteStream.swift - the stream vocabulary shared by TCP and TLS connections
//
// A protocol layer (an SMTP session driver, an echo server) sees a stream of
// bytes and does not care whether TLS sits underneath. Both `TCPConnection`
// and `TLSConnection` conform to `ByteStream`, and both use `InboundBytes` so
// the rules for unconsumed input are the same: the handler is shown every byte
// it has not yet consumed, returns how many it consumed, and the rest is kept
// for the next read. That is also what makes a STARTTLS upgrade safe: the kept
// bytes are plaintext received before the upgrade, and `discardBufferedInput()`
// drops them, including the rest of the chunk being delivered right now.

/// Events from a `ByteStream`, delivered on the stream's loop thread.
public protocol ByteStreamHandler: AnyObject {
    /// Bytes arrived. `bytes` is every received byte not yet consumed (valid only
    /// during the call); return how many of them, from the front, were consumed.
    /// Unconsumed bytes are shown again, followed by new ones, on the next call.
    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int
    /// The peer closed its sending side (TCP FIN, TLS close_notify).
    func streamReadEOF(_ stream: any ByteStream)
    /// The write queue fell to the low-water mark after having passed the high-water mark.
    func streamWritable(_ stream: any ByteStream)
    /// The stream is closed; `error` says why when it was not closed by `close()`.
    func streamClosed(_ stream: any ByteStream, error: (any Error)?)
}

extension ByteStreamHandler {
    public func streamWritable(_ stream: any ByteStream) {}
}

/// A connected, bidirectional byte stream on one loop.
///
/// Confined to its loop's thread. Writes never block and are never dropped
/// while the stream is open; `isWritable` turns false when the queued bytes
/// pass `writeHighWaterMark`, and the handler hears `streamWritable` when they
/// fall back to half of it. A producer that respects this keeps memory bounded.
public protocol ByteStream: AnyObject {
    /// The loop this stream belongs to.
    var loop: Loop { get }
    /// Receives this stream's events; set it before `startReading()`.
    var handler: (any ByteStreamHandler)? { get set }
    /// Bytes accepted by `write` and not yet confirmed written (the buffers still held).
    var queuedWriteBytes: Int { get }
    /// The queue size above which `isWritable` is false (default 1 MiB).
    var writeHighWaterMark: Int { get set }
    /// False while the write queue is above the high-water mark.
    var isWritable: Bool { get }
    /// True until the stream is closed or failed.
    var isOpen: Bool { get }
    /// The local address of the underlying socket.
    var localAddress: SocketAddress? { get }
    /// The peer's address.
    var remoteAddress: SocketAddress? { get }

    /// write - queue one buffer.
    func write(_ buffer: ByteBuffer)
    /// write - queue several buffers as one vectored write.
    func write(contentsOf buffers: [ByteBuffer])
    /// startReading - deliver reads to the handler. Bytes kept from earlier reads
    /// are shown again on a later loop turn, without waiting for new input.
    func startReading()
    /// stopReading - stop delivering reads (the kernel buffers, then TCP flow control pushes back).
    func stopReading()
    /// shutdownWrite - after queued writes, signal end of stream to the peer (half-close).
    func shutdownWrite()
    /// discardBufferedInput - drop every received byte not yet consumed, including the
    /// rest of the chunk being delivered when called from `streamRead`.
    func discardBufferedInput()
    /// close - close now; queued writes are dropped. The handler hears `streamClosed`.
    func close()
}

/// Received bytes a handler has not consumed yet, and the delivery rule.
///
/// Owned by one stream on its loop thread. A reference type so a handler can
/// call back into the stream (to discard or close) during a delivery without
/// overlapping access to a stored struct.
final class InboundBytes {
    var kept = ByteBuffer()             /* unconsumed bytes, oldest first */
    var discardRequested = false        /* set by discardBufferedInput() mid-delivery */
    let limit: Int                      /* most bytes kept before the stream fails */

    init(limit: Int) { self.limit = limit }

    /// True when some earlier bytes are still unconsumed.
    var hasKept: Bool { !kept.isEmpty }

    /// present - show `chunk`, after any kept bytes, to `consume`; keep the rest.
    /// Returns false when the kept bytes would exceed `limit`.
    func present(_ chunk: UnsafeRawBufferPointer, to consume: (UnsafeRawBufferPointer) -> Int) -> Bool {
        if kept.isEmpty {
            discardRequested = false
            let used = consume(chunk)
            if discardRequested {
                discardRequested = false
                return true
            }
            precondition(used >= 0 && used <= chunk.count, "handler consumed more than it was given")
            if used < chunk.count {
                kept.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[used...]))
            }
            return kept.readableBytes <= limit
        }
        kept.append(contentsOf: chunk)
        return presentKept(to: consume)
    }

    /// presentKept - show the kept bytes (after a read landed directly in them).
    func presentKept(to consume: (UnsafeRawBufferPointer) -> Int) -> Bool {
        discardRequested = false
        let used = consume(kept.readableView)
        if discardRequested {
            discardRequested = false
            kept.clear()
            return true
        }
        kept.moveReaderIndex(forwardBy: used)
        if kept.readerIndex > kept.capacity / 2 { kept.discardReadBytes() }
        return kept.readableBytes <= limit
    }

    /// discard - drop everything kept, and what is being delivered now.
    func discard() {
        kept.clear()
        discardRequested = true
    }

    /// readTarget - where the next socket read should land when bytes are kept.
    func readTarget(minimum: Int) -> UnsafeMutableRawBufferPointer {
        kept.reserveWritable(minimum)
        return UnsafeMutableRawBufferPointer(start: kept.writePointer, count: kept.writableBytes)
    }

    /// commitRead - `count` bytes were written at `readTarget`.
    func commitRead(_ count: Int) {
        kept.commitWritten(count)
    }
}
