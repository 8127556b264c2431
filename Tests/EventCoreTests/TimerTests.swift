// TimerTests.swift - one-shot, repeating and re-armed timers

import EventCore
import CarrierTesting
import Testing

@Suite("Timers")
struct TimerTests {
    @Test func oneShotFiresOnceAfterItsDelay() throws {
        let thread = try LoopThread.start(name: "timer-test")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<(fired: Int, elapsedMs: UInt64)>()
        thread.execute { loop in
            let start = MonotonicClock.nanoseconds()
            var fired = 0
            let timer = LoopTimer(loop: loop)
            timer.schedule(after: 30) { _ in fired += 1 }
            /* A second timer checks, well after the first, how often it fired. */
            let check = LoopTimer(loop: loop)
            check.schedule(after: 150) { check in
                result.fulfill((fired, (MonotonicClock.nanoseconds() - start) / 1_000_000))
                check.close()
                timer.close()
            }
        }
        let outcome = try #require(result.wait(seconds: 10))
        #expect(outcome.fired == 1)
        #expect(outcome.elapsedMs >= 150)
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
        let result = TestWaiter<UInt64>()
        thread.execute { loop in
            let start = MonotonicClock.nanoseconds()
            let idle = LoopTimer(loop: loop)
            idle.schedule(after: 50) { idle in
                result.fulfill((MonotonicClock.nanoseconds() - start) / 1_000_000)
                idle.close()
            }
            var pushes = 0
            let pusher = LoopTimer(loop: loop)
            pusher.schedule(after: 20, repeatEvery: 20) { pusher in
                pushes += 1
                idle.rearm(after: 50)
                if pushes == 5 { pusher.close() }
            }
        }
        let elapsed = try #require(result.wait(seconds: 10))
        /* Five pushes every 20 ms, the last at ~100 ms, plus 50 ms. */
        #expect(elapsed >= 140)
    }
}
