// SinkOutputTests.swift - the --record lines, the --maildir files and the statistics JSON

import CarrierTesting
import EventCore
import Foundation
import SMTP
import SMTPStreams
import Sink
import Testing

@Suite("Sink outputs")
struct SinkOutputTests {
    /// One JSON line per accepted message, with the envelope, the headers, TLS and the AUTH user.
    @Test func recordLinesHaveEveryField() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("record.jsonl").path
        let server = try startSink(threads: 2) {
            $0.recordPath = path
            $0.tls = .selfSigned
            $0.users = ["alice": "s3cret"]
            $0.domainRules = [try! SinkDomainRule(parsing: "refused.test=550:1")]
        }
        let client = try TestClient()
        defer { client.stop() }
        let messages = [
            message(to: ["a@example.test", "b@example.test"], carrierID: "carrier-1", messageID: "<m1@client.test>"),
            message(to: ["c@example.test"], messageID: "<m2@client.test>"),
            message(to: ["nobody@refused.test"], carrierID: "carrier-3"),
            message(to: ["d@example.test"], body: "No headers of interest.\r\n"),
        ]
        let run = try client.send(messages, to: server) { configuration in
            unverifiedTLS(&configuration)
            configuration.session.credentials = .password("alice", "s3cret")
        }
        #expect(run.error == nil)
        server.stop()

        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 3)
        let records = try lines.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
        let first = try #require(records.first)
        #expect(first["mail_from"] as? String == "sender@client.test")
        #expect(first["rcpt_to"] as? [String] == ["a@example.test", "b@example.test"])
        #expect(first["helo"] as? String == "client.test")
        #expect(first["message_id"] as? String == "<m1@client.test>")
        #expect(first["x_carrier_id"] as? String == "carrier-1")
        #expect(first["tls"] as? Bool == true)
        #expect(first["auth"] as? String == "alice")
        #expect(first["size"] as? Int == messages[0].payload.size)
        #expect(first["connection"] as? Int == 1)
        #expect((first["remote"] as? String)?.hasPrefix("127.0.0.1:") == true)
        #expect((first["queue_id"] as? String)?.isEmpty == false)
        let time = try #require(first["time"] as? String)
        #expect(time.count == 24 && time.hasSuffix("Z") && time.contains("T"))
        #expect(records[1]["x_carrier_id"] is NSNull)
        #expect(records[1]["message_id"] as? String == "<m2@client.test>")
        #expect(records[2]["message_id"] is NSNull && records[2]["x_carrier_id"] is NSNull)
        #expect(records[2]["rcpt_to"] as? [String] == ["d@example.test"])
        /* The queue ids in the record are the ones the client was given. */
        let given = run.results.values.compactMap { $0.recipients.first?.reply.text }.filter { $0.hasPrefix("2.0.0") }
        #expect(Set(records.compactMap { $0["queue_id"] as? String }.map { "2.0.0 Ok: queued as \($0)" }) == Set(given))
    }

    /// Header names match in any case, folded values are unfolded, and the body is never searched.
    @Test func recordReadsHeadersCarefully() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("record.jsonl").path
        let server = try startSink { $0.recordPath = path }
        let client = try TestClient()
        defer { client.stop() }
        let bodies = [
            "Subject: folded\r\nmessage-id:\r\n  <folded@client.test>\r\nx-CARRIER-id: one\r\n two \r\n\r\nbody\r\n",
            "Subject: none\r\n\r\nX-Carrier-Id: in the body\r\nMessage-ID: <body@client.test>\r\n",
            "Subject: \"quoted\" \\ and\ttab\r\nX-Carrier-Id: \"q\\u\"\r\n\r\nbody\r\n",
        ]
        let messages = bodies.map { body -> OutboundMessage in
            let payload = try! Array(body.utf8).withUnsafeBytes { try MessagePayload(encoding: $0) }
            return OutboundMessage(sender: .null, recipients: [try! MailAddress(parsing: "h@example.test")], payload: payload)
        }
        let run = try client.send(messages, to: server)
        #expect(run.error == nil)
        server.stop()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(records.count == 3)
        #expect(records[0]["message_id"] as? String == "<folded@client.test>")
        #expect(records[0]["x_carrier_id"] as? String == "one two")
        #expect(records[0]["mail_from"] as? String == "")
        #expect(records[1]["message_id"] is NSNull && records[1]["x_carrier_id"] is NSNull)
        #expect(records[2]["x_carrier_id"] as? String == "\"q\\u\"")
    }

    /// Each accepted message is a file in DIR/new holding its body; DIR/tmp is left empty.
    @Test func maildirHoldsEachMessage() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let maildir = directory.appendingPathComponent("Maildir")
        let server = try startSink { $0.maildirPath = maildir.path }
        let client = try TestClient()
        defer { client.stop() }
        let bodies = ["First body.\r\n..not a terminator\r\n", "Second body.\r\n"]
        let run = try client.send(bodies.enumerated().map { message(to: ["m\($0)@example.test"], body: $1) }, to: server)
        #expect(run.error == nil)
        server.stop()

        let files = try FileManager.default.contentsOfDirectory(atPath: maildir.appendingPathComponent("new").path)
        #expect(files.count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: maildir.appendingPathComponent("tmp").path).isEmpty)
        let contents = try files.map { try String(contentsOfFile: maildir.appendingPathComponent("new/\($0)").path, encoding: .utf8) }
        /* Stored as sent: the client's dot-stuffing is undone, the body's own two dots stay. */
        #expect(contents.contains { $0.hasSuffix("\r\n\r\nFirst body.\r\n..not a terminator\r\n") })
        #expect(contents.contains { $0.hasSuffix("\r\n\r\nSecond body.\r\n") })
        #expect(contents.allSatisfy { $0.hasPrefix("Return-Path: <sender@client.test>\r\nDelivered-To: m") })
        #expect(files.allSatisfy { $0.hasSuffix(".sink.test") })
    }

    /// The statistics JSON names every figure and matches the snapshot.
    @Test func statisticsJSONMatchesTheCounts() throws {
        var faults = SinkFaults(seed: 2)
        faults.tempfailRate = 0.3
        let server = try startSink { $0.faults = faults }
        let client = try TestClient()
        defer { client.stop() }
        let run = try client.send((0..<10).map { message(to: ["j\($0)@example.test"], carrierID: "j\($0)") }, to: server)
        #expect(run.error == nil)
        server.stop()
        let statistics = server.statistics
        let object = try #require(try JSONSerialization.jsonObject(with: Data(statistics.json.utf8)) as? [String: Any])
        #expect(object["messages_accepted"] as? Int == statistics.messagesAccepted)
        #expect(object["recipients_refused"] as? Int == statistics.recipientsRefused)
        #expect(object["messages_refused"] as? Int == statistics.messagesRefused)
        #expect(object["connections_total"] as? Int == 1)
        #expect(object["replies_4xx"] as? Int == statistics.replies4xx)
        #expect(statistics.replies4xx == statistics.recipientsRefused + statistics.messagesRefused)
        #expect(statistics.replies4xx > 0 && statistics.messagesAccepted > 0)
        let replies = try #require(object["replies"] as? [String: Int])
        #expect(replies["451"] == statistics.replies[451])
        #expect(object["elapsed_seconds"] is Double || object["elapsed_seconds"] is Int)
        #expect(statistics.summary.contains("\(statistics.messagesAccepted) accepted"))
        #expect(statistics.liveLine(messagesPerSecond: 12.4).contains("12 msg/s"))
    }
}
