// CampaignLoader.swift - a campaign from a template and a CSV list into the spool
//
// The list is streamed: rows are read in chunks and handed to the spool's campaign
// writer, which writes recipients in chunks of its own, so a million-row list never
// sits in memory. A row that is not a deliverable address is reported with its line
// number and either skipped or the end of the run (the caller chooses).

public import Delivery
public import Spool

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
    /// `progress` hears the count of recipients added so far, every 10,000.
    public static func load(
        spool: Spool, sender: String, template: [UInt8], recipientsPath: String, campaign: String,
        priority: PriorityClass = .bulk, skipInvalid: Bool = false, progress: ((Int) -> Void)? = nil
    ) throws(CampaignLoadError) -> CampaignLoadResult {
        var reader: RecipientCSVReader
        do { reader = try RecipientCSVReader(path: recipientsPath) } catch { throw CampaignLoadError("\(error)") }
        let writer = spool.campaign(sender: sender, body: template, metadata: MessageMetadata(campaign: campaign, priority: priority))
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
        guard added > 0 else { throw CampaignLoadError("\(recipientsPath): no recipients") }
        do {
            let receipt = try writer.finish()
            return CampaignLoadResult(id: receipt.id, recipients: receipt.recipients, skipped: skipped)
        } catch {
            throw CampaignLoadError("spool: \(error)")
        }
    }
}
