// EngineCampaignWeightTests.swift - a campaign's weight from the shaping configuration
// gives it that many transactions per turn among a domain's bulk campaigns

import CarrierTesting
import Delivery
import Foundation
import Scheduler
import Spool
import Testing

@Suite("Engine: campaign weights", .serialized)
struct EngineCampaignWeightTests {
    /// Two bulk campaigns of 200 personalised recipients each wait for one domain behind one
    /// connection. With `big` weighted 3, it takes three of every four transactions while
    /// both have mail (equal shares without the weight); once it is done, `small` has the
    /// connection alone.
    @Test func aWeightedCampaignTakesItsShareOfEachTurn() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.file("record.jsonl"))
        let spool = try testSpool(folder.path, shards: 1)
        for name in ["big", "small"] {
            let writer = spool.campaign(sender: "news@sender.test", body: Array("Subject: {{n}}\r\n\r\nHi\r\n".utf8),
                                        metadata: MessageMetadata(campaign: name, priority: .bulk))
            for n in 0..<200 { try writer.add(NewRecipient("\(name)\(n)@w.test", variables: [("n", String(n))])) }
            _ = try writer.finish()
        }
        let route = Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])
        var configuration = engineConfiguration(routes: [route])
        configuration.scheduler = SchedulerConfiguration(shaping: Shaping(
            sites: [route.siteName: Limits(maxConnections: 1, initialConnections: 1)], campaignWeights: ["big": 3]))
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)
        let status = drain(engine)
        engine.stop()
        sink.stop()
        #expect(status.byDomain["w.test"]?.delivered == 400)

        let order = try readSinkRecord(folder.file("record.jsonl")).flatMap(\.recipients).map { $0.hasPrefix("big") }
        #expect(order.count == 400)
        let first = order.prefix(200)
        let big = first.filter { $0 }.count
        /* 150 of the first 200 at 3:1; a turn or two off at the start is allowed. */
        #expect(big >= 140 && big <= 160, "big took \(big) of the first 200 transactions")
        spool.close()
    }
}
