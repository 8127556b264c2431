// Administration.swift - operator actions on a worker shard, recorded in its spool first so
// they survive a restart, then applied to its scheduler

public import Scheduler
public import Spool

/// Applies administrative actions to one worker shard: the spool shard records each one
/// (durably, like everything it writes) before the scheduler acts on it, and `restore`
/// hands the recorded suspensions to a fresh scheduler after a restart. Used on the shard's
/// own thread (the spool calls wait for the disk, so not on an event loop).
public struct ShardAdministrator {
    public let spool: SpoolShard
    /// The engine's campaign ids by name (campaigns are named in the spool, numbered in
    /// the scheduler).
    public var campaignIDs: [String: UInt32]

    public init(spool: SpoolShard, campaignIDs: [String: UInt32] = [:]) {
        self.spool = spool
        self.campaignIDs = campaignIDs
    }

    /// suspend - nothing for `name` in `scope` until `until` (ms since the epoch; nil: until
    /// resumed).
    public func suspend(_ scope: AdminScope, _ name: String, until: Int64?, scheduler: inout Scheduler, now: Int64) throws(SpoolError) {
        try spool.suspend(Suspension(scope: scope, name: name, until: until ?? 0))
        apply(Suspension(scope: scope, name: name, until: until ?? 0), to: &scheduler, now: now)
    }

    /// resume - lift a suspension.
    public func resume(_ scope: AdminScope, _ name: String, scheduler: inout Scheduler, now: Int64) throws(SpoolError) {
        try spool.resume(scope, name)
        switch scope {
        case .domain: scheduler.resume(domainNamed: name, now: now)
        case .site: scheduler.resume(siteNamed: name)
        case .campaign: if let id = campaignIDs[name] { scheduler.resume(campaign: id, now: now) }
        }
    }

    /// bounceAll - bounce every pending recipient of a domain: recorded as bounced in the
    /// spool, then removed from the scheduler. Returns how many the spool bounced.
    @discardableResult
    public func bounceAll(domain: String, reason: String, scheduler: inout Scheduler) throws(SpoolError) -> Int {
        let count = try spool.purge(domain: domain, bounce: reason)
        if let index = scheduler.domainIndex(domain) { scheduler.bounceAll(domain: index, reason: reason) }
        return count
    }

    /// bounceAll - bounce every pending recipient of a campaign.
    @discardableResult
    public func bounceAll(campaign: String, reason: String, scheduler: inout Scheduler) throws(SpoolError) -> Int {
        let count = try spool.purge(campaign: campaign, bounce: reason)
        if let id = campaignIDs[campaign] { scheduler.bounceAll(campaign: id, reason: reason) }
        return count
    }

    /// restore - apply the suspensions the spool recorded (and that have not expired) to a
    /// scheduler, as after a restart. Domains and sites not yet known are suspended when the
    /// scheduler first meets them.
    public func restore(into scheduler: inout Scheduler, now: Int64) {
        for suspension in spool.suspensions where suspension.until == 0 || suspension.until > now {
            apply(suspension, to: &scheduler, now: now)
        }
    }

    private func apply(_ suspension: Suspension, to scheduler: inout Scheduler, now: Int64) {
        let until = suspension.until == 0 ? Int64.max : suspension.until
        switch suspension.scope {
        case .domain: scheduler.suspend(domainNamed: suspension.name, until: until, now: now)
        case .site: scheduler.suspend(siteNamed: suspension.name, until: until)
        case .campaign: if let id = campaignIDs[suspension.name] { scheduler.suspend(campaign: id, until: until) }
        }
    }
}
