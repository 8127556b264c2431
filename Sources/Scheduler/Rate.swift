// Rate.swift - message and connection rates, and the GCRA bucket that enforces them
//
// The bucket is the generic cell rate algorithm (a token bucket expressed as one
// timestamp): each event advances a theoretical arrival time by the emission interval;
// an event conforms when that time is at most `burst - 1` intervals ahead of now. In any
// window of length W, at most rate × W + burst events conform.

/// A rate: `count` events per `seconds`, e.g. "300/s", "20000/h".
public struct Rate: Sendable, Equatable, CustomStringConvertible {
    public var count: Int
    public var seconds: Int

    public init(_ count: Int, per seconds: Int) {
        precondition(count > 0 && seconds > 0, "a rate needs a positive count and period")
        self.count = count
        self.seconds = seconds
    }

    /// parse - "N/s", "N/m", "N/h" or "N/d" (also "N/sec", "N/min", "N/hour", "N/day").
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map { $0.trimmingCharacters(in: " ") }
        guard parts.count == 2, let count = Int(parts[0]), count > 0 else { return nil }
        let seconds: Int
        switch parts[1].lowercased() {
        case "s", "sec", "second": seconds = 1
        case "m", "min", "minute": seconds = 60
        case "h", "hour": seconds = 3600
        case "d", "day": seconds = 86_400
        default: return nil
        }
        self.init(count, per: seconds)
    }

    public var description: String {
        switch seconds {
        case 1: "\(count)/s"
        case 60: "\(count)/m"
        case 3600: "\(count)/h"
        case 86_400: "\(count)/d"
        default: "\(count)/\(seconds)s"
        }
    }

    /// Microseconds between events at this rate.
    var interval: Double { Double(seconds) * 1_000_000 / Double(count) }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var text = Substring(self)
        while text.first == set { text.removeFirst() }
        while text.last == set { text.removeLast() }
        return String(text)
    }
}

/// GCRA state for one rate. A value type: the scheduler keeps one per site and kind.
public struct RateBucket: Sendable, Equatable {
    public var rate: Rate
    /// Events allowed back to back before spacing applies (at least 1).
    public var burst: Int
    /// Theoretical arrival time, in microseconds on the scheduler's clock.
    private var arrival: Double = -.infinity

    public init(rate: Rate, burst: Int = 1) {
        self.rate = rate
        self.burst = max(1, burst)
    }

    /// earliest - the first time (ms) at or after `now` when an event would conform, with
    /// the rate multiplied by `scale` (0 < scale; 0.5 halves the rate).
    public func earliest(now: Int64, scale: Double = 1) -> Int64 {
        let interval = rate.interval / scale
        let allowedAt = arrival - Double(burst - 1) * interval
        let nowMicros = Double(now) * 1000
        if allowedAt <= nowMicros { return now }
        return Int64((allowedAt / 1000).rounded(.up))
    }

    /// take - record an event at `now`, which must conform (`earliest(now:) == now`).
    public mutating func take(now: Int64, scale: Double = 1) {
        let interval = rate.interval / scale
        arrival = max(arrival, Double(now) * 1000) + interval
    }
}
