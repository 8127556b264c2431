// AdministrationTests.swift - operator actions survive a restart: recorded in the spool,
// restored into a fresh scheduler

#if canImport(Glibc)
import Glibc
#endif
import Testing
import Carrier
import Scheduler
import Spool

@Suite("Shard administration")
struct AdministrationTests {
    @Test("Suspensions are recorded in the spool and come back into a new scheduler after a reopen; resume and bounce-all are recorded too")
    func survivesRestart() throws {
        var template = Array("/tmp/carrier-admin-XXXXXX".utf8CString)
        let folder = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        defer { _ = system("rm -rf '\(folder)'") }
        let configuration = SpoolConfiguration(directory: folder + "/Queue", shards: 1, durability: .none, outcomeDurability: .none)
        let now: Int64 = 1_000_000
        var spool: Spool? = try Spool(configuration)
        let id = try spool!.enqueue(NewMessage(sender: "s@example.org", body: Array("x\r\n".utf8),
                                               metadata: MessageMetadata(campaign: "spring"),
                                               recipients: [NewRecipient("a@gone.test"), NewRecipient("b@kept.test")]))
        var scheduler = Scheduler()
        var admin = ShardAdministrator(spool: spool!.shards[0], campaignIDs: ["spring": 7])
        try admin.suspend(.domain, "slow.test", until: now + 60_000, scheduler: &scheduler, now: now)
        try admin.suspend(.site, "mx.example", until: nil, scheduler: &scheduler, now: now)
        try admin.suspend(.campaign, "spring", until: now + 5_000, scheduler: &scheduler, now: now)
        try admin.suspend(.domain, "brief.test", until: now + 10, scheduler: &scheduler, now: now)
        try admin.resume(.domain, "brief.test", scheduler: &scheduler, now: now)
        #expect(try admin.bounceAll(domain: "gone.test", reason: "550 5.1.2 domain withdrawn", scheduler: &scheduler) == 1)
        spool!.close()
        spool = nil

        /* After a restart: a new spool and a new scheduler. */
        spool = try Spool(configuration)
        admin = ShardAdministrator(spool: spool!.shards[0], campaignIDs: ["spring": 7])
        #expect(spool!.shards[0].counts().bounced == 1)
        #expect(spool!.shards[0].pendingRecipients().map(\.key) == [RecipientKey(message: id, index: 1)])
        var restored = Scheduler()
        admin.restore(into: &restored, now: now + 1)
        /* The suspended domain and site hold their recipients; others flow. */
        let slowSite = restored.site("other")
        let slow = restored.domain("slow.test", site: slowSite)
        let free = restored.domain("free.test", site: slowSite)
        let heldSite = restored.site("mx.example")
        let held = restored.domain("held.test", site: heldSite)
        for (n, domain) in [slow, free, held].enumerated() {
            restored.submit(ScheduledRecipient(ref: RecipientRef(UInt64(n)), queued: now), domain: domain, now: now + 1)
        }
        restored.submit(ScheduledRecipient(ref: RecipientRef(9), queued: now, campaign: 7, priority: .bulk), domain: free, now: now + 1)
        var handed: [UInt64] = []
        while let delivery = restored.next(now: now + 1) { handed += delivery.recipients.map { $0.ref.messageLow } }
        #expect(handed == [1]) // free.test's transactional one; the campaign is suspended
        var later: [UInt64] = []
        while let delivery = restored.next(now: now + 5_000) { later += delivery.recipients.map { $0.ref.messageLow } }
        #expect(later == [9]) // the campaign's suspension has run out
        while let delivery = restored.next(now: now + 60_000) { later += delivery.recipients.map { $0.ref.messageLow } }
        #expect(later == [9, 0]) // then the domain's; the site stays suspended until resumed
        try admin.resume(.site, "mx.example", scheduler: &restored, now: now + 60_000)
        #expect(restored.next(now: now + 60_000)?.recipients.map { $0.ref.messageLow } == [2])
        #expect(spool!.shards[0].suspensions.contains { $0.scope == .site } == false)
        spool!.close()
    }
}
