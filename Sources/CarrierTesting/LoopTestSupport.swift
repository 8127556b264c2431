// LoopTestSupport.swift - run a job on a loop thread and wait for the value it reports
//
// Loop-confined objects (connections, timers, resolvers) must be made and used
// on their loop's thread, while a test body runs elsewhere. `runOnLoop` posts
// a job that gets the loop and a `done` function, then blocks the test until
// the job calls `done` or a deadline passes, so a stuck callback fails the test
// instead of hanging it.

public import EventCore

/// Why `runOnLoop` returned without a value.
///
/// A value; safe to send between threads.
public enum LoopTestError: Error, Sendable, CustomStringConvertible {
    /// The job did not call `done` within this many seconds.
    case timedOut(seconds: Double)
    /// The loop refused the job: it has been stopped.
    case loopStopped

    public var description: String {
        switch self {
        case .timedOut(let seconds): return "the loop job did not report within \(seconds) s"
        case .loopStopped: return "the loop thread has stopped and refused the job"
        }
    }
}

/// runOnLoop - run `body` on `thread`'s loop; wait up to `timeout` seconds for the value it passes to `done`.
///
/// `body` runs on the loop thread; `done` may be called from any thread, and
/// only its first call counts. Make loop-confined objects inside `body`.
public func runOnLoop<T: Sendable>(
    _ thread: LoopThread,
    timeout: Double = 10,
    _ body: @escaping @Sendable (Loop, @escaping @Sendable (T) -> Void) -> Void
) throws(LoopTestError) -> T {
    let result = TestWaiter<T>()
    let posted = thread.execute { loop in
        body(loop) { value in result.fulfill(value) }
    }
    guard posted else { throw .loopStopped }
    guard let value = result.wait(seconds: timeout) else { throw .timedOut(seconds: timeout) }
    return value
}
