// EngineTLSFallbackTests.swift - opportunistic TLS to a server whose STARTTLS fails:
// the same hop again in plaintext, as Postfix's `may` level does

import CarrierTesting
import Delivery
import Foundation
import Scheduler
import Spool
import Testing

private let python = which("python3")

@Suite("Engine: opportunistic TLS fallback", .serialized)
struct EngineTLSFallbackTests {
    /// A receiver that offers STARTTLS and then breaks the handshake (Peers/broken_starttls.py)
    /// gets its mail in plaintext at once, and the connections after that do not try TLS
    /// again (it was a connection failure: the mail waited for the retry, and every retry
    /// failed the same way until the recipients expired).
    @Test(.enabled(if: python != nil, "python3 is not installed"))
    func aBrokenSTARTTLSIsRetriedInPlaintext() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let port = try freeLoopbackPort()
        let script = String(#filePath[..<#filePath.lastIndex(of: "/")!]) + "/Peers/broken_starttls.py"
        let record = folder.file("record.jsonl")
        let peer = try ChildProcess(python!, [script, String(port), record], outputPath: folder.file("peer.log"))
        defer { peer.terminate() }
        try #require(waitForListener(port: port, seconds: 20), "the peer did not listen")
        let spool = try testSpool(folder.path, shards: 1)
        for n in 0..<2 {
            _ = try spool.enqueue(NewMessage(sender: "a@sender.test", body: Array("Subject: \(n)\r\n\r\nhello\r\n".utf8),
                                             recipients: [NewRecipient("r\(n)@dest.test")]))
        }
        var configuration = engineConfiguration(routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: port)])])
        configuration.scheduler = SchedulerConfiguration(shaping: Shaping(defaults: Limits(maxConnections: 1)))
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)
        _ = drain(engine, seconds: 20)
        /* A message after the fallback: plaintext from the start, no STARTTLS tried. */
        _ = try spool.enqueue(NewMessage(sender: "a@sender.test", body: Array("Subject: 2\r\n\r\nhello\r\n".utf8),
                                         recipients: [NewRecipient("r2@dest.test")]))
        var status = engine.status()
        for _ in 0..<400 where status.byDomain["dest.test"]?.delivered != 3 {
            usleep(25_000)
            status = engine.status()
        }
        engine.stop()
        spool.close()
        #expect(status.byDomain["dest.test"]?.delivered == 3, "\(status.byDomain)")
        let lines = ((try? String(contentsOfFile: record, encoding: .utf8)) ?? "").split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines.count == 3 && lines[2].hasSuffix(String(lines[1].suffix(3))), "no STARTTLS after the fallback: \(lines)")
        /* At most one failed handshake per transaction (the one waiting behind the first may
           have opened a TLS connection of its own before the first failure was known). */
        #expect(lines.prefix(2).allSatisfy { $0.contains("\"starttls_tried\": 1") || $0.contains("\"starttls_tried\": 2") }, "\(lines)")
    }
}
