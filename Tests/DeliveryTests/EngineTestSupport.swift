// EngineTestSupport.swift - a spool, a sink with a record file and an engine between them

import CarrierTesting
import Delivery
import EventCore
import Foundation
import Scheduler
import Sink
import Spool

/// startRecordingSink - a sink on 127.0.0.1 (any port) writing one JSON line per message to `record`.
func startRecordingSink(record: String, _ configure: (inout SinkConfiguration) -> Void = { _ in }) throws -> SinkServer {
    var configuration = SinkConfiguration()
    configuration.listen = [SocketAddress("127.0.0.1:0")!]
    configuration.threads = 1
    configuration.hostname = "sink.test"
    configuration.recordPath = record
    configure(&configuration)
    return try SinkServer.start(configuration)
}

/// One accepted message as the sink recorded it.
struct SinkRecord {
    var time: String
    var recipients: [String]
    var carrierID: String?
    var messageID: String?
    var auth: String?
    var tls: Bool
}

/// readSinkRecord - the sink's record file, line by line.
func readSinkRecord(_ path: String) throws -> [SinkRecord] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return try text.split(separator: "\n").map { line in
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        return SinkRecord(time: object["time"] as? String ?? "", recipients: object["rcpt_to"] as? [String] ?? [],
                          carrierID: object["x_carrier_id"] as? String, messageID: object["message_id"] as? String,
                          auth: object["auth"] as? String, tls: object["tls"] as? Bool ?? false)
    }
}

/// testSpool - a spool in `folder` without fsync (these tests are about delivery).
func testSpool(_ folder: String, shards: Int = 2) throws -> Spool {
    try Spool(SpoolConfiguration(directory: folder + "/Queue", shards: shards, durability: .none, outcomeDurability: .none))
}

/// engineConfiguration - every domain routed to `sink`, no DNS, fast timeouts.
func engineConfiguration(routes: [Route], log: String? = nil) -> EngineConfiguration {
    var configuration = EngineConfiguration()
    configuration.routes = RouteTable(routes)
    configuration.dns = nil
    configuration.hostname = "carrier.test"
    configuration.timeouts = .uniform(5_000)
    configuration.connectTimeoutMilliseconds = 2_000
    configuration.logPath = log
    return configuration
}

/// drain - wait until the engine has nothing ready or in flight (or `seconds` pass); the last status.
@discardableResult
func drain(_ engine: DeliveryEngine, seconds: Double = 60) -> ShardStatus {
    let deadline = Date().addingTimeInterval(seconds)
    var status = engine.status()
    while !DeliveryEngine.isDrained(status) && Date() < deadline {
        usleep(20_000)
        status = engine.status()
    }
    return status
}

/// enqueueCampaign - one message to `count` recipients spread over `domains` domains.
func enqueueCampaign(_ spool: Spool, count: Int, domains: Int, body: String = "Subject: hello\r\n\r\nHi there.\r\n",
                     campaign: String = "spring", variables: ((Int) -> [(String, String)])? = nil) throws -> MessageID {
    let writer = spool.campaign(sender: "news@sender.test", body: Array(body.utf8),
                                metadata: MessageMetadata(campaign: campaign, priority: .bulk))
    for n in 0..<count {
        try writer.add(NewRecipient("user\(n)@d\(n % domains).test", variables: variables?(n) ?? []))
    }
    return try writer.finish().id
}
