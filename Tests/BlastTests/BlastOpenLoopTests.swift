// BlastOpenLoopTests.swift - open loop: latency counts from each message's due time
//
// The receiver answers every message 50 ms after it arrived and reads nothing
// meanwhile, so two connections carry at most 40 messages a second. These
// tests compare latencies the blast measured with that delay; they never time
// the test itself. With --duration the run ends at the deadline: what was due
// and got no reply by then is unsent, and in open loop it counts against the
// target.

import Blast
import CarrierTesting
import Foundation
import Testing

@Suite("Blast open loop")
struct BlastOpenLoopTests {
    static let delay: UInt64 = 50

    /// Five times what the connections carry: the backlog shows in p99, far beyond the delay.
    @Test func backlogShowsInLatency() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(replyDelayMilliseconds: BlastOpenLoopTests.delay))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 40)
        configuration.connections = 2
        configuration.threads = 1
        configuration.rate = 200
        let report = try BlastRunner.run(configuration)

        #expect(report.messagesSent == 40)
        #expect(receiver.messages.value == 40)
        let endToEnd = try #require(report.phases[.endToEnd])
        let transaction = try #require(report.phases[.transaction])
        #expect(endToEnd.p99 > 4 * Double(BlastOpenLoopTests.delay), "p99 \(endToEnd.p99) ms")
        /* The due time comes before the hand-over, so end to end is never shorter than the transaction. */
        #expect(endToEnd.max >= transaction.max)
        #expect(endToEnd.p50 >= Double(BlastOpenLoopTests.delay))
    }

    /// Well below what the connections carry: p99 stays near the delay.
    @Test func lowRateStaysNearTheDelay() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(replyDelayMilliseconds: BlastOpenLoopTests.delay))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 10)
        configuration.connections = 2
        configuration.threads = 1
        configuration.rate = 10
        let report = try BlastRunner.run(configuration)

        #expect(report.messagesSent == 10)
        let endToEnd = try #require(report.phases[.endToEnd])
        #expect(endToEnd.p50 >= Double(BlastOpenLoopTests.delay))
        #expect(endToEnd.p99 < 3 * Double(BlastOpenLoopTests.delay), "p99 \(endToEnd.p99) ms")
    }

    /// Open loop with a duration: messages become due until the deadline, then the run ends.
    @Test func durationBoundsTheRun() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 1)
        configuration.messages = nil
        configuration.durationNanoseconds = 300_000_000
        configuration.rate = 100
        let report = try BlastRunner.run(configuration)

        /* 100/s for 0.3 s: message n is due at n/100 s for n = 0 ... 29. */
        #expect(report.messagesAttempted + report.messagesUnsent == 30)
        #expect(report.messagesSent > 0)
        #expect(report.messagesSent <= receiver.messages.value)
    }

    /// Far above what the connections carry, for a fixed time: every message due before the
    /// deadline counts. Those still waiting or in flight when it passes are unsent, errors, and
    /// timed up to the deadline, so the percentiles show the backlog (coordinated omission).
    @Test func overdueMessagesCountAtTheDeadline() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(replyDelayMilliseconds: 100))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 1)
        configuration.messages = nil
        configuration.durationNanoseconds = 1_000_000_000
        configuration.connections = 2
        configuration.threads = 1
        configuration.rate = 400
        configuration.maxErrorRatio = 0.5
        let report = try BlastRunner.run(configuration)

        /* 400/s for 1 s: message n is due at n/400 s for n = 0 ... 399; two connections carry about 20. */
        #expect(report.messagesSent + report.messagesFailed + report.messagesUnsent == 400)
        #expect(report.messagesUnsent > 200)
        #expect(report.messagesSent <= receiver.messages.value)
        #expect(report.errorTypes["recipient_overdue"] == report.messagesUnsent)
        #expect(report.errorRatio > 0.5)
        #expect(!report.passed)
        let endToEnd = try #require(report.phases[.endToEnd])
        #expect(endToEnd.count == 400)
        #expect(endToEnd.p99 >= 750, "p99 \(endToEnd.p99) ms")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        #expect(object["messages_unsent"] as? Int == report.messagesUnsent)
        #expect(object["messages_overdue"] as? Int == report.messagesUnsent)
        #expect(report.text.contains("unsent \(report.messagesUnsent)"))
    }

    /// Closed loop with a duration ends too, and sends as long as it runs.
    @Test func closedLoopDurationEnds() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 1)
        configuration.messages = nil
        configuration.durationNanoseconds = 300_000_000
        let report = try BlastRunner.run(configuration)
        #expect(report.messagesSent > 0)
        #expect(report.messagesSent <= receiver.messages.value)
        #expect(receiver.messages.value <= report.messagesSent + report.messagesUnsent)
        #expect(report.errors == 0)
    }

    /// Closed loop: what is in flight at the deadline is cut off and unsent, not sent; no schedule, so no error.
    @Test func closedLoopCutsOffAtTheDeadline() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(replyDelayMilliseconds: 300))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 1)
        configuration.messages = nil
        configuration.durationNanoseconds = 500_000_000
        configuration.connections = 2
        configuration.threads = 1
        let report = try BlastRunner.run(configuration)

        /* Replies take 300 ms and come one at a time: at the deadline every connection has messages in flight. */
        #expect(report.messagesUnsent > 0)
        #expect(report.messagesSent <= receiver.messages.value)
        #expect(report.errors == 0)
        #expect(report.passed)
        let endToEnd = try #require(report.phases[.endToEnd])
        #expect(endToEnd.count == report.messagesAttempted)
    }
}
