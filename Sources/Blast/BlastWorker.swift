// BlastWorker.swift - one loop thread's share of a blast: its connections, its messages, its counts
//
// A worker lives on one loop thread from start to finish and touches nothing
// another thread touches: its slots, its share of the message numbers, its
// tally and its sample. The coordinator talks to it only through loop jobs
// (begin, sample, stop) and hears back through the `BlastBoard`.
//
// Life of a worker:
//   warming   every slot connects; the worker reports once each slot got
//             ready or failed once, so the clock starts with the connections
//             up (handshakes are timed in their own histograms).
//   running   closed loop: each ready slot keeps its window full from the
//             share; open loop: a timer makes messages due and hands them to
//             slots with room, one per slot per pass.
//   stopping  the deadline passed or the run was interrupted: idle
//             connections QUIT, connections still shaking hands are dropped;
//             after an interrupt busy ones finish what they carry, at the
//             deadline they are dropped too and what they carry is unsent.
//   finished  every slot is closed; the tally goes to the coordinator.
//
// The run ends at the deadline (or when interrupted, or when every slot gave
// up). In open loop every message due before then counts: one that got no
// final reply by then, waiting for a connection or in flight, is overdue, an
// error timed end to end up to the end of the run (see BlastStatistics.swift).
// Closed loop has no due times: what is cut off is just unsent.
//
// A slot whose connection closes reconnects while there is work. After a
// handshake failure it waits (100 ms per failure in a row), moves to the next
// destination, and gives up after `reconnectAttempts` failures in a row, so a
// dead target ends the run with errors counted instead of hanging it.

import EventCore
import SMTP
import SMTPStreams

/// One loop thread's part of a blast.
///
/// Confined to its loop's thread; made there by a job and reached only by jobs.
final class BlastWorker {
    private enum State { case warming, running, stopping, finished }

    let index: Int                          /* k of T */
    let loop: Loop
    private let plan: BlastPlan
    private let board: BlastBoard
    private let crypto = OpenSSLCrypto()
    private var slots: [BlastSlot] = []
    private var state = State.warming
    private var tally = BlastTally()
    private var sample = BlastSample()
    private var dates = BlastDateCache()
    private let budget: Int?                /* this worker's share of --messages */
    private var issued = 0                  /* closed loop: handed out; open loop: made due */
    private var start: UInt64 = 0           /* the run's start, monotonic ns */
    private var deadline: UInt64?           /* start + duration */
    private var schedulingDone = false      /* open loop: no further message will become due */
    private var backlog: [Int] = []         /* open loop: due message numbers, oldest at backlogHead */
    private var backlogHead = 0
    private var rotation = 0                /* open loop: the slot the next dispatch pass starts at */
    private var scheduler: LoopTimer?       /* open loop: wakes when the next message is due */
    private var stopTimer: LoopTimer?       /* fires at the deadline */
    private var warmReported = false        /* the board heard that every slot settled */

    init(index: Int, loop: Loop, plan: BlastPlan, board: BlastBoard) {
        self.index = index
        self.loop = loop
        self.plan = plan
        self.board = board
        self.budget = plan.budget(worker: index)
    }

    // MARK: Jobs from the coordinator

    /// warm - open every slot's first connection.
    func warm() {
        for local in 0..<plan.slots(worker: index) {
            slots.append(BlastSlot(worker: self, number: index + plan.threads * local))
        }
        slots.forEach(connect)
        settled()
    }

    /// begin - start the clock at `start` and send.
    func begin(start: UInt64) {
        guard state == .warming else { return }
        state = .running
        self.start = start
        if let duration = plan.configuration.durationNanoseconds {
            deadline = start + duration
            let timer = LoopTimer(loop: loop)
            stopTimer = timer
            let now = MonotonicClock.nanoseconds()
            let wait = start + duration > now ? start + duration - now : 0
            timer.schedule(after: (wait + 999_999) / 1_000_000) { [unowned self] _ in expire() }
        }
        if plan.isOpenLoop {
            scheduler = LoopTimer(loop: loop)
            schedule()
        } else {
            slots.forEach { fill($0) }
        }
        checkFinished()
    }

    /// takeSample - what happened since the last sample; a fresh sample starts.
    func takeSample() -> BlastSample {
        var taken = sample
        taken.backlog = backlog.count - backlogHead
        sample = BlastSample()
        return taken
    }

    /// stop - the run was interrupted: send nothing more; let what is in flight finish.
    func stop() {
        wind(down: MonotonicClock.nanoseconds(), cuttingOff: false)
    }

    /// expire - the deadline passed: send nothing more; what is in flight is cut off.
    private func expire() {
        wind(down: deadline ?? MonotonicClock.nanoseconds(), cuttingOff: true)
    }

    /// wind - the run ends at `end`: count what was due and never went, close or QUIT every connection.
    ///
    /// `cuttingOff` drops the connections that carry messages instead of
    /// waiting for their replies, which would come after the end: the
    /// messages count unsent, and the replies of a dropped connection are
    /// ignored (the slot is `abandoned`).
    private func wind(down end: UInt64, cuttingOff: Bool) {
        guard state == .warming || state == .running else { return }
        if state == .running { abandonSchedule(end: end) }
        state = .stopping
        scheduler?.close()
        stopTimer?.close()
        for slot in slots {
            slot.retry?.close()
            slot.retry = nil
            guard let connection = slot.connection else { continue }
            if !slot.ready {
                slot.abandoned = true
                connection.close()
            } else if cuttingOff && connection.inFlight > 0 {
                slot.abandoned = true
                for n in slot.takeInFlight() { unsent(n, end: end) }
                connection.close()
            } else if connection.inFlight == 0 && !slot.quitting {
                slot.quitting = true
                connection.quit()
            }
        }
        checkFinished()
    }

    // MARK: Connections

    /// connect - open a new connection for `slot` to its current destination.
    private func connect(_ slot: BlastSlot) {
        let destination = plan.destinations[slot.destination % plan.destinations.count]
        var configuration = plan.connection
        configuration.serverName = destination.serverName
        let sources = plan.configuration.sources
        if !sources.isEmpty { configuration.source = SocketAddress(ip: sources[slot.number % sources.count], port: 0) }
        slot.connectStart = MonotonicClock.nanoseconds()
        tally.connectionAttempts += 1
        slot.connection = ClientConnection.connect(loop: loop, to: destination.address, configuration: configuration,
                                                   crypto: crypto, delegate: slot)
    }

    /// stage - a handshake stage of `slot`'s connection ended.
    func stage(_ slot: BlastSlot, _ stage: ClientConnectionStage, nanoseconds: UInt64) {
        switch stage {
        case .connect: tally.record(.connect, nanoseconds: nanoseconds)
        case .banner: tally.record(.banner, nanoseconds: nanoseconds)
        case .ehlo: tally.record(.ehlo, nanoseconds: nanoseconds)
        case .tlsHandshake: tally.record(.tlsHandshake, nanoseconds: nanoseconds)
        case .authentication: tally.record(.authentication, nanoseconds: nanoseconds)
        case .ready: tally.record(.handshake, nanoseconds: MonotonicClock.nanoseconds() - slot.connectStart)
        }
    }

    /// ready - `slot`'s connection is idle; the first time, it just finished its handshake.
    func ready(_ slot: BlastSlot, _ connection: ClientConnection) {
        if !slot.ready {
            slot.ready = true
            slot.window = plan.configuration.window(pipelining: connection.capabilities?.pipelining == true)
            tally.connectionsReady += 1
            settle(slot)
        }
        fill(slot)
    }

    /// completed - one message of `slot` has its outcome.
    func completed(_ slot: BlastSlot, _ connection: ClientConnection, _ result: TransactionResult, tag: Int, nanoseconds: UInt64) {
        /* Cut off at the deadline: counted unsent already. */
        guard !slot.abandoned else { return }

        /* After a failure the session reports what it carried as its own deferrals. */
        let aborted = !connection.isUsable && !slot.quitting
        let (sent, errors) = tally.count(result, aborted: aborted)
        let size = slot.takeSize()
        slot.failuresInARow = 0
        sample.attempted += 1
        sample.errors += errors
        let now = MonotonicClock.nanoseconds()
        tally.lastCompletion = now
        if sent {
            sample.sent += 1
            tally.bytesSent += size
        }
        if !aborted {
            let due = plan.isOpenLoop ? plan.due(tag, start: start) : now - nanoseconds
            let endToEnd = now > due ? now - due : 0
            tally.record(.transaction, nanoseconds: nanoseconds)
            tally.record(.endToEnd, nanoseconds: endToEnd)
            sample.endToEnd.record(nanoseconds: endToEnd)
        }
        fill(slot)
    }

    /// closed - `slot`'s connection ended; count the error, reconnect or give up.
    ///
    /// A connection that ended before carrying any message, other than by our
    /// QUIT or while stopping, is a failure in a row: refused, failed TLS or
    /// AUTH, or closed by the server right after the handshake. Only a
    /// completed message resets the count, so a server that never carries
    /// mail makes every slot give up.
    func closed(_ slot: BlastSlot, error: ClientConnectionError?) {
        let wasReady = slot.ready
        let abandoned = slot.abandoned
        let expected = abandoned || slot.quitting
        let carried = slot.handedOver > 0
        slot.connection = nil
        slot.ready = false
        slot.quitting = false
        slot.abandoned = false
        slot.handedOver = 0
        if let error, !abandoned {
            tally.connectionFailed(error)
            sample.errors += 1
        }
        if !expected && !carried {
            slot.failuresInARow += 1
            if !wasReady { slot.destination += 1 }
        }
        settle(slot)

        /* Reconnect now after a working connection; later, or never, after failed handshakes. */
        if hasMoreWork && unclaimedWork(besides: slot) {
            if slot.failuresInARow >= plan.configuration.reconnectAttempts {
                slot.retired = true
            } else if slot.failuresInARow > 0 {
                let retry = LoopTimer(loop: loop)
                slot.retry = retry
                retry.schedule(after: 100 * UInt64(slot.failuresInARow)) { [unowned self, unowned slot] timer in
                    timer.close()
                    slot.retry = nil
                    if hasMoreWork { connect(slot) } else { checkFinished() }
                }
            } else {
                connect(slot)
            }
        }
        checkFinished()
    }

    // MARK: Messages

    /// True while messages remain to be sent (while warming: always).
    private var hasMoreWork: Bool {
        switch state {
        case .warming: return true
        case .stopping, .finished: return false
        case .running:
            if plan.isOpenLoop { return !schedulingDone || backlogHead < backlog.count }
            if let budget, issued >= budget { return false }
            /* The clock itself, not the loop's cached time: a burst of local refusals never yields. */
            if let deadline, MonotonicClock.nanoseconds() >= deadline { return false }
            return true
        }
    }

    /// unclaimedWork - whether messages remain that the other slots' connections will not take.
    ///
    /// Matters only for a closed loop with --messages and --messages-per-connection:
    /// near the end, a slot that QUIT must not open a connection for messages
    /// that connections still shaking hands (or with room left) will carry.
    private func unclaimedWork(besides closing: BlastSlot) -> Bool {
        guard !plan.isOpenLoop, let budget, let perConnection = plan.configuration.messagesPerConnection else { return true }
        var claimed = 0
        for slot in slots where slot !== closing {
            if slot.retry != nil {
                claimed += perConnection
            } else if slot.connection != nil && !slot.quitting {
                claimed += perConnection - slot.handedOver
            }
        }
        return budget - issued > claimed
    }

    /// nextMessage - the number of the next message to hand over, if any is due.
    private func nextMessage() -> Int? {
        guard state == .running else { return nil }
        if plan.isOpenLoop {
            guard backlogHead < backlog.count else { return nil }
            let n = backlog[backlogHead]
            backlogHead += 1
            if backlogHead == backlog.count {
                backlog.removeAll(keepingCapacity: true)
                backlogHead = 0
            }
            return n
        }
        guard hasMoreWork else { return nil }
        let n = plan.messageNumber(worker: index, local: issued)
        issued += 1
        return n
    }

    /// fill - hand `slot` messages until its window is full (at most `limit`); QUIT when it is done.
    ///
    /// Returns how many were handed over. A send may report back at once (a
    /// local refusal), so every condition is checked again after each one.
    @discardableResult
    private func fill(_ slot: BlastSlot, limit: Int = .max) -> Int {
        guard let connection = slot.connection, slot.ready else { return 0 }
        let perConnection = plan.configuration.messagesPerConnection ?? .max
        var handed = 0
        while handed < limit && connection.isUsable && !slot.quitting
                && connection.inFlight < slot.window && slot.handedOver < perConnection,
              let n = nextMessage() {
            slot.handedOver += 1
            handed += 1
            let message = plan.factory.message(n, date: dates.current())
            slot.noteHandedOver(n, size: message.payload.size)
            connection.send(message, tag: n)
        }

        /* QUIT only when idle: with messages in flight the session would just drop the connection. */
        if connection.isUsable && !slot.quitting && connection.inFlight == 0 && state != .warming
            && (slot.handedOver >= perConnection || !hasMoreWork) {
            slot.quitting = true
            connection.quit()
        }
        return handed
    }

    /// schedule - open loop: make every message due by now wait in the backlog, hand them out, sleep until the next.
    private func schedule() {
        guard state == .running, let scheduler else { return }
        let now = MonotonicClock.nanoseconds()
        let next = makeDue(until: now)
        dispatch()
        guard let next, state == .running else { return }
        let milliseconds = max(1, (next - now + 999_999) / 1_000_000)
        scheduler.schedule(after: milliseconds) { [unowned self] _ in schedule() }
    }

    /// makeDue - open loop: every message of the share due by `now` joins the backlog; when the next is due, if any.
    ///
    /// The share (`budget`) holds only messages due before the deadline, so
    /// the schedule ends there.
    private func makeDue(until now: UInt64) -> UInt64? {
        while !schedulingDone {
            if let budget, issued >= budget {
                schedulingDone = true
                break
            }
            let n = plan.messageNumber(worker: index, local: issued)
            let due = plan.due(n, start: start)
            if due > now { return due }
            backlog.append(n)
            issued += 1
        }
        return nil
    }

    /// abandonSchedule - open loop: the run ended at `end`; what was due by then and still waits is overdue.
    private func abandonSchedule(end: UInt64) {
        guard plan.isOpenLoop else { return }
        _ = makeDue(until: end)
        schedulingDone = true
        for n in backlog[backlogHead...] { unsent(n, end: end) }
        backlog.removeAll()
        backlogHead = 0
    }

    /// unsent - message `n` got no final reply before the run ended at `end`.
    ///
    /// In open loop it was due, so it is overdue: an error, timed from its due
    /// time to the end as if it completed then. Closed loop has no due times.
    private func unsent(_ n: Int, end: UInt64) {
        guard plan.isOpenLoop else {
            tally.messagesUnsent += 1
            return
        }
        let due = plan.due(n, start: start)
        let late = end > due ? end - due : 0
        let recipients = plan.configuration.recipientsPerMessage
        tally.overdue(recipients: recipients, nanoseconds: late)
        sample.errors += recipients
        sample.endToEnd.record(nanoseconds: late)
    }

    /// dispatch - open loop: one message per slot with room per pass, round-robin, until the backlog is empty.
    private func dispatch() {
        let count = slots.count
        var progress = true
        while progress && backlogHead < backlog.count {
            progress = false
            for step in 0..<count where backlogHead < backlog.count {
                if fill(slots[(rotation + step) % count], limit: 1) > 0 { progress = true }
            }
            rotation = (rotation + 1) % count
        }
        /* With nothing more to come, idle connections say QUIT. */
        if schedulingDone && backlogHead == backlog.count { slots.forEach { fill($0) } }
    }

    // MARK: Bookkeeping

    /// settle - while warming, `slot` got ready or failed: it no longer holds up the start.
    private func settle(_ slot: BlastSlot) {
        guard !slot.settled else { return }
        slot.settled = true
        settled()
    }

    /// settled - report to the board, once, when every slot has settled.
    private func settled() {
        guard state == .warming, !warmReported, slots.allSatisfy(\.settled) else { return }
        warmReported = true
        board.warmed()
    }

    /// checkFinished - when every slot is closed for good, hand the tally over.
    ///
    /// Still running here means the work ran out or every slot gave up: the
    /// run ends now, and what the share holds beyond what was due is unsent.
    private func checkFinished() {
        guard state == .running || state == .stopping, slots.allSatisfy(\.isDormant) else { return }
        if state == .running { abandonSchedule(end: MonotonicClock.nanoseconds()) }
        state = .finished
        scheduler?.close()
        stopTimer?.close()
        if let budget { tally.messagesUnsent += budget - issued }
        let last = sample
        sample = BlastSample()
        board.finished(tally: tally, sample: last)
    }
}
