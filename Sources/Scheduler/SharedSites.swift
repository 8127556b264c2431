// SharedSites.swift - site limits shared by the schedulers of every worker shard
//
// A domain belongs to one shard, so its limits are that shard's business. A site (a set
// of MX hosts, a route) usually serves domains of several shards: gmail.com and
// googlemail.com hash to different shards and still reach the same servers. Its message
// rate is therefore kept here, once per site, in an atomic: a shard's scheduler takes a
// token before it starts a transaction to the site. No lock is taken on that path (a
// mutex guards only the table, when a site is first seen). The site's total concurrency
// is the delivery layer's business: the connections its pools may open over every shard
// and how fast (Delivery's ConnectionGate, which keeps the connection rate in a
// SharedSite of its own), each carrying one transaction, or two pipelined.

import Synchronization

/// The shared state of every site, for all the schedulers of one engine. Thread-safe.
public final class SharedSites: Sendable {
    private let table = Mutex<[String: SharedSite]>([:])

    public init() {}

    /// site - the shared state of the site called `name` (made on first use).
    func site(_ name: String) -> SharedSite {
        table.withLock { sites in
            if let site = sites[name] { return site }
            let site = SharedSite()
            sites[name] = site
            return site
        }
    }

}

/// One site's GCRA arrival time, across shards: a rate limit every thread takes tokens
/// from. Thread-safe (one atomic).
public final class SharedSite: Sendable {
    /// Theoretical arrival time of the GCRA (microseconds on the caller's clock).
    private let arrival = Atomic<Int64>(0)
    /// Until when a response rule suspended the site (ms; 0: not), for every shard.
    private let ruleSuspension = Atomic<Int64>(0)
    /// A response rule's rate factor (the bits of a Double) and until when it holds (ms).
    private let scaleBits = Atomic<UInt64>(1.0.bitPattern)
    private let scaleUntil = Atomic<Int64>(0)

    public init() {}

    /// suspendedUntil - until when a response rule seen by any shard holds the site.
    public var suspendedUntil: Int64 { ruleSuspension.load(ordering: .acquiring) }

    /// suspend - a response rule holds the site until `until` (a later time wins).
    public func suspend(until: Int64) {
        var current = ruleSuspension.load(ordering: .relaxed)
        while current < until {
            let (exchanged, original) = ruleSuspension.compareExchange(expected: current, desired: until, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }

    /// scale - the rate factor a response rule set, at `now` (1 when none holds).
    public func scale(now: Int64) -> Double {
        guard scaleUntil.load(ordering: .acquiring) > now else { return 1 }
        return Double(bitPattern: scaleBits.load(ordering: .relaxed))
    }

    /// setScale - a response rule scales the site's rate by `factor` until `until`.
    public func setScale(_ factor: Double, until: Int64) {
        scaleBits.store(factor.bitPattern, ordering: .relaxed)
        scaleUntil.store(until, ordering: .releasing)
    }

    /// take - a rate token at `now` (ms, on one clock for every caller): nil when taken,
    /// else the time (ms) one will be free.
    public func take(now: Int64, rate: Rate, burst: Int, scale: Double = 1) -> Int64? {
        let interval = Int64((rate.interval / scale).rounded(.up))
        let nowMicros = now * 1000
        var arrival = self.arrival.load(ordering: .relaxed)
        while true {
            let allowedAt = arrival - Int64(max(1, burst) - 1) * interval
            if allowedAt > nowMicros { return (allowedAt + 999) / 1000 }
            let next = max(arrival, nowMicros) + interval
            let (exchanged, original) = self.arrival.compareExchange(expected: arrival, desired: next, ordering: .acquiringAndReleasing)
            if exchanged { return nil }
            arrival = original
        }
    }
}
