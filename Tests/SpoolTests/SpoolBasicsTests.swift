// SpoolBasicsTests.swift - enqueue, read back, outcomes, reopen, locking, format details

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import Synchronization
import Testing
@testable import Spool

@Suite("Spool basics")
struct SpoolBasicsTests {
    @Test("CRC-32C matches the published check value")
    func crcCheckValue() {
        let check = Array("123456789".utf8).withUnsafeBytes { CRC32C.checksum($0) }
        #expect(check == 0xE306_9283)
        let zeros = [UInt8](repeating: 0, count: 32).withUnsafeBytes { CRC32C.checksum($0) }
        #expect(zeros == 0x8A91_36AA) // RFC 3720 B.4: 32 bytes of zeroes
        /* Continuing a checksum equals checksumming the concatenation. */
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let whole = data.withUnsafeBytes { CRC32C.checksum($0) }
        let split = data.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[333...]), continuing: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[..<333]))) }
        #expect(whole == split)
    }

    @Test("An enqueued message reads back, survives a reopen and leaves with its outcomes")
    func enqueueReopenOutcome() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 3, durability: .fsync)
        var spool: Spool? = try Spool(configuration)
        let recipients = ["a@one.test", "b@two.test", "c@three.test", "d@one.test"]
        let message = NewMessage(sender: "s@example.org", body: Array("Subject: hi\r\n\r\nbody\r\n".utf8),
                                 metadata: MessageMetadata(campaign: "spring", tenant: "t1", priority: .bulk, expires: 42, hints: [1, 2, 3]),
                                 recipients: recipients.enumerated().map { NewRecipient($1, variables: [("n", "\($0)")]) })
        let id = try spool!.enqueue(message)
        #expect(pendingKeys(spool!).count == 4)
        for (index, address) in recipients.enumerated() {
            let shard = spool!.shards[shardOf(address, spool!)]
            let key = RecipientKey(message: id, index: UInt32(index))
            let stored = try shard.message(id)
            #expect(stored.sender == "s@example.org")
            #expect(stored.body == message.body)
            #expect(stored.metadata == message.metadata)
            #expect(try shard.recipient(key) == message.recipients[index])
        }
        spool!.close()
        spool = nil

        spool = try Spool(configuration)
        #expect(pendingKeys(spool!) == (0..<4).map { RecipientKey(message: id, index: UInt32($0)) })
        let first = spool!.shards[shardOf("a@one.test", spool!)]
        try first.record(.delivered(reply: "250 2.0.0 ok"), for: RecipientKey(message: id, index: 0))
        try first.record(.deferred(nextAttempt: 12345, reply: "451 4.7.1 later"), for: RecipientKey(message: id, index: 3))
        spool!.close()
        spool = nil

        spool = try Spool(configuration)
        let pending = spool!.shards.flatMap { $0.pendingRecipients() }.sorted { $0.key < $1.key }
        #expect(pending.map(\.key.index) == [1, 2, 3])
        let deferred = pending.first { $0.key.index == 3 }!
        #expect(deferred.attempts == 1)
        #expect(deferred.nextAttempt == 12345)
        #expect(deferred.domain == "one.test")
        #expect(deferred.campaign == "spring")
        #expect(deferred.priority == .bulk)
        var totals = ShardCounts()
        for shard in spool!.shards { totals.merge(shard.counts()) }
        #expect(totals.pending == 3)
        #expect(totals.deferred == 1)
        #expect(totals.delivered == 1)
        #expect(totals.byCampaign["spring"] == 3)
        spool!.close()
    }

    @Test("A second open of the same spool is refused with the holder's pid")
    func lockedByPid() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let spool = try Spool(testConfiguration(folder.path))
        defer { spool.close() }
        #expect(throws: SpoolError(.locked(pid: getpid()), path: folder.path + "/Queue/shard-00")) {
            _ = try Spool(testConfiguration(folder.path))
        }
        #expect("\(SpoolError(.locked(pid: 77), path: "Q"))" == "Q: queue is locked by pid 77")
    }

    @Test("due hands out recipients once, earliest first, and deferred ones come back at their time")
    func dueOrder() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let spool = try Spool(testConfiguration(folder.path, shards: 1))
        defer { spool.close() }
        let id = try spool.enqueue(testMessage(["a@x.test", "b@x.test", "c@x.test"]))
        let shard = spool.shards[0]
        let now = nowMilliseconds() + 1000
        let first = shard.due(now: now, limit: 2)
        #expect(first.count == 2)
        let second = shard.due(now: now, limit: 10)
        #expect(second.count == 1)
        #expect(shard.due(now: now, limit: 10).isEmpty)
        try shard.record(.deferred(nextAttempt: now + 500, reply: "451"), for: first[0].key)
        #expect(shard.due(now: now, limit: 10).isEmpty)
        let again = shard.due(now: now + 500, limit: 10)
        #expect(again.map(\.key) == [first[0].key])
        #expect(again[0].attempts == 1)
        shard.release(first[1].key)
        #expect(shard.due(now: now, limit: 10).map(\.key) == [first[1].key])
        _ = id
    }

    @Test("A campaign stores the body once per shard and every recipient once")
    func campaignStreaming() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let spool = try Spool(testConfiguration(folder.path, shards: 2, durability: .fsync))
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: 100_000)
        let writer = spool.campaign(sender: "news@example.org", body: body, metadata: MessageMetadata(campaign: "big", priority: .bulk))
        for n in 0..<20_000 { try writer.add(NewRecipient("user\(n)@d\(n % 50).test", variables: [("first", "U\(n)")])) }
        let receipt = try writer.finish()
        #expect(receipt.recipients == 20_000)
        #expect(pendingKeys(spool).count == 20_000)
        var bytes = 0
        for shard in spool.shards { bytes += shard.counts().bytes }
        #expect(bytes < 2 * body.count + 20_000 * 60) // the body twice (two shards), not per recipient
        let key = RecipientKey(message: receipt.id, index: 12_345)
        let shard = spool.shards[shardOf("user12345@d45.test", spool)]
        #expect(try shard.recipient(key) == NewRecipient("user12345@d45.test", variables: [("first", "U12345")]))
        spool.close()
        let reopened = try Spool(testConfiguration(folder.path, shards: 2))
        #expect(pendingKeys(reopened).count == 20_000)
        #expect(try reopened.shards[shardOf("user12345@d45.test", reopened)].message(receipt.id).body == body)
        reopened.close()
    }

    @Test("Purge cancels a campaign's pending recipients, durably; suspensions survive reopen and segment changes")
    func purgeAndSuspend() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: 4096)
        var spool: Spool? = try Spool(configuration)
        _ = try spool!.enqueue(testMessage(["a@x.test", "b@y.test"], campaign: "c1"))
        _ = try spool!.enqueue(testMessage(["c@x.test"], campaign: "c2"))
        let shard = spool!.shards[0]
        try shard.suspend(Suspension(scope: .domain, name: "x.test", until: 99))
        try shard.suspend(Suspension(scope: .campaign, name: "c2", until: 0))
        try shard.resume(.campaign, "c2")
        #expect(try shard.purge(campaign: "c1") == 2)
        /* Fill a few segments so the suspension has to be carried into new ones. */
        for n in 0..<40 { _ = try spool!.enqueue(testMessage(["z\(n)@z.test"], body: String(repeating: "y", count: 500))) }
        spool!.close()
        spool = nil
        spool = try Spool(configuration)
        #expect(spool!.shards[0].suspensions == [Suspension(scope: .domain, name: "x.test", until: 99)])
        let counts = spool!.shards[0].counts()
        #expect(counts.byCampaign["c1"] == nil)
        #expect(counts.byCampaign["c2"] == 1)
        #expect(counts.cancelled == 2)
        spool!.close()
    }

    @Test("Compaction deletes dead segments and keeps disk use within twice the live data")
    func compaction() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: 64 << 10)
        var spool: Spool? = try Spool(configuration)
        let shard = spool!.shards[0]
        var keep: [RecipientKey] = []
        let body = String(repeating: "b", count: 1000)
        for round in 0..<400 {
            let id = try spool!.enqueue(testMessage(["r\(round)@x.test"], body: body))
            let key = RecipientKey(message: id, index: 0)
            if round % 20 == 0 { keep.append(key) } else { try shard.record(.delivered(reply: "250"), for: key) }
        }
        shard.compact()
        let counts = shard.counts()
        #expect(counts.pending == keep.count)
        /* Live data: what one kept message occupies on disk, measured in a fresh spool. */
        let reference = try Spool(testConfiguration(folder.path + "/reference", shards: 1, segmentSize: 64 << 10))
        let empty = reference.shards[0].counts().bytes
        _ = try reference.enqueue(testMessage(["r0@x.test"], body: body))
        let perMessage = reference.shards[0].counts().bytes - empty
        reference.close()
        let live = keep.count * perMessage
        #expect(counts.bytes <= 2 * live + configuration.segmentSize, "bytes \(counts.bytes), live \(live) (\(perMessage) per message)")
        spool!.close()
        spool = nil
        spool = try Spool(configuration)
        #expect(pendingKeys(spool!) == keep.sorted())
        for key in keep { #expect(try spool!.shards[0].message(key.message).body == Array(body.utf8)) }
        spool!.close()
    }

    @Test("A new spool's growing first segment is left for a zero-filled one soon after its first mebibyte")
    func growingFirstSegmentIsLeftEarly() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: 8 << 20, durability: .fsync)
        let spool = try Spool(configuration)
        let body = String(repeating: "b", count: 1000)
        var ids: [MessageID] = []
        let second = folder.path + "/Queue/" + SpoolShard.folderName(0) + "/00000002.seg"
        func fileSize(_ path: String) -> Int? {
            var info = stat()
            return stat(path, &info) == 0 ? Int(info.st_size) : nil
        }
        /* About 950 messages pass the first mebibyte; then the spare is made while more arrive. */
        for round in 0..<1_600 where fileSize(second) == nil {
            ids.append(try spool.enqueue(testMessage(["r\(round)@x.test"], body: body)))
            if round >= 900 { usleep(10_000) }
        }
        #expect(ids.count > 900 && ids.count < 1_600, "\(ids.count) messages before the second segment")
        #expect(fileSize(second) == configuration.segmentSize, "the second segment is the zero-filled spare")
        let first = try #require(fileSize(folder.path + "/Queue/" + SpoolShard.folderName(0) + "/00000001.seg"))
        #expect(first < 2 << 20, "the first segment was left at \(first) octets")
        spool.close()
        let reopened = try Spool(configuration)
        #expect(pendingKeys(reopened).count == ids.count)
        reopened.close()
    }

    @Test("Once everything in it is delivered, a spool gives its segments back without waiting for a rotation")
    func deliveredSegmentsGoWithoutRotation() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: 64 << 10)
        let spool = try Spool(configuration)
        defer { spool.close() }
        let shard = spool.shards[0]
        let body = String(repeating: "b", count: 1000)
        let ids = try (0..<200).map { try spool.enqueue(testMessage(["r\($0)@x.test"], body: body)) }
        let filled = shard.counts().bytes
        #expect(filled > 3 * configuration.segmentSize)
        /* The outcomes fit in the current segment: no rotation follows them. */
        for id in ids { try shard.record(.delivered(reply: "250"), for: RecipientKey(message: id, index: 0)) }
        var bytes = shard.counts().bytes
        for _ in 0..<250 where bytes > configuration.segmentSize {
            usleep(20_000)
            bytes = shard.counts().bytes
        }
        #expect(bytes <= configuration.segmentSize, "\(bytes) octets left of \(filled) after every recipient was delivered")
    }

    @Test("A writer that never idles still keeps disk use within twice the live data and a segment or two")
    func compactionUnderConstantLoad() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: 64 << 10)
        let spool = try Spool(configuration)
        defer { spool.close() }
        let shard = spool.shards[0]
        let body = String(repeating: "b", count: 1000)
        /* Producers enqueue and deliver as fast as they can for a bounded time and count,
           so the writer always has a batch waiting; a sampler watches the disk use. */
        final class Shared: Sendable { let stop = Atomic<Bool>(false); let largest = Atomic<Int>(0) }
        let shared = Shared()
        let producers = (0..<4).map { producer in
            WorkerThread(name: "producer-\(producer)") {
                let started = monotonicMilliseconds()
                for round in 0..<20_000 where !shared.stop.load(ordering: .relaxed) && monotonicMilliseconds() - started < 4_000 {
                    guard let id = try? spool.enqueue(testMessage(["p\(producer)-\(round)@x.test"], body: body)) else { return }
                    try? shard.record(.delivered(reply: "250"), for: RecipientKey(message: id, index: 0))
                }
            }
        }
        let sampler = WorkerThread(name: "sampler") {
            while !shared.stop.load(ordering: .relaxed) {
                shared.largest.max(shard.counts().bytes, ordering: .relaxed)
                usleep(10_000)
            }
        }
        producers.forEach { $0.join() }
        shared.stop.store(true, ordering: .relaxed)
        sampler.join()
        /* Nothing stays live for long: the bound is the segment being written, half a
           segment's worth of writes before a busy writer takes a compaction step, and the
           segment holding the outcomes that step could not yet delete. (Without the busy
           step this reaches megabytes: the writer is rarely idle when compaction is wanted.) */
        let seen = shared.largest.load(ordering: .relaxed)
        #expect(seen <= 4 * configuration.segmentSize, "disk use reached \(seen) octets with almost nothing live")
    }
}

@Suite("Spool checksums")
struct SpoolChecksumTests {
    @Test("The instruction-based CRC-32C equals the table-driven one on every length and alignment")
    func hardwareMatchesSoftware() {
        var generator = SystemRandomNumberGenerator()
        let data = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
        data.withUnsafeBytes { all in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4000] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    #expect(CRC32C.checksum(slice, continuing: 0x1234) == CRC32C.software(slice, continuing: 0x1234))
                }
            }
        }
        let check = Array("123456789".utf8).withUnsafeBytes { CRC32C.software($0) }
        #expect(check == 0xE306_9283)
    }
}

@Suite("Spool index layout")
struct SpoolLayoutTests {
    @Test("Index entries keep their packed sizes (memory per pending recipient depends on them)")
    func strides() {
        #expect(MemoryLayout<RecipientKey>.stride == 20)
        #expect(MemoryLayout<PendingEntry>.stride == 28)
        #expect(MemoryLayout<DueItem>.stride == 28)
        let entry = PendingEntry(segment: 1, offset: 2, domain: 3, attempts: 70_000, nextAttempt: -5_000_000_000_123, stateSegment: 4, claimed: true)
        #expect(entry.nextAttempt == -5_000_000_000_123)
        #expect(entry.attempts == 65_535)
        #expect(DueItem(time: 1_800_000_000_123, key: RecipientKey(message: MessageID(high: 1, low: 2), index: 3)).time == 1_800_000_000_123)
        let id = MessageID(high: 0x0123_4567_89ab, low: 0xfedc_ba98_7654_3210)
        #expect(MessageID(id.description) == id)
        #expect(id.description == "0123456789abfedcba9876543210")
    }
}

@Suite("Spool limits")
struct SpoolLimitTests {
    /// A message whose record could not be read back (recovery takes a frame over 1 GiB for
    /// damage) is refused with a typed error before anything is written.
    @Test func aMessageTooLargeToReadBackIsRefused() {
        #expect(Spool.sizeRefusal(Spool.maximumMessageSize) == nil)
        let refusal = Spool.sizeRefusal(Spool.maximumMessageSize + 1)
        guard case .invalid(let why)? = refusal?.reason else { Issue.record("no refusal"); return }
        #expect(why.contains("larger than the spool stores"))
        #expect(Spool.maximumMessageSize + (64 << 10) == maximumRecordBody)
    }
}

