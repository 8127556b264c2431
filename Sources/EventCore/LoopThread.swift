// LoopThread.swift - a thread that owns and runs one Loop

import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A dedicated OS thread running one `Loop` until stopped.
///
/// The `LoopThread` value is the cross-thread face of its loop: `execute`
/// posts a job that runs on the loop thread with the `Loop` as argument;
/// `stop()` asks the loop to close every handle and return; `join()` waits for
/// the thread to exit. All three are safe from any thread. Everything created
/// inside a job (connections, timers) belongs to the loop thread.
public final class LoopThread: Sendable {
    /// The name given to the OS thread (visible in `top -H`, `/proc/*/task/*/comm`).
    public let name: String
    private let jobs: Mailbox<LoopJob>      /* the loop's job mailbox */
    private let thread: pthread_t
    private let joined = Mutex(false)

    /// start - spawn a thread, create its loop and start running it.
    public static func start(name: String) throws(IOError) -> LoopThread {
        let startup = Startup()
        let context = Unmanaged.passRetained(ThreadContext(name: name, startup: startup)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, loopThreadMain, context)
        if created != 0 {
            Unmanaged<ThreadContext>.fromOpaque(context).release()
            throw IOError(-created, "pthread_create")
        }
        startup.ready.wait()
        switch startup.result.withLock({ $0 }) {
        case .success(let jobs):
            return LoopThread(name: name, jobs: jobs, thread: thread)
        case .failure(let error):
            pthread_join(thread, nil)
            throw error
        case nil:
            fatalError("loop thread signalled readiness without a result")
        }
    }

    private init(name: String, jobs: Mailbox<LoopJob>, thread: pthread_t) {
        self.name = name
        self.jobs = jobs
        self.thread = thread
    }

    /// execute - run `job` on the loop thread; false if the loop has stopped.
    @discardableResult
    public func execute(_ job: @escaping LoopJob) -> Bool {
        jobs.post(job)
    }

    /// True when called from this loop's own thread.
    public var isCurrentThread: Bool { pthread_equal(pthread_self(), thread) != 0 }

    /// stop - close every handle on the loop; the thread exits when they are closed.
    public func stop() {
        jobs.post { loop in loop.shutdown() }
    }

    /// join - wait for the thread to exit (after `stop()`); idempotent.
    public func join() {
        precondition(!isCurrentThread, "a loop thread cannot join itself")
        let first = joined.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { pthread_join(thread, nil) }
    }

    /// stopAndJoin - `stop()` then `join()`.
    public func stopAndJoin() {
        stop()
        join()
    }
}

/// Hands the new loop's mailbox (or the error making it) back to `start`.
private final class Startup: Sendable {
    let ready = DispatchSemaphore(value: 0)
    let result = Mutex<Result<Mailbox<LoopJob>, IOError>?>(nil)
}

/// What the new thread needs: its name and where to report readiness.
private final class ThreadContext {
    let name: String
    let startup: Startup
    init(name: String, startup: Startup) {
        self.name = name
        self.startup = startup
    }
}

/// loopThreadMain - the thread body: create the loop, report, run, clean up.
private func loopThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let context = Unmanaged<ThreadContext>.fromOpaque(argument!).takeRetainedValue()
    nameCurrentThread(context.name)
    let loop: Loop
    do {
        loop = try Loop()
    } catch {
        context.startup.result.withLock { $0 = .failure(error) }
        context.startup.ready.signal()
        return nil
    }
    context.startup.result.withLock { $0 = .success(loop.jobs) }
    context.startup.ready.signal()
    loop.run()
    loop.close()
    return nil
}

/// nameCurrentThread - set the kernel's name for this thread (15 bytes at most).
private func nameCurrentThread(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY)
    guard fd >= 0 else { return }
    var text = String(name.utf8.prefix(15)) ?? "loop"
    text.withUTF8 { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
    Glibc.close(fd)
}

/// A one-value hand-over from a loop thread to a waiting thread.
///
/// Safe from any thread: `put` once, `take` blocks until then.
public final class Handoff<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    public init() {}

    /// put - store the value and wake the taker.
    public func put(_ result: Value) {
        value.withLock { $0 = result }
        ready.signal()
    }

    /// take - wait for the value.
    public func take() -> Value {
        ready.wait()
        return value.withLock { $0! }
    }
}
