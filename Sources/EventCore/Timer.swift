// Timer.swift - one-shot and repeating timers, and the monotonic clock

import CLibUV

/// A libuv timer: fires its callback once after a delay, or repeatedly.
///
/// Confined to its loop's thread. Re-arming an armed timer just moves its
/// deadline (no allocation), so a connection can keep one timer and push it
/// forward on every read. `close()` releases the handle; a timer that is
/// merely stopped can be armed again.
public final class LoopTimer: HandleOwner {
    private var handle: UnsafeMutablePointer<uv_timer_t>?   /* nil once closed */
    private unowned let loop: Loop
    private var callback: ((LoopTimer) -> Void)?
    /// True once `close()` was called; the timer never fires again.
    public private(set) var isClosed = false

    /// Create a stopped timer on `loop`.
    public init(loop: Loop) {
        self.loop = loop
        let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        /* uv_timer_init cannot fail: it only fills in the struct. */
        uv_timer_init(loop.raw, handle)
        self.handle = handle
        retainOwner(self, in: asHandle(handle))
    }

    /// schedule - fire `callback` after `milliseconds`, then every `repeatEvery` ms if non-zero.
    ///
    /// Does nothing once the loop is shutting down: the timer is about to be
    /// closed, and a timer started then could keep the loop alive.
    public func schedule(
        after milliseconds: UInt64,
        repeatEvery: UInt64 = 0,
        _ callback: @escaping (LoopTimer) -> Void
    ) {
        guard let handle, !isClosed, !loop.isShuttingDown else { return }
        self.callback = callback
        uv_timer_start(handle, timerCallback, milliseconds, repeatEvery)
    }

    /// rearm - move the deadline of the current callback to `milliseconds` from now.
    public func rearm(after milliseconds: UInt64) {
        guard let handle, !isClosed, !loop.isShuttingDown, callback != nil else { return }
        uv_timer_start(handle, timerCallback, milliseconds, uv_timer_get_repeat(handle))
    }

    /// cancel - stop the timer; it can be scheduled again.
    public func cancel() {
        guard let handle else { return }
        uv_timer_stop(handle)
        callback = nil
    }

    /// True while the timer is waiting to fire.
    public var isArmed: Bool {
        guard let handle else { return false }
        return uv_is_active(asHandle(handle)) != 0
    }

    /// close - stop and release the timer.
    public func close() {
        guard let handle, !isClosed else { return }
        isClosed = true
        uv_timer_stop(handle)
        callback = nil
        closeHandle(asHandle(handle))
    }

    fileprivate func fire() {
        callback?(self)
    }

    func handleDidClose() {
        handle?.deallocate()
        handle = nil
    }

    func closeForShutdown() { close() }
}

private func timerCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    guard let handle, handle.pointee.data != nil else { return }
    owner(of: asHandle(handle), as: LoopTimer.self).fire()
}

/// The monotonic clock, in the units callers need.
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point; never goes backwards.
    @inline(__always)
    public static func nanoseconds() -> UInt64 { uv_hrtime() }
}
