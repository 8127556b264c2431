// LoopTests.swift - loop threads start, run jobs in order, and stop cleanly

import Dispatch
import EventCore
import CarrierTesting
import Testing

/// On close, starts a repeating timer and calls `onClose`: a handler that opens handles during shutdown.
private final class Stubborn: ByteStreamHandler {
    let loop: Loop
    let onClose: () -> Void
    init(loop: Loop, onClose: @escaping () -> Void = {}) {
        self.loop = loop
        self.onClose = onClose
    }
    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }
    func streamReadEOF(_ stream: any ByteStream) {}
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {
        LoopTimer(loop: loop).schedule(after: 10, repeatEvery: 10) { _ in }
        onClose()
    }
}

/// Reconnects whenever its connection ends, as a naive pool would.
private final class Reconnector {
    let loop: Loop
    let target: SocketAddress
    var attempts = 0
    init(loop: Loop, target: SocketAddress) {
        self.loop = loop
        self.target = target
    }
    func connect() {
        attempts += 1
        TCPConnection.connect(loop: loop, to: target) { [self] result in
            switch result {
            case .success(let connection):
                connection.handler = Stubborn(loop: loop) { [self] in connect() }
                connection.startReading()
            case .failure:
                connect()
            }
        }
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

    /// A handler that reconnects every time its connection ends cannot keep a stopping loop alive:
    /// connects made during shutdown fail with ECANCELED.
    @Test func reconnectingHandlerCannotBlockStop() throws {
        let thread = try LoopThread.start(name: "loop-retry")
        let connected = TestWaiter<Bool>()
        thread.execute { loop in
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { accepted in
                accepted.handler = Stubborn(loop: loop)
                accepted.startReading()
            }
            Reconnector(loop: loop, target: listener.localAddress).connect()
            LoopTimer(loop: loop).schedule(after: 50) { _ in connected.fulfill(true) }
        }
        #expect(connected.wait(seconds: 10) == true)
        let joined = TestWaiter<Bool>()
        DispatchQueue.global().async {
            thread.stopAndJoin()
            joined.fulfill(true)
        }
        #expect(joined.wait(seconds: 10) == true, "the loop thread did not exit")
    }

    /// A closed listener lets go of its accept closure: an owner that holds the
    /// listener and is captured by that closure is freed, on close and on stop.
    @Test(arguments: [false, true])
    func closedListenerReleasesItsOwner(byStop: Bool) throws {
        let thread = try LoopThread.start(name: "loop-owner")
        let freed = TestCounter()
        let listening = TestWaiter<Bool>()
        thread.execute { loop in
            let owner = ListenerOwner(freed: freed)
            owner.listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { [owner] accepted in
                owner.accepted += 1
                accepted.close()
            }
            if !byStop { owner.listener?.close() }
            listening.fulfill(true)
        }
        #expect(listening.wait(seconds: 10) == true)
        if byStop {
            thread.stopAndJoin()
        } else {
            /* Two round trips through the mailbox: the close callback has run by then. */
            _ = try runOnLoop(thread) { loop, done in loop.nextTurn { done(true) } }
            _ = try runOnLoop(thread) { _, done in done(true) }
        }
        #expect(freed.value == 1, "the listener's owner was never freed")
        if !byStop { thread.stopAndJoin() }
    }
}

/// Holds a listener whose accept closure captures this object; counts its own deinit.
private final class ListenerOwner {
    var listener: TCPListener?
    var accepted = 0
    private let freed: TestCounter
    init(freed: TestCounter) { self.freed = freed }
    deinit { freed.add() }
}
