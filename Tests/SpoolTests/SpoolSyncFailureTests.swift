// SpoolSyncFailureTests.swift - a failed fdatasync stops the shard taking appends until
// a restart replays what is really on disk

import CarrierTesting
import Glibc
@testable import Spool
import Testing

@Suite("Spool sync failure")
struct SpoolSyncFailureTests {
    /// An fdatasync that fails with EIO fails its batch; every later append fails the same
    /// way, although the next sync would succeed (the kernel may have dropped the pages it
    /// could not write, so "success" would acknowledge on top of lost data). Reopened, the
    /// shard holds what was acknowledged and takes mail again.
    @Test func aFailedSyncStopsTheShardUntilReopened() throws {
        let folder = TemporaryFolder("syncfail")
        defer { folder.remove() }
        let configuration = testConfiguration(folder.path, shards: 1, durability: .fsync)
        var spool: Spool? = try Spool(configuration)
        let kept = try spool!.enqueue(testMessage(["a@one.test"]))

        spool!.shards[0].syncFaults.store(1, ordering: .relaxed)
        for attempt in ["failed", "after the failure"] {
            do {
                let id = try spool!.enqueue(testMessage(["b@one.test"]))
                Issue.record("an enqueue \(attempt) was acknowledged as \(id)")
            } catch {
                #expect(error.reason == .io(operation: "fdatasync", errno: EIO), "\(attempt): \(error)")
            }
        }
        #expect(spool!.shards[0].syncFaults.load(ordering: .relaxed) == 0, "one injected failure, used once")
        spool!.close()
        spool = nil

        spool = try Spool(configuration)
        defer { spool?.close() }
        #expect(pendingKeys(spool!) == [RecipientKey(message: kept, index: 0)])
        let next = try spool!.enqueue(testMessage(["c@one.test"]))
        #expect(pendingKeys(spool!).contains(RecipientKey(message: next, index: 0)))
    }
}
