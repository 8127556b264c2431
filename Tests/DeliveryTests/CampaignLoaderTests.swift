// CampaignLoaderTests.swift - `carrier campaign`'s loader: a run that fails leaves nothing of
// its campaign to deliver, from a file or from a pipe; a good list is queued whole

#if canImport(Glibc)
import Glibc
#endif
import Carrier
import CarrierTesting
import Dispatch
import Spool
import Testing

private let template = Array("Subject: hello {{name}}\r\n\r\nHi {{name}}.\r\n".utf8)

/// list - a header and `rows` good rows over 16 domains, then `tail`. 40,000 rows in two
/// shards are well over the writer's 4,096-recipient chunk in each.
private func list(rows: Int, then tail: String = "") -> [UInt8] {
    var text = "email,name\n"
    for n in 0..<rows { text += "user\(n)@d\(n % 16).test,N\(n)\n" }
    return Array((text + tail).utf8)
}

/// pending - pending recipients over every shard.
private func pending(_ spool: Spool) -> Int { spool.shards.reduce(0) { $0 + $1.pendingCount } }

/// pendingAfterReopen - pending recipients of the spool in `folder` as a new process would see them.
private func pendingAfterReopen(_ folder: TemporaryFolder) throws -> Int {
    let spool = try Spool(SpoolConfiguration(directory: folder.file("Queue"), readOnly: true))
    defer { spool.close() }
    return pending(spool)
}

/// load - the loader over `path` into the spool in `folder` (two shards); the spool is closed after.
private func load(_ folder: TemporaryFolder, _ path: String, skipInvalid: Bool = false) throws -> CampaignLoadResult {
    let spool = try Spool(SpoolConfiguration(directory: folder.file("Queue"), shards: 2))
    defer { spool.close() }
    do {
        return try CampaignLoader.load(spool: spool, sender: "news@origin.test", template: template, recipientsPath: path,
                                       campaign: "spring", skipInvalid: skipInvalid)
    } catch {
        #expect(pending(spool) == 0, "nothing of the failed campaign is pending: \(error)")
        throw error
    }
}

@Suite("Campaign loader", .serialized)
struct CampaignLoaderTests {
    /// A bad row after chunks were written: the run fails and nothing of it stays queued, so
    /// running it again with the row fixed does not send the first part twice.
    @Test func aBadRowAfterWrittenChunksLeavesNothingQueued() throws {
        let folder = TemporaryFolder("campaign")
        defer { folder.remove() }
        writeFile(folder.file("list.csv"), list(rows: 40_000, then: "not-an-address,Bad\n"))
        #expect(throws: CampaignLoadError.self) { try load(folder, folder.file("list.csv")) }
        #expect(try pendingAfterReopen(folder) == 0)

        writeFile(folder.file("list.csv"), list(rows: 40_000, then: "fixed@d0.test,Fixed\n"))
        #expect(try load(folder, folder.file("list.csv")).recipients == 40_001)
        #expect(try pendingAfterReopen(folder) == 40_001, "the run after the fix queues each recipient once")
    }

    /// A list read from a pipe cannot be checked before it is stored: what was stored before
    /// the bad row is cancelled, durably, before the run ends.
    @Test func aBadRowFromAPipeLeavesNothingQueued() throws {
        let folder = TemporaryFolder("campaign-pipe")
        defer { folder.remove() }
        let fifo = folder.file("list.fifo")
        try #require(mkfifo(fifo, 0o600) == 0)
        signal(SIGPIPE, SIG_IGN)
        let content = list(rows: 40_000, then: "good@d1.test,G\nnot-an-address,Bad\nlast@d2.test,L\n")
        let written = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let fd = open(fifo, O_WRONLY)
            if fd >= 0 {
                _ = content.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
            }
            written.signal()
        }
        #expect(throws: CampaignLoadError.self) { try load(folder, fifo) }
        written.wait()
        #expect(try pendingAfterReopen(folder) == 0)
    }

    /// With --skip-invalid the bad rows are skipped and reported once each (the list is read
    /// twice), and everything else is queued.
    @Test func skipInvalidQueuesTheGoodRowsAndReportsEachBadOneOnce() throws {
        let folder = TemporaryFolder("campaign-skip")
        defer { folder.remove() }
        writeFile(folder.file("list.csv"), list(rows: 10_000, then: "not-an-address,Bad\nlast@d2.test,L\n"))
        let result = try load(folder, folder.file("list.csv"), skipInvalid: true)
        #expect(result.recipients == 10_001)
        #expect(result.skipped.count == 1)
        #expect(try pendingAfterReopen(folder) == 10_001)
    }
}
