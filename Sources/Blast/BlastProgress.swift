// BlastProgress.swift - the per-second view of a run: time-series points and the live progress line
//
// Each tick merges the workers' samples into one point: messages sent and
// attempted in that interval, errors, and the end-to-end percentiles of the
// messages that completed in it. The points are the report's time series;
// the latest one, with running totals, is the progress line.

/// One interval of a run (about a second), for the time series.
///
/// A value; safe to send between threads.
public struct BlastSecond: Sendable, Equatable {
    public let time: Double         /* seconds from the start to the end of the interval */
    public let duration: Double     /* seconds the interval covers */
    public let sent: Int            /* messages sent (a recipient delivered) */
    public let attempted: Int       /* messages completed, whatever the outcome */
    public let errors: Int          /* error ledger entries */
    public let rate: Double         /* messages sent per second */
    public let p50: Double          /* end-to-end latency percentiles of the interval, ms */
    public let p90: Double
    public let p99: Double
    public let max: Double
    public let backlog: Int         /* open loop: messages due and waiting for a connection */
}

/// The live view once a second.
///
/// A value; safe to send between threads.
public struct BlastProgress: Sendable {
    public let elapsed: Double      /* seconds since the start */
    public let sent: Int            /* messages sent so far */
    public let attempted: Int       /* messages completed so far */
    public let errors: Int          /* errors so far */
    public let last: BlastSecond?   /* the interval just ended */
    public let isOpenLoop: Bool
    public let eta: Double?         /* seconds until the run should end; nil when unknown */

    /// The progress line: elapsed, sent, rate, p50/p99 of the last second, errors, ETA.
    public var line: String {
        var text = "\(BlastFormat.fixed(elapsed, 0).leftPadded(5))s  sent \(sent)"
        if let last {
            text += "  \(BlastFormat.fixed(last.rate, 0))/s  p50 \(BlastFormat.milliseconds(last.p50))"
            text += "  p99 \(BlastFormat.milliseconds(last.p99))"
            if isOpenLoop { text += "  backlog \(last.backlog)" }
        }
        text += "  errors \(errors)"
        if let eta { text += "  ETA \(BlastFormat.fixed(eta, 0))s" }
        return text
    }
}

/// The time series as the runner builds it, tick by tick.
///
/// Owned by the runner, on its thread.
struct BlastTimeSeries {
    private let start: UInt64
    private let messages: Int?                  /* --messages */
    private let duration: UInt64?               /* --duration, ns */
    private let isOpenLoop: Bool
    private(set) var points: [BlastSecond] = []
    private var lastTick: UInt64                /* end of the last point */
    private var previous: BlastSample?          /* the last point's sample, for folding in a short final one */
    private var sent = 0
    private var attempted = 0
    private var errors = 0

    init(start: UInt64, configuration: BlastConfiguration) {
        self.start = start
        self.lastTick = start
        self.messages = configuration.messages
        self.duration = configuration.durationNanoseconds
        self.isOpenLoop = configuration.rate != nil
    }

    /// add - the samples of the interval ending at `now`; the point made, if any.
    ///
    /// The final interval is kept only if something happened in it; when it is
    /// shorter than a quarter second it is folded into the point before it, so
    /// a few last completions do not draw a spike.
    @discardableResult
    mutating func add(_ sample: BlastSample, at now: UInt64, final: Bool = false) -> BlastSecond? {
        sent += sample.sent
        attempted += sample.attempted
        errors += sample.errors
        guard !final || sample.attempted > 0 || sample.errors > 0 else { return nil }
        var merged = sample
        var from = lastTick
        if final, now - lastTick < 250_000_000, let previous, let last = points.popLast() {
            merged.merge(previous)
            merged.backlog = sample.backlog
            from = lastTick - UInt64(last.duration * 1e9)
        }
        let seconds = Double(now - from) / 1e9
        let latency = merged.endToEnd
        let point = BlastSecond(
            time: Double(now - start) / 1e9, duration: seconds, sent: merged.sent, attempted: merged.attempted,
            errors: merged.errors, rate: seconds > 0 ? Double(merged.sent) / seconds : 0,
            p50: latency.milliseconds(atPercentile: 50), p90: latency.milliseconds(atPercentile: 90),
            p99: latency.milliseconds(atPercentile: 99), max: latency.maxMilliseconds, backlog: merged.backlog)
        points.append(point)
        previous = merged
        lastTick = now
        return point
    }

    /// progress - the live view after `point`.
    func progress(after point: BlastSecond?) -> BlastProgress {
        let elapsed = Double(lastTick - start) / 1e9
        var eta: Double?
        if let duration { eta = max(0, Double(duration) / 1e9 - elapsed) }
        if let messages, let point, point.attempted > 0 {
            let remaining = Double(messages - attempted) / (Double(point.attempted) / point.duration)
            eta = min(eta ?? remaining, remaining)
        }
        return BlastProgress(elapsed: elapsed, sent: sent, attempted: attempted, errors: errors,
                             last: point, isOpenLoop: isOpenLoop, eta: eta)
    }
}

/// Number formatting without Foundation, for text, JSON and HTML output.
enum BlastFormat {
    /// fixed - `value` rounded to `decimals` places ("12.50"); "0" for NaN or infinity.
    static func fixed(_ value: Double, _ decimals: Int) -> String {
        guard value.isFinite else { return "0" }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        guard scaled < 9e18 else { return "\(value)" }
        let units = UInt64(scaled)
        let whole = units / UInt64(scale)
        var text = (value < 0 && units > 0 ? "-" : "") + String(whole)
        if decimals > 0 {
            let fraction = String(units % UInt64(scale))
            text += "." + String(repeating: "0", count: decimals - fraction.count) + fraction
        }
        return text
    }

    /// milliseconds - a latency for people: "0.412 ms", "12.3 ms", "1520 ms".
    static func milliseconds(_ value: Double) -> String {
        if value < 1 { return fixed(value, 3) + " ms" }
        if value < 100 { return fixed(value, 1) + " ms" }
        return fixed(value, 0) + " ms"
    }
}

extension String {
    /// leftPadded - the string right-aligned in `width` columns.
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }

    /// rightPadded - the string left-aligned in `width` columns.
    func rightPadded(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
