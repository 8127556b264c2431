// EngineBench - transactional latency while a bulk campaign drains through a rate-limited site
//
// One process: Carrier's sink on loopback (recording every message it accepts, with its
// arrival time), a spool (fsync), the delivery engine routing every domain to the sink as
// one site limited to --site-rate messages per second. A --bulk recipient personalised
// campaign is queued first and left draining; then transactional messages are enqueued
// at --tx-rate per second for --seconds, each timed from the moment its enqueue returned
// (durable: "accepted") to its arrival at the sink (the sink's record). Prints the
// percentiles of that latency and the bulk throughput meanwhile.
//
//   swift build -c release --product EngineBench --scratch-path .build-spoolbench
//   .build-spoolbench/release/EngineBench [--bulk 1000000] [--site-rate 2000] [--tx-rate 100] [--seconds 30]

import Delivery
import EventCore
import Foundation
import Scheduler
import Sink
import Spool

func argument(_ name: String, _ fallback: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count, let value = Int(arguments[index + 1]) else { return fallback }
    return value
}

let bulk = argument("--bulk", 1_000_000)
let siteRate = argument("--site-rate", 2_000)
let txRate = argument("--tx-rate", 100)
let seconds = argument("--seconds", 30)

let folder = FileManager.default.temporaryDirectory.appendingPathComponent("engine-bench-\(getpid())").path
try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: folder) }

var sinkConfiguration = SinkConfiguration()
sinkConfiguration.listen = [SocketAddress("127.0.0.1:0")!]
sinkConfiguration.threads = 1
sinkConfiguration.recordPath = folder + "/record.jsonl"
let sink = try SinkServer.start(sinkConfiguration)
let port = sink.addresses[0].port

let spool = try Spool(SpoolConfiguration(directory: folder + "/Queue", shards: 2))
let loadStart = Date()
let writer = spool.campaign(sender: "news@bulk.test", body: Array("Subject: news for {{n}}\r\n\r\nHello {{n}}, here is the news.\r\n".utf8),
                            metadata: MessageMetadata(campaign: "bulk", priority: .bulk))
for n in 0..<bulk { try writer.add(NewRecipient("reader\(n)@bulk\(n % 10).test", variables: [("n", String(n))])) }
_ = try writer.finish()
print("queued \(bulk) bulk recipients in \(String(format: "%.2f", Date().timeIntervalSince(loadStart))) s")

let route = Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: port)])
var configuration = EngineConfiguration()
configuration.routes = RouteTable([route])
configuration.dns = nil
configuration.hostname = "bench.test"
configuration.scheduler = SchedulerConfiguration(shaping: Shaping(sites: [route.siteName: Limits(messageRate: Rate(siteRate, per: 1), messageBurst: 20)]))
let engine = try DeliveryEngine(spool: spool, configuration: configuration)
sleep(2)

/* Transactional messages at txRate per second, each timed from its durable enqueue. */
var accepted: [String: Double] = [:]
let interval = 1.0 / Double(txRate)
let start = Date()
let bulkBefore = engine.status().byDomain.filter { $0.key.hasPrefix("bulk") }.values.reduce(0) { $0 + $1.delivered }
for i in 0..<(txRate * seconds) {
    let due = start.addingTimeInterval(Double(i) * interval)
    let wait = due.timeIntervalSinceNow
    if wait > 0 { usleep(UInt32(wait * 1e6)) }
    let id = try spool.enqueue(NewMessage(sender: "app@shop.test", body: Array("Subject: receipt \(i)\r\n\r\nThanks.\r\n".utf8),
                                          metadata: MessageMetadata(priority: .transactional),
                                          recipients: [NewRecipient("buyer\(i)@tx.test")]))
    accepted[id.description] = Date().timeIntervalSince1970 * 1000
}
let window = Date().timeIntervalSince(start)
sleep(2)
let bulkAfter = engine.status().byDomain.filter { $0.key.hasPrefix("bulk") }.values.reduce(0) { $0 + $1.delivered }
engine.stop()
sink.stop()
spool.close()

/* Arrival times from the sink's record, matched by X-Carrier-Id. */
let formatter = ISO8601DateFormatter()
formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
var latencies: [Double] = []
let text = try String(contentsOfFile: folder + "/record.jsonl", encoding: .utf8)
for line in text.split(separator: "\n") {
    guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
          let id = object["x_carrier_id"] as? String, let sent = accepted[id],
          let time = (object["time"] as? String).flatMap(formatter.date(from:)) else { continue }
    latencies.append(time.timeIntervalSince1970 * 1000 - sent)
}
latencies.sort()
let sorted = latencies
func percentile(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
print("transactional: \(accepted.count) enqueued at \(txRate)/s over \(String(format: "%.1f", window)) s, \(latencies.count) arrived")
print(String(format: "latency accepted -> sink (ms): p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f",
             percentile(0.5), percentile(0.9), percentile(0.99), percentile(0.999), latencies.last ?? .nan))
print("bulk meanwhile: \(bulkAfter - bulkBefore) delivered in \(String(format: "%.1f", window + 2)) s = \(String(format: "%.0f", Double(bulkAfter - bulkBefore) / (window + 2)))/s (site limit \(siteRate)/s)")
