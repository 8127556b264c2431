// SpoolCorruptionTests.swift - torn tails and flipped bytes in copies of a spool with
// several segments: what recovery keeps, cuts, quarantines and reports

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import Testing
@testable import Spool

/// A spool of one shard with several small segments, closed, and where each message's records are.
private struct CorruptionFixture {
    let folder: TemporaryFolder
    let configuration: SpoolConfiguration
    /// Every message and its recipients, by id.
    var messages: [MessageID: NewMessage] = [:]
    /// Segment file names, in order, and their records.
    var segments: [(name: String, records: [SegmentRecord])] = []

    var shardFolder: String { configuration.directory + "/shard-00" }

    init() throws {
        folder = TemporaryFolder("corrupt")
        configuration = testConfiguration(folder.path, shards: 1, segmentSize: 4096, durability: .none)
        let spool = try Spool(configuration)
        var random = SeededRandom(seed: 0xC0_22_0B7)
        for n in 0..<60 {
            let recipients = (0..<Int.random(in: 1...3, using: &random)).map { NewRecipient("r\(n)x\($0)@d\($0 % 2).test", variables: [("n", "\(n)")]) }
            let body = Array("Subject: \(n)\r\n\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "A") + UInt8(n % 26), count: Int.random(in: 100...600, using: &random))
            let message = NewMessage(sender: "s\(n)@example.org", body: body, recipients: recipients)
            messages[try spool.enqueue(message)] = message
        }
        spool.close()
        for name in segmentFiles(shardFolder) { segments.append((name, try segmentRecords(shardFolder + "/" + name))) }
    }

    /// copy - a copy of the whole spool folder to damage (`cp -a`); its Queue path.
    func copy(_ label: String) -> String {
        let target = folder.path + "/" + label
        shell("rm -rf '\(target)' && mkdir -p '\(target)' && cp -a '\(configuration.directory)' '\(target)/Queue'")
        return target + "/Queue"
    }

    /// The message ids with a record in segment `segment` at or after `offset`.
    func messagesFrom(segment: Int, offset: Int) -> Set<MessageID> {
        Set(segments[segment].records.filter { $0.end > offset }.compactMap(\.message))
    }

    /// check - every message in `intact` is pending with all its recipients and reads back;
    /// every other message has nothing pending. Returns the problems found.
    func check(_ spool: Spool, intact: Set<MessageID>, extra: Set<MessageID> = []) -> [String] {
        var problems: [String] = []
        let shard = spool.shards[0]
        let pending = Dictionary(grouping: shard.pendingRecipients().map(\.key), by: \.message)
        for (id, message) in messages {
            if intact.contains(id) {
                let keys = (0..<message.recipients.count).map { RecipientKey(message: id, index: UInt32($0)) }
                if pending[id]?.sorted() != keys { problems.append("\(id): pending \(pending[id] ?? []), expected \(keys)"); continue }
                if (try? shard.message(id).body) != message.body { problems.append("\(id): the message does not read back") }
                for key in keys where (try? shard.recipient(key)) != message.recipients[Int(key.index)] {
                    problems.append("\(key): the recipient does not read back")
                }
            } else if pending[id] != nil {
                problems.append("\(id) has pending recipients \(pending[id]!) though its records were damaged")
            }
        }
        for id in pending.keys where messages[id] == nil && !extra.contains(id) { problems.append("unknown message \(id) pending") }
        return problems
    }
}

@Suite("Spool corruption")
struct SpoolCorruptionTests {
    @Test("A last segment cut anywhere reopens: the torn tail is cut, everything wholly before it stays")
    func tornTails() throws {
        let fixture = try CorruptionFixture()
        defer { fixture.folder.remove() }
        #expect(fixture.segments.count >= 4, "the fixture should span several segments")
        let last = fixture.segments.count - 1
        let lastName = fixture.segments[last].name
        let records = fixture.segments[last].records
        let size = records.last!.end
        var random = SeededRandom(seed: 0x70_12)
        /* Random cuts, plus the edges: inside the header, right after it, on a record boundary. */
        var cuts = (0..<10).map { _ in Int.random(in: 0..<size, using: &random) }
        cuts += [0, 7, SegmentHeader.size, records[records.count / 2].offset, size - 1]
        for (trial, cut) in cuts.enumerated() {
            let queue = fixture.copy("torn-\(trial)")
            #expect(truncate("\(queue)/shard-00/\(lastName)", off_t(cut)) == 0)
            let containing = records.first { $0.offset < cut && cut < $0.end }
            /* Messages with any record at or after the cut's record lose it (their records are contiguous). */
            let damaged = fixture.messagesFrom(segment: last, offset: containing?.offset ?? cut)
            let intact = Set(fixture.messages.keys).subtracting(damaged)

            var configuration = fixture.configuration
            configuration.directory = queue
            let spool: Spool
            do {
                spool = try Spool(configuration)
            } catch {
                Issue.record("trial \(trial), cut at \(cut) of \(size): the spool does not open: \(error)")
                continue
            }
            let report = spool.recoveryReports[0]
            #expect(report.quarantined.isEmpty, "trial \(trial), cut \(cut): \(report.quarantined)")
            #expect(report.affectedMessages.isEmpty, "trial \(trial), cut \(cut): \(report.affectedMessages)")
            let expectedCut = cut < SegmentHeader.size ? cut : containing.map { cut - $0.offset } ?? 0
            #expect(report.truncatedBytes == expectedCut, "trial \(trial): cut at \(cut), record \(String(describing: containing))")
            if containing != nil && cut >= SegmentHeader.size { #expect(report.truncatedBytes > 0) }
            let problems = fixture.check(spool, intact: intact)
            #expect(problems.isEmpty, "trial \(trial), cut at \(cut): \(problems.prefix(5))")

            /* It takes new messages, and they survive another reopen with the rest. */
            let id = try spool.enqueue(testMessage(["after@d0.test"]))
            spool.close()
            let reopened = try Spool(configuration)
            let again = reopened.recoveryReports[0]
            #expect(again.truncatedBytes == 0 && again.quarantined.isEmpty && again.affectedMessages.isEmpty,
                    "trial \(trial): a second open still finds damage: \(again)")
            #expect(fixture.check(reopened, intact: intact, extra: [id]).isEmpty)
            #expect(reopened.shards[0].pendingRecipients().contains { $0.key == RecipientKey(message: id, index: 0) })
            reopened.close()
            fixture.folder.remove(subfolder: "torn-\(trial)")
        }
    }

    @Test("A flipped byte in a sealed segment quarantines it and reports the messages it held")
    func flippedBytes() throws {
        let fixture = try CorruptionFixture()
        defer { fixture.folder.remove() }
        #expect(fixture.segments.count >= 4, "the fixture should span several segments")
        var random = SeededRandom(seed: 0xF1_1B)
        for trial in 0..<12 {
            /* A random record of a random segment other than the last; a random octet of it. */
            let segment = Int.random(in: 0..<(fixture.segments.count - 1), using: &random)
            let (name, records) = fixture.segments[segment]
            /* Every few trials, the segment's last record: nothing follows it in its file. */
            let record = trial % 4 == 3 ? records.last! : records.randomElement(using: &random)!
            let position = record.offset + Int.random(in: 0..<record.size, using: &random)
            let flip = UInt8.random(in: 1...255, using: &random)

            let queue = fixture.copy("flip-\(trial)")
            let path = "\(queue)/shard-00/\(name)"
            var bytes = try readWholeFile(path)
            let originalSize = bytes.count
            bytes[position] ^= flip
            try bytes.withUnsafeBytes { try writeWholeFile(path, $0) }

            /* What the damage takes: the record hit and everything after it in that segment. */
            let damaged = fixture.messagesFrom(segment: segment, offset: record.offset)
            let intact = Set(fixture.messages.keys).subtracting(damaged)
            /* The ids recovery can still read in the damaged part (not the one whose id octets were hit). */
            var findable = Set(records.filter { $0.offset > record.offset }.compactMap(\.message))
            if let id = record.message, !(record.offset + 8..<record.offset + 25).contains(position) { findable.insert(id) }

            var configuration = fixture.configuration
            configuration.directory = queue
            let spool = try Spool(configuration)
            let report = spool.recoveryReports[0]
            let context = "trial \(trial): \(name), record at \(record.offset) (type \(record.type), \(record.size) octets), octet \(position) ^= \(flip)"
            #expect(report.quarantined.count == 1, "\(context): \(report.quarantined)")
            #expect(report.quarantined.first?.hasPrefix("shard-00/\(name)") == true, "\(context): \(report.quarantined)")
            #expect(fileSize("\(queue)/corrupt/shard-00-\(name)") == originalSize, "\(context): the damaged file is not in corrupt/")
            #expect(fileSize(path) == record.offset, "\(context): the readable prefix is not in place")
            #expect(report.truncatedBytes == 0, "\(context)")
            let affected = Set(report.affectedMessages)
            #expect(findable.isSubset(of: affected), "\(context): not reported: \(findable.subtracting(affected).sorted())")
            #expect(affected.isDisjoint(with: intact), "\(context): intact messages reported: \(affected.intersection(intact).sorted())")
            let problems = fixture.check(spool, intact: intact)
            #expect(problems.isEmpty, "\(context): \(problems.prefix(5))")

            /* The spool goes on: new messages are stored and everything survives a reopen. */
            let id = try spool.enqueue(testMessage(["after@d1.test"]))
            spool.close()
            let reopened = try Spool(configuration)
            #expect(reopened.recoveryReports[0].quarantined.isEmpty, "\(context): quarantined again \(reopened.recoveryReports[0].quarantined)")
            #expect(reopened.recoveryReports[0].truncatedBytes == 0)
            #expect(fixture.check(reopened, intact: intact, extra: [id]).isEmpty, "\(context)")
            #expect(reopened.shards[0].pendingRecipients().contains { $0.key == RecipientKey(message: id, index: 0) })
            reopened.close()
            fixture.folder.remove(subfolder: "flip-\(trial)")
        }
    }
}

extension TemporaryFolder {
    /// remove - delete one folder inside this one.
    func remove(subfolder: String) {
        shell("rm -rf '\(path)/\(subfolder)'")
    }
}
