// WorkerShard+Administration.swift - operator actions on a running engine: suspend and
// resume a domain, site or campaign, bounce what is pending for a domain or campaign,
// retry a domain's or a site's deferred recipients now
//
// A suspension is recorded in the spool shard first (durably, on the shard's reader
// queue: the spool's writes wait for the disk), then applied to the scheduler on the
// loop; recorded suspensions are applied again when the shard starts. A bounce goes
// through the scheduler, so each recipient is recorded, logged and noticed (DSN) like
// any other bounce; recipients in flight finish their transaction.

import Scheduler
public import Spool

/// An operator's action on the delivery engine (the HTTP API's `POST /api/admin/v1`).
///
/// A value; safe to send between threads.
public enum AdminAction: Sendable, Equatable {
    /// Nothing for `name` in `scope` until `until` (ms since the epoch; nil: until resumed).
    case suspend(AdminScope, String, until: Int64?)
    /// Lift a suspension.
    case resume(AdminScope, String)
    /// Bounce every pending recipient of a domain or a campaign, with `reason` as the reply.
    case bounce(AdminScope, String, reason: String)
    /// Make the deferred recipients of a domain or a site due now (Postfix's `postqueue -s`,
    /// PowerMTA's `pmta retry`); a suspension in force still holds them.
    case retry(AdminScope, String)
}

extension WorkerShard {
    /// administer - carry out `action` on this shard; `completion` (on the loop thread)
    /// hears how many recipients a bounce or a retry took, or the spool's error.
    func administer(_ action: AdminAction, _ completion: @escaping @Sendable (Result<Int, SpoolError>) -> Void) {
        let shard = spoolShard
        let thread = self.thread
        reader.async {
            do throws(SpoolError) {
                switch action {
                case .suspend(let scope, let name, let until): try shard.suspend(Suspension(scope: scope, name: name, until: until ?? 0))
                case .resume(let scope, let name): try shard.resume(scope, name)
                case .bounce, .retry: break
                }
            } catch {
                return completion(.failure(error))
            }
            let posted = thread.execute { [self] _ in
                let now = nowMilliseconds()
                var count = 0
                switch action {
                case .suspend(let scope, let name, let until):
                    applySuspension(Suspension(scope: scope, name: name, until: until ?? 0), now: now)
                case .resume(let scope, let name):
                    switch scope {
                    case .domain: scheduler.resume(domainNamed: name, now: now)
                    case .site: scheduler.resume(siteNamed: name)
                    case .campaign: if let id = campaignIDs[name] { scheduler.resume(campaign: id, now: now) }
                    }
                case .bounce(let scope, let name, let reason):
                    switch scope {
                    case .domain: if let index = scheduler.domainIndex(name) { count = scheduler.bounceAll(domain: index, reason: reason) }
                    case .campaign: if let id = campaignIDs[name] { count = scheduler.bounceAll(campaign: id, reason: reason) }
                    case .site: break
                    }
                    disposeLeftovers(now: now)
                case .retry(let scope, let name):
                    switch scope {
                    case .domain: if let index = scheduler.domainIndex(name) { count = scheduler.retryNow(domain: index, now: now) }
                    case .site: count = scheduler.retryNow(siteNamed: name, now: now)
                    case .campaign: break
                    }
                }
                pump()
                completion(.success(count))
            }
            if !posted { completion(.failure(SpoolError(.invalid("the engine is stopping")))) }
        }
    }

    /// restoreSuspensions - at start: the suspensions the spool recorded and that are still in force.
    func restoreSuspensions() {
        let now = nowMilliseconds()
        for suspension in spoolShard.suspensions where suspension.until == 0 || suspension.until > now {
            applySuspension(suspension, now: now)
        }
    }

    /// applySuspension - one suspension on the scheduler (names it does not know yet are
    /// suspended when it first meets them).
    func applySuspension(_ suspension: Suspension, now: Int64) {
        let until = suspension.until == 0 ? Int64.max : suspension.until
        switch suspension.scope {
        case .domain: scheduler.suspend(domainNamed: suspension.name, until: until, now: now)
        case .site: scheduler.suspend(siteNamed: suspension.name, until: until)
        case .campaign: scheduler.suspend(campaign: campaignID(suspension.name), until: until)
        }
    }
}
