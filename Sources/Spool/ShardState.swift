// ShardState.swift - one shard's in-memory index, rebuilt by replaying its segments
//
// Replay at open and the writer after each durable commit call the same `apply`
// functions on the same record bytes, so what recovery rebuilds is by construction
// what the running spool had. Only pending recipients are kept (final ones are
// counted and dropped), each as a compact entry pointing at its record.
//
// Reference counting decides which segments may go: a segment is live while a
// pending recipient's record, the latest deferred outcome of one, or the message
// record of a message with pending recipients is in it. A final outcome in segment
// B for a recipient whose record is in segment A "pins" B while A exists, because
// replaying A without B would bring the recipient back.

import HeapModule

struct MessageEntry {
    /// Segment and offset of the message record (segment 0: not seen yet in replay).
    var segment: UInt32
    var offset: UInt32
    /// Pending recipients of this message in this shard.
    var live: UInt32
    var campaign: UInt32
    var priority: PriorityClass
    var created: Int64
}

/// A pending recipient in the index: 28 octets, all 32-bit aligned (the time is split in
/// two words so the entry does not pad to 8-octet alignment).
struct PendingEntry {
    var segment: UInt32
    var offset: UInt32
    var domain: UInt32
    /// Segment of the latest deferred outcome (0: none).
    var stateSegment: UInt32
    private var nextHigh: UInt32
    private var nextLow: UInt32
    private var attemptCount: UInt16
    /// Handed out by `due` and not yet given an outcome.
    var claimed: Bool
    /// The recipient has merge variables (it needs a message of its own).
    var personalised: Bool

    init(segment: UInt32, offset: UInt32, domain: UInt32, attempts: UInt32, nextAttempt: Int64, stateSegment: UInt32,
         claimed: Bool, personalised: Bool = false) {
        self.segment = segment
        self.offset = offset
        self.domain = domain
        self.stateSegment = stateSegment
        nextHigh = 0
        nextLow = 0
        attemptCount = 0
        self.claimed = claimed
        self.personalised = personalised
        self.attempts = attempts
        self.nextAttempt = nextAttempt
    }

    /// Earliest next attempt, ms since the epoch.
    var nextAttempt: Int64 {
        get { Int64(bitPattern: UInt64(nextHigh) << 32 | UInt64(nextLow)) }
        set { nextHigh = UInt32(truncatingIfNeeded: UInt64(bitPattern: newValue) >> 32); nextLow = UInt32(truncatingIfNeeded: newValue) }
    }

    /// Attempts so far (kept to 65,535, far beyond any retry schedule).
    var attempts: UInt32 {
        get { UInt32(attemptCount) }
        set { attemptCount = UInt16(min(newValue, UInt32(UInt16.max))) }
    }
}

struct SegmentInfo {
    var bytes: Int
    var liveRefs = 0
    var refsWritten = 0
    /// Octets of the message and recipient records written here (framing included): what
    /// the references share. Outcome records are left out, so a segment full of
    /// outcomes for messages elsewhere does not inflate its few live references.
    var referencedBytes = 0
    /// Segments holding records that final outcomes in this segment finalised.
    var pinnedBy: Set<UInt32> = []
}

/// An entry of the due-time heap; stale entries are skipped when popped.
struct DueItem: Comparable {
    /* The time in two 32-bit words: 28 octets per item instead of 32. */
    private var high: Int32
    private var low: UInt32
    var key: RecipientKey

    init(time: Int64, key: RecipientKey) {
        high = Int32(truncatingIfNeeded: time >> 32)
        low = UInt32(truncatingIfNeeded: time)
        self.key = key
    }

    var time: Int64 { Int64(high) << 32 | Int64(low) }
    static func == (a: DueItem, b: DueItem) -> Bool { a.time == b.time && a.key == b.key }
    static func < (a: DueItem, b: DueItem) -> Bool { a.time < b.time || (a.time == b.time && a.key < b.key) }
}

/// Interned strings (domains, campaigns) so entries hold 32-bit ids.
struct Interner {
    private(set) var names: [String] = [""]
    private var ids: [String: UInt32] = ["": 0]

    mutating func id(_ name: String) -> UInt32 {
        if let id = ids[name] { return id }
        let id = UInt32(names.count)
        names.append(name)
        ids[name] = id
        return id
    }

    func existing(_ name: String) -> UInt32? { ids[name] }

    /* Domain ids by FNV-1a of the lowercased octets, so replaying a recipient does not
       build a String for a domain already seen. A hash collision falls back to `id(_:)`. */
    private var byHash: [UInt64: UInt32] = [:]

    /// id - the id of the lowercased text of `bytes`.
    mutating func id(lowercasing bytes: UnsafeRawBufferPointer) -> UInt32 {
        let hash = domainHash(bytes)
        if let id = byHash[hash] {
            var name = names[Int(id)]
            let same = name.withUTF8 { stored in
                stored.count == bytes.count && zip(stored, bytes).allSatisfy { $0 == asciiLower($1) }
            }
            if same { return id }
        }
        let id = self.id(String(decoding: bytes, as: UTF8.self).lowercased())
        if byHash[hash] == nil { byHash[hash] = id }
        return id
    }
}

@inline(__always) func asciiLower(_ byte: UInt8) -> UInt8 { byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte }

extension Interner {
    subscript(id: UInt32) -> String { names[Int(id)] }
}

/// One shard's index. Not thread-safe: `SpoolShard` guards it with its monitor.
struct ShardState {
    var messages: [MessageID: MessageEntry] = [:]
    var pending: [RecipientKey: PendingEntry] = [:]
    var heap = Heap<DueItem>()
    var segments: [UInt32: SegmentInfo] = [:]
    var domains = Interner()
    var campaigns = Interner()
    var suspensions: [Suspension] = []
    var counts = ShardCounts()
    /// While replaying, heap pushes wait until the end (one O(n) heapify).
    var replaying = false
    /// Messages a campaign writer is still adding recipients to: kept (with their
    /// message record referenced) even while none of their recipients is pending.
    var open: Set<MessageID> = []
    /// A subscriber takes new recipients as they become durable (the delivery engine): the
    /// due-time heap is then not kept, and `fresh` collects what the next commit added.
    var subscribed = false
    var fresh: [PendingRecipient] = []
    /// Messages stored in several shards whose recipients wait, here, until every shard's
    /// part is durable (`Spool.enqueue`): neither `fresh` nor the due heap gets them before
    /// `releaseWithheld`, so a message whose other part fails is never delivered in part.
    var withheld: [MessageID: [RecipientKey]] = [:]
    /// Set when a segment's last live reference goes: the writer then wants compaction.
    var emptiedSegment = false
    /// The segment of the record `apply` is applying.
    private var applying: UInt32 = 0

    /// held - whether a message's record is referenced: while it has pending recipients
    /// or is open.
    private func held(_ id: MessageID, live: UInt32) -> Bool { live > 0 || open.contains(id) }

    // MARK: references

    private mutating func addRef(_ segment: UInt32) {
        guard segment != 0 else { return }
        segments[segment, default: SegmentInfo(bytes: 0)].liveRefs += 1
    }

    private mutating func dropRef(_ segment: UInt32) {
        guard segment != 0, let refs = segments[segment]?.liveRefs else { return }
        segments[segment]!.liveRefs = refs - 1
        /* The segment being written is never deleted: its emptying is no news. */
        if refs == 1 && segment != applying { emptiedSegment = true }
    }

    private mutating func wrote(_ segment: UInt32) {
        segments[segment, default: SegmentInfo(bytes: 0)].refsWritten += 1
    }

    // MARK: apply

    /// apply - one record's effect. `body` is type octet and payload, as framed on disk.
    mutating func apply(_ body: UnsafeRawBufferPointer, segment: UInt32, offset: UInt32) throws(ShortRecord) {
        applying = segment
        var reader = RecordReader(body)
        switch RecordType(rawValue: try reader.u8()) {
        case .message:
            try applyMessage(&reader, segment: segment, offset: offset)
            segments[segment, default: SegmentInfo(bytes: 0)].referencedBytes += body.count + 8
        case .recipients:
            try applyRecipients(&reader, segment: segment, offset: offset)
            segments[segment, default: SegmentInfo(bytes: 0)].referencedBytes += body.count + 8
        case .outcome:
            if try applyOutcome(&reader, segment: segment) {
                segments[segment, default: SegmentInfo(bytes: 0)].referencedBytes += body.count + 8
            }
        case .admin: try applyAdmin(&reader)
        case nil: throw ShortRecord()
        }
    }

    private mutating func applyMessage(_ reader: inout RecordReader, segment: UInt32, offset: UInt32) throws(ShortRecord) {
        let id = try reader.id()
        let created = try reader.i64()
        _ = try reader.i64() // expires
        let priority = PriorityClass(rawValue: try reader.u8()) ?? .bulk
        try reader.skip16() // sender
        let campaign = campaigns.id(try reader.string16())
        wrote(segment)
        if var entry = messages[id] {
            /* A copy written forward by compaction, or the record after its recipients. */
            if held(id, live: entry.live) { dropRef(entry.segment); addRef(segment) }
            entry.segment = segment
            entry.offset = offset
            entry.campaign = campaign
            entry.priority = priority
            if entry.created == 0 { entry.created = created }
            messages[id] = entry
        } else {
            messages[id] = MessageEntry(segment: segment, offset: offset, live: 0, campaign: campaign,
                                        priority: priority, created: created)
            if held(id, live: 0) { addRef(segment) }
        }
    }

    private mutating func applyRecipients(_ reader: inout RecordReader, segment: UInt32, offset: UInt32) throws(ShortRecord) {
        let id = try reader.id()
        let count = try reader.u32()
        if messages[id] == nil {
            /* Replay met the recipients before their message's (moved) record. */
            messages[id] = MessageEntry(segment: 0, offset: 0, live: 0, campaign: 0, priority: .bulk, created: 0)
        }
        let created = messages[id]!.created
        let withholding = !withheld.isEmpty && withheld[id] != nil
        var added: UInt32 = 0
        segments[segment, default: SegmentInfo(bytes: 0)].refsWritten += Int(count)
        for _ in 0..<count {
            let index = try reader.u32()
            let address = try reader.bytes16()
            let variables = Int(try reader.u16())
            for _ in 0..<variables { try reader.skip16(); try reader.skip32() }
            let key = RecipientKey(message: id, index: index)
            let at = address.lastIndex(of: UInt8(ascii: "@")).map { $0 + 1 } ?? address.count
            let domain = domains.id(lowercasing: UnsafeRawBufferPointer(rebasing: address[at...]))
            /* One hash per recipient: insert, and undo in the rare case it was there. */
            let fresh = PendingEntry(segment: segment, offset: offset, domain: domain, attempts: 0,
                                     nextAttempt: created, stateSegment: 0, claimed: false, personalised: variables > 0)
            if var entry = pending.updateValue(fresh, forKey: key) {
                /* A copy written forward by compaction: only the position changes. */
                dropRef(entry.segment)
                addRef(segment)
                entry.segment = segment
                entry.offset = offset
                pending[key] = entry
                continue
            }
            addRef(segment)
            if !replaying {
                if withholding {
                    withheld[id]!.append(key)
                } else if subscribed {
                    self.fresh.append(describe(key, fresh))
                } else {
                    heap.insert(DueItem(time: created, key: key))
                }
            }
            added += 1
        }
        if added > 0 {
            let entry = messages[id]!
            if !held(id, live: entry.live) { addRef(entry.segment) }
            messages[id]!.live += added
        }
    }

    /// applyOutcome - returns whether the record is now referenced (a pending recipient's
    /// deferred state).
    private mutating func applyOutcome(_ reader: inout RecordReader, segment: UInt32) throws(ShortRecord) -> Bool {
        let key = RecipientKey(message: try reader.id(), index: try reader.u32())
        let kind = try reader.u8()
        let attempts = try reader.u32()
        let nextAttempt = try reader.i64()
        guard var entry = pending[key] else { return false } // already final, or its record was compacted away
        if kind == 4 {
            /* Compaction's copy of the state it moves repeats it: that must not release a
               recipient `due` handed out (it would be handed out again while in flight). */
            let isCopy = attempts == entry.attempts && nextAttempt == entry.nextAttempt
            dropRef(entry.stateSegment)
            addRef(segment)
            wrote(segment)
            entry.stateSegment = segment
            entry.attempts = attempts
            entry.nextAttempt = nextAttempt
            if !isCopy { entry.claimed = false }
            pending[key] = entry
            if !replaying && !isCopy && !subscribed { heap.insert(DueItem(time: nextAttempt, key: key)) }
            return true
        }
        switch kind {
        case 1: counts.delivered += 1
        case 2: counts.bounced += 1
        case 3: counts.expired += 1
        default: counts.cancelled += 1
        }
        pending[key] = nil
        dropRef(entry.segment)
        dropRef(entry.stateSegment)
        if entry.segment != segment { segments[segment, default: SegmentInfo(bytes: 0)].pinnedBy.insert(entry.segment) }
        if var message = messages[key.message] {
            message.live -= 1
            if !held(key.message, live: message.live) {
                dropRef(message.segment)
                /* Replay keeps the entry: a record further on may add recipients again. */
                if !replaying { messages[key.message] = nil } else { messages[key.message] = message }
            } else {
                messages[key.message] = message
            }
        }
        return false
    }

    private mutating func applyAdmin(_ reader: inout RecordReader) throws(ShortRecord) {
        let action = try reader.u8()
        if action == 0 { suspensions = []; return } // the snapshot at the start of a segment
        guard let scope = AdminScope(rawValue: try reader.u8()) else { return }
        let name = try reader.string16()
        let until = try reader.i64()
        suspensions.removeAll { $0.scope == scope && $0.name == name }
        if action == 1 { suspensions.append(Suspension(scope: scope, name: name, until: until)) }
    }

    /// close - a campaign writer is done with `id`: drop it if nothing of it is pending.
    mutating func close(_ id: MessageID) {
        guard open.remove(id) != nil, let entry = messages[id], entry.live == 0 else { return }
        dropRef(entry.segment)
        messages[id] = nil
    }

    // MARK: after replay

    /// finishReplay - drop messages without pending recipients, and recipients whose message
    /// record never appeared (returned: their messages are reported as affected); build the heap.
    mutating func finishReplay() -> [MessageID] {
        replaying = false
        var lost: Set<MessageID> = []
        for (id, message) in messages where message.segment == 0 && message.live > 0 { lost.insert(id) }
        if !lost.isEmpty {
            for (key, entry) in pending where lost.contains(key.message) {
                pending[key] = nil
                dropRef(entry.segment)
                dropRef(entry.stateSegment)
            }
            for id in lost { messages[id] = nil }
        }
        messages = messages.filter { $0.value.live > 0 }
        var items: [DueItem] = []
        items.reserveCapacity(pending.count)
        for (key, entry) in pending { items.append(DueItem(time: entry.nextAttempt, key: key)) }
        heap = Heap(items)
        return lost.sorted()
    }

    // MARK: queries

    /// due - pending recipients whose next attempt is at or before `now`, earliest first,
    /// marked as claimed until an outcome is recorded for them.
    mutating func due(now: Int64, limit: Int) -> [PendingRecipient] {
        var out: [PendingRecipient] = []
        while out.count < limit, let top = heap.min, top.time <= now {
            heap.removeMin()
            guard var entry = pending[top.key], !entry.claimed, entry.nextAttempt == top.time else { continue }
            entry.claimed = true
            pending[top.key] = entry
            out.append(describe(top.key, entry))
        }
        return out
    }

    /// release - put a claimed recipient back without an outcome (its attempt never started).
    mutating func release(_ key: RecipientKey) {
        guard var entry = pending[key], entry.claimed else { return }
        entry.claimed = false
        pending[key] = entry
        heap.insert(DueItem(time: entry.nextAttempt, key: key))
    }

    /// releaseWithheld - stop withholding `id`; with `feed`, its recipients still pending go
    /// to the due heap, or are returned for the subscriber when there is one.
    mutating func releaseWithheld(_ id: MessageID, feed: Bool) -> [PendingRecipient] {
        guard let keys = withheld.removeValue(forKey: id), feed else { return [] }
        var out: [PendingRecipient] = []
        for key in keys {
            guard let entry = pending[key] else { continue }
            if subscribed {
                out.append(describe(key, entry))
            } else {
                heap.insert(DueItem(time: entry.nextAttempt, key: key))
            }
        }
        return out
    }

    func describe(_ key: RecipientKey, _ entry: PendingEntry) -> PendingRecipient {
        let message = messages[key.message]
        return PendingRecipient(key: key, segment: entry.segment, offset: entry.offset, attempts: entry.attempts,
                                nextAttempt: entry.nextAttempt, domain: domains[entry.domain],
                                priority: message?.priority ?? .bulk, campaign: campaigns[message?.campaign ?? 0],
                                personalised: entry.personalised)
    }

    func snapshotCounts() -> ShardCounts {
        var counts = self.counts
        counts.pending = pending.count
        counts.messages = messages.count
        var byDomain: [UInt32: Int] = [:]
        var byCampaign: [UInt32: Int] = [:]
        for (key, entry) in pending {
            if entry.attempts > 0 { counts.deferred += 1 }
            byDomain[entry.domain, default: 0] += 1
            byCampaign[messages[key.message]?.campaign ?? 0, default: 0] += 1
        }
        for (id, n) in byDomain { counts.byDomain[domains[id]] = n }
        for (id, n) in byCampaign { counts.byCampaign[campaigns[id]] = n }
        counts.segments = segments.count
        counts.bytes = segments.values.reduce(0) { $0 + $1.bytes }
        return counts
    }

    /// deletable - segments (other than `current`) nothing live refers to and no
    /// remaining segment pins, in rounds safe to unlink in order: a segment comes in a
    /// round after the segments that pinned it (whose recipients its outcomes finalised);
    /// the caller makes each round's unlinks durable before the next, so a crash never
    /// brings finished recipients back. A chain of pins (each delivered segment's outcomes
    /// in the next one) goes in one call.
    func deletable(current: UInt32) -> [[UInt32]] {
        var rounds: [[UInt32]] = []
        var gone = Set<UInt32>()
        while true {
            let round = segments.compactMap { number, info -> UInt32? in
                guard number != current, info.liveRefs <= 0, !gone.contains(number) else { return nil }
                let pinned = info.pinnedBy.contains { $0 != number && segments[$0] != nil && !gone.contains($0) }
                return pinned ? nil : number
            }.sorted()
            if round.isEmpty { return rounds }
            rounds.append(round)
            gone.formUnion(round)
        }
    }

    /// estimatedLiveBytes - live octets of a segment: the octets of its message and
    /// recipient records, in proportion to the share of their references still live.
    func estimatedLiveBytes(_ number: UInt32) -> Int {
        guard let info = segments[number], info.refsWritten > 0 else { return 0 }
        return Int(Double(info.referencedBytes) * Double(max(0, info.liveRefs)) / Double(info.refsWritten))
    }
}
