// SharedSites.swift - site limits shared by the schedulers of every worker shard
//
// A domain belongs to one shard, so its limits are that shard's business. A site (a set
// of MX hosts, a route) usually serves domains of several shards: gmail.com and
// googlemail.com hash to different shards and still reach the same servers. Its total
// concurrency and message rate are therefore kept here, once per site, in atomics:
// a shard's scheduler takes a connection slot and a rate token before it starts a
// transaction to the site, and gives the slot back when the transaction completes. No
// lock is taken on that path (a mutex guards only the table, when a site is first seen).

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

    /// inFlight - transactions in flight to `name` over every shard (for tests and status).
    public func inFlight(_ name: String) -> Int {
        table.withLock { $0[name]?.inFlight.load(ordering: .relaxed) ?? 0 }
    }
}

/// One site's transactions in flight and its GCRA arrival time, across shards. Thread-safe.
final class SharedSite: Sendable {
    let inFlight = Atomic<Int>(0)
    /// Theoretical arrival time of the GCRA (microseconds on the schedulers' clock).
    private let arrival = Atomic<Int64>(0)

    /// acquire - one more transaction in flight, unless `limit` are already.
    func acquire(limit: Int) -> Bool {
        var current = inFlight.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = inFlight.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// release - a transaction acquired with `acquire` is over.
    func release() {
        inFlight.subtract(1, ordering: .acquiringAndReleasing)
    }

    /// take - a rate token at `now` (ms): nil when taken, else the time (ms) one will be free.
    func take(now: Int64, rate: Rate, burst: Int, scale: Double) -> Int64? {
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
