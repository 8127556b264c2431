// EnginePeerTests.swift - the engine against real receivers: aiosmtpd (STARTTLS and AUTH
// required) and Postfix's smtpd (a private instance delivering into a Maildir)
//
// Both store what they receive, so the test compares octets: dot-stuffing undone by the
// receiver must give back lines that start with a dot, and 8-bit UTF-8 must arrive
// unchanged. A test whose peer is missing is skipped with the reason.

import CarrierTesting
import Delivery
import EventCore
import Foundation
import SMTP
import Spool
import Testing

private let python = which("python3")
private let childEnvironment = ["PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")", "HOME=/tmp"]
private let aiosmtpdAvailable: Bool = {
    guard let python, let process = try? ChildProcess(python, ["-c", "import aiosmtpd"], environment: childEnvironment) else { return false }
    return process.wait(seconds: 20) == 0
}()
private let postfixScript = String(#filePath[..<#filePath.lastIndex(of: "/")!]) + "/../../Benchmarks/scripts/postfix-instance.sh"
private let postfixAvailable = executablePath(["/usr/sbin/postfix"]) != nil && getuid() == 0
    && FileManager.default.isExecutableFile(atPath: postfixScript)

/// The body every peer test sends: dot lines, a lone dot, 8-bit UTF-8, a long line.
let trickyBody = """
Subject: peer test for {{name}}
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello {{name}},
.a line that starts with a dot
..two dots
.
Grüße aus Köln — ünïcödé ✓
\(String(repeating: "x", count: 900))
end
""".split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n") + "\r\n"

/// expectedBody - the tricky body as rendered for `name`, from its blank line on.
func expectedBody(_ name: String) -> [UInt8] {
    let rendered = trickyBody.replacingOccurrences(of: "{{name}}", with: name)
    let start = rendered.range(of: "\r\n\r\n")!.lowerBound
    return Array(rendered[start...].utf8)
}

/// enqueueTricky - the tricky message to `recipients` at peer.test, personalised by name.
func enqueueTricky(_ spool: Spool, names: [String]) throws {
    let writer = spool.campaign(sender: "sender@origin.test", body: Array(trickyBody.utf8), metadata: MessageMetadata(campaign: "peers"))
    for name in names { try writer.add(NewRecipient("\(name)@peer.test", variables: [("name", name)])) }
    _ = try writer.finish()
}

@Suite("Engine against real receivers", .serialized)
struct EnginePeerTests {
    @Test("aiosmtpd with STARTTLS and AUTH stores every message intact",
          .enabled(if: aiosmtpdAvailable, "python3 with aiosmtpd is not installed"))
    func aiosmtpdStoresMessagesIntact() throws {
        let folder = TemporaryFolder("aiosmtpd")
        defer { folder.remove() }
        let identity = try TLSCertificate.makeSelfSigned(commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        try identity.write(certificateTo: folder.path + "/cert.pem", privateKeyTo: folder.path + "/key.pem")
        try FileManager.default.createDirectory(atPath: folder.path + "/mail", withIntermediateDirectories: true)
        let port = try freeLoopbackPort()
        let script = String(#filePath[..<#filePath.lastIndex(of: "/")!]) + "/Peers/aiosmtpd_store.py"
        let server = try ChildProcess(python!, [script, String(port), folder.path + "/cert.pem", folder.path + "/key.pem", folder.path + "/mail"],
                                      outputPath: folder.path + "/server.log", environment: childEnvironment)
        defer { server.terminate() }
        try #require(waitForListener(port: port, seconds: 20), "aiosmtpd did not listen")

        let spool = try testSpool(folder.path)
        let names = ["ana", "bo", "cy"]
        try enqueueTricky(spool, names: names)
        var route = Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: port)])
        route.tls = .required
        route.credentials = SMTPCredentials(username: "alice", secret: .password("s3cret"))
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(routes: [route]))
        let status = drain(engine, seconds: 30)
        engine.stop()
        spool.close()
        #expect(status.byDomain["peer.test"]?.delivered == 3)

        var bodies: [String: [UInt8]] = [:]
        for n in 1...3 {
            let recipient = try String(contentsOfFile: folder.path + "/mail/\(n).rcpt", encoding: .utf8)
            let content = [UInt8](try Data(contentsOf: URL(fileURLWithPath: folder.path + "/mail/\(n).eml")))
            bodies[recipient] = content
        }
        for name in names {
            let content = try #require(bodies["\(name)@peer.test"], "nothing stored for \(name)")
            #expect(content.ends(with: expectedBody(name)), "the body for \(name) changed on the way")
            let text = String(decoding: content, as: UTF8.self)
            #expect(text.contains("X-Carrier-Id: "))
            #expect(text.contains("Message-ID: <"))
        }
    }

    @Test("Postfix smtpd receives messages intact into a Maildir",
          .enabled(if: postfixAvailable, "Postfix (run as root) or Benchmarks/scripts/postfix-instance.sh is missing"))
    func postfixReceivesMessagesIntact() throws {
        let folder = TemporaryFolder("postfix")
        defer { folder.remove() }
        /* Postfix's delivery agent runs as nobody and must reach the Maildir under it. */
        chmod(folder.path, 0o755)
        let port = try freeLoopbackPort()
        let instance = folder.path + "/postfix"
        let start = try ChildProcess("/bin/bash", [postfixScript, "start", instance, String(port), "maildir"], outputPath: folder.path + "/postfix.out")
        #expect(start.wait(seconds: 60) == 0, "postfix-instance.sh start failed (see its output)")
        defer { _ = try? ChildProcess("/bin/bash", [postfixScript, "stop", instance]).wait(seconds: 30) }
        try #require(waitForListener(port: port, seconds: 20), "Postfix's smtpd did not listen")

        let spool = try testSpool(folder.path)
        let names = ["dee", "eve"]
        try enqueueTricky(spool, names: names)
        let engine = try DeliveryEngine(spool: spool, configuration: engineConfiguration(routes: [Route(domain: "*", hops: [NextHop(host: "127.0.0.1", port: port)])]))
        let status = drain(engine, seconds: 30)
        engine.stop()
        spool.close()
        #expect(status.byDomain["peer.test"]?.delivered == 2)

        /* Postfix delivers in the background: wait for both files in the Maildir's new/. */
        let maildir = instance + "/mail/inbox/new"
        var files: [String] = []
        for _ in 0..<300 {
            files = (try? FileManager.default.contentsOfDirectory(atPath: maildir)) ?? []
            if files.count >= 2 { break }
            usleep(100_000)
        }
        #expect(files.count == 2)
        var found: Set<String> = []
        for file in files {
            /* The Maildir holds LF line ends (Postfix's internal form); compare in that form. */
            let content = [UInt8](try Data(contentsOf: URL(fileURLWithPath: maildir + "/" + file)))
            for name in names where content.ends(with: expectedBody(name).filter { $0 != 13 }) { found.insert(name) }
        }
        #expect(found == Set(names), "bodies that arrived intact: \(found.sorted())")
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
