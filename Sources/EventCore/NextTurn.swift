// NextTurn.swift - run a call on the loop's next turn instead of inside the caller's stack
//
// A completion reported from inside the call that started the operation (a
// connect that fails before any I/O, a query on a closed resolver) invites
// unbounded recursion: a caller that retries on failure calls again, fails
// again, and so on down the stack. libuv itself never calls back from inside
// the starting call; every EventCore completion follows that rule by
// deferring such early reports through this queue.

import CLibUV

/// Calls queued for the next loop turn, run in the order they were queued.
///
/// Confined to its loop's thread. Its `uv_idle_t` is active only while calls
/// are waiting, so an empty queue never keeps the loop awake. On shutdown the
/// sweeper closes it last, once it ran empty (or gave up waiting for that).
final class NextTurnQueue: HandleOwner {
    private var idle: UnsafeMutablePointer<uv_idle_t>?     /* owned; freed in handleDidClose */
    private var calls: [() -> Void] = []                    /* waiting for the next turn */
    private var running: [() -> Void] = []                  /* this turn's batch; storage reused */

    init(loop: UnsafeMutablePointer<uv_loop_t>) {
        let idle = UnsafeMutablePointer<uv_idle_t>.allocate(capacity: 1)
        /* uv_idle_init cannot fail: it only fills in the struct. */
        uv_idle_init(loop, idle)
        self.idle = idle
        retainOwner(self, in: asHandle(idle))
    }

    /// True when no call is waiting.
    var isEmpty: Bool { calls.isEmpty }

    /// add - run `call` on the next loop turn.
    func add(_ call: @escaping () -> Void) {
        calls.append(call)
        if calls.count == 1, let idle { uv_idle_start(idle, nextTurnCallback) }
    }

    /// runWaiting - run the calls queued before this turn; later ones wait for the next.
    fileprivate func runWaiting() {
        swap(&calls, &running)
        for call in running { call() }
        running.removeAll(keepingCapacity: true)
        if calls.isEmpty, let idle { uv_idle_stop(idle) }
    }

    /// close - release the handle; calls still waiting are dropped.
    ///
    /// The shutdown sweeper closes the queue only once it is empty, or after
    /// a bounded number of turns: a caller that answers every refusal with a
    /// new attempt would otherwise keep a stopping loop alive for ever.
    func close() {
        calls.removeAll()
        guard let idle else { return }
        uv_idle_stop(idle)
        closeHandle(asHandle(idle))
    }

    func handleDidClose() {
        idle?.deallocate()
        idle = nil
    }

    /// The sweeper closes this queue itself, once nothing else is left.
    func closeForShutdown() {}
}

private func nextTurnCallback(_ idle: UnsafeMutablePointer<uv_idle_t>?) {
    guard let idle, idle.pointee.data != nil else { return }
    owner(of: asHandle(idle), as: NextTurnQueue.self).runWaiting()
}
