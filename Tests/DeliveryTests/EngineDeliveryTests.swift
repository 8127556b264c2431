// EngineDeliveryTests.swift - the engine delivers a spool's recipients to a sink, exactly once

import CarrierTesting
import Delivery
import Foundation
import Sink
import Spool
import Testing

@Suite("Engine delivery", .serialized)
struct EngineDeliveryTests {
    /// Every recipient of a campaign over many domains reaches the sink exactly once, and the
    /// spool ends with nothing pending.
    @Test func campaignIsDeliveredExactlyOnce() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl")
        let spool = try testSpool(folder.path)
        let id = try enqueueCampaign(spool, count: 5_000, domains: 100)
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(
            routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])]))
        let status = drain(engine)
        engine.stop()
        sink.stop()
        #expect(DeliveryEngine.isDrained(status))
        let delivered = status.byDomain.values.reduce(0) { $0 + $1.delivered }
        #expect(delivered == 5_000)
        let records = try readSinkRecord(folder.path + "/record.jsonl")
        var seen: [String: Int] = [:]
        for record in records {
            #expect(record.carrierID == id.description)
            for recipient in record.recipients { seen[recipient, default: 0] += 1 }
        }
        #expect(seen.count == 5_000)
        #expect(seen.values.allSatisfy { $0 == 1 })
        #expect(spool.shards.reduce(0) { $0 + $1.pendingCount } == 0)
        spool.close()
    }

    /// Recipients of one message at one domain travel in one transaction, the first of the
    /// domain included: a static route answers at once, and the domain must not start a
    /// transaction before the rest of the message's recipients are queued.
    @Test func recipientsOfOneDomainShareATransactionFromTheFirst() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.path + "/record.jsonl")
        let spool = try testSpool(folder.path, shards: 1)
        _ = try spool.enqueue(NewMessage(sender: "news@sender.test", body: Array("Subject: x\r\n\r\nx\r\n".utf8),
                                         metadata: MessageMetadata(priority: .bulk),
                                         recipients: ["a@together.test", "b@together.test", "c@together.test"].map { NewRecipient($0) }))
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(
            routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])]))
        let status = drain(engine)
        engine.stop()
        sink.stop()
        #expect(status.byDomain["together.test"]?.delivered == 3)
        let records = try readSinkRecord(folder.path + "/record.jsonl")
        #expect(records.map { $0.recipients.sorted() } == [["a@together.test", "b@together.test", "c@together.test"]])
        spool.close()
    }
}
