// MailboxTests.swift - cross-thread hand-off into a loop

import Dispatch
import EventCore
import CarrierTesting
import Testing

@Suite("Mailbox")
struct MailboxTests {
    /// 1,000,000 items from 4 producer threads all arrive, each producer's in order.
    @Test func millionItemsFromFourThreadsArriveInOrderPerProducer() throws {
        let producers = 4
        let perProducer = 250_000
        let thread = try LoopThread.start(name: "mailbox-test")
        defer { thread.stopAndJoin() }

        struct Outcome: Sendable { var received = 0; var outOfOrder = 0 }
        let done = TestWaiter<Outcome>()
        let ready = TestWaiter<Mailbox<Int>>()
        thread.execute { loop in
            var next = [Int](repeating: 0, count: producers)
            var outcome = Outcome()
            do {
                let mailbox = try Mailbox<Int>(loop: loop) { item in
                    let producer = item / perProducer
                    if item % perProducer != next[producer] { outcome.outOfOrder += 1 }
                    next[producer] = item % perProducer + 1
                    outcome.received += 1
                    if outcome.received == producers * perProducer { done.fulfill(outcome) }
                }
                ready.fulfill(mailbox)
            } catch {
                Issue.record("mailbox init failed: \(error)")
            }
        }
        let mailbox = try #require(ready.wait(seconds: 10))
        DispatchQueue.concurrentPerform(iterations: producers) { producer in
            for sequence in 0..<perProducer {
                mailbox.post(producer * perProducer + sequence)
            }
        }
        let outcome = try #require(done.wait(seconds: 60), "not every item arrived")
        #expect(outcome.received == producers * perProducer)
        #expect(outcome.outOfOrder == 0)
    }

    /// After the loop stops, posting reports failure instead of crashing or losing silently.
    @Test func postAfterStopIsRefused() throws {
        let thread = try LoopThread.start(name: "mailbox-stop")
        let ready = TestWaiter<Mailbox<Int>>()
        thread.execute { loop in
            ready.fulfill(try! Mailbox<Int>(loop: loop) { _ in })
        }
        let mailbox = try #require(ready.wait(seconds: 10))
        thread.stopAndJoin()
        #expect(mailbox.post(1) == false)
        #expect(thread.execute { _ in } == false)
    }
}
