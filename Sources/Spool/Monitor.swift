// Monitor.swift - a pthread mutex with a condition variable, and a joinable thread
//
// The spool runs on plain threads (one writer per shard) and hands results to
// whoever waits; these are the two primitives it needs. Both are heap-allocated
// once and never move, as pthread objects require.

#if canImport(Glibc)
import Glibc
#endif

/// A mutex and a condition variable; any thread may use it.
class Monitor: @unchecked Sendable {
    /* @unchecked: the pthread objects are the synchronisation themselves. */
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }

    /// wait - release the lock until signalled (the caller holds the lock).
    func wait() { pthread_cond_wait(condition, mutex) }

    /// wait - as `wait()`, for at most `milliseconds`.
    func wait(milliseconds: Int) {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let nanoseconds = Int(deadline.tv_nsec) + (milliseconds % 1000) * 1_000_000
        deadline.tv_sec += milliseconds / 1000 + nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000
        pthread_cond_timedwait(condition, mutex, &deadline)
    }

    func broadcast() { pthread_cond_broadcast(condition) }
}

/// monotonicMilliseconds - a clock for intervals (not wall time).
func monotonicMilliseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
}

/// A joinable OS thread running one closure.
final class WorkerThread: @unchecked Sendable {
    /* @unchecked: `handle` is written once before start returns and read by join. */
    private var handle = pthread_t()

    init(name: String, _ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let result = pthread_create(&handle, nil, { context in
            let box = Unmanaged<AnyObject>.fromOpaque(context!).takeRetainedValue()
            (box as! Box).body()
            return nil
        }, context)
        precondition(result == 0, "pthread_create: \(result)")
    }

    func join() { pthread_join(handle, nil) }
}

/// A one-shot result a thread waits for.
final class Waiter<Value: Sendable>: @unchecked Sendable {
    /* @unchecked: `value` is only touched under `monitor`. */
    private let monitor = Monitor()
    private var value: Value?

    func set(_ value: Value) {
        monitor.withLock {
            self.value = value
            monitor.broadcast()
        }
    }

    func wait() -> Value {
        monitor.lock()
        defer { monitor.unlock() }
        while value == nil { monitor.wait() }
        return value!
    }
}
