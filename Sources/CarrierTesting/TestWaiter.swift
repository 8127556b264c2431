// TestWaiter.swift - hand a result from a loop thread back to a waiting test

import Dispatch
import Synchronization

/// A one-shot, thread-safe result slot a test thread can wait on.
///
/// Loop callbacks call `fulfill` (from any thread, any number of times; the
/// first value wins); the test calls `wait(seconds:)`, which returns nil when
/// the deadline passes first, so a broken test fails instead of hanging.
public final class TestWaiter<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let signal = DispatchSemaphore(value: 0)

    public init() {}

    /// fulfill - store `result` unless one is already stored, and wake the waiter.
    public func fulfill(_ result: Value) {
        let first = value.withLock { slot -> Bool in
            guard slot == nil else { return false }
            slot = result
            return true
        }
        if first { signal.signal() }
    }

    /// wait - the stored value, or nil if none arrived within `seconds`.
    public func wait(seconds: Double = 30) -> Value? {
        _ = signal.wait(timeout: .now() + seconds)
        return value.withLock { $0 }
    }
}

/// A thread-safe counter tests use to count callbacks across loop threads.
public final class TestCounter: Sendable {
    private let count = Atomic<Int>(0)
    public init() {}
    /// add - add `amount`; returns the new total.
    @discardableResult
    public func add(_ amount: Int = 1) -> Int { count.add(amount, ordering: .relaxed).newValue }
    /// The current total.
    public var value: Int { count.load(ordering: .relaxed) }
}

/// A thread-safe list tests append to from loop threads and read at the end.
public final class TestLog<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])
    public init() {}
    /// append - add one element.
    public func append(_ element: Element) { items.withLock { $0.append(element) } }
    /// Everything appended so far, in order.
    public var elements: [Element] { items.withLock { $0 } }
}
