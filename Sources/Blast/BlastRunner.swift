// BlastRunner.swift - run a blast: prepare, start the workers, tick once a second, collect the report
//
// The runner is the only code that waits. It prepares what every worker
// shares (messages, TLS context, resolved addresses), starts one loop thread
// per worker, and waits for all of them to warm up, so the clock starts with
// the connections open. From then on it wakes once a second, asks each
// worker for its sample (a loop job; the worker swaps its sample for a fresh
// one), prints progress and keeps the time series. The run ends when every
// worker has handed over its tally; the tallies are merged into the report.
//
// Nothing here is shared with the workers except the `BlastBoard`, which
// carries their answers back under one mutex: a handful of hand-offs per
// second, none per message.

import Dispatch
import EventCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs blasts.
public enum BlastRunner {
    /// run - carry out `configuration` and report; blocks the calling thread until the run ends.
    ///
    /// `progress` is called on the calling thread once a second. Errors during
    /// the run (refused connections, 4xx, lost connections) are counted in the
    /// report; only a run that cannot start throws.
    public static func run(
        _ configuration: BlastConfiguration,
        progress: ((BlastProgress) -> Void)? = nil
    ) throws(BlastError) -> BlastReport {
        try configuration.validate()
        SystemLimits.raiseOpenFileLimit()
        interruptRequested.store(false, ordering: .relaxed)

        /* What every worker shares. */
        let factory = try BlastMessageFactory(configuration, runID: runID())
        let tls = try tlsContext(configuration)
        let destinations = try BlastTargetResolver.resolve(configuration)
        let threadCount = min(configuration.threads, configuration.connections)
        let plan = BlastPlan(configuration, destinations: destinations, tls: tls, factory: factory, threads: threadCount)

        var threads: [LoopThread] = []
        defer { threads.forEach { $0.stopAndJoin() } }
        for k in 0..<threadCount {
            do {
                threads.append(try LoopThread.start(name: "blast-\(k)"))
            } catch {
                throw .system("cannot start loop thread \(k): \(error)")
            }
        }

        /* Warm up: every slot connects; the clock starts when each got ready or failed once. */
        let board = BlastBoard()
        let handles = threads.map { _ in BlastWorkerHandle() }
        for (k, thread) in threads.enumerated() {
            let handle = handles[k]
            thread.execute { loop in
                let worker = BlastWorker(index: k, loop: loop, plan: plan, board: board)
                handle.worker = worker
                worker.warm()
            }
        }
        let cpuBefore = processCPUSeconds()
        var stopping = false
        /* stopAll - tell every worker to finish what it carries and send nothing more. */
        func stopAll() {
            stopping = true
            for (k, thread) in threads.enumerated() {
                let handle = handles[k]
                thread.execute { _ in handle.worker?.stop() }
            }
        }
        while board.warmCount < threadCount && !stopping {
            board.wait(untilNanoseconds: MonotonicClock.nanoseconds() + 100_000_000)
            if interruptRequested.load(ordering: .relaxed) { stopAll() }
        }
        let start = MonotonicClock.nanoseconds()
        if !stopping {
            for (k, thread) in threads.enumerated() {
                let handle = handles[k]
                thread.execute { _ in handle.worker?.begin(start: start) }
            }
        }

        /* Once a second: samples, a time-series point, the progress line. */
        var series = BlastTimeSeries(start: start, configuration: configuration)
        var nextTick = start + 1_000_000_000
        while board.finishedCount < threadCount {
            board.wait(untilNanoseconds: min(nextTick, MonotonicClock.nanoseconds() + 100_000_000))
            if !stopping && interruptRequested.load(ordering: .relaxed) { stopAll() }
            let now = MonotonicClock.nanoseconds()
            guard now >= nextTick, board.finishedCount < threadCount else { continue }
            for (k, thread) in threads.enumerated() {
                let handle = handles[k]
                thread.execute { _ in board.sampled(handle.worker?.takeSample() ?? BlastSample()) }
            }
            board.waitForSamples(threadCount, untilNanoseconds: now + 10_000_000_000)
            let point = series.add(board.takeSamples(), at: MonotonicClock.nanoseconds())
            progress?(series.progress(after: point))
            while nextTick <= now { nextTick += 1_000_000_000 }
        }

        /* The end: what the last partial second did, and every tally merged. */
        let end = MonotonicClock.nanoseconds()
        let cpu = processCPUSeconds() - cpuBefore
        var tally = BlastTally()
        for finished in board.takeTallies() { tally.merge(finished) }
        series.add(board.takeSamples(), at: end, final: true)
        let lastActivity = tally.lastCompletion > start ? tally.lastCompletion : end
        return BlastReport(configuration: configuration, destinations: destinations, threads: threadCount,
                           tally: tally, series: series.points,
                           elapsedSeconds: Double(lastActivity - start) / 1e9, cpuSeconds: cpu)
    }

    /// stopOnInterrupt - make SIGINT and SIGTERM end a running blast gracefully
    /// (a second signal kills the process as usual).
    public static func stopOnInterrupt() {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber) { received in
                interruptRequested.store(true, ordering: .relaxed)
                signal(received, SIG_DFL)
            }
        }
    }

    /// tlsContext - the client context for TLS runs; nil for plaintext.
    private static func tlsContext(_ configuration: BlastConfiguration) throws(BlastError) -> TLSContext? {
        guard configuration.security != .plaintext else { return nil }
        var tls = TLSClientConfiguration()
        tls.verifyPeer = configuration.verifyPeer
        tls.trustRoots = configuration.trustRoots
        do {
            return try TLSContext.client(tls)
        } catch {
            throw .tls(error)
        }
    }

    /// runID - a token that keeps this run's Message-IDs apart from every other run's.
    private static func runID() -> String {
        let seconds = UInt64(time(nil))
        let pid = UInt64(getpid())
        return String(seconds, radix: 36) + "." + String(pid, radix: 36) + "." + String(MonotonicClock.nanoseconds() % 1_000_000, radix: 36)
    }

    /// processCPUSeconds - user plus system CPU time of this process so far.
    private static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }
}

/// Set by the SIGINT/SIGTERM handler that `stopOnInterrupt` installs; polled by the runner.
private let interruptRequested = Atomic<Bool>(false)

/// Names one worker for the coordinating thread.
///
/// Unchecked Sendable: `worker` is set by the job that makes the worker and
/// read only by later jobs on the same loop thread; the coordinating thread
/// only passes the handle along.
final class BlastWorkerHandle: @unchecked Sendable {
    var worker: BlastWorker?
}

/// Where workers leave what the coordinator collects: warm-ups, samples, final tallies.
///
/// Safe from any thread: the state sits in a `Mutex`; every deposit signals
/// the semaphore the coordinator sleeps on.
final class BlastBoard: Sendable {
    private struct State: Sendable {
        var warm = 0                        /* workers whose slots all settled */
        var finished = 0                    /* workers done */
        var tallies: [BlastTally] = []      /* from finished workers */
        var samples: [BlastSample] = []     /* answers to sample jobs, and finished workers' last samples */
        var answers = 0                     /* sample jobs answered since the last takeSamples */
    }

    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// warmed - a worker's slots have all settled.
    func warmed() {
        state.withLock { $0.warm += 1 }
        wake.signal()
    }

    /// sampled - a worker answered a sample job.
    func sampled(_ sample: BlastSample) {
        state.withLock {
            $0.samples.append(sample)
            $0.answers += 1
        }
        wake.signal()
    }

    /// finished - a worker is done; its tally and its last sample.
    func finished(tally: BlastTally, sample: BlastSample) {
        state.withLock {
            $0.tallies.append(tally)
            $0.samples.append(sample)
            $0.finished += 1
        }
        wake.signal()
    }

    var warmCount: Int { state.withLock { $0.warm } }
    var finishedCount: Int { state.withLock { $0.finished } }

    /// wait - sleep until a deposit or the monotonic time `deadline`.
    func wait(untilNanoseconds deadline: UInt64) {
        let now = MonotonicClock.nanoseconds()
        guard deadline > now else { return }
        _ = wake.wait(timeout: .now() + .nanoseconds(Int(deadline - now)))
    }

    /// waitForSamples - sleep until `count` sample jobs answered (or the deadline passed).
    func waitForSamples(_ count: Int, untilNanoseconds deadline: UInt64) {
        while state.withLock({ $0.answers }) < count && MonotonicClock.nanoseconds() < deadline {
            wait(untilNanoseconds: deadline)
        }
    }

    /// takeSamples - every sample deposited so far, merged.
    func takeSamples() -> BlastSample {
        let samples = state.withLock { state -> [BlastSample] in
            defer {
                state.samples.removeAll()
                state.answers = 0
            }
            return state.samples
        }
        var merged = BlastSample()
        for sample in samples { merged.merge(sample) }
        return merged
    }

    /// takeTallies - the finished workers' tallies.
    func takeTallies() -> [BlastTally] {
        state.withLock { state -> [BlastTally] in
            defer { state.tallies.removeAll() }
            return state.tallies
        }
    }
}
