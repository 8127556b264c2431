// SendCommand.swift - `carrier send`: one message from standard input, like sendmail

import ArgumentParser
import Carrier
import Delivery
import SMTP
import Spool
#if canImport(Glibc)
import Glibc
#endif

/// `carrier send`: enqueue one message read from standard input.
struct SendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Enqueue one message from standard input (transactional), like sendmail.",
        discussion: "Prints the queue id once the message is on disk (fsync). Deliver with `carrier serve`."
    )

    @Option(help: ArgumentHelp("The spool's folder.", valueName: "dir"))
    var spool = "Queue"

    @Option(name: .customShort("f"), help: ArgumentHelp("The envelope sender; empty for <>.", valueName: "addr"))
    var from: String

    @Option(help: ArgumentHelp("A campaign name to file it under.", valueName: "name"))
    var campaign = ""

    @Flag(help: "Enqueue as bulk mail instead of transactional.")
    var bulk = false

    @Option(help: ArgumentHelp("Expire the message this many seconds from now: recipients not delivered by then are returned to the sender, not sent.",
                               valueName: "seconds"))
    var expiresIn: Int64?

    @Option(help: ArgumentHelp("A delivery log to write a `received` record per recipient to.", valueName: "file"))
    var log: String?

    @Argument(help: ArgumentHelp("Recipients.", valueName: "rcpt"))
    var recipients: [String]

    func run() throws {
        if !from.isEmpty {
            do { _ = try MailAddress(parsing: from) } catch { throw ValidationError("-f \(from): \(error)") }
        }
        for recipient in recipients {
            do { _ = try MailAddress(parsing: recipient) } catch { throw ValidationError("\(recipient): \(error)") }
        }
        if let expiresIn, expiresIn <= 0 || expiresIn > Int64.max / 1000 - nowMilliseconds() / 1000 {
            throw ValidationError("--expires-in must be a positive number of seconds, not \(expiresIn)")
        }
        var body: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(0, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            body.append(contentsOf: chunk[0..<n])
            guard body.count <= Spool.maximumMessageSize else {
                throw ValidationError("the message on standard input is larger than the spool stores (\(Spool.maximumMessageSize) octets)")
            }
        }
        guard !body.isEmpty else { throw ValidationError("no message on standard input") }
        /* The log is opened first: failing after the message is queued would make a script
           that retries on failure queue it twice. */
        let file: DeliveryLog?
        do { file = try log.map { path throws(DeliveryLogError) in try DeliveryLog(path: path) } } catch { throw ValidationError("--log: \(error)") }
        defer { file?.close() }
        let opened: Spool
        do { opened = try Spool(SpoolConfiguration(directory: spool)) } catch { throw ValidationError("cannot open the spool: \(error)") }
        defer { opened.close() }
        reportRecovery(opened, command: "carrier send")
        let id: MessageID
        let expires = expiresIn.map { nowMilliseconds() + $0 * 1000 } ?? 0
        do {
            id = try opened.enqueue(NewMessage(sender: from, body: body,
                                               metadata: MessageMetadata(campaign: campaign, priority: bulk ? .bulk : .transactional,
                                                                         expires: expires, hints: MessageHints.literal),
                                               recipients: recipients.map { NewRecipient($0) }))
        } catch {
            throw ValidationError("enqueue failed: \(error)")
        }
        print("queued as \(id)")
        for recipient in recipients {
            file?.append(DeliveryLogRecord(time: nowMilliseconds(), event: .received, messageID: id.description,
                                           recipient: recipient, campaign: campaign, text: "\(body.count) octets from \(from.isEmpty ? "<>" : from)"))
        }
    }
}
