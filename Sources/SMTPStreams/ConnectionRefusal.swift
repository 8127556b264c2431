// ConnectionRefusal.swift - answer a connection we will not serve, then let it go
//
// A server over its connection limits still owes the client a reply (421
// 4.7.0): write it, half-close, and close once the client hangs up or after
// five seconds, whichever comes first. What the client sends meanwhile is
// read and dropped, so a pipelining client cannot fill our buffers.

public import EventCore

/// Answers a connection over a connection limit with 421 and closes it.
///
/// Confined to the connection's loop thread; alive while the connection is
/// (it is the stream's handler). The reply is followed by a half-close and
/// the connection is closed when the client closes its side, or after five
/// seconds: closing at once could reset the connection under a client that
/// already sent EHLO, and the reset can destroy the 421 before it is read.
public final class ConnectionRefusal: ByteStreamHandler {
    private let timer: LoopTimer

    /// refuse - write `reply`, half-close, and close when the client is gone.
    public static func refuse(_ tcp: TCPConnection, with reply: ByteBuffer) {
        let refusal = ConnectionRefusal(loop: tcp.loop)
        tcp.handler = refusal
        tcp.write(reply)
        tcp.shutdownWrite()
        tcp.startReading()
        refusal.timer.schedule(after: 5_000) { [weak tcp] _ in tcp?.close() }
    }

    private init(loop: Loop) {
        timer = LoopTimer(loop: loop)
    }

    public func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }

    public func streamReadEOF(_ stream: any ByteStream) { stream.close() }

    public func streamClosed(_ stream: any ByteStream, error: (any Error)?) { timer.close() }
}
