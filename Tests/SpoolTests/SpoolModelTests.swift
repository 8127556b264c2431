// SpoolModelTests.swift - seeded random operation sequences against an in-memory model:
// enqueue, campaigns, outcomes, compaction, purge and close-and-reopen, with small
// segments so rotation and compaction really happen

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import Testing
@testable import Spool

/// What the model knows about one pending recipient.
private struct ModelRecipient {
    var recipient: NewRecipient
    var domain: String
    var attempts: UInt32 = 0
    /// Set once deferred; before that the spool uses the message's creation time.
    var nextAttempt: Int64? = nil
}

private let modelDomains = ["a.test", "b.test", "c.test", "d.test", "e.test", "f.test"]

/// One seed's run: the spool, the model and the generator.
private struct ModelRun {
    let seed: UInt64
    let configuration: SpoolConfiguration
    var spool: Spool
    var random: SeededRandom
    var pending: [RecipientKey: ModelRecipient] = [:]
    var bodies: [MessageID: [UInt8]] = [:]
    var serial = 0
    var problems: [String] = []
    var stats = (enqueues: 0, campaigns: 0, outcomes: 0, deferrals: 0, compactions: 0, purges: 0, reopens: 0, maxSegment: 0)

    init(seed: UInt64, folder: String) throws {
        self.seed = seed
        random = SeededRandom(seed: seed)
        configuration = testConfiguration(folder, shards: 1 + Int(seed % 3), segmentSize: 8 << 10, durability: .none)
        spool = try Spool(configuration)
    }

    mutating func body() -> [UInt8] {
        serial += 1
        let size = Int.random(in: 50...1500, using: &random)
        return Array("Subject: model \(serial)\r\n\r\n".utf8) + (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ serial) }
    }

    mutating func newRecipient() -> NewRecipient {
        serial += 1
        let domain = modelDomains.randomElement(using: &random)!
        let variables = Bool.random(using: &random) ? [("name", "R\(serial)"), ("code", String(serial, radix: 16))] : []
        return NewRecipient("rcpt\(serial)@\(domain)", variables: variables)
    }

    mutating func enqueue() throws {
        let recipients = (0..<Int.random(in: 1...4, using: &random)).map { _ in newRecipient() }
        let body = body()
        let id = try spool.enqueue(NewMessage(sender: "model@example.org", body: body, recipients: recipients))
        bodies[id] = body
        for (index, recipient) in recipients.enumerated() {
            pending[RecipientKey(message: id, index: UInt32(index))] = ModelRecipient(recipient: recipient, domain: recipient.domain)
        }
        stats.enqueues += 1
    }

    mutating func campaign() throws {
        let body = body()
        let writer = spool.campaign(sender: "news@example.org", body: body, metadata: MessageMetadata(campaign: "camp\(serial % 3)", priority: .bulk))
        let recipients = (0..<Int.random(in: 1...12, using: &random)).map { _ in newRecipient() }
        for recipient in recipients { try writer.add(recipient) }
        let receipt = try writer.finish()
        if receipt.recipients != recipients.count { problems.append("campaign stored \(receipt.recipients) of \(recipients.count)") }
        bodies[receipt.id] = body
        for (index, recipient) in recipients.enumerated() {
            pending[RecipientKey(message: receipt.id, index: UInt32(index))] = ModelRecipient(recipient: recipient, domain: recipient.domain)
        }
        stats.campaigns += 1
    }

    mutating func outcome() throws {
        let keys = pending.keys.sorted()
        guard !keys.isEmpty else { return }
        for _ in 0..<Int.random(in: 1...3, using: &random) {
            let key = keys.randomElement(using: &random)!
            guard var model = pending[key] else { continue }
            let shard = spool.shard(for: model.domain)
            let roll = Int.random(in: 0..<100, using: &random)
            if roll < 45 {
                let next = Int64.random(in: 1_000_000_000_000...2_000_000_000_000, using: &random)
                try shard.record(.deferred(nextAttempt: next, reply: "451 4.7.1 try later"), for: key)
                model.attempts += 1
                model.nextAttempt = next
                pending[key] = model
                stats.deferrals += 1
            } else {
                let outcome: Outcome = roll < 75 ? .delivered(reply: "250 ok") : roll < 90 ? .bounced(reply: "550 no") : .cancelled(reason: "operator")
                try shard.record(outcome, for: key)
                pending[key] = nil
            }
            stats.outcomes += 1
        }
    }

    mutating func compact() {
        if Bool.random(using: &random) {
            for shard in spool.shards { shard.compact() }
        } else {
            spool.shards.randomElement(using: &random)!.compact()
        }
        stats.compactions += 1
    }

    mutating func purge() throws {
        let domain = modelDomains.randomElement(using: &random)!
        let expected = pending.filter { $0.value.domain == domain }.map(\.key)
        let purged = try spool.shard(for: domain).purge(domain: domain)
        if purged != expected.count { problems.append("purge(\(domain)) cancelled \(purged), the model has \(expected.count)") }
        for key in expected { pending[key] = nil }
        stats.purges += 1
    }

    mutating func reopen() throws {
        spool.close()
        spool = try Spool(configuration)
        for report in spool.recoveryReports {
            if !report.quarantined.isEmpty || !report.affectedMessages.isEmpty || report.truncatedBytes != 0 {
                problems.append("recovery after a clean close: \(report)")
            }
        }
        stats.reopens += 1
    }

    /// check - the spool's pending recipients against the model; `deep` also reads every
    /// pending recipient and message back from disk.
    mutating func check(_ when: String, deep: Bool) {
        var actual: [RecipientKey: PendingRecipient] = [:]
        for shard in spool.shards {
            for recipient in shard.pendingRecipients() { actual[recipient.key] = recipient }
            stats.maxSegment = max(stats.maxSegment, Int(shard.withState { $0.segments.keys.max() ?? 0 }))
        }
        let missing = Set(pending.keys).subtracting(actual.keys).sorted()
        let extra = Set(actual.keys).subtracting(pending.keys).sorted()
        if !missing.isEmpty { problems.append("\(when): \(missing.count) pending recipients missing, e.g. \(missing.prefix(3))") }
        if !extra.isEmpty { problems.append("\(when): \(extra.count) recipients pending that should not be, e.g. \(extra.prefix(3))") }
        var messagesRead = Set<String>()
        for (key, model) in pending.sorted(by: { $0.key < $1.key }) {
            guard let entry = actual[key] else { continue }
            if entry.domain != model.domain { problems.append("\(when): \(key) domain \(entry.domain), expected \(model.domain)") }
            if entry.attempts != model.attempts { problems.append("\(when): \(key) has \(entry.attempts) attempts, expected \(model.attempts)") }
            if let next = model.nextAttempt, entry.nextAttempt != next {
                problems.append("\(when): \(key) next attempt \(entry.nextAttempt), expected \(next)")
            }
            guard deep else { continue }
            let shard = spool.shard(for: model.domain)
            do {
                let read = try shard.recipient(key)
                if read != model.recipient { problems.append("\(when): \(key) reads back as \(read.address), expected \(model.recipient.address)") }
                if messagesRead.insert("\(shard.index) \(key.message)").inserted {
                    let body = try shard.message(key.message).body
                    if body != bodies[key.message] { problems.append("\(when): the body of \(key.message) does not read back") }
                }
            } catch {
                problems.append("\(when): reading \(key) back: \(error)")
            }
        }
    }
}

@Suite("Spool model")
struct SpoolModelTests {
    @Test("Random operation sequences match an in-memory model across compactions and reopens",
          arguments: 0..<20)
    func randomSequences(seed: Int) throws {
        let folder = TemporaryFolder("model")
        defer { folder.remove() }
        var run = try ModelRun(seed: UInt64(seed) &* 0x9E37_79B9 &+ 17, folder: folder.path)
        for step in 0..<300 {
            let roll = Int.random(in: 0..<100, using: &run.random)
            let name: String
            switch roll {
            case 0..<30: name = "enqueue"; try run.enqueue()
            case 30..<35: name = "campaign"; try run.campaign()
            case 35..<80: name = "outcome"; try run.outcome()
            case 80..<89: name = "compact"; run.compact()
            case 89..<91: name = "purge"; try run.purge()
            default: name = "reopen"; try run.reopen()
            }
            let deep = name == "reopen"
            if deep || step % 10 == 0 || name == "compact" { run.check("seed \(seed) step \(step) after \(name)", deep: deep) }
            if !run.problems.isEmpty { break }
        }
        if run.problems.isEmpty {
            try run.reopen()
            run.check("seed \(seed) at the end", deep: true)
        }
        run.spool.close()
        #expect(run.problems.isEmpty, "\(run.problems.count) problems, first ones: \(run.problems.prefix(8))")
        #expect(run.stats.maxSegment > 3, "segments never rotated: \(run.stats)")
        if seed == 0 { print("SpoolModelTests seed 0: \(run.stats), \(run.pending.count) pending at the end") }
    }
}
