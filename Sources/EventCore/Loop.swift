// Loop.swift - one libuv event loop, confined to the thread that runs it

import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// A job for a loop, posted from any thread.
public typealias LoopJob = @Sendable (Loop) -> Void

/// One libuv event loop and the per-loop resources its handles share.
///
/// A `Loop` belongs to the thread that created it; every method, and every
/// handle made on it (connections, listeners, timers, resolvers), must be used
/// on that thread only. Other threads reach it through `LoopThread.execute`,
/// which posts to the loop's job mailbox.
///
/// Owns: the `uv_loop_t`, the job mailbox, and two read slabs. Reads are
/// sequential on one thread, so every connection on the loop reads into the
/// same 64 KiB slab and a TLS connection decrypts into the second one; a
/// connection keeps its own buffer only for bytes its handler left unconsumed.
public final class Loop {
    let raw: UnsafeMutablePointer<uv_loop_t>            /* the libuv loop */
    let readSlab: UnsafeMutableRawBufferPointer         /* socket reads land here */
    let plaintextSlab: UnsafeMutableRawBufferPointer    /* TLS decrypts into here */
    private(set) var jobs: Mailbox<LoopJob>!            /* cross-thread work */
    let nextTurnQueue: NextTurnQueue                    /* calls deferred to the next turn */
    /// True once `shutdown()` was called: new connects fail with ECANCELED and timers do not start.
    public private(set) var isShuttingDown = false
    private var closed = false

    /// The size of each read slab: the most one read call returns.
    public static let slabSize = 64 * 1024

    /// Writing to a socket the peer reset raises SIGPIPE, whose default action
    /// kills the process; a network server handles EPIPE as an error instead.
    /// Done once, process-wide, before the first loop exists.
    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// Create a loop owned by the calling thread.
    public init() throws(IOError) {
        Loop.ignoreSIGPIPE
        raw = .allocate(capacity: 1)
        let result = uv_loop_init(raw)
        if result < 0 {
            raw.deallocate()
            throw IOError(result, "uv_loop_init")
        }
        readSlab = .allocate(byteCount: Loop.slabSize, alignment: 16)
        plaintextSlab = .allocate(byteCount: Loop.slabSize, alignment: 16)
        nextTurnQueue = NextTurnQueue(loop: raw)
        do {
            jobs = try Mailbox<LoopJob>(loop: self) { [unowned self] job in job(self) }
        } catch {
            close()
            throw error
        }
    }

    deinit {
        precondition(closed, "Loop released without close(); handles may still reference it")
    }

    /// The loop's cached monotonic time in milliseconds, updated once per iteration.
    public var now: UInt64 { uv_now(raw) }

    /// Refresh `now` (after a long computation on the loop thread).
    public func updateTime() { uv_update_time(raw) }

    /// run - process events until no handle is active (after `shutdown()`), then return.
    public func run() {
        uv_run(raw, UV_RUN_DEFAULT)
    }

    /// runOnce - process one round of events, blocking until at least one happens.
    @discardableResult
    public func runOnce() -> Bool {
        uv_run(raw, UV_RUN_ONCE) != 0
    }

    /// nextTurn - run `call` on this loop's next turn (loop thread only).
    ///
    /// For completions that are known at once: reporting them from inside the
    /// call that asked would let a retrying caller recurse without bound.
    public func nextTurn(_ call: @escaping () -> Void) {
        nextTurnQueue.add(call)
    }

    /// execute - post a job to this loop; safe from any thread. False after shutdown.
    @discardableResult
    public func execute(_ job: @escaping LoopJob) -> Bool {
        jobs.post(job)
    }

    /// shutdown - close every handle on the loop so that `run()` returns.
    ///
    /// Each owner is told as if its user had closed it: connections report
    /// `streamClosed`, timers stop, the job mailbox refuses further posts.
    /// Handlers may open new handles while hearing that (a timer, a
    /// reconnect); a sweeper closes those too on every following loop turn,
    /// until no other handle is left, open or closing. While shutting down,
    /// `TCPConnection.connect` fails with ECANCELED (on the next turn) and
    /// `LoopTimer.schedule` does nothing. Completions deferred to a next turn
    /// still run; a handler that answers each refusal with a new attempt is
    /// cut off after a bounded number of turns, its last completion dropped.
    public func shutdown() {
        if isShuttingDown { return }
        isShuttingDown = true
        ShutdownSweeper(loop: self).sweep()
    }

    /// close - release the loop after `run()` returned.
    ///
    /// If handles are still open or closing (the loop was run without
    /// `shutdown()`), they are swept and the loop is run until libuv agrees
    /// that none is left; the memory is never freed under a live handle.
    public func close() {
        if closed { return }
        var rounds = 0
        while uv_loop_close(raw) != 0 {
            rounds += 1
            precondition(rounds <= 1_000, "a libuv handle never finished closing")
            isShuttingDown = true
            ShutdownSweeper(loop: self).sweep()
            run()
        }
        readSlab.deallocate()
        plaintextSlab.deallocate()
        raw.deallocate()
        closed = true
    }
}

/// Closes every open handle on a loop that is shutting down, once now and
/// again before each later loop turn, then closes itself.
///
/// Confined to the loop's thread; exists only during shutdown.
private final class ShutdownSweeper: HandleOwner {
    private var prepare: UnsafeMutablePointer<uv_prepare_t>?   /* freed in handleDidClose */
    private let loop: Loop
    private var turns = 0                                       /* sweeps so far */

    /// Turns to wait for deferred completions before dropping them: enough for
    /// any chain of honest follow-ups, finite for a caller retrying for ever.
    private static let patience = 1_000

    init(loop: Loop) {
        self.loop = loop
        let prepare = UnsafeMutablePointer<uv_prepare_t>.allocate(capacity: 1)
        uv_prepare_init(loop.raw, prepare)
        self.prepare = prepare
        retainOwner(self, in: asHandle(prepare))
        uv_prepare_start(prepare, sweeperCallback)
    }

    /// sweep - close every other open handle; retire when none is left, open or closing.
    func sweep() {
        var census = HandleCensus()
        withUnsafeMutablePointer(to: &census) { census in
            uv_walk(loop.raw, loopWalkCallback, census)
        }
        let queue = loop.nextTurnQueue
        census.open.removeAll { $0 === self || $0 === queue }
        turns += 1
        if census.open.isEmpty && census.closing == 0 && (queue.isEmpty || turns > ShutdownSweeper.patience) {
            queue.close()
            if let prepare { closeHandle(asHandle(prepare)) }
            return
        }
        for owner in census.open { owner.closeForShutdown() }
    }

    func handleDidClose() {
        prepare?.deallocate()
        prepare = nil
    }

    /// Another sweeper (from `Loop.close()`) found this one: one is enough.
    func closeForShutdown() {
        if let prepare { closeHandle(asHandle(prepare)) }
    }
}

private func sweeperCallback(_ prepare: UnsafeMutablePointer<uv_prepare_t>?) {
    guard let prepare, prepare.pointee.data != nil else { return }
    owner(of: asHandle(prepare), as: ShutdownSweeper.self).sweep()
}

/// What a walk over the loop's handles found.
private struct HandleCensus {
    var open: [any HandleOwner] = []    /* owners of handles not yet closing */
    var closing = 0                     /* handles whose close callback is still due */
}

/// loopWalkCallback - count closing handles and collect the owner of every open one.
private func loopWalkCallback(_ handle: UnsafeMutablePointer<uv_handle_t>?, _ arg: UnsafeMutableRawPointer?) {
    guard let handle, let arg else { return }
    let census = arg.assumingMemoryBound(to: HandleCensus.self)
    if uv_is_closing(handle) != 0 {
        census.pointee.closing += 1
    } else if let owner = ownerForShutdown(handle) {
        census.pointee.open.append(owner)
    }
}
