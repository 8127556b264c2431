// SinkSession.swift - the sink's side of one SMTP connection: its policy and its delegate
//
// ServerConnection runs the protocol; this object decides what the sink
// answers (greeting, MAIL, RCPT, end of data), counts each decision, and
// carries out the faults that need the connection itself: closing after a
// 421 and cutting a data phase off in the middle.
//
// Mid-DATA disconnects: a data phase is the DATA or BDAT octets of a
// transaction with at least one accepted recipient. It is numbered, and
// decided, when a read first leaves the connection reading them,
// or when the message turns up complete before that (a small BDAT chunk
// arrives with its command). A doomed phase is closed on the next read that
// is still inside it, or when its message is complete, so the client has
// sent at least part of the body and never gets a final reply.

import EventCore
import SMTP
import SMTPStreams

/// One connection's policy (ServerPolicy) and event handler (ServerConnectionDelegate).
///
/// Confined to the connection's loop thread. The connection's session holds
/// it strongly as its policy; it holds nothing of the connection's, so they
/// go away together.
final class SinkSession: ServerPolicy, ServerConnectionDelegate {
    private let worker: SinkWorker
    private let shared: SinkShared
    private let counters: SinkCounters
    let number: UInt64                  /* connection number, 1-based across the sink */
    let remote: String?                 /* the client's address, when recording */
    private var closing: Reply?         /* the 421 sent: every later command gets it too, then the close */
    private var closeScheduled = false
    private var phaseDecided = false    /* the current data phase has its disconnect decision */
    private var phaseDoomed = false     /* ... and it is to be cut off */
    private var accepted = 0            /* recipients accepted in the current transaction */

    init(worker: SinkWorker, number: UInt64, remote: String?) {
        self.worker = worker
        shared = worker.shared
        counters = worker.counters
        self.number = number
        self.remote = remote
    }

    // MARK: ServerPolicy

    /// greeting - 421 4.3.2 for the connections --greeting-421-rate picks, else the normal 220.
    func greeting() -> Reply? {
        if shared.configuration.faults.refusesGreeting(connection: number) {
            counters.add(.greetingsRefused)
            counters.reply(421)
            return shared.greetingRefusal
        }
        counters.reply(220)
        return nil
    }

    /// mail - 250, or the 421 already given on this connection.
    func mail(from sender: ReversePath, parameters: MailParameters, session: ServerSessionView) -> Reply? {
        if let closing { return refuse(closing) }
        accepted = 0
        counters.reply(250)
        return nil
    }

    /// recipient - the rules' refusal (rate limit, domain rule, rates) or 250.
    func recipient(_ recipient: MailAddress, parameters: RecipientParameters, session: ServerSessionView) -> Reply? {
        if let closing {
            counters.add(.recipientsRefused)
            return refuse(closing)
        }
        if let refusal = shared.rules.recipientReply(recipient, limiter: shared.limiter) {
            counters.add(.recipientsRefused)
            return refuse(refusal)
        }
        accepted += 1
        counters.add(.recipientsAccepted)
        counters.reply(250)
        return nil
    }

    /// refuse - count a refusal; a 421 also means closing the connection (RFC 5321 §3.8).
    private func refuse(_ reply: Reply) -> Reply {
        counters.reply(reply.code)
        if reply.code == 421 { closing = reply }
        return reply
    }

    // MARK: ServerConnectionDelegate

    /// received - cut the phase off, refuse at end of data, or store, record, count and answer 250.
    func serverConnection(_ connection: ServerConnection, received message: ReceivedMessage) {
        /* A doomed data phase gets no final reply: the client just loses the connection. */
        accepted = 0
        if shared.configuration.faults.disconnectRate > 0 {
            if !phaseDecided { decidePhase() }
            phaseDecided = false
            if phaseDoomed { return cutOff(connection) }
        }
        var headers: SinkMessageHeaders?
        if shared.needsHeaders {
            headers = message.body.withUnsafeReadableBytes { SinkMessageHeaders(parsing: $0) }
        }
        if shared.rules.faults.refusesSome {
            let key = SinkFaults.messageKey(
                carrierID: headers?.carrierID, messageID: headers?.messageID, sender: message.sender.description,
                recipients: message.recipients.map(\.address.description))
            if let refusal = shared.rules.messageReply(key: key) {
                counters.add(.messagesRefused)
                counters.reply(refusal.code)
                return connection.answer(refusal)
            }
        }
        connection.answer(worker.acceptMessage(message, session: self, headers: headers))
    }

    /// didRead - close after a 421; decide or carry out a mid-DATA disconnect.
    func serverConnectionDidRead(_ connection: ServerConnection) {
        if closing != nil { return closeAfterReplies(connection) }
        guard shared.configuration.faults.disconnectRate > 0 else { return }
        guard connection.isReceivingData && accepted > 0 else {
            phaseDecided = false
            return
        }
        if !phaseDecided {
            decidePhase()
        } else if phaseDoomed {
            cutOff(connection)
        }
    }

    /// closed - one session fewer for --max-connections.
    func serverConnectionClosed(_ connection: ServerConnection) {
        worker.connectionClosed()
    }

    // MARK: Faults that act on the connection

    /// decidePhase - number the data phase that just began and decide whether to cut it off.
    private func decidePhase() {
        phaseDecided = true
        let phase = shared.dataPhaseNumbers.add(1, ordering: .relaxed).newValue
        phaseDoomed = shared.configuration.faults.disconnects(dataPhase: phase)
    }

    /// cutOff - close the connection in the middle of a data phase.
    private func cutOff(_ connection: ServerConnection) {
        phaseDoomed = false
        phaseDecided = false
        counters.add(.disconnects)
        connection.close()
    }

    /// closeAfterReplies - close once the 421 is out and the client had time to hang up.
    ///
    /// RFC 5321 §3.8 has the server close after 421. Closing at once would
    /// reset a connection the client is still writing pipelined commands
    /// into, and the reset can destroy the 421 in the client's receive
    /// buffer before it is read; a client that reads the 421 closes by
    /// itself. So the sink waits `closeGraceMilliseconds` (after the reply
    /// delay, which a close would cut short) and only then closes.
    private func closeAfterReplies(_ connection: ServerConnection) {
        guard !closeScheduled else { return }
        closeScheduled = true
        let wait = shared.configuration.replyDelayMilliseconds + SinkSession.closeGraceMilliseconds
        LoopTimer(loop: connection.loop).schedule(after: wait) { timer in
            connection.close()
            timer.close()
        }
    }

    /// How long a client answered 421 has to close the connection itself.
    static let closeGraceMilliseconds: UInt64 = 2_000
}
