// SpoolTestSupport.swift - temporary spool folders and message builders for the spool tests

#if canImport(Glibc)
import Glibc
#endif
import CarrierTesting
@testable import Spool

/// testConfiguration - a spool in `folder` with test-friendly defaults.
func testConfiguration(_ folder: String, shards: Int = 2, segmentSize: Int = 64 << 20,
                       durability: Durability = .none) -> SpoolConfiguration {
    SpoolConfiguration(directory: folder + "/Queue", shards: shards, segmentSize: segmentSize,
                       durability: durability, outcomeDurability: durability)
}

/// message - a small message to the given recipients.
func testMessage(_ recipients: [String], body: String = "Subject: test\r\n\r\nhello\r\n", campaign: String = "") -> NewMessage {
    NewMessage(sender: "sender@example.org", body: Array(body.utf8),
               metadata: MessageMetadata(campaign: campaign), recipients: recipients.map { NewRecipient($0) })
}

/// pendingKeys - every pending recipient key in the spool, sorted.
func pendingKeys(_ spool: Spool) -> [RecipientKey] {
    spool.shards.flatMap { $0.pendingRecipients().map(\.key) }.sorted()
}

/// shardOf - the shard index of an address's domain in `spool`.
func shardOf(_ address: String, _ spool: Spool) -> Int {
    shardIndex(domain: recipientDomain(address), shards: spool.shards.count)
}
