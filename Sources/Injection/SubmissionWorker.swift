// SubmissionWorker.swift - one loop thread of the SMTP listener, and one client session on it
//
// The worker owns its listeners and the mailbox through which the spool's
// commit completions come back to this thread. A session is the policy and
// delegate of one ServerConnection: it turns the received message into a
// spool message (SubmissionIntake), enqueues it, and answers when the
// completion arrives: 250 2.0.0 once durable, 452 4.3.1 when the disk is
// full, 451 4.3.0 for any other failure. Never a 250 for a message not stored.

import Delivery
import EventCore
import SMTP
import SMTPStreams
import Spool

/// The listener's work on one loop thread.
///
/// Confined to its loop's thread. Lives while its listeners, its mailbox or
/// any of its connections do.
final class SubmissionWorker {
    let loop: Loop
    let shared: SubmissionShared
    private var listeners: [TCPListener] = []
    private var mailbox: Mailbox<StoreResult>!
    private var waiting: [UInt64: SubmissionSession] = [:]     /* sessions whose message is being stored */
    private var nextNumber: UInt64 = 0
    private var dateSecond: Int64 = -1                          /* the second `dateText` was made for */
    private var dateText = ""

    /// A spool completion, posted from a spool thread to this loop.
    struct StoreResult: Sendable {
        let session: UInt64
        let result: Result<MessageID, SpoolError>
    }

    init(loop: Loop, shared: SubmissionShared) throws(InjectionError) {
        self.loop = loop
        self.shared = shared
        do {
            mailbox = try Mailbox(loop: loop) { [unowned self] item in stored(item) }
        } catch {
            throw InjectionError("cannot make the listener's mailbox: \(error)")
        }
    }

    /// listen - open a listener on each address; returns the bound addresses.
    func listen(on addresses: [SocketAddress]) throws(InjectionError) -> [SocketAddress] {
        var bound: [SocketAddress] = []
        for address in addresses {
            do {
                let listener = try TCPListener(loop: loop, address: address, reusePort: shared.configuration.threads > 1) {
                    [unowned self] tcp in accept(tcp)
                }
                listeners.append(listener)
                bound.append(listener.localAddress)
            } catch {
                closeListeners()
                throw InjectionError("cannot listen on \(address): \(error)")
            }
        }
        return bound
    }

    /// closeListeners - accept no more connections (the first step of stopping).
    func closeListeners() {
        listeners.forEach { $0.close() }
        listeners.removeAll()
    }

    /// accept - a session for a new connection, or 421 when over a connection limit.
    private func accept(_ tcp: TCPConnection) {
        let client = tcp.remoteAddress?.ip
        if let refusal = shared.admit(client) {
            shared.count { $0.connectionsRefused += 1 }
            ConnectionRefusal.refuse(tcp, with: ByteBuffer(string: refusal))
            return
        }
        nextNumber += 1
        let session = SubmissionSession(worker: self, number: nextNumber, client: client)
        session.connection = ServerConnection.start(
            tcp, configuration: shared.connectionSettings(for: client), policy: session,
            credentials: shared.configuration.users, crypto: shared.crypto, delegate: session)
    }

    /// dateNow - the RFC 5322 date now, made at most once a second.
    func dateNow() -> String {
        let now = nowMilliseconds()
        if now / 1000 != dateSecond {
            dateSecond = now / 1000
            dateText = rfc5322Date(now)
        }
        return dateText
    }

    /// store - enqueue a session's message; the answer comes through the mailbox.
    func store(_ message: NewMessage, id: MessageID, for session: SubmissionSession) {
        waiting[session.number] = session
        shared.storing.add(1, ordering: .relaxed)
        let number = session.number
        let mailbox = self.mailbox!
        shared.spool.enqueue(message, id: id) { result in
            if !mailbox.post(StoreResult(session: number, result: result)) {
                /* The loop is gone (stopping after the grace): the message is stored, the client just gets no reply. */
            }
        }
    }

    /// stored - on this loop: the spool's answer for a session's message (counted as
    /// answered only once the reply is written, so stop() cannot cut it off).
    private func stored(_ item: StoreResult) {
        defer { shared.storing.subtract(1, ordering: .releasing) }
        guard let session = waiting.removeValue(forKey: item.session) else { return }
        session.answer(item.result)
    }
}

/// One client connection's policy and delegate.
///
/// Confined to its worker's loop thread; held by its connection (as policy)
/// and, while a message is being stored, by the worker.
final class SubmissionSession: ServerPolicy, ServerConnectionDelegate {
    unowned let worker: SubmissionWorker
    let number: UInt64
    let client: IPAddress?
    let clientText: String                      /* the address as the Received field writes it */
    weak var connection: ServerConnection?
    private var recipients = 0                  /* of the message being stored */
    private var logged: (addresses: [String], campaign: String, text: String)?   /* its `received` records */
    private var closing = false                 /* answered 421: close after this read's replies */

    init(worker: SubmissionWorker, number: UInt64, client: IPAddress?) {
        self.worker = worker
        self.number = number
        self.client = client
        clientText = SubmissionContext.clientText(client)
    }

    // MARK: ServerPolicy

    /// mail - while the listener stops, no new transaction starts (RFC 5321 §3.8: 421, then close).
    func mail(from sender: ReversePath, parameters: MailParameters, session: ServerSessionView) -> Reply? {
        guard worker.shared.stopping.load(ordering: .acquiring) else { return nil }
        closing = true
        return Reply(code: 421, enhanced: EnhancedStatus(4, 3, 2), text: "4.3.2 \(worker.shared.configuration.hostname) Service shutting down")
    }

    // MARK: ServerConnectionDelegate

    func serverConnectionDidRead(_ connection: ServerConnection) {
        if closing { connection.close() }
    }

    func serverConnection(_ connection: ServerConnection, received message: ReceivedMessage) {
        let shared = worker.shared
        /* The listener is stopping and may already have stopped waiting for the messages
           being stored: one stored now might never be answered (and come again). */
        if shared.stopping.load(ordering: .acquiring) {
            closing = true
            shared.count { $0.messagesRefused += 1; $0.recipientsRefused += message.recipients.count }
            connection.answer(Reply(code: 421, enhanced: EnhancedStatus(4, 3, 2),
                                    text: "4.3.2 \(shared.configuration.hostname) Service shutting down; the message was not queued"))
            return
        }
        let id = Spool.newID()
        let context = SubmissionContext(
            hostname: shared.configuration.hostname, client: clientText, heloName: message.heloName,
            isTLS: message.isTLS, authenticatedUser: message.authenticatedUser, date: worker.dateNow())
        let defaults = message.authenticatedUser.flatMap { shared.configuration.users?.defaults[$0] }
        let prepared: NewMessage
        do {
            prepared = try SubmissionIntake.prepare(message, id: id, context: context, defaults: defaults,
                                                    defaultPriority: shared.configuration.defaultPriority)
        } catch {
            shared.count { $0.messagesRefused += 1; $0.recipientsRefused += message.recipients.count }
            connection.answer(Reply(code: 550, enhanced: EnhancedStatus(5, 6, 0), text: "5.6.0 \(error.message)"))
            return
        }
        recipients = prepared.recipients.count
        if shared.log != nil {
            let from = prepared.sender.isEmpty ? "<>" : prepared.sender
            logged = (prepared.recipients.map(\.address), prepared.metadata.campaign,
                      "\(prepared.body.count) octets from \(from) over SMTP from [\(clientText)]")
        }
        worker.store(prepared, id: id, for: self)
    }

    func serverConnectionClosed(_ connection: ServerConnection) {
        worker.shared.release(client)
    }

    /// answer - the spool's result: 250 once durable, else the refusal for the failure.
    func answer(_ result: Result<MessageID, SpoolError>) {
        let shared = worker.shared
        let reply: Reply
        switch result {
        case .success(let id):
            shared.count { $0.messagesAccepted += 1; $0.recipientsAccepted += recipients }
            if let log = shared.log, let logged {
                let now = nowMilliseconds()
                log.append(contentsOf: logged.addresses.map {
                    DeliveryLogRecord(time: now, event: .received, messageID: id.description, recipient: $0,
                                      campaign: logged.campaign, text: logged.text)
                })
            }
            reply = Reply(code: 250, enhanced: EnhancedStatus(2, 0, 0), text: "2.0.0 Ok: queued as \(id)")
        case .failure(let error):
            shared.count { $0.messagesRefused += 1; $0.recipientsRefused += recipients }
            if error.reason == .diskFull {
                reply = Reply(code: 452, enhanced: EnhancedStatus(4, 3, 1), text: "4.3.1 Insufficient system storage")
            } else {
                writeStandardError("carrier: SMTP listener: cannot store a message: \(error)\n")
                reply = Reply(code: 451, enhanced: EnhancedStatus(4, 3, 0), text: "4.3.0 Error: queue file write error")
            }
        }
        connection?.answer(reply)
    }
}
