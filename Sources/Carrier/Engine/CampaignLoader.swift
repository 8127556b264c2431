// CampaignLoader.swift - a campaign from a template and a CSV list into the spool
//
// The list is streamed: rows are read in chunks and handed to the spool's campaign
// writer, which writes recipients in chunks of its own, so a million-row list never
// sits in memory. A row that is not a deliverable address is reported with its line
// number and either skipped or the end of the run (the caller chooses).
//
// A run that fails leaves nothing of its campaign deliverable. The writer stores every
// 4,096 recipients of a shard as they come, so without care a bad row near the end
// would leave the rows before it queued, and running again with the list fixed would
// send them twice. Two defences, because neither covers everything alone:
//   - A list in a regular file is read twice: first to check every row, storing and
//     keeping nothing, then to enqueue. A bad row or a broken file then ends the run
//     before the spool is touched, so not even a crash can leave part of it behind.
//   - Whatever fails while enqueueing (the spool, a list in a pipe, which can be read
//     only once and so is not checked first, a file changed between the two reads)
//     cancels every recipient already stored, fsync'd, before the error is returned
//     (`CampaignWriter.abandon`). Cancelling alone would not do: a process that dies
//     before its cancel is durable would leave a bad list's first part queued.
// A run killed while it enqueues (SIGKILL, a power loss) still leaves what was stored.

public import Delivery
public import Spool

#if canImport(Glibc)
import Glibc
#endif

/// What loading a campaign did.
public struct CampaignLoadResult: Sendable {
    public var id: MessageID
    public var recipients: Int
    /// Rows skipped, with why (only when skipping was asked for).
    public var skipped: [RecipientCSVError]
}

/// Why a campaign could not be loaded.
public struct CampaignLoadError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Streams campaigns into the spool.
public enum CampaignLoader {
    /// load - enqueue `template` from `sender` to every row of the CSV at `recipientsPath`.
    /// `progress` hears the count of recipients added so far, every 10,000. When it throws,
    /// nothing of the campaign is left to deliver.
    public static func load(
        spool: Spool, sender: String, template: [UInt8], recipientsPath: String, campaign: String,
        priority: PriorityClass = .bulk, skipInvalid: Bool = false, progress: ((Int) -> Void)? = nil
    ) throws(CampaignLoadError) -> CampaignLoadResult {
        let fd = open(recipientsPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CampaignLoadError("\(RecipientCSVError.io(path: recipientsPath, errno: errno))") }
        defer { close(fd) }

        /* Check a list that can be read again before storing anything of it. */
        var information = stat()
        if fstat(fd, &information) == 0 && information.st_mode & S_IFMT == S_IFREG {
            try check(fd, path: recipientsPath, skipInvalid: skipInvalid)
            guard lseek(fd, 0, SEEK_SET) == 0 else { throw CampaignLoadError("\(RecipientCSVError.io(path: recipientsPath, errno: errno))") }
        }

        var reader: RecipientCSVReader
        do { reader = try RecipientCSVReader(fileDescriptor: fd, name: recipientsPath) } catch { throw CampaignLoadError("\(error)") }
        let writer = spool.campaign(sender: sender, body: template, metadata: MessageMetadata(campaign: campaign, priority: priority))
        do {
            return try enqueue(&reader, into: writer, path: recipientsPath, skipInvalid: skipInvalid, progress: progress)
        } catch {
            throw undo(writer, after: error)
        }
    }

    /// check - read the whole list once, keeping nothing, and throw the first problem that
    /// would end the run: any, or with `skipInvalid` only those of the file as a whole.
    private static func check(_ fd: Int32, path: String, skipInvalid: Bool) throws(CampaignLoadError) {
        var reader: RecipientCSVReader
        do { reader = try RecipientCSVReader(fileDescriptor: fd, name: path) } catch { throw CampaignLoadError("\(error)") }
        var rows = 0
        while true {
            do {
                guard try reader.next() != nil else { break }
                rows += 1
            } catch {
                guard skipInvalid && error.isRowError else { throw CampaignLoadError("\(error)") }
            }
        }
        guard rows > 0 else { throw CampaignLoadError("\(path): no recipients") }
    }

    /// enqueue - every row of `reader` into `writer`, then wait until all of it is durable.
    private static func enqueue(
        _ reader: inout RecipientCSVReader, into writer: CampaignWriter, path: String, skipInvalid: Bool, progress: ((Int) -> Void)?
    ) throws(CampaignLoadError) -> CampaignLoadResult {
        var added = 0
        var skipped: [RecipientCSVError] = []
        while true {
            let row: RecipientRow?
            do {
                row = try reader.next()
            } catch {
                guard skipInvalid && error.isRowError else { throw CampaignLoadError("\(error)") }
                skipped.append(error)
                continue
            }
            guard let row else { break }
            do { try writer.add(NewRecipient(row.email, variables: row.variables)) } catch { throw CampaignLoadError("spool: \(error)") }
            added += 1
            if added % 10_000 == 0 { progress?(added) }
        }
        guard added > 0 else { throw CampaignLoadError("\(path): no recipients") }
        do {
            let receipt = try writer.finish()
            return CampaignLoadResult(id: receipt.id, recipients: receipt.recipients, skipped: skipped)
        } catch {
            throw CampaignLoadError("spool: \(error)")
        }
    }

    /// undo - cancel whatever `writer` stored; the error to report for the run.
    private static func undo(_ writer: CampaignWriter, after failure: CampaignLoadError) -> CampaignLoadError {
        do {
            _ = try writer.abandon(reason: "campaign not loaded: \(failure)")
            return failure
        } catch {
            return CampaignLoadError("\(failure); cancelling the recipients already stored failed too (\(error)), so part of message \(writer.id) may be delivered")
        }
    }
}
