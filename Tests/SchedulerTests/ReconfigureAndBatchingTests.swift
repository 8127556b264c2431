// ReconfigureAndBatchingTests.swift - a reload changes limits at once; with
// transactionPerMessage a transaction holds one message's recipients, a personalised one alone

import Testing
@testable import Scheduler

@Suite("Reconfigure and per-message transactions")
struct ReconfigureAndBatchingTests {
    /// A site allowed 1 transaction at a time gets 3 after a reload, with queues intact.
    @Test func reconfigureRaisesConcurrencyAtOnce() throws {
        let tight = configuration(shaping: Shaping(defaults: Limits(maxConnections: 1, initialConnections: 1, maxRecipientsPerTransaction: 1)))
        var scheduler = TestScheduler(tight)
        let site = scheduler.site("s")
        let domain = scheduler.domain("a.test", site: site)
        for id in 0..<10 { scheduler.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        #expect(scheduler.drain(now: 0).count == 1)
        let roomy = configuration(shaping: Shaping(defaults: Limits(maxConnections: 3, initialConnections: 3, maxRecipientsPerTransaction: 1)))
        scheduler.reconfigure(roomy)
        #expect(scheduler.limits(site: site).maxConnections == 3)
        #expect(scheduler.drain(now: 1).count == 2)
        #expect(scheduler.pendingCount == 7)
    }

    /// A reload that adds a domain rate applies to the domain already queued.
    @Test func reconfigureAddsADomainRate() throws {
        var scheduler = TestScheduler(configuration(shaping: Shaping(defaults: Limits(maxRecipientsPerTransaction: 1))))
        let domain = scheduler.domain("a.test", site: scheduler.site("s"))
        for id in 0..<10 { scheduler.submit(recipient(UInt64(id)), domain: domain, now: 0) }
        scheduler.reconfigure(configuration(shaping: Shaping(defaults: Limits(maxRecipientsPerTransaction: 1),
                                                             domains: ["a.test": Limits(messageRate: Rate(1, per: 1), messageBurst: 1)])))
        let first = scheduler.drain(now: 0)
        #expect(first.count == 1)
        for delivery in first { scheduler.completeAll(delivery, .delivered, now: 0) }
        #expect(scheduler.drain(now: 500).isEmpty)
        #expect(scheduler.drain(now: 1_000).count == 1)
    }

    /// transactionPerMessage: recipients of different messages never share a transaction,
    /// a personalised recipient goes alone, the rest of one message go together.
    @Test func transactionsHoldOneMessage() throws {
        var settings = configuration()
        settings.transactionPerMessage = true
        var scheduler = TestScheduler(settings)
        let domain = scheduler.domain("a.test", site: scheduler.site("s"))
        func ref(_ message: UInt64, _ index: UInt32) -> RecipientRef { RecipientRef(messageHigh: 1, messageLow: message, index: index) }
        let plan: [(UInt64, UInt32, Bool)] = [(1, 0, false), (1, 1, false), (2, 0, false), (3, 0, true), (3, 1, true), (3, 2, false), (1, 2, false)]
        for (message, index, personalised) in plan {
            scheduler.submit(ScheduledRecipient(ref: ref(message, index), queued: 0, personalised: personalised), domain: domain, now: 0)
        }
        var batches: [[String]] = []
        while let delivery = scheduler.next(now: 0) {
            batches.append(delivery.recipients.map { "\($0.ref.messageLow)/\($0.ref.index)" })
            scheduler.completeAll(delivery, .delivered, now: 0)
        }
        #expect(batches == [["1/0", "1/1"], ["2/0"], ["3/0"], ["3/1"], ["3/2"], ["1/2"]])
    }
}
