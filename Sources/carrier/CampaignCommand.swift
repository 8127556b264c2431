// CampaignCommand.swift - `carrier campaign`: stream a campaign into the spool

import ArgumentParser
import Carrier
import Delivery
import Spool

/// `carrier campaign`: one template, a CSV of recipients with merge fields, into the spool.
struct CampaignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "campaign",
        abstract: "Enqueue a personalised campaign: a message template and a CSV list of recipients.",
        discussion: """
        The CSV's header row names the columns; the email column is the recipient, every other \
        column is a merge field that {{column}} in the template's headers and body is replaced with \
        (HTML-escaped inside text/html parts). Deliver with `carrier serve --spool DIR --drain`.
        """
    )

    @Option(help: ArgumentHelp("The spool's folder.", valueName: "dir"))
    var spool = "Queue"

    @Option(help: ArgumentHelp("The envelope sender (MAIL FROM).", valueName: "addr"))
    var from: String

    @Option(help: ArgumentHelp("The message: an RFC 5322 file with {{field}} placeholders.", valueName: "file.eml"))
    var template: String

    @Option(help: ArgumentHelp("The recipients: CSV with a header row and an email column.", valueName: "file.csv"))
    var recipients: String

    @Option(help: ArgumentHelp("The campaign's name (for shaping, logs and purges).", valueName: "name"))
    var campaign = "campaign"

    @Flag(help: "Skip rows with a bad address or shape (each is reported) instead of failing the run (a failed run queues nothing).")
    var skipInvalid = false

    @Flag(help: "Enqueue as transactional mail instead of bulk.")
    var transactional = false

    @Option(help: ArgumentHelp("A delivery log to write the campaign's `received` record to.", valueName: "file"))
    var log: String?

    @Option(help: ArgumentHelp("Durability of the enqueue: fsync, none.", valueName: "mode"))
    var durability = "fsync"

    func run() throws {
        guard let body = readFileBytes(template) else { throw ValidationError("cannot read the template \(template)") }
        guard durability == "fsync" || durability == "none" else { throw ValidationError("--durability is fsync or none") }
        let opened: Spool
        do {
            opened = try Spool(SpoolConfiguration(directory: spool, durability: durability == "fsync" ? .fsync : .none))
        } catch {
            throw ValidationError("cannot open the spool: \(error)")
        }
        reportRecovery(opened, command: "carrier campaign")
        defer { opened.close() }
        /* The log is opened before anything is stored: failing on it afterwards would end
           the run in an error with the campaign queued all the same. */
        var file: DeliveryLog?
        if let log {
            do { file = try DeliveryLog(path: log) } catch { throw ValidationError("delivery log: \(error)") }
        }
        defer { file?.close() }
        let result: CampaignLoadResult
        do {
            result = try CampaignLoader.load(
                spool: opened, sender: from, template: body, recipientsPath: recipients, campaign: campaign,
                priority: transactional ? .transactional : .bulk, skipInvalid: skipInvalid,
                progress: { count in print("\r  \(count) recipients...", terminator: "") })
        } catch {
            throw ValidationError("\(error)")
        }
        print("\rcampaign \(campaign): message \(result.id), \(result.recipients) recipients queued in \(spool)")
        file?.append(DeliveryLogRecord(time: nowMilliseconds(), event: .received, messageID: result.id.description, recipient: "",
                                       campaign: campaign, text: "campaign of \(result.recipients) recipients from \(from)"))
        for problem in result.skipped { print("  skipped: \(problem)") }
        if !result.skipped.isEmpty { print("\(result.skipped.count) rows skipped") }
    }
}
