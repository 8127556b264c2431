// EngineExpiryTests.swift - a message's own expiry time (MessageMetadata.expires): past it,
// its recipients are not sent but expire like those past max_age (spool outcome, log
// record with the address, counters, a bounce notice to the sender)

import CarrierTesting
import Delivery
import Foundation
import Scheduler
import Sink
import Spool
import Testing

@Suite("Engine: message expiry", .serialized)
struct EngineExpiryTests {
    /// A message enqueued already past its expiry time reaches no one: both recipients are
    /// logged `expired` (4.4.7) by address, and the sender gets one notice naming them. A
    /// message to the same domain without an expiry is delivered as usual.
    @Test func aMessagePastItsExpiryIsNotSentAndReturnedToTheSender() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        try FileManager.default.createDirectory(atPath: folder.file("maildir"), withIntermediateDirectories: true)
        let sink = try startRecordingSink(record: folder.file("record.jsonl")) { $0.maildirPath = folder.file("maildir") }
        let spool = try testSpool(folder.path)
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        /* The fresh message first: the first recipient of a domain whose route is known at
           once goes in a transaction of its own, and the stale message's two should share one. */
        let fresh = try spool.enqueue(NewMessage(sender: "app@sender.test", body: Array("Subject: receipt\r\n\r\nthanks\r\n".utf8),
                                                 metadata: MessageMetadata(priority: .transactional, expires: now + 600_000),
                                                 recipients: [NewRecipient("ann@dest.test")]))
        let stale = try spool.enqueue(NewMessage(sender: "app@sender.test",
                                                 body: Array("Message-ID: <code@sender.test>\r\nSubject: your code\r\n\r\n123456\r\n".utf8),
                                                 metadata: MessageMetadata(priority: .transactional, expires: now - 1_000),
                                                 recipients: [NewRecipient("ann@dest.test"), NewRecipient("bob@dest.test")]))
        let log = folder.file("delivery.log")
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(
            routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])], log: log))
        let status = waitFor(engine) { $0.byDomain["dest.test"]?.expired == 2 && $0.byDomain["sender.test"]?.delivered == 1 }
        engine.stop()
        sink.stop()
        #expect(status.byDomain["dest.test"]?.expired == 2)
        #expect(status.byDomain["dest.test"]?.delivered == 1)
        #expect(status.byDomain["sender.test"]?.delivered == 1, "the notice")

        /* The sink got the fresh message and the notice, nothing of the stale one. */
        let received = try readSinkRecord(folder.file("record.jsonl"))
        #expect(received.count == 2)
        #expect(!received.contains { $0.carrierID == stale.description }, "the expired message was sent")
        #expect(received.contains { $0.carrierID == fresh.description && $0.recipients == ["ann@dest.test"] })
        #expect(received.contains { $0.recipients == ["app@sender.test"] })

        /* The log: one `expired` record per recipient, by address, with 4.4.7 and why. */
        let records = try logRecords(log).filter { ($0["message_id"] as? String) == stale.description }
        #expect(records.map { $0["event"] as? String } == ["expired", "expired"])
        #expect(Set(records.compactMap { $0["recipient"] as? String }) == ["ann@dest.test", "bob@dest.test"])
        #expect(records.allSatisfy { ($0["enhanced_code"] as? String) == "4.4.7" })
        #expect(records.allSatisfy { ($0["text"] as? String)?.contains("expiry time") == true }, "\(records)")

        /* The notice: one report, both recipients, status 4.4.7. */
        let stored = try FileManager.default.subpathsOfDirectory(atPath: folder.file("maildir")).filter { $0.hasPrefix("new/") }
        let bodies = try stored.map { try String(contentsOfFile: folder.file("maildir/" + $0), encoding: .utf8) }
        let report = try #require(bodies.first { $0.contains("multipart/report") }, "the notice is stored")
        #expect(report.contains("Final-Recipient: rfc822; ann@dest.test") && report.contains("Final-Recipient: rfc822; bob@dest.test"))
        #expect(report.contains("Status: 4.4.7"))
        #expect(report.contains("<code@sender.test>"), "the notice is about the expired message")
        #expect(spool.shards.reduce(0) { $0 + $1.pendingCount } == 0)
        spool.close()
    }

    /// A message refused with 451 is retried no later than its expiry time, even when the
    /// retry interval is a minute, and then expires instead of being tried again; the
    /// sender gets a notice within the test's seconds, not after the next retry.
    @Test func aDeferredMessageIsRetriedAtItsExpiryAndThenExpires() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.file("record.jsonl")) { configuration in
            configuration.domainRules = [SinkDomainRule(domain: "refusing.test", action: .refuse(code: 451, rate: 1))]
        }
        let spool = try testSpool(folder.path)
        let expires = Int64(Date().timeIntervalSince1970 * 1_000) + 400
        let id = try spool.enqueue(NewMessage(sender: "app@sender.test", body: Array("Subject: code\r\n\r\n123456\r\n".utf8),
                                              metadata: MessageMetadata(priority: .transactional, expires: expires),
                                              recipients: [NewRecipient("someone@refusing.test")]))
        let log = folder.file("delivery.log")
        var configuration = engineConfiguration(routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])], log: log)
        configuration.scheduler = SchedulerConfiguration(retry: RetryPolicy(retryInterval: 60_000, maxRetryInterval: 60_000, jitter: 0))
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)
        let status = waitFor(engine) { $0.byDomain["refusing.test"]?.expired == 1 && $0.byDomain["sender.test"]?.delivered == 1 }
        engine.stop()
        sink.stop()
        #expect(status.byDomain["refusing.test"]?.deferred == 1)
        #expect(status.byDomain["refusing.test"]?.expired == 1)
        #expect(status.byDomain["sender.test"]?.delivered == 1, "the notice")

        let steps = try logRecords(log).filter { ($0["message_id"] as? String) == id.description }
        #expect(steps.prefix(3).map { $0["event"] as? String } == ["deferred", "expired"])
        #expect(steps.allSatisfy { ($0["recipient"] as? String) == "someone@refusing.test" })
        #expect(steps.first?["next_attempt"] as? Int == Int(expires), "the retry is due at the expiry time, not a minute later")
        #expect((steps.last?["time"] as? Int ?? 0) >= Int(expires), "not expired early")
        #expect(try readSinkRecord(folder.file("record.jsonl")).map(\.recipients) == [["app@sender.test"]])
        #expect(spool.shards.reduce(0) { $0 + $1.pendingCount } == 0)
        spool.close()
    }

    /// A message waiting behind a domain suspension expires when the suspension ends and it
    /// is handed out (the check is made as a transaction starts), and is not sent then.
    @Test func aMessageHeldBySuspensionExpiresWhenReleased() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.file("record.jsonl"))
        let spool = try testSpool(folder.path)
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        for shard in spool.shards { try shard.suspend(Suspension(scope: .domain, name: "held.test", until: now + 1_000)) }
        let id = try spool.enqueue(NewMessage(sender: "app@sender.test", body: Array("Subject: code\r\n\r\n123456\r\n".utf8),
                                              metadata: MessageMetadata(priority: .transactional, expires: now + 200),
                                              recipients: [NewRecipient("someone@held.test")]))
        let log = folder.file("delivery.log")
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(
            routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])], log: log))
        let status = waitFor(engine) { $0.byDomain["held.test"]?.expired == 1 && $0.byDomain["sender.test"]?.delivered == 1 }
        engine.stop()
        sink.stop()
        #expect(status.byDomain["held.test"]?.expired == 1)
        #expect(status.byDomain["held.test"]?.delivered ?? 0 == 0)
        let steps = try logRecords(log).filter { ($0["message_id"] as? String) == id.description }
        #expect(steps.map { $0["event"] as? String } == ["expired"])
        #expect(steps.first?["recipient"] as? String == "someone@held.test")
        #expect((steps.first?["time"] as? Int ?? 0) >= Int(now + 1_000), "handed out when the suspension ended")
        #expect(try readSinkRecord(folder.file("record.jsonl")).map(\.recipients) == [["app@sender.test"]], "only the notice")
        spool.close()
    }

    /// An operator bounce of 2,500 recipients of one transactional message: each is logged
    /// `bounced` with its own address (read from the spool in slices of 1,024, three here),
    /// and the sender gets one notice naming all of them, not one per slice.
    @Test func aLargeOperatorBounceIsLoggedByAddressWithOneNotice() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        try FileManager.default.createDirectory(atPath: folder.file("maildir"), withIntermediateDirectories: true)
        let sink = try startRecordingSink(record: folder.file("record.jsonl")) { $0.maildirPath = folder.file("maildir") }
        let spool = try testSpool(folder.path)
        let addresses = (0..<2_500).map { "r\($0)@doomed.test" }
        let id = try spool.enqueue(NewMessage(sender: "app@sender.test", body: Array("Subject: alert\r\n\r\nhello\r\n".utf8),
                                              metadata: MessageMetadata(priority: .transactional),
                                              recipients: addresses.map { NewRecipient($0) }))
        for shard in spool.shards { try shard.suspend(Suspension(scope: .domain, name: "doomed.test", until: 0)) }
        let log = folder.file("delivery.log")
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(
            routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])], log: log))
        let bounced = DispatchSemaphore(value: 0)
        engine.administer(.bounce(.domain, "doomed.test", reason: "list closed")) { _ in bounced.signal() }
        bounced.wait()
        let status = waitFor(engine) { $0.byDomain["doomed.test"]?.bounced == 2_500 && $0.byDomain["sender.test"]?.delivered == 1 }
        engine.stop()
        sink.stop()
        spool.close()
        #expect(status.byDomain["doomed.test"]?.bounced == 2_500)
        #expect(status.byDomain["sender.test"]?.delivered == 1, "one notice")

        let records = try logRecords(log).filter { ($0["message_id"] as? String) == id.description }
        #expect(records.count == 2_500)
        #expect(records.allSatisfy { ($0["event"] as? String) == "bounced" })
        /* Every address once: a slice given another slice's addresses would repeat some. */
        #expect(Set(records.compactMap { $0["recipient"] as? String }) == Set(addresses))

        let received = try readSinkRecord(folder.file("record.jsonl"))
        #expect(received.count == 1 && received.first?.recipients == ["app@sender.test"], "\(received.map(\.recipients))")
        let stored = try FileManager.default.subpathsOfDirectory(atPath: folder.file("maildir")).filter { $0.hasPrefix("new/") }
        let report = try stored.first.map { try String(contentsOfFile: folder.file("maildir/" + $0), encoding: .utf8) } ?? ""
        #expect(report.components(separatedBy: "Final-Recipient: rfc822; r").count - 1 == 2_500, "the notice names every recipient")
    }

    /// waitFor - the engine's status once `done` holds, or after 20 s.
    private func waitFor(_ engine: DeliveryEngine, _ done: (ShardStatus) -> Bool) -> ShardStatus {
        let deadline = Date().addingTimeInterval(20)
        var status = engine.status()
        while Date() < deadline && !done(status) {
            usleep(20_000)
            status = engine.status()
        }
        return status
    }

    /// logRecords - the delivery log's lines as JSON objects.
    private func logRecords(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }
}
