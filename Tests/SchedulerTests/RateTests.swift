// RateTests.swift - rate parsing, the GCRA bucket, and the window bound as a property

import CarrierTesting
import Testing
@testable import Scheduler

@Suite("Rates")
struct RateTests {
    @Test("Rates parse per second, minute, hour and day")
    func parse() {
        #expect(Rate("300/s") == Rate(300, per: 1))
        #expect(Rate("20000/h") == Rate(20_000, per: 3600))
        #expect(Rate("10/m") == Rate(10, per: 60))
        #expect(Rate("5/d") == Rate(5, per: 86_400))
        #expect(Rate("2/sec") == Rate(2, per: 1))
        #expect(Rate("7/min") == Rate(7, per: 60))
        #expect(Rate("3/hour") == Rate(3, per: 3600))
        #expect(Rate("4/day") == Rate(4, per: 86_400))
        #expect(Rate(" 12 / S ") == Rate(12, per: 1))
        #expect(Rate("300/s")?.description == "300/s")
        #expect(Rate("20000/h")?.description == "20000/h")
        #expect(Rate("10/m")?.description == "10/m")
        #expect(Rate(5, per: 10).description == "5/10s")
        #expect(Rate(300, per: 1).interval == 1_000_000.0 / 300)
    }

    @Test("Malformed rates are rejected",
          arguments: ["", "300", "/s", "300/", "0/s", "-5/s", "1.5/s", "abc/s", "10/x", "10/s/s", "10//s",
                      "10 per s", "10/ms", "s/10", "99999999999999999999/s"])
    func rejects(_ text: String) {
        #expect(Rate(text) == nil)
    }

    @Test("GCRA: a burst back to back, then one event per interval; idle time restores the burst")
    func bucketBasics() {
        var bucket = RateBucket(rate: Rate(10, per: 1), burst: 3)
        for _ in 0..<3 {
            #expect(bucket.earliest(now: 0) == 0)
            bucket.take(now: 0)
        }
        #expect(bucket.earliest(now: 0) == 100)
        #expect(bucket.earliest(now: 99) == 100)
        #expect(bucket.earliest(now: 100) == 100)
        bucket.take(now: 100)
        #expect(bucket.earliest(now: 100) == 200)
        #expect(bucket.earliest(now: 150) == 200)
        /* Ten seconds idle: the whole burst is available again, and no more. */
        for _ in 0..<3 {
            #expect(bucket.earliest(now: 10_000) == 10_000)
            bucket.take(now: 10_000)
        }
        #expect(bucket.earliest(now: 10_000) == 10_100)

        /* A burst below 1 means 1. */
        var single = RateBucket(rate: Rate(2, per: 1), burst: 0)
        #expect(single.burst == 1)
        single.take(now: 0)
        #expect(single.earliest(now: 0) == 500)
        #expect(single.earliest(now: 499) == 500)
        #expect(single.earliest(now: 501) == 501)
    }

    @Test("GCRA: fractional intervals round up to the next millisecond, never early")
    func bucketRounding() {
        var bucket = RateBucket(rate: Rate(3, per: 1))
        bucket.take(now: 0)
        #expect(bucket.earliest(now: 0) == 334) // 333.33 ms
        bucket.take(now: 334)
        #expect(bucket.earliest(now: 334) == 668)
        var hourly = RateBucket(rate: Rate(20_000, per: 3600))
        hourly.take(now: 0)
        #expect(hourly.earliest(now: 0) == 180) // 3600 s / 20000
    }

    @Test("GCRA: a scale of 0.5 doubles the interval")
    func bucketScale() {
        var bucket = RateBucket(rate: Rate(10, per: 1))
        bucket.take(now: 0, scale: 0.5)
        #expect(bucket.earliest(now: 0, scale: 0.5) == 200)
        bucket.take(now: 200, scale: 0.5)
        #expect(bucket.earliest(now: 200, scale: 0.5) == 400)
        /* Scaled time already taken stays taken: with burst 1 the unscaled earliest is the
           same arrival time. With a burst, the scale stretches the allowance too. */
        #expect(bucket.earliest(now: 200) == 400)
        var bursty = RateBucket(rate: Rate(10, per: 1), burst: 2)
        bursty.take(now: 0, scale: 0.5)
        bursty.take(now: 0, scale: 0.5)
        #expect(bursty.earliest(now: 0, scale: 0.5) == 200)
        bursty.take(now: 200, scale: 0.5)
        #expect(bursty.earliest(now: 200, scale: 0.5) == 400)
    }

    /// One run of the rate property: a site with a random message rate and burst,
    /// recipients arriving at random times over several domains, `next` called at random
    /// times and at every `nextWakeup`, every delivery completed at once. Returns the
    /// start times and the settings.
    private func simulate(seed: UInt64) -> (starts: [Int64], count: Int, seconds: Int, burst: Int) {
        var random = SplitMix64(seed: seed)
        let seconds = [1, 1, 1, 2, 5, 10, 60].randomElement(using: &random)!
        let count = Int.random(in: 1...40, using: &random) * (seconds == 60 ? 20 : 1)
        let burst = Int.random(in: 1...5, using: &random)
        let batch = Int.random(in: 1...3, using: &random)
        let domainCount = Int.random(in: 1...3, using: &random)
        let horizon: Int64 = 120_000
        let limits = Limits(maxRecipientsPerTransaction: batch, messageRate: Rate(count, per: seconds), messageBurst: burst)
        var scheduler = TestScheduler(configuration(shaping: Shaping(sites: ["mx": limits])))
        let site = scheduler.site("mx")
        let domains = (0..<domainCount).map { scheduler.domain("d\($0).test", site: site) }

        /* Arrivals: one burst at 0 large enough to keep the rate busy for a while, then
           random bursts; polls at random times. */
        var arrivals: [(time: Int64, size: Int)] = [(0, (2 * count + burst) * batch)]
        for _ in 0..<Int.random(in: 5...40, using: &random) {
            arrivals.append((Int64.random(in: 0..<horizon, using: &random), Int.random(in: 1...(count * batch + 5), using: &random)))
        }
        arrivals.sort { $0.time < $1.time }
        var polls = (0..<300).map { _ in Int64.random(in: 0..<horizon, using: &random) }
        polls.sort()

        var starts: [Int64] = []
        var now: Int64 = 0
        var nextArrival = 0, nextPoll = 0
        var id: UInt64 = 0
        while true {
            var candidates: [Int64] = []
            if nextArrival < arrivals.count { candidates.append(arrivals[nextArrival].time) }
            if nextPoll < polls.count { candidates.append(polls[nextPoll]) }
            if let wake = scheduler.nextWakeup { candidates.append(max(wake, now)) }
            guard let time = candidates.min(), time < horizon else { break }
            now = max(now, time)
            while nextArrival < arrivals.count && arrivals[nextArrival].time <= now {
                for _ in 0..<arrivals[nextArrival].size {
                    id += 1
                    scheduler.submit(recipient(id, queued: now), domain: domains[Int(id) % domainCount], now: now)
                }
                nextArrival += 1
            }
            while nextPoll < polls.count && polls[nextPoll] <= now { nextPoll += 1 }
            while let delivery = scheduler.next(now: now) {
                starts.append(now)
                scheduler.completeAll(delivery, .delivered, now: now)
            }
            /* `next` leaves every wake-up in the future (a caller would spin otherwise). */
            if let wake = scheduler.nextWakeup, wake <= now {
                Issue.record("seed \(seed): wake-up \(wake) not after \(now)")
                break
            }
        }
        return (starts, count, seconds, burst)
    }

    /// The most starts in any window [t, t + width) (the busiest window starts at a start).
    private func busiest(_ starts: [Int64], width: Int64) -> Int {
        var best = 0, tail = 0
        for head in starts.indices {
            while tail < starts.count && starts[tail] < starts[head] + width { tail += 1 }
            best = max(best, tail - head)
        }
        return best
    }

    @Test("Property: in every window of W ≥ 1 s, starts ≤ rate × W + burst", arguments: 0..<30 as Range<UInt64>)
    func windowBound(seed: UInt64) {
        let (starts, count, seconds, burst) = simulate(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 7)
        let period = Int64(seconds) * 1000
        #expect(starts.count > count + burst, "seed \(seed): the run must be busy enough to test anything")
        var random = SplitMix64(seed: seed)
        var widths: [Int64] = [1000, 1001, 1500, 2000, 3333, period, period + 1, 2 * period, 10_000, 60_000]
        widths += (0..<6).map { _ in Int64.random(in: 1000...120_000, using: &random) }
        for width in widths {
            let most = busiest(starts, width: width)
            /* most ≤ count / period × width + burst, in integers. */
            #expect(Int64(most) * period <= Int64(count) * width + Int64(burst) * period,
                    "seed \(seed): \(most) starts in \(width) ms at \(count)/\(seconds)s burst \(burst)")
        }
        /* The backlog at 0 drives the site at its full rate: the bound is reached within a
           unit (so the check above is not vacuous). */
        #expect(busiest(starts, width: period) >= count + burst - 1, "seed \(seed)")
    }
}
