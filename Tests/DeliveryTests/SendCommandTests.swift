// SendCommandTests.swift - `carrier send` as a user runs it: a message from standard input

import CarrierTesting
import Foundation
import Spool
import Testing

@Suite("carrier send")
struct SendCommandTests {
    /// A --log that cannot be opened fails the command before anything is queued (a script
    /// that retries on failure must not queue the message twice); a good one gets a
    /// `received` record per recipient.
    @Test func aBadLogFailsBeforeQueueingAndAGoodOneRecordsTheMessage() throws {
        let carrier = try #require(builtExecutable("carrier"), "the carrier executable is built next to the tests")
        let folder = TemporaryFolder("send")
        defer { folder.remove() }
        func send(log: String, output: String) throws -> Int32? {
            let script = "printf 'Subject: x\\r\\n\\r\\nhi\\r\\n' | '\(carrier)' send --spool '\(folder.file("Queue"))' --log '\(log)' -f a@origin.test one@dest.test two@dest.test"
            return try ChildProcess("/bin/sh", ["-c", script], outputPath: folder.file(output)).wait(seconds: 30)
        }
        let bad = try send(log: folder.file("missing/dir/delivery.log"), output: "bad.out")
        let badOutput = (try? String(contentsOfFile: folder.file("bad.out"), encoding: .utf8)) ?? ""
        #expect(bad != 0)
        #expect(badOutput.contains("--log") && !badOutput.contains("queued as"), "\(badOutput)")
        #expect(try pendingRecipients(folder) == 0)

        let good = try send(log: folder.file("delivery.log"), output: "good.out")
        #expect(good == 0, "\((try? String(contentsOfFile: folder.file("good.out"), encoding: .utf8)) ?? "")")
        #expect(try pendingRecipients(folder) == 2)
        let log = (try? String(contentsOfFile: folder.file("delivery.log"), encoding: .utf8)) ?? ""
        #expect(log.split(separator: "\n").filter { $0.contains("\"event\":\"received\"") }.count == 2, "\(log)")
    }

    /// --expires-in stores the message's expiry time (seconds from now); a value that is not
    /// a positive number fails the command before anything is queued.
    @Test func expiresInSetsTheMessagesExpiryTime() throws {
        let carrier = try #require(builtExecutable("carrier"), "the carrier executable is built next to the tests")
        let folder = TemporaryFolder("send-expires")
        defer { folder.remove() }
        func send(_ seconds: String, output: String) throws -> Int32? {
            let script = "printf 'Subject: code\\r\\n\\r\\n123456\\r\\n' | '\(carrier)' send --spool '\(folder.file("Queue"))' --expires-in \(seconds) -f a@origin.test one@dest.test"
            return try ChildProcess("/bin/sh", ["-c", script], outputPath: folder.file(output)).wait(seconds: 30)
        }
        #expect(try send("0", output: "zero.out") != 0)
        #expect(try pendingRecipients(folder) == 0)
        let before = Int64(Date().timeIntervalSince1970 * 1_000)
        #expect(try send("600", output: "good.out") == 0)
        let after = Int64(Date().timeIntervalSince1970 * 1_000)
        let output = (try? String(contentsOfFile: folder.file("good.out"), encoding: .utf8)) ?? ""
        let id = try #require(output.split(separator: " ").last.flatMap { MessageID(String($0.filter { !$0.isNewline })) }, "\(output)")
        let spool = try Spool(SpoolConfiguration(directory: folder.file("Queue"), readOnly: true))
        defer { spool.close() }
        let expires = try spool.shards[shardIndex(domain: "dest.test", shards: spool.shards.count)].message(id).metadata.expires
        #expect(expires >= before + 600_000 && expires <= after + 600_000, "\(expires - before)")
    }
}

/// pendingRecipients - pending recipients of the spool in `folder`, read-only (0 when there is none yet).
private func pendingRecipients(_ folder: TemporaryFolder) throws -> Int {
    guard FileManager.default.fileExists(atPath: folder.file("Queue")) else { return 0 }
    let spool = try Spool(SpoolConfiguration(directory: folder.file("Queue"), readOnly: true))
    defer { spool.close() }
    return spool.shards.reduce(0) { $0 + $1.pendingCount }
}
