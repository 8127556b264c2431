// InjectionProcessTests.swift - `carrier serve` as a process: the HTTP API through curl, a
// SIGKILL right after the acknowledgement, and 10,000 idle SMTP connections
//
// These run the real executable, so what is measured or killed is what users run.

import Carrier
import CarrierTesting
import Foundation
import EventCore
import Sink
import Spool
import Testing

let token = "test-token-0123456789abcdef"

/// A `carrier serve` child with an SMTP listener and the HTTP API on free loopback ports.
// Files another process is still appending to are read with Carrier's readTextFile
// (stdio): Foundation's String(contentsOfFile:) leaks its buffer when the file grows
// while it reads (AddressSanitizer found it in the polling loops).

struct ServeProcess {
    let process: ChildProcess
    let smtpPort: UInt16
    let httpPort: UInt16

    init(folder: TemporaryFolder, extra: [String], output: String = "serve.out") throws {
        let carrier = try #require(builtExecutable("carrier"), "the carrier executable is built next to the tests")
        smtpPort = try freeLoopbackPort()
        httpPort = try freeLoopbackPort()
        process = try ChildProcess(carrier, ["serve", "--spool", folder.path + "/Queue", "--no-dns", "--quiet",
                                             "--smtp-listen", "127.0.0.1:\(smtpPort)", "--http-listen", "127.0.0.1:\(httpPort)",
                                             "--http-token", token] + extra, outputPath: folder.file(output))
        try #require(waitForListener(port: smtpPort) && waitForListener(port: httpPort),
                     "serve listens: \((try? String(contentsOfFile: folder.file(output), encoding: .utf8)) ?? "")")
    }
}

/// startSink - a one-thread carrier sink on 127.0.0.1 (any port), set up by `configure`.
func startSink(_ configure: (inout SinkConfiguration) -> Void) throws -> SinkServer {
    var configuration = SinkConfiguration()
    configuration.listen = [EventCore.SocketAddress("127.0.0.1:0")!]
    configuration.threads = 1
    configure(&configuration)
    return try SinkServer.start(configuration)
}

/// curl - one request; returns (status, body).
func curl(_ arguments: [String], folder: TemporaryFolder) throws -> (Int, String) {
    let curl = try #require(which("curl"), "curl is installed (make test installs it)")
    let call = UUID().uuidString
    let body = folder.file("curl-body-" + call), status = folder.file("curl-status-" + call)
    let process = try ChildProcess(curl, ["-sS", "-o", body, "-w", "%{http_code}", "--max-time", "30"] + arguments,
                                   outputPath: status, environment: childEnvironment)
    #expect(process.wait(seconds: 40) == 0)
    let code = Int((try? String(contentsOfFile: status, encoding: .utf8)) ?? "") ?? 0
    return (code, (try? String(contentsOfFile: body, encoding: .utf8)) ?? "")
}

private func pendingCount(_ folder: TemporaryFolder) throws -> Int {
    let spool = try Spool(SpoolConfiguration(directory: folder.path + "/Queue", readOnly: true))
    defer { spool.close() }
    return spool.shards.reduce(0) { $0 + $1.pendingCount }
}

@Suite("Injection processes", .serialized)
struct InjectionProcessTests {
    @Test func httpAPIThroughCurlAcceptsGoodRequestsAndRefusesBadOnesWithoutStoringThem() throws {
        let folder = TemporaryFolder("http")
        defer { folder.remove() }
        let serve = try ServeProcess(folder: folder, extra: ["--hold", "--log", folder.file("delivery.log")])
        defer { serve.process.terminate() }
        let url = "http://127.0.0.1:\(serve.httpPort)"
        let auth = ["-H", "Authorization: Bearer \(token)"]

        let (health, healthBody) = try curl([url + "/api/health"], folder: folder)
        #expect(health == 200 && healthBody.contains("\"status\":\"ok\""))

        let good = #"{"envelope_sender":"news@origin.test","content":"Subject: hi {{name}}\r\n\r\nHello {{name}}\r\n","recipients":[{"email":"a@one.test","substitutions":{"name":"Ann"}},{"email":"b@two.test","substitutions":{"name":"Bob"}}]}"#
        let (ok, okBody) = try curl(auth + ["-H", "Content-Type: application/json", "--data-binary", good, url + "/api/inject/v1"], folder: folder)
        #expect(ok == 200, "\(okBody)")
        #expect(okBody.contains("\"success_count\":2") && okBody.contains("\"fail_count\":0") && okBody.contains("\"id\":\""))

        let (chunked, chunkedBody) = try curl(auth + ["-H", "Transfer-Encoding: chunked", "--data-binary", good, url + "/api/inject/v1"], folder: folder)
        #expect(chunked == 200, "a chunked body is read like any other: \(chunkedBody)")

        let oversized = folder.file("big.json")
        try Data(("{\"envelope_sender\":\"a@b.test\",\"content\":\"" + String(repeating: "x", count: 65 << 20) + "\"}").utf8).write(to: URL(fileURLWithPath: oversized))
        let refusals: [([String], Int, String)] = [
            (["--data-binary", good, url + "/api/inject/v1"], 401, "bearer token"),
            (["-H", "Authorization: Bearer wrong-token-0123456789", "--data-binary", good, url + "/api/inject/v1"], 401, "bearer token"),
            (auth + ["--data-binary", "{not json", url + "/api/inject/v1"], 400, "not valid JSON"),
            (auth + ["--data-binary", #"{"envelope_sender":"a@b.test","content":"x"}"#, url + "/api/inject/v1"], 400, "\"field\":\"recipients\""),
            (auth + ["--data-binary", #"{"envelope_sender":"a@b.test","content":"x","recipients":[{"email":true}]}"#, url + "/api/inject/v1"], 400, "recipients[0].email"),
            (auth + ["--data-binary", "@" + oversized, url + "/api/inject/v1"], 413, "larger than"),
            (auth + [url + "/api/inject/v1"], 405, "not allowed"),
            (auth + [url + "/api/elsewhere"], 404, "no such endpoint"),
        ]
        for (arguments, status, text) in refusals {
            let (code, body) = try curl(arguments, folder: folder)
            #expect(code == status, "\(arguments.suffix(2)) -> \(code) \(body)")
            #expect(body.contains(text), "\(arguments.suffix(2)) -> \(body)")
        }
        serve.process.terminate()
        _ = serve.process.wait(seconds: 10)
        #expect(try pendingCount(folder) == 4, "only the two good requests were stored")
        /* A `received` record per stored recipient, and none for the refused requests. */
        let log = readTextFile(folder.file("delivery.log")) ?? ""
        let received = log.split(separator: "\n").filter { $0.contains("\"event\":\"received\"") }
        #expect(received.count == 4, "\(log)")
        #expect(received.allSatisfy { $0.contains("over HTTP") })
    }

    /// A 250 or a 200, then SIGKILL at once: the restarted engine delivers both messages.
    @Test func acknowledgedMessagesSurviveSIGKILLAndAreDelivered() throws {
        let folder = TemporaryFolder("kill")
        defer { folder.remove() }
        /* A receiver that answers nothing for 30 s: deliveries are in flight when the engine dies. */
        let tarpit = try startSink { $0.replyDelayMilliseconds = 30_000 }
        defer { tarpit.stop() }
        let route = ["--route", "*=127.0.0.1:\(tarpit.addresses[0].port)"]
        let serve = try ServeProcess(folder: folder, extra: route)
        let smtp = try runPeer("plain", port: serve.smtpPort)
        kill(serve.process.pid, SIGKILL)
        _ = serve.process.wait(seconds: 10)
        #expect((smtp["refused"] as? [String: Any])?.isEmpty == true)

        let second = try ServeProcess(folder: folder, extra: route, output: "serve2.out")
        let json = #"{"envelope_sender":"news@origin.test","content":"Subject: api\r\n\r\nfrom the API\r\n","recipients":[{"email":"api@dest.test"}]}"#
        let (status, body) = try curl(["-H", "Authorization: Bearer \(token)", "--data-binary", json,
                                       "http://127.0.0.1:\(second.httpPort)/api/inject/v1"], folder: folder)
        kill(second.process.pid, SIGKILL)
        _ = second.process.wait(seconds: 10)
        #expect(status == 200, "\(body)")

        let sink = try startSink { $0.recordPath = folder.file("record.jsonl") }
        defer { sink.stop() }
        let carrier = try #require(builtExecutable("carrier"))
        let drain = try ChildProcess(carrier, ["serve", "--spool", folder.path + "/Queue", "--no-dns", "--quiet", "--drain", "--timeout", "60",
                                               "--route", "*=127.0.0.1:\(sink.addresses[0].port)"], outputPath: folder.file("drain.out"))
        #expect(drain.wait(seconds: 90) == 0, "\((try? String(contentsOfFile: folder.file("drain.out"), encoding: .utf8)) ?? "")")
        sink.stop()
        let record = readTextFile(folder.file("record.jsonl")) ?? ""
        #expect(record.contains("\"rcpt_to\":[\"rcpt@dest.test\"]"), "the SMTP message was delivered: \(record)")
        #expect(record.contains("\"rcpt_to\":[\"api@dest.test\"]"), "the API message was delivered: \(record)")
    }

    /// DSN requests (RFC 3461) made at submission are kept: relayed to a server that offers
    /// DSN, and NOTIFY decides the bounce notice: NEVER gets none, FAILURE gets one naming the
    /// ORCPT and the ENVID.
    @Test func dsnRequestsAreRelayedAndDecideTheBounceNotice() throws {
        let folder = TemporaryFolder("dsn")
        defer { folder.remove() }
        try FileManager.default.createDirectory(atPath: folder.file("maildir"), withIntermediateDirectories: true)
        let sink = try startSink { configuration in
            configuration.recordPath = folder.file("record.jsonl")
            configuration.maildirPath = folder.file("maildir")
            configuration.domainRules = [SinkDomainRule(domain: "bounce.test", action: .refuse(code: 550, rate: 1))]
        }
        defer { sink.stop() }
        let serve = try ServeProcess(folder: folder, extra: ["--route", "*=127.0.0.1:\(sink.addresses[0].port)", "--log", folder.file("delivery.log")])
        defer { serve.process.terminate() }
        let replies = try runPeer("dsn", port: serve.smtpPort)["replies"] as? [Int]
        #expect(replies == [250, 250, 250, 250, 250])

        /* ok@good.test, then the notice to the sender: two messages at the sink. */
        let deadline = Date().addingTimeInterval(30)
        var lines: [[String: Any]] = []
        while Date() < deadline {
            let text = readTextFile(folder.file("record.jsonl")) ?? ""
            lines = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            if lines.count >= 2 { break }
            usleep(50_000)
        }
        sink.stop()
        let relayed = try #require(lines.first { ($0["rcpt_to"] as? [String]) == ["ok@good.test"] }, "\(lines)")
        #expect(relayed["ret"] as? String == "HDRS")
        #expect(relayed["envid"] as? String == "env+1")
        #expect(relayed["notify"] as? [String] == ["SUCCESS,FAILURE"])
        let notice = try #require(lines.first { ($0["rcpt_to"] as? [String]) == ["sender@client.test"] }, "\(lines)")
        #expect(notice["mail_from"] as? String == "")
        #expect(lines.count == 2, "one notice only: \(lines)")

        /* The notice reports fail@ (with its ORCPT and the ENVID), not never@. */
        let stored = try FileManager.default.subpathsOfDirectory(atPath: folder.file("maildir")).filter { $0.hasPrefix("new/") }
        let bodies = try stored.map { try String(contentsOfFile: folder.file("maildir/" + $0), encoding: .utf8) }
        let report = try #require(bodies.first { $0.contains("multipart/report") }, "the notice is stored")
        #expect(report.contains("Final-Recipient: rfc822; fail@bounce.test"))
        #expect(report.contains("Original-Recipient: rfc822; first@alias.test"))
        #expect(report.contains("Original-Envelope-Id: env+1"))
        #expect(!report.contains("never@bounce.test"), "NOTIFY=NEVER gets no notice")

        /* The delivery log: the submitted message received for its three recipients over SMTP. */
        serve.process.terminate()
        _ = serve.process.wait(seconds: 10)
        let log = readTextFile(folder.file("delivery.log")) ?? ""
        let received = log.split(separator: "\n").filter { $0.contains("\"event\":\"received\"") && $0.contains("over SMTP") }
        #expect(received.count == 3, "\(log)")
    }

    /// Operators act on the running engine over HTTP: a suspended domain holds its mail (also
    /// across a restart: the suspension is in the spool) until resumed; a bounce ends what a
    /// suspended domain holds; bad requests get 400, a missing token 401.
    @Test func adminAPISuspendsResumesAndBounces() throws {
        let folder = TemporaryFolder("admin")
        defer { folder.remove() }
        let sink = try startSink { $0.recordPath = folder.file("record.jsonl") }
        defer { sink.stop() }
        let extra = ["--route", "*=127.0.0.1:\(sink.addresses[0].port)", "--log", folder.file("delivery.log")]
        var serve = try ServeProcess(folder: folder, extra: extra)
        defer { serve.process.terminate() }
        let auth = ["-H", "Authorization: Bearer \(token)"]
        func admin(_ json: String, _ serve: ServeProcess, authorised: Bool = true) throws -> (Int, String) {
            try curl((authorised ? auth : []) + ["--data-binary", json, "http://127.0.0.1:\(serve.httpPort)/api/admin/v1"], folder: folder)
        }
        func inject(_ recipients: [String], _ serve: ServeProcess) throws -> Int {
            let list = recipients.map { "{\"email\":\"\($0)\"}" }.joined(separator: ",")
            let json = #"{"envelope_sender":"ops@origin.test","content":"Subject: x\r\n\r\nx\r\n","recipients":["# + list + "]}"
            return try curl(auth + ["--data-binary", json, "http://127.0.0.1:\(serve.httpPort)/api/inject/v1"], folder: folder).0
        }
        func arrived() -> [String] {
            let text = readTextFile(folder.file("record.jsonl")) ?? ""
            return text.split(separator: "\n").compactMap { line in
                ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])?["rcpt_to"] as? [String]
            }.flatMap { $0 }
        }
        func waitFor(_ recipient: String) -> Bool {
            for _ in 0..<200 where !arrived().contains(recipient) { usleep(50_000) }
            return arrived().contains(recipient)
        }

        #expect(try admin(#"{"action":"suspend","domain":"held.test"}"#, serve, authorised: false).0 == 401)
        #expect(try admin(#"{"action":"suspend"}"#, serve).0 == 400)
        #expect(try admin(#"{"action":"explode","domain":"held.test"}"#, serve).0 == 400)
        #expect(try admin(#"{"action":"suspend","domain":"held.test","duration":"soon"}"#, serve).0 == 400)
        #expect(try admin(#"{"action":"retry","campaign":"spring"}"#, serve).0 == 400)
        let (retried, retriedBody) = try admin(#"{"action":"retry","domain":"nothing-deferred.test"}"#, serve)
        #expect(retried == 200 && retriedBody.contains("\"retried\":0"), "\(retriedBody)")
        #expect(try admin(#"{"action":"suspend","domain":"held.test"}"#, serve).0 == 200)
        #expect(try admin(#"{"action":"suspend","domain":"doomed.test","duration":"1h"}"#, serve).0 == 200)
        #expect(try inject(["a@held.test", "b@free.test", "c@doomed.test"], serve) == 200)
        #expect(waitFor("b@free.test"))
        usleep(500_000)
        #expect(!arrived().contains("a@held.test"), "a suspended domain holds its mail")

        /* A restart keeps the suspension. */
        serve.process.terminate()
        _ = serve.process.wait(seconds: 10)
        serve = try ServeProcess(folder: folder, extra: extra, output: "serve2.out")
        usleep(800_000)
        #expect(!arrived().contains("a@held.test"), "still held after a restart")

        let (bounced, bouncedBody) = try admin(#"{"action":"bounce","domain":"doomed.test","reason":"no longer wanted"}"#, serve)
        #expect(bounced == 200 && bouncedBody.contains("\"bounced\":1"), "\(bouncedBody)")
        #expect(try admin(#"{"action":"resume","domain":"held.test"}"#, serve).0 == 200)
        #expect(waitFor("a@held.test"))
        #expect(!arrived().contains("c@doomed.test"))
        serve.process.terminate()
        _ = serve.process.wait(seconds: 10)
        let log = readTextFile(folder.file("delivery.log")) ?? ""
        #expect(log.split(separator: "\n").contains { $0.contains("\"event\":\"bounced\"") && $0.contains("\"c@doomed.test\"") && $0.contains("no longer wanted") }, "\(log)")
    }

    /// 10,000 connections that say nothing: each is greeted, a new client is still served, and
    /// the listener's memory stays bounded.
    @Test func tenThousandIdleConnections() throws {
        let folder = TemporaryFolder("idle")
        defer { folder.remove() }
        let config = folder.file("carrier.toml")
        let port = try freeLoopbackPort()
        try """
        [spool]
        directory = "\(folder.path)/Queue"
        [smtp_listener]
        listen = ["127.0.0.1:\(port)"]
        max_connections = 20000
        max_connections_per_client = 20000
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let carrier = try #require(builtExecutable("carrier"))
        let serve = try ChildProcess(carrier, ["serve", "--config", config, "--hold", "--quiet"], outputPath: folder.file("serve.out"))
        defer { serve.terminate() }
        try #require(waitForListener(port: port))
        let answer = try runPeer("idle", port: port, ["10000"], seconds: 180)
        #expect(answer["codes"] as? [String: Int] == ["220": 10_000])
        let status = (try? String(contentsOfFile: "/proc/\(serve.pid)/status", encoding: .utf8)) ?? ""
        let peak = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
            .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? -1
        print("10,000 idle connections: listener peak RSS \(peak / 1024) MiB")
        #expect(peak > 0 && peak < 400 * 1024, "peak RSS \(peak) KiB for 10,000 idle connections")
        serve.terminate()
        #expect(try pendingCount(folder) == 1, "the message sent while they were open")
    }
}
