// ClientSession+Transaction.swift - mail transactions: MAIL, RCPT, DATA or BDAT, per-recipient results
//
// With PIPELINING (RFC 2920) a transaction goes out as one write: [RSET,]
// MAIL, every RCPT and DATA (or BDAT with the body, RFC 3030). The body
// follows only after 354, and when the next transaction is already waiting,
// its commands ride in the same write after the final dot. Without
// PIPELINING the same replies drive the next command one at a time. Either
// way each recipient ends delivered, deferred or bounced with the reply that
// decided it, and a transaction in flight when the session fails is
// deferred, never bounced: the session cannot know what the server did.

import Bytes

/// One transaction from its first command to its final reply.
struct ActiveTransaction: Sendable {
    let serial: UInt64                      /* matches the FIFO's expectations */
    let message: OutboundMessage
    let useBDAT: Bool                       /* body goes with BDAT ... LAST */
    var results: [RecipientResult?]         /* by recipient index; nil while open */
    var sent: [Int]                         /* recipient indices given an RCPT, in order */
    var nextToSend = 0                      /* without pipelining: next entry of `sent` */
    var accepted: [Int] = []                /* recipients whose RCPT got 2xx */
    var mailRefused = false                 /* MAIL failed: later replies only close the transaction */
    var mailSent = false
    var bodySent = false                    /* the body (or BDAT LAST) is written */
    var retryWithoutAuthParameter = false   /* MAIL's AUTH= was refused: send the message again without it */
    var answered = false                    /* a reply to MAIL (or later) has come */
}

extension ClientSession {
    /// send - hand over one message; it goes out as soon as the session can take it.
    public mutating func send(_ message: OutboundMessage, into actions: inout [ClientAction]) {
        guard isUsable else {
            let reason = localReply(421, 4, 4, 2, "session no longer usable")
            actions.append(.completed(TransactionResult(recipients: message.recipients.indices.map {
                RecipientResult(index: $0, disposition: .deferred, reply: reason)
            }, notSent: true, reference: message.reference)))
            return
        }
        waiting.append(message)
        if phase == .ready {
            sendWaiting(into: &actions)
            rearmTimer(into: &actions)
        }
    }

    /// sendWaiting - start waiting transactions while the connection can take them.
    mutating func sendWaiting(into actions: inout [ClientAction]) {
        while phase == .ready && !waiting.isEmpty && canStartTransaction {
            commands.clear()
            var extra: [ByteBuffer] = []
            let message = waiting.removeFirst()
            start(message, appendingTo: &extra, into: &actions)
            if !commands.isEmpty { actions.append(.send([commands] + extra)) }
        }
        if isIdle { actions.append(.ready) }
    }

    /// True when a new transaction may go out now: nothing in flight, or (pipelining)
    /// every transaction in flight has sent its body and only awaits its final reply. One
    /// whose MAIL was refused still awaits its DATA reply: a server that answers that DATA
    /// with 354 anyway would read the next transaction's commands as its message.
    private var canStartTransaction: Bool {
        if transactions.isEmpty { return true }
        return pipelines && transactions.allSatisfy(\.bodySent)
    }

    /// start - check a message against the server's limits, then write its commands into `commands`.
    private mutating func start(_ message: OutboundMessage, appendingTo extra: inout [ByteBuffer],
                                into actions: inout [ClientAction]) {
        let serial = nextSerial
        nextSerial += 1
        let offered = capabilities
        let smtpUTF8 = offered?.smtpUTF8 == true
        let useBDAT = configuration.chunking && offered?.chunking == true
        var transaction = ActiveTransaction(serial: serial, message: message, useBDAT: useBDAT,
                                            results: Array(repeating: nil, count: message.recipients.count), sent: [])

        /* Checks that need no round trip: size, and addresses the server could not take. */
        var refusal: Reply?
        if let limit = offered?.size, limit > 0, message.payload.size > limit {
            refusal = localReply(552, 5, 3, 4, "message size \(message.payload.size) exceeds the server's limit of \(limit)")
        } else if case .mailbox(let sender) = message.sender, sender.requiresSMTPUTF8, !smtpUTF8 {
            refusal = localReply(553, 5, 6, 7, "sender \(sender) needs SMTPUTF8, which the server does not offer")
        }
        for (index, recipient) in message.recipients.enumerated() {
            if let refusal {
                transaction.results[index] = RecipientResult(index: index, disposition: .bounced, reply: refusal)
            } else if recipient.requiresSMTPUTF8 && !smtpUTF8 {
                transaction.results[index] = RecipientResult(index: index, disposition: .bounced, reply:
                    localReply(553, 5, 6, 7, "recipient \(recipient) needs SMTPUTF8, which the server does not offer"))
            } else {
                transaction.sent.append(index)
            }
        }
        if transaction.sent.isEmpty {
            actions.append(.completed(TransactionResult(recipients: transaction.results.map { $0! }, reference: message.reference)))
            return
        }

        /* RSET before every transaction after the first: a clean slate whatever the last one left. */
        let reset = transactionsStarted > 0
        transactionsStarted += 1
        if reset {
            commands.append("RSET\r\n")
            expect(.rset, into: &actions)
            if !pipelines {
                transactions.append(transaction)
                return
            }
        }
        appendMail(&transaction, into: &actions)
        if pipelines {
            for index in transaction.sent { appendRcpt(index, of: &transaction, into: &actions) }
            transaction.nextToSend = transaction.sent.count
            appendDataOrBody(&transaction, extra: &extra, into: &actions)
        }
        transactions.append(transaction)
    }

    /// appendMail - MAIL FROM with the parameters the server offered and the message needs.
    private mutating func appendMail(_ transaction: inout ActiveTransaction, into actions: inout [ClientAction]) {
        let message = transaction.message
        let offered = capabilities
        commands.append("MAIL FROM:<")
        if case .mailbox(let sender) = message.sender { commands.append(sender.description) }
        commands.append(">")
        if offered?.size != nil { commands.append(" SIZE=\(message.payload.size)") }
        if message.payload.has8BitData && offered?.eightBitMIME == true { commands.append(" BODY=8BITMIME") }
        let needsUTF8 = message.sender.requiresSMTPUTF8 || transaction.sent.contains { message.recipients[$0].requiresSMTPUTF8 }
        if needsUTF8 && offered?.smtpUTF8 == true { commands.append(" SMTPUTF8") }
        if isAuthenticated && !omitsAuthParameter {
            commands.append(" AUTH=")
            commands.append(message.authenticatedSubmitter.map { XText.encode($0.description) } ?? "<>")
        }
        if offered?.dsn == true {
            if let ret = message.dsnReturn { commands.append(" RET=\(ret)") }
            if let envid = message.envelopeID { commands.append(" ENVID=\(XText.encode(envid))") }
        }
        commands.append("\r\n")
        transaction.mailSent = true
        expect(.mail(transaction.serial), into: &actions)
    }

    /// appendRcpt - RCPT TO for one recipient, with DSN parameters when offered.
    private mutating func appendRcpt(_ index: Int, of transaction: inout ActiveTransaction, into actions: inout [ClientAction]) {
        let message = transaction.message
        commands.append("RCPT TO:<\(message.recipients[index].description)>")
        if capabilities?.dsn == true, let dsn = message.recipientDSN[index] {
            if let notify = dsn.notify { commands.append(" NOTIFY=\(notify.isEmpty ? "NEVER" : notify.joined(separator: ","))") }
            if let original = dsn.originalRecipient { commands.append(" ORCPT=rfc822;\(XText.encode(original))") }
        }
        commands.append("\r\n")
        expect(.rcpt(transaction.serial, index), into: &actions)
    }

    /// appendDataOrBody - DATA (the body waits for 354), or BDAT LAST with the body at once.
    private mutating func appendDataOrBody(_ transaction: inout ActiveTransaction, extra: inout [ByteBuffer],
                                           into actions: inout [ClientAction]) {
        if transaction.useBDAT {
            let body = transaction.message.payload.normalized
            commands.append("BDAT \(body.readableBytes) LAST\r\n")
            extra.append(body)
            transaction.bodySent = true
            expect(.dataEnd(transaction.serial), into: &actions)
        } else {
            commands.append("DATA\r\n")
            expect(.data(transaction.serial), into: &actions)
        }
    }

    // MARK: Replies to transaction commands

    mutating func rsetReply(_ reply: Reply, into actions: inout [ClientAction]) {
        guard reply.isPositiveCompletion else {
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        /* Without pipelining the oldest transaction's MAIL waited for this reply. */
        guard !pipelines, let position = transactions.firstIndex(where: { !$0.mailSent }) else { return }
        commands.clear()
        var transaction = transactions[position]
        appendMail(&transaction, into: &actions)
        transactions[position] = transaction
        actions.append(.send([commands]))
    }

    mutating func mailReply(_ reply: Reply, serial: UInt64, into actions: inout [ClientAction]) {
        guard let position = position(of: serial), !reply.isPositiveIntermediate else {
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        transactions[position].answered = true
        if reply.code == 530 {
            fail(.authenticationRequired(reply), into: &actions)
            return
        }
        if reply.code == 555 && isAuthenticated && !omitsAuthParameter {
            /*
             * RFC 4954 §5 obliges a server that offers AUTH to take MAIL's AUTH=
             * parameter, yet some (aiosmtpd, for one) refuse it as unknown. Send
             * this message again without it, and leave it out from now on.
             */
            omitsAuthParameter = true
            transactions[position].mailRefused = true
            transactions[position].retryWithoutAuthParameter = true
            if !pipelines { complete(at: position, into: &actions) }
            return
        }
        if !reply.isPositiveCompletion {
            /* The envelope failed: every recipient shares MAIL's verdict. */
            transactions[position].mailRefused = true
            for index in transactions[position].sent {
                transactions[position].results[index] = RecipientResult(index: index, disposition: disposition(reply), reply: reply)
            }
            if !pipelines { complete(at: position, into: &actions) }
            return
        }
        guard !pipelines else { return }
        sendNextRcpt(at: position, into: &actions)
    }

    mutating func rcptReply(_ reply: Reply, serial: UInt64, index: Int, into actions: inout [ClientAction]) {
        guard let position = position(of: serial), !reply.isPositiveIntermediate else {
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        if !transactions[position].mailRefused {
            if reply.isPositiveCompletion {
                transactions[position].accepted.append(index)
            } else {
                transactions[position].results[index] = RecipientResult(index: index, disposition: disposition(reply), reply: reply)
            }
        }
        guard !pipelines else { return }
        sendNextRcpt(at: position, into: &actions)
    }

    /// sendNextRcpt - without pipelining: the next RCPT, or DATA/BDAT, or the end when none was accepted.
    private mutating func sendNextRcpt(at position: Int, into actions: inout [ClientAction]) {
        commands.clear()
        var transaction = transactions[position]
        if transaction.nextToSend < transaction.sent.count {
            let index = transaction.sent[transaction.nextToSend]
            transaction.nextToSend += 1
            appendRcpt(index, of: &transaction, into: &actions)
            transactions[position] = transaction
            actions.append(.send([commands]))
            return
        }
        guard !transaction.accepted.isEmpty else {
            complete(at: position, into: &actions)
            return
        }
        var extra: [ByteBuffer] = []
        appendDataOrBody(&transaction, extra: &extra, into: &actions)
        transactions[position] = transaction
        actions.append(.send([commands] + extra))
    }

    mutating func dataReply(_ reply: Reply, serial: UInt64, into actions: inout [ClientAction]) {
        guard let position = position(of: serial), !reply.isPositiveCompletion else {
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        let transaction = transactions[position]
        if reply.code == 354 {
            commands.clear()
            if transaction.accepted.isEmpty || transaction.mailRefused {
                /* Pipelined and nobody accepted, yet the server wants data: end it empty (RFC 2920 §3.1). */
                commands.append(".\r\n")
                expect(.emptyData(serial), into: &actions)
                actions.append(.send([commands]))
                return
            }
            var writes = [transaction.message.payload.dotStuffed]
            expect(.dataEnd(serial), into: &actions)
            transactions[position].bodySent = true
            /* The next transaction's commands may follow the final dot in the same write. */
            if pipelines && phase == .ready && !waiting.isEmpty && canStartTransaction {
                var extra: [ByteBuffer] = []
                let message = waiting.removeFirst()
                start(message, appendingTo: &extra, into: &actions)
                if !commands.isEmpty { writes += [commands] + extra }
            }
            actions.append(.send(writes))
            return
        }
        guard reply.isTransientNegative || reply.isPermanentNegative else {
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        if !transaction.mailRefused {
            for index in transaction.accepted {
                transactions[position].results[index] = RecipientResult(index: index, disposition: disposition(reply), reply: reply)
            }
        }
        complete(at: position, into: &actions)
    }

    mutating func dataEndReply(_ reply: Reply, serial: UInt64, into actions: inout [ClientAction]) {
        guard let position = position(of: serial), !reply.isPositiveIntermediate else {
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        let transaction = transactions[position]
        if !transaction.mailRefused {
            let verdict: RecipientResult.Disposition = reply.isPositiveCompletion ? .delivered : disposition(reply)
            for index in transaction.accepted {
                transactions[position].results[index] = RecipientResult(index: index, disposition: verdict, reply: reply)
            }
        }
        complete(at: position, into: &actions)
    }

    mutating func emptyDataReply(_ reply: Reply, serial: UInt64, into actions: inout [ClientAction]) {
        guard let position = position(of: serial) else {
            fail(.protocolError(.unexpectedReply(reply)), into: &actions)
            return
        }
        complete(at: position, into: &actions)
    }

    // MARK: Completion

    /// complete - report a transaction whose every recipient has a result, then go on.
    private mutating func complete(at position: Int, into actions: inout [ClientAction]) {
        let transaction = transactions.remove(at: position)
        if transaction.retryWithoutAuthParameter {
            waiting.insert(transaction.message, at: 0)
            if phase == .ready { sendWaiting(into: &actions) }
            return
        }
        let results = transaction.results.enumerated().map { index, result in
            result ?? RecipientResult(index: index, disposition: .deferred,
                                      reply: localReply(451, 4, 3, 0, "no reply for this recipient"))
        }
        actions.append(.completed(TransactionResult(recipients: results, reference: transaction.message.reference)))
        if phase == .ready { sendWaiting(into: &actions) }
    }

    /// failWaiting - defer every recipient still open in flight or waiting, with `reason`.
    mutating func failWaiting(reason: Reply, into actions: inout [ClientAction]) {
        for (position, transaction) in transactions.enumerated() {
            /* Pipelined behind another and never answered, its body (with DATA) unsent: the
               server cannot have taken it, and it owes nothing to the other's failure. */
            let notSent = position > 0 && !transaction.answered && !transaction.bodySent && !transaction.useBDAT
            let results = transaction.results.enumerated().map { index, result in
                result ?? RecipientResult(index: index, disposition: .deferred, reply: reason)
            }
            actions.append(.completed(TransactionResult(recipients: results, notSent: notSent, reference: transaction.message.reference)))
        }
        transactions.removeAll()
        for message in waiting {
            actions.append(.completed(TransactionResult(recipients: message.recipients.indices.map {
                RecipientResult(index: $0, disposition: .deferred, reply: reason)
            }, notSent: true, reference: message.reference)))
        }
        waiting.removeAll()
    }

    /// position - where the transaction with `serial` is in flight.
    private func position(of serial: UInt64) -> Int? {
        transactions.firstIndex { $0.serial == serial }
    }

    /// disposition - 4xx defers, 5xx bounces.
    private func disposition(_ reply: Reply) -> RecipientResult.Disposition {
        reply.isPermanentNegative ? .bounced : .deferred
    }
}
