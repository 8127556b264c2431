// EnginePipeliningTests.swift - a busy connection carries the next transaction in the same
// write as the previous message's final dot (RFC 2920 section 3.1)
//
// The receiver (Peers/pipeline_probe.py) holds each final reply until the next
// transaction's DATA has arrived, or a second has passed: a client that waits for the
// 250 before starting the next transaction costs a second per message and shows in the
// probe's record.

import CarrierTesting
import Delivery
import Foundation
import Scheduler
import Spool
import Testing

private let python = which("python3")

@Suite("Engine pipelining across transactions", .serialized)
struct EnginePipeliningTests {
    @Test("the next transaction follows the final dot without waiting for its reply",
          .enabled(if: python != nil, "python3 is not installed"))
    func nextTransactionFollowsTheDot() throws {
        let folder = TemporaryFolder("pipelining")
        defer { folder.remove() }
        let count = 8
        let (status, record) = try runAgainstProbe(folder, recipients: count)
        #expect(status.byDomain["d0.test"]?.delivered == count)

        let lines = try String(contentsOfFile: record, encoding: .utf8).split(separator: "\n")
        let entries = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let recipients = entries.flatMap { $0["rcpt"] as? [String] ?? [] }
        #expect(recipients.sorted() == (0..<count).map { "user\($0)@d0.test" }.sorted(), "each recipient once")
        /* Every message but the last has a successor; the first may go out before the
           second is read from the spool. */
        let followed = entries.filter { $0["followed"] as? Bool == true }.count
        #expect(followed >= count - 2, "only \(followed) of \(count) messages had the next transaction pipelined behind them")
    }
}

extension EnginePipeliningTests {
    /// The probe answers the first DATA with 421 and closes while a second message waits on
    /// the connection behind the first: the first is deferred, the second never reached the
    /// server and goes out at once on a new connection instead of waiting for a retry.
    @Test("a message waiting behind a failed transaction goes to another connection",
          .enabled(if: python != nil, "python3 is not installed"))
    func waitingMessageIsNotDeferredWithTheFailedOne() throws {
        let folder = TemporaryFolder("pipelining-failure")
        defer { folder.remove() }
        let (status, record) = try runAgainstProbe(folder, recipients: 2, mode: "fail-first-data")
        #expect(status.byDomain["d0.test"]?.delivered == 1)
        #expect(status.byDomain["d0.test"]?.deferred == 1)
        let text = try String(contentsOfFile: record, encoding: .utf8)
        #expect(text.split(separator: "\n").count == 1, "the probe stored: \(text)")
    }
}

/// runAgainstProbe - `recipients` personalised recipients of one domain (each its own
/// transaction) through one shard and one connection to Peers/pipeline_probe.py, drained;
/// the engine's last status and the probe's record file.
private func runAgainstProbe(_ folder: TemporaryFolder, recipients: Int, mode: String? = nil) throws -> (ShardStatus, String) {
    let port = try freeLoopbackPort()
    let script = String(#filePath[..<#filePath.lastIndex(of: "/")!]) + "/Peers/pipeline_probe.py"
    let record = folder.path + "/probe.jsonl"
    let probe = try ChildProcess(python!, [script, String(port), record] + (mode.map { [$0] } ?? []), outputPath: folder.path + "/probe.log")
    defer { probe.terminate() }
    try #require(waitForListener(port: port, seconds: 20), "the probe did not listen")
    let spool = try testSpool(folder.path, shards: 1)
    defer { spool.close() }
    _ = try enqueueCampaign(spool, count: recipients, domains: 1, body: "Subject: {{n}}\r\n\r\nHi {{n}}\r\n") { [("n", String($0))] }
    var configuration = engineConfiguration(routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: port)])])
    configuration.scheduler = SchedulerConfiguration(shaping: Shaping(defaults: Limits(maxConnections: 1)))
    let engine = try DeliveryEngine(spool: spool, configuration: configuration)
    let status = drain(engine, seconds: 30)
    engine.stop()
    return (status, record)
}

