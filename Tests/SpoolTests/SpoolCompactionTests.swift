// SpoolCompactionTests.swift - compaction moving a deferred recipient forward: its attempt
// state survives a reopen, and a recipient claimed by `due` stays claimed

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import Testing
@testable import Spool

/// A one-shard spool where one deferred recipient sits in segment 1 among delivered
/// fillers, its deferred state in segment 1 too (`deferFirst`) or in a later one: the
/// shape compaction rewrites.
private struct DeferredFixture {
    let folder = TemporaryFolder("compact")
    let configuration: SpoolConfiguration
    let spool: Spool
    let key: RecipientKey
    let nextAttempt: Int64 = 1_234_567_890_123

    init(deferFirst: Bool) throws {
        configuration = testConfiguration(folder.path, shards: 1, segmentSize: 8 << 10)
        spool = try Spool(configuration)
        let shard = spool.shards[0]
        key = RecipientKey(message: try spool.enqueue(testMessage(["target@x.test"])), index: 0)
        if deferFirst { try shard.record(.deferred(nextAttempt: nextAttempt, reply: "451 later"), for: key) }
        var fillers: [RecipientKey] = []
        /* Enough fillers to seal segment 1 and most of segment 2. */
        while shard.withState({ $0.segments.keys.max() ?? 0 }) < 2 || fillers.count < 12 {
            let id = try spool.enqueue(testMessage(["filler\(fillers.count)@x.test"], body: String(repeating: "f", count: 900)))
            fillers.append(RecipientKey(message: id, index: 0))
        }
        if !deferFirst { try shard.record(.deferred(nextAttempt: nextAttempt, reply: "451 later"), for: key) }
        for filler in fillers { try shard.record(.delivered(reply: "250 ok"), for: filler) }
    }

    var entry: PendingRecipient? { spool.shards[0].pendingRecipients().first { $0.key == key } }
}

@Suite("Spool compaction")
struct SpoolCompactionTests {
    @Test("A deferred recipient moved forward by compaction keeps its attempts and next attempt across a reopen",
          arguments: [false, true])
    func deferredStateSurvivesCompaction(deferFirst: Bool) throws {
        let fixture = try DeferredFixture(deferFirst: deferFirst)
        defer { fixture.folder.remove() }
        let before = try #require(fixture.entry)
        /* Segment 1 unless the writer's own compaction after a rotation already moved it. */
        #expect(before.attempts == 1)
        fixture.spool.shards[0].compact()
        let moved = try #require(fixture.entry)
        try #require(moved.segment > 1, "compaction did not move the recipient out of segment 1: the test needs it to")
        #expect(moved.attempts == 1 && moved.nextAttempt == fixture.nextAttempt)
        fixture.spool.close()

        let reopened = try Spool(fixture.configuration)
        defer { reopened.close() }
        let after = try #require(reopened.shards[0].pendingRecipients().first { $0.key == fixture.key })
        #expect(after.attempts == 1)
        #expect(after.nextAttempt == fixture.nextAttempt)
        #expect(try reopened.shards[0].recipient(fixture.key).address == "target@x.test")
    }

    @Test("Compaction moving a claimed recipient's deferred state does not hand it out again",
          arguments: [false, true])
    func claimedStaysClaimed(deferFirst: Bool) throws {
        let fixture = try DeferredFixture(deferFirst: deferFirst)
        defer { fixture.folder.remove() }
        defer { fixture.spool.close() }
        let shard = fixture.spool.shards[0]
        let due = shard.due(now: fixture.nextAttempt, limit: 100)
        #expect(due.map(\.key) == [fixture.key])
        shard.compact()
        let moved = try #require(fixture.entry)
        try #require(moved.segment > 1, "compaction did not move the recipient out of segment 1: the test needs it to")
        #expect(shard.due(now: fixture.nextAttempt, limit: 100).isEmpty, "a recipient still claimed was handed out twice")
        /* Released, it is due again (once). */
        shard.release(fixture.key)
        #expect(shard.due(now: fixture.nextAttempt, limit: 100).map(\.key) == [fixture.key])
    }

    @Test("Dead segments come in rounds: a segment whose outcomes finalised another's recipients after it")
    func deadSegmentsComeInPinOrder() {
        var state = ShardState()
        /* 1's recipients were finalised by outcomes in 2, 2's by outcomes in 3; 5 is alone;
           6 is still live, and 7 (pinned by 6) must wait for it; 8 is being written. */
        state.segments[1] = SegmentInfo(bytes: 10)
        state.segments[2] = SegmentInfo(bytes: 10, pinnedBy: [1])
        state.segments[3] = SegmentInfo(bytes: 10, pinnedBy: [2])
        state.segments[5] = SegmentInfo(bytes: 10)
        state.segments[6] = SegmentInfo(bytes: 10, liveRefs: 1)
        state.segments[7] = SegmentInfo(bytes: 10, pinnedBy: [6])
        state.segments[8] = SegmentInfo(bytes: 10)
        #expect(state.deletable(current: 8) == [[1, 5], [2], [3]])
    }
}
