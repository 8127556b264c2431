// SchedulerTestSupport.swift - helpers shared by the scheduler's mock-clock tests
//
// Every test drives the scheduler with explicit times (ms); nothing reads a clock.

import Testing
@testable import Scheduler

typealias TestScheduler = Scheduler
typealias TestRecipient = ScheduledRecipient
typealias TestDelivery = Delivery


/// A recipient with reference `ref`, queued at `queued`.
func recipient(_ id: UInt64, queued: Int64 = 0, campaign: UInt32 = 0, priority: Priority = .transactional) -> TestRecipient {
    TestRecipient(ref: RecipientRef(id), queued: queued, campaign: campaign, priority: priority)
}

extension ScheduledRecipient {
    /// The number the test made the recipient's reference from.
    var id: UInt64 { ref.messageLow }
}

/// A configuration without jitter or response rules unless asked for, so times are exact,
/// and with strict round-robin between a site's domains (domain bursts have their own tests).
func configuration(shaping: Shaping = Shaping(), retry: RetryPolicy = RetryPolicy(jitter: 0),
                   health: HealthPolicy = HealthPolicy(), rules: [ResponseRule] = [], domainBurst: Int = 1) -> SchedulerConfiguration {
    SchedulerConfiguration(shaping: shaping, retry: retry, health: health, rules: rules, domainBurst: domainBurst)
}

/// A reply that matches none of the shipped response rules.
let plainTemporary = DeliveryResult.temporaryFailure(reply: "450 4.2.0 Mailbox busy, try later")

/// What `required` and `requiredWakeup` throw: the test fails there instead of crashing.
struct Missing: Error, CustomStringConvertible {
    var description: String
}

extension Scheduler {
    /// required - `next(now:)`, which the test expects to give a delivery.
    mutating func required(now: Int64) throws -> Delivery {
        guard let delivery = next(now: now) else { throw Missing(description: "no delivery at \(now)") }
        return delivery
    }

    /// requiredWakeup - `nextWakeup`, which the test expects to be set.
    func requiredWakeup() throws -> Int64 {
        guard let wake = nextWakeup else { throw Missing(description: "no wake-up") }
        return wake
    }

    /// drain - every delivery `next` gives at `now`, without completing any.
    mutating func drain(now: Int64) -> [TestDelivery] {
        var out: [TestDelivery] = []
        while let delivery = next(now: now) { out.append(delivery) }
        return out
    }

    /// completeAll - complete `delivery` with the same result for every recipient.
    mutating func completeAll(_ delivery: TestDelivery, _ result: DeliveryResult, now: Int64) {
        complete(delivery, results: Array(repeating: result, count: delivery.recipients.count), now: now)
    }
}
