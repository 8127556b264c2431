// SinkRateLimiter.swift - token buckets for `--domain-rule DOMAIN=rate:N/s`, shared by all threads
//
// A provider's rate limit applies to the whole receiving service, not to one
// of its connections, so the buckets are shared by every loop thread. One
// mutex guards them; only recipients at rate-limited domains take it.

import EventCore
import Synchronization

/// One token bucket per rate-limit rule.
///
/// Safe from any thread. A bucket holds at most N tokens (the N of
/// `rate:N/s`), starts full, and refills continuously at N per unit; each
/// recipient at the domain takes one token or is refused. So a burst of N is
/// accepted at once, and N per unit after that.
final class SinkRateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double              /* available now (fractional while refilling) */
        var updated: UInt64             /* monotonic ns of the last refill */
    }

    private let capacities: [Double]            /* N per bucket */
    private let refillPerNanosecond: [Double]   /* N / unit per bucket */
    private let buckets: Mutex<[Bucket]>

    /// Buckets for `limits` (count per `seconds`), in order.
    init(limits: [(count: Int, seconds: Int)]) {
        capacities = limits.map { Double($0.count) }
        refillPerNanosecond = limits.map { Double($0.count) / (Double($0.seconds) * 1e9) }
        let now = MonotonicClock.nanoseconds()
        buckets = Mutex(limits.map { Bucket(tokens: Double($0.count), updated: now) })
    }

    /// take - one token from bucket `index`; false when it is empty (the recipient is over the rate).
    func take(_ index: Int) -> Bool {
        let now = MonotonicClock.nanoseconds()
        return buckets.withLock { buckets in
            var bucket = buckets[index]
            let elapsed = Double(now &- bucket.updated)
            bucket.tokens = min(capacities[index], bucket.tokens + elapsed * refillPerNanosecond[index])
            bucket.updated = now
            let granted = bucket.tokens >= 1
            if granted { bucket.tokens -= 1 }
            buckets[index] = bucket
            return granted
        }
    }
}
