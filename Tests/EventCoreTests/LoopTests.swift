// LoopTests.swift - loop threads start, run jobs in order, and stop cleanly

import Dispatch
import EventCore
import CarrierTesting
import Testing

/// On close, starts a repeating timer: a handler that opens handles during shutdown.
private final class Stubborn: ByteStreamHandler {
    let loop: Loop
    init(loop: Loop) { self.loop = loop }
    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }
    func streamReadEOF(_ stream: any ByteStream) {}
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {
        LoopTimer(loop: loop).schedule(after: 10, repeatEvery: 10) { _ in }
    }
}

@Suite("Loop")
struct LoopTests {
    /// Jobs posted from one thread run on the loop thread, in order.
    @Test func jobsRunOnTheLoopThreadInOrder() throws {
        let thread = try LoopThread.start(name: "loop-order")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<[Int]>()
        let order = TestCounter()
        for index in 0..<100 {
            thread.execute { _ in
                #expect(thread.isCurrentThread)
                if order.add() - 1 != index { result.fulfill([index]) }
                if index == 99 { result.fulfill(Array(0..<100)) }
            }
        }
        #expect(result.wait(seconds: 10) == Array(0..<100))
        #expect(!thread.isCurrentThread)
    }

    /// stop() closes every handle, including ones handlers open while being closed.
    @Test func stopClosesHandlesOpenedDuringShutdown() throws {
        let thread = try LoopThread.start(name: "loop-stop")
        let connected = TestWaiter<Bool>()
        thread.execute { loop in
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { accepted in
                accepted.handler = Stubborn(loop: loop)
                accepted.startReading()
            }
            TCPConnection.connect(loop: loop, to: listener.localAddress) { result in
                let connection = try! result.get()
                connection.handler = Stubborn(loop: loop)
                connection.startReading()
                connected.fulfill(true)
            }
            LoopTimer(loop: loop).schedule(after: 5, repeatEvery: 5) { _ in }
        }
        #expect(connected.wait(seconds: 10) == true)
        let joined = TestWaiter<Bool>()
        DispatchQueue.global().async {
            thread.stopAndJoin()
            joined.fulfill(true)
        }
        #expect(joined.wait(seconds: 10) == true, "the loop thread did not exit")
    }
}
