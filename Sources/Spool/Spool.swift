// Spool.swift - the persistent, sharded queue: enqueue, campaigns, outcomes, queries
//
// A recipient's shard is `shardIndex(domain:shards:)`; a message whose recipients span
// several shards has its message record (and body) written once into each shard that
// needs it, never once per recipient.

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A message read back from the spool.
public struct StoredMessage: Sendable {
    public var id: MessageID
    public var created: Int64
    public var sender: String
    public var metadata: MessageMetadata
    public var body: [UInt8]
}

/// What a campaign enqueue stored.
public struct CampaignReceipt: Sendable, Equatable {
    public var id: MessageID
    public var recipients: Int
}

/// The persistent queue: one `SpoolShard` per shard under one directory. Thread-safe;
/// enqueue and outcome calls that wait block the calling thread, so event loops use the
/// completion-handler forms.
public final class Spool: Sendable {
    public let configuration: SpoolConfiguration
    public let shards: [SpoolShard]
    private static let idPrefix = UInt64(UInt32.random(in: 0...UInt32.max)) << 32
    private static let idCounter = Atomic<UInt32>(0)

    /// open - open (creating if needed) the spool in `configuration.directory` and
    /// recover every shard. The shard count of an existing spool wins over the
    /// configured one (records are placed by it).
    public init(_ configuration: SpoolConfiguration) throws(SpoolError) {
        var configuration = configuration
        let meta = configuration.directory + "/spool.meta"
        var text: [UInt8]? = nil
        do {
            text = try readWholeFile(meta)
        } catch {
            guard case .io(_, let code) = error.reason, code == ENOENT else { throw error }
        }
        if let text {
            let words = String(decoding: text, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard words.count >= 4, words[0] == "carrier-spool", words[2] == "shards", let n = Int(words[3]), n > 0 else {
                throw SpoolError(.badHeader("unreadable spool.meta"), path: meta)
            }
            configuration.shards = n
        } else if configuration.readOnly {
            throw SpoolError(.invalid("no spool here (spool.meta is missing)"), path: configuration.directory)
        } else {
            try makeDirectory(configuration.directory)
            let text = Array("carrier-spool 1\nshards \(configuration.shards)\n".utf8)
            try typed { try text.withUnsafeBytes { (raw: UnsafeRawBufferPointer) throws in try writeWholeFile(meta, raw) } }
            try syncDirectory(configuration.directory)
        }
        self.configuration = configuration
        var shards: [SpoolShard] = []
        do {
            for index in 0..<configuration.shards { shards.append(try SpoolShard(index: index, configuration: configuration)) }
        } catch {
            for shard in shards { shard.close() }
            throw error
        }
        self.shards = shards
    }

    deinit { close() }

    /// The recovery reports of the open, one per shard.
    public var recoveryReports: [RecoveryReport] { shards.map(\.recovery) }

    /// shard - the shard that owns `domain`.
    public func shard(for domain: String) -> SpoolShard { shards[shardIndex(domain: domain, shards: shards.count)] }

    /// newID - a fresh message id.
    public static func newID() -> MessageID {
        let counter = idCounter.wrappingAdd(1, ordering: .relaxed).newValue
        return MessageID(high: UInt64(nowMilliseconds()), low: idPrefix | UInt64(counter))
    }

    /// close - finish queued appends, stop the writers and release the locks.
    public func close() {
        for shard in shards { shard.close() }
    }

    // MARK: enqueue

    /// enqueue - store a message under `id`; `completion` runs (on a spool thread) with the
    /// id once every shard's part is durable, or with the error of the first part that failed
    /// (then the parts that were stored are cancelled, so nothing of it is delivered: the
    /// recipients of a message in several shards are handed out only once all are durable).
    public func enqueue(_ message: NewMessage, id: MessageID = Spool.newID(),
                        completion: @escaping @Sendable (Result<MessageID, SpoolError>) -> Void) {
        guard !message.recipients.isEmpty else {
            completion(.failure(SpoolError(.invalid("a message needs at least one recipient"))))
            return
        }
        if let refusal = Spool.sizeRefusal(message.body.count + message.sender.utf8.count + message.metadata.hints.count) {
            completion(.failure(refusal))
            return
        }
        let created = nowMilliseconds()
        var parts: [Int: [DecodedRecipient]] = [:]
        for (index, recipient) in message.recipients.enumerated() {
            parts[shardIndex(address: recipient.address, shards: shards.count), default: []]
                .append(DecodedRecipient(index: UInt32(index), address: recipient.address, variables: recipient.variables))
        }
        let tracker = PartTracker(id: id, parts: parts, spool: self, completion: completion)
        if parts.count > 1 {
            /* No part is delivered before every part is durable: a part that fails would
               otherwise leave the others delivered while the client hears of a failure and
               sends the whole message again. */
            for shard in parts.keys { shards[shard].withhold(id) }
        }
        for (shard, recipients) in parts {
            var out = RecordWriter(capacity: message.body.count + 64 * recipients.count + 128)
            encodeMessage(&out, id: id, created: created, sender: message.sender, body: message.body, metadata: message.metadata)
            for chunk in stride(from: 0, to: recipients.count, by: 1024) {
                encodeRecipients(&out, id: id, Array(recipients[chunk..<min(chunk + 1024, recipients.count)]))
            }
            shards[shard].append(out.bytes, durability: configuration.durability) { tracker.done(shard: shard, $0) }
        }
    }

    /// The largest message the spool stores: a record's body may not pass 1 GiB (recovery
    /// takes a frame claiming more for damage), less room for the envelope and metadata.
    public static let maximumMessageSize = maximumRecordBody - (64 << 10)

    /// sizeRefusal - the error for a message of `octets` (body, sender, hints) too large to store.
    static func sizeRefusal(_ octets: Int) -> SpoolError? {
        octets <= maximumMessageSize ? nil
            : SpoolError(.invalid("a message of \(octets) octets is larger than the spool stores (\(maximumMessageSize))"))
    }

    /// enqueue - store a message and wait until it is durable (not on an event loop).
    public func enqueue(_ message: NewMessage) throws(SpoolError) -> MessageID {
        let waiter = Waiter<Result<MessageID, SpoolError>>()
        enqueue(message) { waiter.set($0) }
        return try waiter.wait().get()
    }

    /// campaign - start streaming one message to many recipients; add recipients, then
    /// `finish()`. Recipients are written in chunks as they come, so a million of them
    /// never sit in memory at once.
    public func campaign(sender: String, body: [UInt8], metadata: MessageMetadata) -> CampaignWriter {
        CampaignWriter(spool: self, sender: sender, body: body, metadata: metadata)
    }

    // MARK: outcomes

    /// record - outcomes for recipients; each goes to the shard of its recipient's domain
    /// (given by `shard`). `completion` runs once all are durable per `outcomeDurability`.
    public func record(_ outcomes: [(RecipientKey, Outcome)], shard: Int,
                       completion: @escaping @Sendable (Result<Void, SpoolError>) -> Void) {
        shards[shard].record(outcomes, completion: completion)
    }
}

/// Collects the per-shard results of one enqueue.
private final class PartTracker: @unchecked Sendable {
    /* @unchecked: fields are guarded by `lock`. */
    let id: MessageID
    let parts: [Int: [DecodedRecipient]]
    let spool: Spool
    let completion: @Sendable (Result<MessageID, SpoolError>) -> Void
    let lock = Mutex<(remaining: Int, stored: [Int], failure: SpoolError?)>((0, [], nil))

    init(id: MessageID, parts: [Int: [DecodedRecipient]], spool: Spool, completion: @escaping @Sendable (Result<MessageID, SpoolError>) -> Void) {
        self.id = id
        self.parts = parts
        self.spool = spool
        self.completion = completion
        lock.withLock { $0.remaining = parts.count }
    }

    func done(shard: Int, _ result: Result<Void, SpoolError>) {
        let finished = lock.withLock { state -> (stored: [Int], failure: SpoolError?)? in
            switch result {
            case .success: state.stored.append(shard)
            case .failure(let error): if state.failure == nil { state.failure = error }
            }
            state.remaining -= 1
            return state.remaining == 0 ? (state.stored, state.failure) : nil
        }
        guard let finished else { return }
        let withheld = parts.count > 1
        guard let failure = finished.failure else {
            if withheld { for shard in parts.keys { spool.shards[shard].releaseWithheld(id, feed: true) } }
            completion(.success(id))
            return
        }
        /* Cancel the parts that were stored, so a retried enqueue is not delivered twice;
           they were never handed out, and stay withheld until the cancel is durable (synced
           whatever the outcome mode: the client is told to send the message again). A
           cancel that fails leaves its part withheld for the rest of this run. */
        let stored = Set(finished.stored)
        if withheld { for shard in parts.keys where !stored.contains(shard) { spool.shards[shard].releaseWithheld(id, feed: false) } }
        for shard in finished.stored {
            let target = spool.shards[shard]
            let id = self.id
            let keys = parts[shard]!.map { RecipientKey(message: id, index: $0.index) }
            target.append(target.finalOutcomes(keys, .cancelled(reason: "enqueue failed in another shard")), durability: .fsync) { result in
                if case .success = result, withheld { target.releaseWithheld(id, feed: false) }
            }
        }
        completion(.failure(failure))
    }
}

/// Streams one campaign (one body, many recipients) into the spool. Used from one thread.
public final class CampaignWriter {
    public let id: MessageID
    private let spool: Spool
    private let sender: String
    private let body: [UInt8]
    private let metadata: MessageMetadata
    private let created = nowMilliseconds()
    private var buffers: [RecordWriter]
    private var counts: [Int]
    private var started: [Bool]
    private var added = 0
    private let outstanding = CampaignProgress()
    /// Recipients per recipients record, and records in flight per campaign before `add` waits.
    private let chunk = 4096
    private let window = 16

    init(spool: Spool, sender: String, body: [UInt8], metadata: MessageMetadata) {
        self.spool = spool
        self.sender = sender
        self.body = body
        self.metadata = metadata
        id = Spool.newID()
        buffers = Array(repeating: RecordWriter(capacity: 0), count: spool.shards.count)
        counts = Array(repeating: 0, count: spool.shards.count)
        started = Array(repeating: false, count: spool.shards.count)
    }

    /// add - one recipient; throws the first failure of an earlier chunk.
    public func add(_ recipient: NewRecipient) throws(SpoolError) {
        if let failure = outstanding.withLock({ outstanding.failure }) { throw failure }
        if let refusal = Spool.sizeRefusal(body.count + sender.utf8.count + metadata.hints.count) { throw refusal }
        let shard = shardIndex(address: recipient.address, shards: spool.shards.count)
        if counts[shard] == 0 {
            buffers[shard] = RecordWriter(capacity: 64 * chunk + (started[shard] ? 0 : body.count + 256))
            if !started[shard] {
                started[shard] = true
                spool.shards[shard].withState { _ = $0.open.insert(id) }
                encodeMessage(&buffers[shard], id: id, created: created, sender: sender, body: body, metadata: metadata)
            }
            buffers[shard].begin(.recipients)
            buffers[shard].id(id)
            buffers[shard].u32(0) // count, filled in by flush
        }
        buffers[shard].u32(UInt32(added))
        buffers[shard].string16(recipient.address)
        buffers[shard].u16(UInt16(min(recipient.variables.count, Int(UInt16.max))))
        for (name, value) in recipient.variables.prefix(Int(UInt16.max)) {
            buffers[shard].string16(name)
            buffers[shard].string32(value)
        }
        added += 1
        counts[shard] += 1
        if counts[shard] == chunk { try flush(shard) }
    }

    private func flush(_ shard: Int) throws(SpoolError) {
        guard counts[shard] > 0 else { return }
        var out = buffers[shard]
        /* The count field sits after the frame, the type octet and the 16-octet id. */
        let count = UInt32(counts[shard])
        let countOffset = lastRecordStart(out.bytes) + 8 + 1 + 16
        out.bytes.withUnsafeMutableBytes { $0.storeBytes(of: count.littleEndian, toByteOffset: countOffset, as: UInt32.self) }
        out.end()
        buffers[shard] = RecordWriter(capacity: 0)
        counts[shard] = 0
        outstanding.lock()
        while outstanding.inFlight >= window && outstanding.failure == nil { outstanding.wait() }
        if let failure = outstanding.failure { outstanding.unlock(); throw failure }
        outstanding.inFlight += 1
        outstanding.unlock()
        spool.shards[shard].append(out.bytes, durability: spool.configuration.durability) { [outstanding] result in
            outstanding.withLock {
                outstanding.inFlight -= 1
                if case .failure(let error) = result, outstanding.failure == nil { outstanding.failure = error }
                outstanding.broadcast()
            }
        }
    }

    /// finish - write what is buffered and wait until every chunk is durable.
    public func finish() throws(SpoolError) -> CampaignReceipt {
        defer { for (shard, wasStarted) in started.enumerated() where wasStarted { spool.shards[shard].withState { $0.close(id) } } }
        for shard in 0..<spool.shards.count { try flush(shard) }
        outstanding.lock()
        while outstanding.inFlight > 0 { outstanding.wait() }
        let failure = outstanding.failure
        outstanding.unlock()
        if let failure { throw failure }
        return CampaignReceipt(id: id, recipients: added)
    }

    /// abandon - undo the campaign after a failure in `add` or `finish`: wait for the chunks
    /// in flight, drop what is still buffered, and end every recipient already stored as
    /// cancelled; returns how many. The cancellation is fsync'd whatever the spool's
    /// durability: a cancel lost while the chunks it cancels survive would let them be
    /// delivered. The writer is done after it.
    public func abandon(reason: String) throws(SpoolError) -> Int {
        outstanding.lock()
        while outstanding.inFlight > 0 { outstanding.wait() }
        outstanding.unlock()
        defer { for (shard, wasStarted) in started.enumerated() where wasStarted { spool.shards[shard].withState { $0.close(id) } } }
        buffers = Array(repeating: RecordWriter(capacity: 0), count: spool.shards.count)
        counts = Array(repeating: 0, count: spool.shards.count)
        var cancelled = 0
        for (shard, wasStarted) in started.enumerated() where wasStarted {
            cancelled += try spool.shards[shard].cancel(message: id, reason: reason)
        }
        return cancelled
    }
}

/// The chunks of a campaign in flight and its first failure, shared with the writers.
private final class CampaignProgress: Monitor, @unchecked Sendable {
    /* @unchecked: both fields are only touched with the monitor held. */
    var inFlight = 0
    var failure: SpoolError?
}

/// lastRecordStart - where the record begun last in a campaign buffer starts (the buffer
/// holds at most a message record and one open recipients record).
private func lastRecordStart(_ bytes: [UInt8]) -> Int {
    /* A message record, when present, comes first and is complete: skip it by its length. */
    guard bytes.count > 8, bytes[8] == RecordType.message.rawValue else { return 0 }
    let length = Int(UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24)
    return 8 + length
}

// MARK: - per-shard operations

extension SpoolShard {
    /// record - outcomes for recipients of this shard; `completion` runs once durable.
    public func record(_ outcomes: [(RecipientKey, Outcome)], completion: @escaping @Sendable (Result<Void, SpoolError>) -> Void) {
        var out = RecordWriter(capacity: 48 * outcomes.count)
        withState { state in
            for (key, outcome) in outcomes {
                let attempts = (state.pending[key]?.attempts ?? 0) + (outcome.kind == 5 ? 0 : 1)
                var next: Int64 = 0
                if case .deferred(let time, _) = outcome { next = time }
                encodeOutcome(&out, key: key, kind: outcome.kind, attempts: attempts, nextAttempt: next, reply: outcome.reply)
            }
        }
        append(out.bytes, durability: configuration.outcomeDurability, completion: completion)
    }

    /// record - one outcome, waiting until it is durable.
    public func record(_ outcome: Outcome, for key: RecipientKey) throws(SpoolError) {
        let waiter = Waiter<Result<Void, SpoolError>>()
        record([(key, outcome)]) { waiter.set($0) }
        try waiter.wait().get()
    }

    /// due - up to `limit` pending recipients whose next attempt is at or before `now`,
    /// earliest first; each is claimed (not handed out again) until an outcome is
    /// recorded for it or it is released.
    public func due(now: Int64, limit: Int) -> [PendingRecipient] { withState { $0.due(now: now, limit: limit) } }

    /// release - hand a claimed recipient back without an outcome.
    public func release(_ key: RecipientKey) { withState { $0.release(key) } }

    /// pendingRecipients - every pending recipient (what recovery hands the scheduler).
    public func pendingRecipients() -> [PendingRecipient] {
        withState { state in state.pending.map { state.describe($0.key, $0.value) } }
    }

    /// pendingCount - pending recipients, without building anything.
    public var pendingCount: Int { withState { $0.pending.count } }

    /// counts - pending recipients by state, domain and campaign, and final outcomes so far.
    public func counts() -> ShardCounts { withState { $0.snapshotCounts() } }

    /// gauges - `counts()` without its walk over every pending recipient: pending
    /// recipients and messages, segments and their size, final outcomes so far (`deferred`,
    /// `byDomain` and `byCampaign` stay empty). Cheap enough for a metrics scrape, which must
    /// not hold the shard's lock (and so its commits) for a walk over a million recipients.
    public func gauges() -> ShardCounts {
        withState { state in
            var counts = state.counts
            counts.pending = state.pending.count
            counts.messages = state.messages.count
            counts.segments = state.segments.count
            counts.bytes = state.segments.values.reduce(0) { $0 + $1.bytes }
            return counts
        }
    }

    /// suspensions - suspensions in force.
    public var suspensions: [Suspension] { withState { $0.suspensions } }

    /// suspend - record a suspension (replacing one for the same scope and name).
    public func suspend(_ suspension: Suspension) throws(SpoolError) {
        var out = RecordWriter()
        out.begin(.admin); out.u8(1); out.u8(suspension.scope.rawValue); out.string16(suspension.name); out.i64(suspension.until); out.end()
        try appendAndWait(out.bytes, durability: configuration.durability)
    }

    /// resume - lift the suspension of `name` in `scope`.
    public func resume(_ scope: AdminScope, _ name: String) throws(SpoolError) {
        var out = RecordWriter()
        out.begin(.admin); out.u8(2); out.u8(scope.rawValue); out.string16(name); out.i64(0); out.end()
        try appendAndWait(out.bytes, durability: configuration.durability)
    }

    /// purge - end every pending recipient of a campaign or a domain, as cancelled (or, with
    /// `bounce`, as bounced with `reason`, so a DSN can follow); returns how many.
    public func purge(campaign: String? = nil, domain: String? = nil, bounce reason: String? = nil) throws(SpoolError) -> Int {
        let keys = withState { state -> [RecipientKey] in
            let campaignID = campaign.flatMap { state.campaigns.existing($0) }
            let domainID = domain.flatMap { state.domains.existing($0.lowercased()) }
            if campaign != nil && campaignID == nil || domain != nil && domainID == nil { return [] }
            return state.pending.compactMap { key, entry in
                if let domainID, entry.domain != domainID { return nil }
                if let campaignID, state.messages[key.message]?.campaign != campaignID { return nil }
                return key
            }
        }
        guard !keys.isEmpty else { return 0 }
        let purged = campaign.map { "purged: campaign \($0)" } ?? "purged: domain \(domain ?? "")"
        let outcome = reason.map { Outcome.bounced(reply: $0) } ?? Outcome.cancelled(reason: purged)
        try end(keys, outcome, durability: configuration.durability)
        return keys.count
    }

    /// cancel - end every pending recipient of message `id` in this shard as cancelled,
    /// fsync'd whatever the configured durability; returns how many.
    public func cancel(message id: MessageID, reason: String) throws(SpoolError) -> Int {
        let keys = withState { state in state.pending.keys.filter { $0.message == id } }
        try end(keys, .cancelled(reason: reason), durability: .fsync)
        return keys.count
    }

    /// end - give every one of `keys` the final `outcome`, waiting until it is durable.
    /// Written in appends of at most 65,536 outcome records, so a million-recipient purge
    /// does not build one write the size of a segment.
    private func end(_ keys: [RecipientKey], _ outcome: Outcome, durability: Durability) throws(SpoolError) {
        for start in stride(from: 0, to: keys.count, by: 65_536) {
            try appendAndWait(finalOutcomes(keys[start..<min(start + 65_536, keys.count)], outcome), durability: durability)
        }
    }

    /// finalOutcomes - the outcome records that give every one of `keys` the final `outcome`.
    func finalOutcomes(_ keys: some Collection<RecipientKey>, _ outcome: Outcome) -> [UInt8] {
        var out = RecordWriter(capacity: 48 * keys.count)
        for key in keys {
            encodeOutcome(&out, key: key, kind: outcome.kind, attempts: 0, nextAttempt: 0, reply: outcome.reply)
        }
        return out.bytes
    }

    /// message - a message's envelope, metadata and body, read back from its record.
    /// A blocking `pread`: call it from a thread that may wait for the disk, never from an
    /// event loop (the delivery engine reads through its shard's I/O thread).
    public func message(_ id: MessageID) throws(SpoolError) -> StoredMessage {
        /* Compaction may move the record between the lookup and the read: look again once. */
        do {
            return try readMessage(id)
        } catch {
            return try readMessage(id)
        }
    }

    private func readMessage(_ id: MessageID) throws(SpoolError) -> StoredMessage {
        guard let (segment, offset) = withState({ state in state.messages[id].map { ($0.segment, $0.offset) } }) else {
            throw SpoolError(.invalid("message \(id) has nothing pending in shard \(index)"))
        }
        let raw = try readRecord(segment: segment, offset: offset)
        guard let message = raw.withUnsafeBytes({ decodeMessage(UnsafeRawBufferPointer(rebasing: $0[8...])) }), message.id == id else {
            throw SpoolError(.invalid("undecodable message record"), path: segmentPath(segment))
        }
        return message
    }

    /// recipient - a pending recipient's address and merge variables (a blocking `pread`,
    /// like `message(_:)`).
    public func recipient(_ key: RecipientKey) throws(SpoolError) -> NewRecipient {
        try recipients([key])[0]
    }

    /// compact - delete dead segments and rewrite sparse old ones forward, now (waits).
    public func compact() {
        let waiter = Waiter<Result<Void, SpoolError>>()
        append(PendingAppend(bytes: [], durability: .none, isCompaction: true) { waiter.set($0) })
        _ = waiter.wait()
    }
}

extension SpoolShard {
    /// pendingWithAddresses - pending recipients that pass `include`, with their addresses
    /// and variables, ordered by key; each recipients record is read once.
    public func pendingWithAddresses(_ include: (PendingRecipient) -> Bool) throws(SpoolError) -> [(PendingRecipient, NewRecipient)] {
        let selected = pendingRecipients().filter(include).sorted { $0.key < $1.key }
        var records: [UInt64: [UInt32: DecodedRecipient]] = [:]
        var out: [(PendingRecipient, NewRecipient)] = []
        out.reserveCapacity(selected.count)
        for pending in selected {
            let place = UInt64(pending.segment) << 32 | UInt64(pending.offset)
            if records[place] == nil {
                let raw = try readRecord(segment: pending.segment, offset: pending.offset)
                /* The record read must be this message's: anything else (a stale position)
                   would give another message's addresses. */
                guard raw.count >= 8 + 1 + 16, raw.withUnsafeBytes({ bytes in
                    var reader = RecordReader(UnsafeRawBufferPointer(rebasing: bytes[9...]))
                    return (try? reader.id()) == pending.key.message
                }) else {
                    throw SpoolError(.invalid("recipient \(pending.key): the record read is not its recipients record"), path: segmentPath(pending.segment))
                }
                let decoded = try decodeRecipients(raw)
                records[place] = Dictionary(decoded.map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
            }
            guard let found = records[place]?[pending.key.index] else {
                throw SpoolError(.invalid("recipient \(pending.key) is missing from its record"), path: segmentPath(pending.segment))
            }
            out.append((pending, NewRecipient(found.address, variables: found.variables)))
        }
        return out
    }
}

/// decodeMessage - a message record's body (type octet and payload), or nil when it is not one.
func decodeMessage(_ body: UnsafeRawBufferPointer) -> StoredMessage? {
    var reader = RecordReader(body)
    do {
        guard try reader.u8() == RecordType.message.rawValue else { return nil }
        let id = try reader.id()
        let created = try reader.i64()
        let expires = try reader.i64()
        let priority = PriorityClass(rawValue: try reader.u8()) ?? .bulk
        let sender = try reader.string16()
        let campaign = try reader.string16()
        let tenant = try reader.string16()
        let hints = Array(try reader.blob32())
        let body = Array(try reader.blob32())
        return StoredMessage(id: id, created: created, sender: sender,
                             metadata: MessageMetadata(campaign: campaign, tenant: tenant, priority: priority, expires: expires, hints: hints),
                             body: body)
    } catch {
        return nil
    }
}
