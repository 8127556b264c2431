// EngineDrainTests.swift - what `serve --drain` waits for: nothing sendable, in flight or
// being routed; mail an operator holds is waiting, not ready

import CarrierTesting
import Delivery
import Foundation
import Spool
import Testing

@Suite("Engine: drained")
struct EngineDrainTests {
    /// A suspended domain's recipient is counted waiting, and the engine is drained once
    /// the rest is delivered (it never was while any suspension held mail: every later
    /// `serve --drain` timed out).
    @Test func aSuspendedDomainDoesNotKeepTheEngineBusy() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.file("record.jsonl"))
        let spool = try testSpool(folder.path, shards: 1)
        for domain in ["held.test", "free.test"] {
            _ = try spool.enqueue(NewMessage(sender: "a@sender.test", body: Array("Subject: x\r\n\r\nx\r\n".utf8),
                                             recipients: [NewRecipient("someone@\(domain)")]))
        }
        try spool.shards[0].suspend(Suspension(scope: .domain, name: "held.test", until: 0))
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(
            routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: sink.addresses[0].port)])]))
        let deadline = Date().addingTimeInterval(10)
        var status = engine.status()
        while Date() < deadline && !(DeliveryEngine.isDrained(status) && status.byDomain["free.test"]?.delivered == 1) {
            usleep(20_000)
            status = engine.status()
        }
        engine.stop()
        sink.stop()
        spool.close()
        #expect(status.byDomain["free.test"]?.delivered == 1)
        #expect(DeliveryEngine.isDrained(status), "\(status.ready) ready, \(status.waiting) waiting")
        #expect(status.ready == 0 && status.waiting == 1, "the held recipient waits")
    }
}
