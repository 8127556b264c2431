// SpoolMultiShardFeedTests.swift - a message stored in several shards reaches the delivery
// engine's feed only once every part is durable, and never when a part failed

import CarrierTesting
import Glibc
@testable import Spool
import Synchronization
import Testing

@Suite("Spool multi-shard feed")
struct SpoolMultiShardFeedTests {
    /// Collects what one shard's subscriber was handed.
    final class Fed: Sendable {
        private let keys = Mutex<[RecipientKey]>([])
        func add(_ recipients: [PendingRecipient]) { keys.withLock { $0.append(contentsOf: recipients.map(\.key)) } }
        var value: [RecipientKey] { keys.withLock { $0 } }
    }

    /// Two addresses whose domains live in different shards of `spool`.
    static func addressesInBothShards(_ spool: Spool) -> (Int, String, Int, String) {
        let first = "a@d0.test"
        let shard = shardOf(first, spool)
        for n in 1..<100 where shardOf("b@d\(n).test", spool) != shard {
            return (shard, first, shardOf("b@d\(n).test", spool), "b@d\(n).test")
        }
        fatalError("100 domains in one shard")
    }

    @Test("A message in two shards is fed once, every recipient, by the time its enqueue completes")
    func bothPartsStoredFeedsEveryRecipientOnce() throws {
        let folder = TemporaryFolder("multifeed")
        defer { folder.remove() }
        let spool = try Spool(testConfiguration(folder.path))
        defer { spool.close() }
        let (one, first, two, second) = Self.addressesInBothShards(spool)
        let fed = [Fed(), Fed()]
        for index in [one, two] { _ = spool.shards[index].subscribe { fed[index].add($0) } }
        defer { for shard in spool.shards { shard.unsubscribe() } }

        let id = try spool.enqueue(testMessage([first, second, "c@" + first.split(separator: "@")[1]]))
        #expect(fed[one].value.sorted { $0.index < $1.index } == [RecipientKey(message: id, index: 0), RecipientKey(message: id, index: 2)])
        #expect(fed[two].value == [RecipientKey(message: id, index: 1)])

        /* A message in one shard is fed as before. */
        let single = try spool.enqueue(testMessage([first]))
        #expect(fed[one].value.filter { $0.message == single } == [RecipientKey(message: single, index: 0)])
        #expect(fed[two].value.count == 1)
    }

    @Test("A message whose part fails in one shard is never fed from the other, whose part is cancelled")
    func aFailedPartKeepsTheOtherFromTheFeed() throws {
        let folder = TemporaryFolder("multifeed-fail")
        defer { folder.remove() }
        let spool = try Spool(testConfiguration(folder.path))
        defer { spool.close() }
        let (one, first, two, second) = Self.addressesInBothShards(spool)
        let fed = Fed()
        _ = spool.shards[one].subscribe { fed.add($0) }
        defer { spool.shards[one].unsubscribe() }

        /* The other shard cannot store anything: its part fails, this shard's part is durable. */
        spool.shards[two].close()
        do {
            let id = try spool.enqueue(testMessage([first, second]))
            Issue.record("an enqueue with a closed shard was acknowledged as \(id)")
        } catch {
            #expect(error.reason == .closed, "\(error)")
        }
        /* The stored part is cancelled by an outcome written after the failure. */
        var waited = 0
        while !spool.shards[one].pendingRecipients().isEmpty && waited < 5_000 {
            usleep(10_000)
            waited += 10
        }
        #expect(spool.shards[one].pendingRecipients().isEmpty, "the stored part is still pending")
        #expect(fed.value.isEmpty, "the stored part was handed out for delivery: \(fed.value)")

        /* The shard still feeds what comes next. */
        let next = try spool.enqueue(testMessage([first]))
        #expect(fed.value == [RecipientKey(message: next, index: 0)])
    }
}
