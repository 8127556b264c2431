// SpoolFreshCacheTests.swift - what a subscribed shard keeps in memory of what it just committed

import CarrierTesting
import Spool
import Testing

@Suite("Spool fresh-message cache")
struct SpoolFreshCacheTests {
    @Test func aSubscribedShardKeepsSmallMessagesAndTheirRecipientsJustCommitted() throws {
        let folder = TemporaryFolder("fresh")
        defer { folder.remove() }
        let spool = try Spool(SpoolConfiguration(directory: folder.path + "/Queue", shards: 1, durability: .none))
        defer { spool.close() }
        let shard = spool.shards[0]

        /* Nobody delivers yet: nothing is kept. */
        let before = try spool.enqueue(NewMessage(sender: "a@origin.test", body: Array("Subject: 1\r\n\r\none\r\n".utf8),
                                                  recipients: [NewRecipient("x@dest.test")]))
        #expect(shard.cachedMessage(before) == nil)

        let seen = TestCounter()
        _ = shard.subscribe { seen.add($0.count) }
        defer { shard.unsubscribe() }
        let body = Array("Subject: 2\r\n\r\ntwo {{name}}\r\n".utf8)
        let id = try spool.enqueue(NewMessage(sender: "b@origin.test", body: body,
                                              metadata: MessageMetadata(campaign: "c", priority: .bulk, hints: Array("literal".utf8)),
                                              recipients: [NewRecipient("y@dest.test", variables: [("name", "Y")]), NewRecipient("z@dest.test")]))
        let cached = try #require(shard.cachedMessage(id))
        #expect(cached.body == body && cached.sender == "b@origin.test")
        #expect(cached.metadata == MessageMetadata(campaign: "c", priority: .bulk, hints: Array("literal".utf8)))
        #expect(cached.body == (try shard.message(id)).body, "the same as read back from disk")
        let keys = [RecipientKey(message: id, index: 0), RecipientKey(message: id, index: 1)]
        let recipients = try #require(shard.cachedRecipients(keys), "the recipients record is kept too")
        #expect(recipients == [NewRecipient("y@dest.test", variables: [("name", "Y")]), NewRecipient("z@dest.test")])
        #expect(seen.value == 2)

        /* A body over 1 MiB is not kept; it is read back when needed. */
        let large = try spool.enqueue(NewMessage(sender: "c@origin.test", body: [UInt8](repeating: 0x61, count: (1 << 20) + 1),
                                                 recipients: [NewRecipient("w@dest.test")]))
        #expect(shard.cachedMessage(large) == nil)
        #expect(try shard.message(large).body.count == (1 << 20) + 1)
    }
}
