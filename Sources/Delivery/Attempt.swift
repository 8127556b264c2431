// Attempt.swift - one transaction in progress, and the small types a worker shard's
// transactions are made of

import EventCore
import Scheduler
import SMTP
import SMTPStreams
import Spool

/// A final outcome on its way to the spool, with what a bounce notice would say.
struct FinalOutcome {
    var key: RecipientKey
    var outcome: Outcome
    var transactional: Bool
    var status: String
    var diagnostic: String
    var remoteMTA: String?
}

/// What one recipient's attempt came to.
enum AttemptResult {
    case delivered(Reply)
    case temporary(Reply)
    case permanent(Reply)
    /// Not sent: the message's own expiry time (`MessageMetadata.expires`) had passed.
    case expired(Reply)
    /// The recipient left the spool meanwhile (purged): nothing to record.
    case gone

    var schedulerResult: DeliveryResult {
        switch self {
        case .delivered: .delivered
        case .temporary(let reply): .temporaryFailure(reply: reply.description)
        case .permanent(let reply): .permanentFailure(reply: reply.description)
        case .expired: .expired
        case .gone: .permanentFailure(reply: "gone")
        }
    }
}

/// Pools are per hop address and per route (TLS mode and credentials come with the route).
struct PoolKey: Hashable {
    var address: SocketAddress
    var route: String
}

/// One transaction in progress. Confined to its shard's loop thread.
final class Attempt: PoolTransaction {
    unowned let shard: WorkerShard
    let delivery: Delivery
    let keys: [RecipientKey]
    let recipients: [NewRecipient]
    let started = MonotonicClock.nanoseconds()
    var prepared: PreparedMessage?
    var destination: Destination?
    var hopIndex = 0
    var message = OutboundMessage(sender: .null, recipients: [], payload: MessagePayload(normalized: .init(), dotStuffed: .init(), has8BitData: false))
    /// Positions (into `keys`) of the recipients in `message`, in its order.
    var sent: [Int] = []
    /// Results known before sending (bad addresses).
    var presetResults: [AttemptResult?] = []
    /// The reply and address of each recipient the scheduler disposes of because of this
    /// attempt (bounced, or expired with its message), for the log and the bounce notice.
    var finalReplies: [RecipientRef: (Reply, String?)] = [:]
    /// Recipients no longer in the spool: nothing is recorded for them.
    var gone: Set<RecipientRef> = []

    init(shard: WorkerShard, delivery: Delivery, keys: [RecipientKey], recipients: [NewRecipient]) {
        self.shard = shard
        self.delivery = delivery
        self.keys = keys
        self.recipients = recipients
    }

    func poolCompleted(_ result: TransactionResult, hop: ResolvedHop) { shard.completed(self, result, hop: hop) }
    func poolFailed(_ error: ClientConnectionError?, hop: ResolvedHop) { shard.connectionFailed(self, error: error, hop: hop) }
}

/// localReply - a reply Carrier makes itself (no server said it), in the server's form.
func localReply(_ code: Int, _ enhanced: String, _ text: String) -> Reply {
    Reply(code: code, enhanced: EnhancedStatus(enhanced), text: "\(enhanced) \(text)")
}

/// headerValue - the unfolded value of the first header field `name` (lowercase) in a header block.
func headerValue(_ name: String, in headers: [UInt8]) -> String? {
    let text = String(decoding: headers, as: UTF8.self)
    var found: String?
    for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" }) {
        let line = line.hasSuffix("\r") ? line.dropLast() : line
        if line.isEmpty { break }
        if let value = found {
            guard line.first == " " || line.first == "\t" else { return value }
            found = value + " " + line.drop(while: { $0 == " " || $0 == "\t" })
        } else if let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == name {
            found = String(line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" }))
        }
    }
    return found
}
