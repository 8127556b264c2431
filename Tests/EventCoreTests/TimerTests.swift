// TimerTests.swift - one-shot, repeating and re-armed timers

import EventCore
import CarrierTesting
import Testing

@Suite("Timers")
struct TimerTests {
    @Test func oneShotFiresOnceAfterItsDelay() throws {
        let thread = try LoopThread.start(name: "timer-test")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<(early: Int, late: Int)>()
        thread.execute { loop in
            var fired = 0
            var early = -1
            let timer = LoopTimer(loop: loop)
            timer.schedule(after: 60) { _ in fired += 1 }
            /* One look well before the deadline, one well after it. */
            let before = LoopTimer(loop: loop)
            before.schedule(after: 5) { before in
                early = fired
                before.close()
            }
            let after = LoopTimer(loop: loop)
            after.schedule(after: 200) { after in
                result.fulfill((early, fired))
                after.close()
                timer.close()
            }
        }
        let outcome = try #require(result.wait(seconds: 10))
        #expect(outcome.early == 0)
        #expect(outcome.late == 1)
    }

    @Test func repeatingTimerFiresUntilCancelled() throws {
        let thread = try LoopThread.start(name: "timer-repeat")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<Int>()
        thread.execute { loop in
            var fired = 0
            let timer = LoopTimer(loop: loop)
            timer.schedule(after: 5, repeatEvery: 5) { timer in
                fired += 1
                if fired == 5 { timer.cancel() }
            }
            let check = LoopTimer(loop: loop)
            check.schedule(after: 200) { check in
                result.fulfill(fired)
                check.close()
                timer.close()
            }
        }
        #expect(result.wait(seconds: 10) == 5)
    }

    /// Re-arming before the deadline moves it: an idle timer pushed forward never fires early.
    @Test func rearmMovesTheDeadline() throws {
        let thread = try LoopThread.start(name: "timer-rearm")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<Int>()
        thread.execute { loop in
            var pushes = 0
            let idle = LoopTimer(loop: loop)
            idle.schedule(after: 50) { idle in
                result.fulfill(pushes)
                idle.close()
            }
            let pusher = LoopTimer(loop: loop)
            pusher.schedule(after: 20, repeatEvery: 20) { pusher in
                pushes += 1
                idle.rearm(after: 50)
                if pushes == 5 { pusher.close() }
            }
        }
        /* Pushed every 20 ms to 50 ms ahead, it can only fire after the pusher stopped. */
        #expect(result.wait(seconds: 10) == 5)
    }
}
