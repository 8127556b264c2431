// SpoolDiskFullTests.swift - a spool on a 2 MiB tmpfs: enqueue until the disk is full,
// check nothing acknowledged is lost, free space and go on

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import Testing
@testable import Spool

@Suite("Spool disk full")
struct SpoolDiskFullTests {
    @Test("A full disk fails the enqueue with diskFull, keeps what was acknowledged, and recovers when space returns")
    func diskFull() throws {
        let folder = TemporaryFolder("diskfull")
        defer { folder.remove() }
        /* Mounting needs CAP_SYS_ADMIN: without it (an unprivileged run, some containers) skip. */
        guard let tmpfs = TestTmpfs.mount(at: folder.path + "/mnt", megabytes: 2, label: "carrier-spool-test") else {
            print("SpoolDiskFullTests: skipped: cannot mount a tmpfs (needs root / CAP_SYS_ADMIN)")
            return
        }
        let mount = tmpfs.path
        defer {
            if !tmpfs.unmount() { Issue.record("umount \(mount) failed for 5 s: something keeps a file open in it") }
        }

        /* A filler file to delete later, so the spool gets space back without outcomes. */
        let filler = mount + "/filler"
        try [UInt8](repeating: 0x5A, count: 384 << 10).withUnsafeBytes { try writeWholeFile(filler, $0) }

        let configuration = SpoolConfiguration(directory: mount + "/Queue", shards: 2, segmentSize: 256 << 10,
                                               durability: .fsync, outcomeDurability: .fsync)
        var spool: Spool? = try Spool(configuration)
        defer { spool?.close(); spool = nil } // before the umount: no file in the mount may stay open
        var acknowledged: [(id: MessageID, message: NewMessage)] = []
        var failure: SpoolError? = nil
        let domains = ["one.test", "two.test", "three.test"]
        for n in 0..<200 {
            let domain = domains[n % domains.count]
            let body = Array("Subject: \(n)\r\n\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "a") + UInt8(n % 26), count: 64_000)
            let message = NewMessage(sender: "full@example.org", body: body,
                                     recipients: [NewRecipient("a\(n)@\(domain)"), NewRecipient("b\(n)@\(domain)")])
            do {
                acknowledged.append((try spool!.enqueue(message), message))
            } catch {
                failure = error
                break
            }
        }
        let error = try #require(failure, "2 MiB never filled up after \(acknowledged.count) messages")
        #expect(error.reason == .diskFull, "\(error)")
        #expect(acknowledged.count >= 5, "only \(acknowledged.count) messages fitted")

        /* checkAcknowledged - every acknowledged message pending in full and readable. */
        func checkAcknowledged(_ spool: Spool, _ when: String) {
            let pending = Set(spool.shards.flatMap { $0.pendingRecipients().map(\.key) })
            let known = Set(acknowledged.map(\.id))
            for (id, message) in acknowledged {
                let shard = spool.shard(for: message.recipients[0].domain)
                for index in 0..<message.recipients.count {
                    let key = RecipientKey(message: id, index: UInt32(index))
                    #expect(pending.contains(key), "\(when): \(key) is not pending")
                    #expect((try? shard.recipient(key)) == message.recipients[index], "\(when): \(key) does not read back")
                }
                #expect((try? shard.message(id).body) == message.body, "\(when): the body of \(id) does not read back")
            }
            /* The failed enqueue left nothing pending. */
            #expect(pending.allSatisfy { known.contains($0.message) }, "\(when): a message that was refused is pending")
        }
        checkAcknowledged(spool!, "while full")

        /* Still full: a second try (larger than the one refused) fails the same way and does no harm. */
        let retry = NewMessage(sender: "full@example.org", body: [UInt8](repeating: 0x62, count: 80_000),
                               recipients: [NewRecipient("retry@one.test")])
        do {
            let id = try spool!.enqueue(retry)
            Issue.record("an enqueue on a full disk was acknowledged as \(id)")
        } catch {
            #expect(error.reason == .diskFull, "\(error)")
        }
        checkAcknowledged(spool!, "after a second failure")

        /* Space comes back: the next enqueue is stored. */
        #expect(unlink(filler) == 0)
        acknowledged.append((try spool!.enqueue(retry), retry))
        checkAcknowledged(spool!, "after space came back")
        spool!.close()
        spool = nil

        spool = try Spool(configuration)
        for report in spool!.recoveryReports {
            #expect(report.quarantined.isEmpty && report.affectedMessages.isEmpty, "\(report)")
        }
        checkAcknowledged(spool!, "after reopening")
        print("SpoolDiskFullTests: \(acknowledged.count - 1) messages of 64 KB fitted before the disk was full")
    }
}
