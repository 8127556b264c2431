// BackpressureTests.swift - a writer facing a reader that stopped reading

import EventCore
import CarrierTesting
import Testing

/// Writes 64 KiB chunks while the stream is writable and records the queue size.
private final class GreedyWriter: ByteStreamHandler {
    let chunk = ByteBuffer(bytes: [UInt8](repeating: 0x61, count: 64 * 1024))
    var writes = 0
    var peakQueue = 0
    var writableEvents = 0
    let maximumWrites = 2_000               /* 125 MiB: a bound, never reached when backpressure works */

    func pump(_ stream: any ByteStream) {
        while stream.isWritable && writes < maximumWrites {
            stream.write(chunk)
            writes += 1
            peakQueue = max(peakQueue, stream.queuedWriteBytes)
        }
    }

    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }
    func streamReadEOF(_ stream: any ByteStream) {}
    func streamWritable(_ stream: any ByteStream) {
        writableEvents += 1
        pump(stream)
    }
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

/// Reads and drops everything once told to start.
private final class Drain: ByteStreamHandler {
    var received = 0
    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        received += bytes.count
        return bytes.count
    }
    func streamReadEOF(_ stream: any ByteStream) { stream.close() }
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

@Suite("Backpressure")
struct BackpressureTests {
    /// The queue stops growing at the high-water mark while the reader is stopped,
    /// and the writer hears `streamWritable` once the reader resumes.
    @Test func stoppedReaderStopsTheWriterAtTheHighWaterMark() throws {
        struct Outcome: Sendable {
            var writesWhenStalled = 0, writesLater = 0
            var peakQueue = 0, queueLater = 0
            var writableBeforeResume = 0, writableAfterResume = 0
        }
        let highWater = 256 * 1024
        let thread = try LoopThread.start(name: "backpressure")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<Outcome>()
        thread.execute { loop in
            var serverSide: TCPConnection?
            let drain = Drain()
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { connection in
                serverSide = connection          /* accepted, but not reading */
                connection.handler = drain
            }
            TCPConnection.connect(loop: loop, to: listener.localAddress) { connected in
                let client = try! connected.get()
                client.writeHighWaterMark = highWater
                let writer = GreedyWriter()
                client.handler = writer
                writer.pump(client)
                var outcome = Outcome()
                /* Let the kernel buffers fill, then look twice, 300 ms apart. */
                let look = LoopTimer(loop: loop)
                look.schedule(after: 300) { look in
                    outcome.writesWhenStalled = writer.writes
                    outcome.peakQueue = writer.peakQueue
                    look.schedule(after: 300) { look in
                        outcome.writesLater = writer.writes
                        outcome.queueLater = client.queuedWriteBytes
                        outcome.writableBeforeResume = writer.writableEvents
                        serverSide?.startReading()
                        look.schedule(after: 300) { look in
                            outcome.writableAfterResume = writer.writableEvents
                            look.close()
                            client.close()
                            listener.close()
                            serverSide?.close()
                            result.fulfill(outcome)
                        }
                    }
                }
            }
        }
        let outcome = try #require(result.wait(seconds: 20))
        #expect(outcome.writesWhenStalled < 2_000, "backpressure never engaged")
        #expect(outcome.writesLater == outcome.writesWhenStalled, "writer kept writing while stalled")
        #expect(outcome.peakQueue <= highWater + 64 * 1024)
        #expect(outcome.queueLater <= highWater + 64 * 1024)
        #expect(outcome.peakQueue > highWater, "queue never reached the high-water mark")
        #expect(outcome.writableBeforeResume == 0)
        #expect(outcome.writableAfterResume > 0)
    }
}
