// SpoolPreallocationTests.swift - zero-filled spare segments: sealed segments end at their
// data, the open one may run on in zeros, and a record torn inside the zeros is cut off

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import Testing
@testable import Spool

@Suite("Spool preallocation")
struct SpoolPreallocationTests {
    @Test("Synced spools write into zero-filled spares; sealed segments are cut to their data; reopen continues after the data")
    func spareSegments() throws {
        let folder = TemporaryFolder("prealloc")
        defer { folder.remove() }
        let segmentSize = 64 << 10
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: segmentSize, durability: .fsync)
        var spool: Spool? = try Spool(configuration)
        var ids: [MessageID] = []
        for n in 0..<120 { ids.append(try spool!.enqueue(testMessage(["p\(n)@pre.test"], body: String(repeating: "z", count: 1500)))) }
        spool!.close()
        spool = nil

        let shardFolder = folder.path + "/Queue/shard-00"
        let files = segmentFiles(shardFolder)
        #expect(files.count >= 3)
        var spares = 0
        for (position, name) in files.enumerated() {
            let path = shardFolder + "/" + name
            let records = try segmentRecords(path)
            let dataEnd = records.last?.end ?? SegmentHeader.size
            if position < files.count - 1 {
                #expect(fileSize(path) == dataEnd, "sealed \(name) keeps a tail")
            } else if fileSize(path) == segmentSize {
                spares += 1
                #expect(dataEnd < segmentSize)
            }
        }
        #expect(spares == 1, "the open segment came from a zero-filled spare")

        /* A record torn inside the zero tail: a frame that claims more than was written. */
        let last = shardFolder + "/" + files.last!
        let end = try segmentRecords(last).last!.end
        let fd = open(last, O_WRONLY)
        let garbage: [UInt8] = [200, 0, 0, 0, 0xAB, 0xCD, 0xEF, 0x01, 2, 9, 9, 9, 9]
        #expect(pwrite(fd, garbage, garbage.count, off_t(end)) == garbage.count)
        close(fd)

        spool = try Spool(configuration)
        let report = spool!.recoveryReports[0]
        #expect(report.quarantined.isEmpty)
        #expect(report.truncatedBytes > 0)
        #expect(pendingKeys(spool!).map(\.message) == ids.sorted())
        let more = try spool!.enqueue(testMessage(["after@pre.test"]))
        spool!.close()
        spool = try Spool(configuration)
        #expect(pendingKeys(spool!).count == 121)
        #expect(try spool!.shards[0].message(more).sender == "sender@example.org")
        spool!.close()
    }

    @Test("A last segment that is still all zeros (a spare renamed in, header not yet synced) is dropped on open")
    func zeroHeaderSegment() throws {
        let folder = TemporaryFolder("prealloc")
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: 64 << 10, durability: .fsync)
        var spool: Spool? = try Spool(configuration)
        let id = try spool!.enqueue(testMessage(["a@pre.test"]))
        spool!.close()
        spool = nil
        let shardFolder = folder.path + "/Queue/shard-00"
        let next = shardFolder + "/" + SpoolShard.segmentName(UInt32(segmentFiles(shardFolder).count + 1))
        #expect(zeroFill(next, size: 64 << 10))
        spool = try Spool(configuration)
        #expect(fileSize(next) == -1)
        #expect(pendingKeys(spool!).map(\.message) == [id])
        _ = try spool!.enqueue(testMessage(["b@pre.test"]))
        spool!.close()
    }
}

@Suite("Spool quarantine of the newest segment")
struct NewestSegmentQuarantineTests {
    @Test("After the newest segment is quarantined, appends continue right after its readable prefix")
    func appendsAfterPrefix() throws {
        let folder = TemporaryFolder("newest")
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, segmentSize: 16 << 10, durability: .fsync)
        var spool: Spool? = try Spool(configuration)
        var ids: [MessageID] = []
        for n in 0..<40 { ids.append(try spool!.enqueue(testMessage(["q\(n)@q.test"], body: String(repeating: "q", count: 900)))) }
        spool!.close()
        spool = nil
        let shardFolder = folder.path + "/Queue/shard-00"
        let files = segmentFiles(shardFolder)
        #expect(files.count >= 3)
        /* Damage the second record of the newest segment (after the admin snapshot), keeping what follows. */
        let newest = shardFolder + "/" + files.last!
        let records = try segmentRecords(newest).filter { $0.type == RecordType.message.rawValue }
        #expect(records.count >= 2)
        let victim = records[1]
        let fd = open(newest, O_RDWR)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, off_t(victim.offset + 20)) == 1)
        byte ^= 0xFF
        #expect(pwrite(fd, &byte, 1, off_t(victim.offset + 20)) == 1)
        close(fd)

        spool = try Spool(configuration)
        #expect(spool!.recoveryReports[0].quarantined.count == 1)
        let survivors = Set(pendingKeys(spool!).map(\.message))
        var added: [MessageID] = []
        for n in 0..<5 { added.append(try spool!.enqueue(testMessage(["r\(n)@q.test"]))) }
        spool!.close()
        spool = try Spool(configuration)
        #expect(spool!.recoveryReports[0].quarantined.isEmpty, "\(spool!.recoveryReports[0].quarantined)")
        #expect(Set(pendingKeys(spool!).map(\.message)) == survivors.union(added))
        for id in added { #expect(try spool!.shards[0].message(id).sender == "sender@example.org") }
        spool!.close()
    }
}
