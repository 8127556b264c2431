// WorkerShard+Results.swift - what a worker shard does with the end of a transaction:
// fail over or defer when no connection could be made, tell the scheduler, record the
// outcomes in the spool (batched per loop turn), write the delivery log, and send bounce
// notices before recording the final outcomes they are about

import Dispatch
import EventCore
import Scheduler
import SMTP
import SMTPStreams
import Spool

extension WorkerShard {
    // MARK: results

    /// connectionFailed - no connection to the attempt's hop: fail over, or defer.
    ///
    /// A hop that could not be reached is remembered as down for `deadHopMilliseconds`:
    /// later transactions start at the next hop instead of each waiting for the same
    /// refusal or timeout (a dead primary MX). The site's health hears of a failure only
    /// when no hop is left: a transaction that fails over and succeeds is not a failure
    /// of the site.
    func connectionFailed(_ attempt: Attempt, error: ClientConnectionError?, hop: ResolvedHop) {
        let now = nowMilliseconds()
        if case .tls = error, (attempt.destination?.route?.tls ?? .opportunistic) == .opportunistic {
            /* TLS was only offered, and its handshake failed: the same hop again at once, in
               plaintext, and for the next hour (Postfix's `may` level does the same; many
               small servers advertise STARTTLS they cannot do). A plaintext connection never
               tries TLS, so this cannot repeat for the attempt; the transactions that were
               waiting for the same connection come here too and follow. */
            if (plaintextHops[hop.address] ?? 0) <= now {
                plaintextHops[hop.address] = now + WorkerShard.plaintextHopMilliseconds
                writeStandardError("carrier: STARTTLS to \(hop.name) [\(hop.address)] failed (\(error!)); plaintext for an hour\n")
            }
            tryHop(attempt)
            return
        }
        let reply = Self.reply(for: error, hop: hop)
        let failover: Bool
        switch error {
        case .connect, .tls, .session(.greetingRejected), .session(.tlsUnavailable), .session(.timeout), .session(.connectionLost), nil:
            failover = true
        default:
            failover = false
        }
        if failover { deadHops[hop.address] = now + WorkerShard.deadHopMilliseconds }
        if failover, let destination = attempt.destination, attempt.hopIndex + 1 < destination.hops.count {
            attempt.hopIndex += 1
            tryHop(attempt)
            return
        }
        scheduler.connectionFailed(site: attempt.delivery.site, now: now)
        let results = attempt.presetResults.map { $0 ?? .temporary(reply) }
        finish(attempt, results: results, hop: hop)
    }

    /// How long a hop whose opportunistic STARTTLS failed is reached in plaintext.
    static let plaintextHopMilliseconds: Int64 = 3_600_000

    /// completed - the transaction ran: one result per recipient sent.
    func completed(_ attempt: Attempt, _ result: TransactionResult, hop: ResolvedHop) {
        /* A 421 (the server closing: busy, throttling, or the connection lost or timed out
           mid-transaction) counts toward pausing the site like a failed connection; any
           other answer shows the site works. */
        if result.recipients.contains(where: { $0.reply.code == 421 }) {
            scheduler.connectionFailed(site: attempt.delivery.site, now: nowMilliseconds())
        } else {
            scheduler.connectionSucceeded(site: attempt.delivery.site)
        }
        if !deadHops.isEmpty { deadHops[hop.address] = nil }
        var results = attempt.presetResults
        for item in result.recipients {
            let position = attempt.sent[item.index]
            switch item.disposition {
            case .delivered: results[position] = .delivered(item.reply)
            case .deferred: results[position] = .temporary(item.reply)
            case .bounced: results[position] = .permanent(item.reply)
            }
        }
        finish(attempt, results: results.map { $0 ?? .temporary(localReply(451, "4.3.0", "no result")) }, hop: hop)
    }

    static func reply(for error: ClientConnectionError?, hop: ResolvedHop) -> Reply {
        switch error {
        case .session(.greetingRejected(let reply)), .session(.serviceClosing(let reply)):
            return localReply(451, "4.4.2", "\(hop.address) said: \(reply)")
        case .session(.authenticationFailed(let reply)):
            return localReply(451, "4.7.8", "authentication to \(hop.address) failed: \(reply)")
        case .connect(let error):
            return localReply(451, "4.4.1", "connect to \(hop.address) failed: \(error)")
        case .tls(let error):
            return localReply(451, "4.7.5", "TLS with \(hop.address) failed: \(error)")
        case .session(let error):
            return localReply(451, "4.4.2", "\(hop.address): \(error)")
        case nil:
            return localReply(451, "4.4.2", "\(hop.address) closed the connection")
        }
    }

    /// finish - the attempt is over: tell the scheduler, the spool and the log.
    func finish(_ attempt: Attempt, results: [AttemptResult], hop: ResolvedHop?) {
        let now = nowMilliseconds()
        inFlight -= 1
        let delivery = attempt.delivery
        let domain = scheduler.domainName(delivery.domain)
        let site = scheduler.siteName(delivery.site)
        /* A retry is not due after the message's own expiry: it expires then (see `read`). */
        let expires = attempt.prepared?.metadata.expires ?? 0
        scheduler.complete(delivery, results: results.map(\.schedulerResult), now: now, expires: expires)
        /* A rule may have bounced a recipient that failed temporarily: it is logged and
           recorded once, as bounced with the reply that triggered the rule. */
        let disposed = scheduler.takeDisposedWithDomains()
        let disposedRefs = disposed.isEmpty ? [] : Set(disposed.map(\.recipient.ref))
        let latency = Double(MonotonicClock.nanoseconds() - attempt.started) / 1e6
        var outcomes: [(RecipientKey, Outcome)] = []
        for (position, result) in results.enumerated() {
            let recipient = delivery.recipients[position]
            let key = attempt.keys[position]
            let address = position < attempt.recipients.count ? attempt.recipients[position].address : nil
            let campaign = campaignNames[Int(recipient.campaign)]
            switch result {
            case .gone:
                attempt.gone.insert(recipient.ref)
            case .delivered(let reply):
                outcomes.append((key, .delivered(reply: reply.description)))
                counters[domain, default: DomainCounters()].delivered += 1
                logEvent(.delivered, key: key, recipient: address, domain: domain, campaign: campaign, site: site, host: hop,
                         reply: reply, attempt: Int(recipient.attempts) + 1, latency: latency)
            case .temporary(let reply) where disposedRefs.contains(recipient.ref):
                attempt.finalReplies[recipient.ref] = (reply, address)
            case .temporary(let reply):
                let next = scheduler.retryTime(for: recipient, domain: delivery.domain, attempts: Int(recipient.attempts) + 1, now: now,
                                               expires: expires)
                outcomes.append((key, .deferred(nextAttempt: next, reply: reply.description)))
                counters[domain, default: DomainCounters()].deferred += 1
                logEvent(.deferred, key: key, recipient: address, domain: domain, campaign: campaign, site: site, host: hop,
                         reply: reply, attempt: Int(recipient.attempts) + 1, latency: latency, nextAttempt: next)
            case .permanent(let reply), .expired(let reply):
                /* The scheduler disposes of it (bounced or expired); recorded with the disposals below. */
                attempt.finalReplies[recipient.ref] = (reply, address)
            }
        }
        record(outcomes)
        disposeLeftovers(disposed, now: now, attempt: attempt, host: hop, latency: latency)
        if stopping { return }
        pump()
    }

    /// disposeLeftovers - recipients the scheduler gave up on (bounced by a reply or a rule,
    /// expired): final outcomes, log records and bounce notices.
    func disposeLeftovers(_ taken: [(recipient: ScheduledRecipient, disposal: Disposal, domain: Int)]? = nil, now: Int64, attempt: Attempt? = nil,
                          host: ResolvedHop? = nil, latency: Double? = nil) {
        let disposed = taken ?? scheduler.takeDisposedWithDomains()
        guard !disposed.isEmpty else { return }
        var finals: [FinalOutcome] = []
        /* Recipients bounced by an operator or expired are not in memory: their addresses
           are read from the spool before their outcomes are recorded, for the log. */
        var unaddressed: (records: [DeliveryLogRecord], keys: [RecipientKey], finals: [FinalOutcome]) = ([], [], [])
        func note(_ final: FinalOutcome, _ record: DeliveryLogRecord?, address: String?) {
            guard let record, address == nil else {
                if let record { unlogged.append(record) }
                finals.append(final)
                return
            }
            unaddressed.records.append(record)
            unaddressed.keys.append(final.key)
            unaddressed.finals.append(final)
        }
        for (recipient, disposal, domainIndex) in disposed where attempt?.gone.contains(recipient.ref) != true {
            let key = RecipientKey(message: MessageID(high: recipient.ref.messageHigh, low: recipient.ref.messageLow), index: recipient.ref.index)
            let campaign = campaignNames[Int(recipient.campaign)]
            let known = attempt?.finalReplies[recipient.ref]
            let domain: String? = scheduler.domainName(domainIndex)
            switch disposal {
            case .bounced(let text):
                let reply = known?.0 ?? Reply(code: 550, text: text)
                if let domain { counters[domain, default: DomainCounters()].bounced += 1 }
                note(FinalOutcome(key: key, outcome: .bounced(reply: reply.description), transactional: recipient.priority == .transactional,
                                  status: reply.enhanced.map { "\($0)" } ?? "5.0.0", diagnostic: reply.description, remoteMTA: host?.name),
                     logRecord(.bounced, key: key, recipient: known?.1, domain: domain, campaign: campaign, site: nil, host: host,
                               code: reply.code, enhanced: reply.enhanced.map { "\($0)" }, text: reply.text,
                               attempt: Int(recipient.attempts) + 1, latency: latency),
                     address: known?.1)
            case .expired:
                /* Past max_age, or (with a known reply) past the message's own expiry time. */
                let text = known?.0.text ?? "4.4.7 delivery time expired after \(recipient.attempts) attempts"
                if let domain { counters[domain, default: DomainCounters()].expired += 1 }
                note(FinalOutcome(key: key, outcome: .expired(reply: text), transactional: recipient.priority == .transactional,
                                  status: "4.4.7", diagnostic: text, remoteMTA: nil),
                     logRecord(.expired, key: key, recipient: known?.1, domain: domain, campaign: campaign, site: nil, host: nil,
                               code: nil, enhanced: "4.4.7", text: text, attempt: Int(recipient.attempts)),
                     address: known?.1)
            }
        }
        if !unlogged.isEmpty { scheduleFlush() }
        finalize(finals)
        if !unaddressed.keys.isEmpty { logWithAddresses(unaddressed.records, keys: unaddressed.keys, then: unaddressed.finals) }
    }

    /// logWithAddresses - fill in the recipients' addresses (from the spool's cache, or
    /// read on the reader queue), log the records, then record the final outcomes: the
    /// addresses are read while the recipients are still pending. Until then the shard
    /// does not count as quiet, so a stop does not leave them unrecorded.
    func logWithAddresses(_ records: [DeliveryLogRecord], keys: [RecipientKey], then finals: [FinalOutcome]) {
        /* A large operator bounce is read in slices, so the reader queue serves deliveries
           in between and no read holds a million addresses; the outcomes are recorded (and
           the sender noticed, once) when the last slice is logged. */
        guard !keys.isEmpty else { return finalize(finals) }
        let slice = 1024
        let slices = stride(from: 0, to: keys.count, by: slice).map { $0..<min($0 + slice, keys.count) }
        let countdown = SliceCountdown(slices.count)
        addressLookups += 1
        let shard = spoolShard
        let log = self.log
        let thread = self.thread
        for range in slices {
            let part = Array(records[range])
            let partKeys = Array(keys[range])
            @Sendable func filled(_ addresses: [NewRecipient?]) -> [DeliveryLogRecord] {
                guard addresses.count == part.count else { return part }
                return zip(part, addresses).map { record, address in
                    var record = record
                    if let address { record.recipient = address.address }
                    return record
                }
            }
            if let cached = spoolShard.cachedRecipients(partKeys) {
                unlogged.append(contentsOf: filled(cached))
                scheduleFlush()
                sliceLogged(countdown, then: finals)
                continue
            }
            reader.async {
                /* A key no longer pending (a record compacted away, a recipient already
                   final) loses only its own address. */
                log?.append(contentsOf: filled(shard.recipientsIfPending(partKeys)))
                /* The loop is gone: the outcomes stay unrecorded and the restart decides again. */
                _ = thread.execute { [self] _ in sliceLogged(countdown, then: finals) }
            }
        }
    }

    /// sliceLogged - one slice of `logWithAddresses` is logged; after the last, record the outcomes.
    private func sliceLogged(_ countdown: SliceCountdown, then finals: [FinalOutcome]) {
        guard countdown.done() else { return }
        addressLookups -= 1
        finalize(finals)
    }

    // MARK: bounce notices

    /// finalize - record final outcomes; those that owe the sender a DSN (by the message's
    /// class and the configuration) are recorded only once the DSN is queued, so a crash
    /// in between retries the recipient rather than losing the notice.
    func finalize(_ finals: [FinalOutcome]) {
        var now: [(RecipientKey, Outcome)] = []
        var byMessage: [MessageID: [FinalOutcome]] = [:]
        for item in finals {
            let wanted = item.transactional ? configuration.bounceNoticesForTransactional : configuration.bounceNoticesForBulk
            if wanted { byMessage[item.key.message, default: []].append(item) } else { now.append((item.key, item.outcome)) }
        }
        record(now)
        for (id, items) in byMessage { sendNotice(id, items) }
    }

    /// sendNotice - read the message and the recipients' addresses (reader queue), queue
    /// a DSN to the sender, then record the outcomes. A null sender gets none. Until the
    /// outcomes are handed back (or the notice waits for its retry) the shard is not quiet,
    /// so a stop does not leave a notice queued and its outcomes unrecorded (sent again
    /// after the restart).
    func sendNotice(_ id: MessageID, _ items: [FinalOutcome]) {
        let shard = spoolShard
        let spool = self.spool
        let thread = self.thread
        let hostname = configuration.hostname
        noticesInProgress += 1
        /* done - back on the loop: the notice is queued (or owed none); record the outcomes. */
        @Sendable func done() {
            thread.execute { [self] _ in
                noticesInProgress -= 1
                record(items.map { ($0.key, $0.outcome) })
            }
        }
        reader.async {
            let keys = items.map(\.key)
            guard let message = try? shard.message(id), !message.sender.isEmpty else { return done() }
            /* A recipient whose address cannot be read is left out of the notice rather
               than losing the notice. */
            let addresses = shard.recipientsIfPending(keys)
            /* A recipient whose NOTIFY (RFC 3461) leaves out FAILURE gets no notice. */
            let dsn = MessageHints.dsn(message.metadata.hints)
            let notices = zip(items, addresses).compactMap { item, address -> BounceNotice? in
                let index = Int(item.key.index)
                guard let address, dsn.wantsFailureNotice(recipient: index) else { return nil }
                return BounceNotice(recipient: address.address, status: item.status, diagnostic: item.diagnostic, remoteMTA: item.remoteMTA,
                                    originalRecipient: dsn.recipients[index]?.originalRecipient)
            }
            guard !notices.isEmpty else { return done() }
            let headers = DeliveryStatusNotification.headers(of: message.body)
            let body = DeliveryStatusNotification.build(
                originalSender: message.sender, originalMessageID: headerValue("message-id", in: headers) ?? "<\(id)@\(hostname)>",
                originalHeaders: headers, notices: notices, reportingMTA: hostname, queueID: id.description, date: nowMilliseconds(),
                envelopeID: dsn.envelopeID)
            spool.enqueue(NewMessage(sender: "", body: body, metadata: MessageMetadata(priority: .transactional),
                                     recipients: [NewRecipient(message.sender)])) { result in
                guard case .failure(let error) = result else { return done() }
                /* The outcomes stay unrecorded, so the notice is still owed: tried again in a
                   minute (and, should the process end first, after the restart delivers or
                   bounces the recipients again). */
                writeStandardError("carrier: queueing the bounce notice for \(id) failed: \(error); trying again in \(WorkerShard.noticeRetryMilliseconds / 1000) s\n")
                thread.execute { [self] loop in
                    noticesInProgress -= 1
                    guard !stopping else { return }
                    LoopTimer(loop: loop).schedule(after: WorkerShard.noticeRetryMilliseconds) { [self] timer in
                        timer.close()
                        /* A stop since then: the restart owes the notice instead. */
                        guard !stopping else { return }
                        sendNotice(id, items)
                    }
                }
            }
        }
    }

    /// How long a bounce notice that could not be queued waits before the next try.
    static let noticeRetryMilliseconds: UInt64 = 60_000

    /// record - outcomes for the spool, written together once this loop turn is over (one
    /// append, one wake-up of the spool's writer, for every transaction the turn finished).
    func record(_ outcomes: [(RecipientKey, Outcome)]) {
        guard !outcomes.isEmpty else { return }
        unrecorded.append(contentsOf: outcomes)
        scheduleFlush()
    }

    /// scheduleFlush - write outcomes and log records within `flushMilliseconds`: one
    /// append (and one wake-up of the spool's writer and of the log's) for every
    /// transaction finished meanwhile, instead of one each. Outcomes are written with
    /// interval durability anyway; a crash in between only repeats those deliveries.
    func scheduleFlush() {
        guard !flushTimer.isArmed else { return }
        flushTimer.schedule(after: WorkerShard.flushMilliseconds) { [unowned self] _ in flush() }
    }

    /// flush - hand the waiting outcomes to the spool and the waiting records to the log.
    func flush() {
        flushTimer.cancel()
        if !unrecorded.isEmpty {
            let batch = unrecorded
            unrecorded.removeAll(keepingCapacity: true)
            spoolShard.record(batch) { result in
                if case .failure(let error) = result { writeStandardError("carrier: recording outcomes failed: \(error)\n") }
            }
        }
        if !unlogged.isEmpty, let log {
            log.append(contentsOf: unlogged)
            unlogged.removeAll(keepingCapacity: true)
        }
    }

    // MARK: the delivery log

    func logEvent(_ event: DeliveryLogRecord.Event, key: RecipientKey, recipient: String?, domain: String?, campaign: String,
                          site: String?, host: ResolvedHop?, reply: Reply, attempt: Int, latency: Double?, nextAttempt: Int64? = nil) {
        logEvent(event, key: key, recipient: recipient, domain: domain, campaign: campaign, site: site, host: host,
                 code: reply.code, enhanced: reply.enhanced.map { "\($0)" }, text: reply.text, attempt: attempt,
                 latency: latency, nextAttempt: nextAttempt)
    }

    func logEvent(_ event: DeliveryLogRecord.Event, key: RecipientKey, recipient: String?, domain: String?, campaign: String,
                          site: String?, host: ResolvedHop?, code: Int?, enhanced: String?, text: String?, attempt: Int,
                          latency: Double? = nil, nextAttempt: Int64? = nil) {
        guard let record = logRecord(event, key: key, recipient: recipient, domain: domain, campaign: campaign, site: site, host: host,
                                     code: code, enhanced: enhanced, text: text, attempt: attempt, latency: latency, nextAttempt: nextAttempt)
        else { return }
        scheduleFlush()
        unlogged.append(record)
    }

    /// logRecord - the log line for an event (nil without a log); an unknown address is
    /// written `#INDEX@DOMAIN` (the recipient's index in its message).
    func logRecord(_ event: DeliveryLogRecord.Event, key: RecipientKey, recipient: String?, domain: String?, campaign: String,
                   site: String?, host: ResolvedHop?, code: Int?, enhanced: String?, text: String?, attempt: Int,
                   latency: Double? = nil, nextAttempt: Int64? = nil) -> DeliveryLogRecord? {
        guard log != nil else { return nil }
        return DeliveryLogRecord(
            time: nowMilliseconds(), event: event, messageID: key.message.description,
            recipient: recipient ?? "#\(key.index)@\(domain ?? "")", campaign: campaign, site: site ?? "",
            host: host.map { "\($0.name) \($0.address)" }, code: code, enhancedCode: enhanced, text: text,
            attempt: attempt, latencyMilliseconds: latency, nextAttempt: nextAttempt)
    }
}

/// Counts the slices of one `logWithAddresses` call down to the last.
///
/// Confined to the shard's loop thread (every `done()` runs there); @unchecked Sendable
/// only so the reader queue's closures may carry it back to the loop.
final class SliceCountdown: @unchecked Sendable {
    private var remaining: Int
    init(_ count: Int) { remaining = count }
    /// done - one slice finished; true for the last.
    func done() -> Bool {
        remaining -= 1
        return remaining == 0
    }
}
