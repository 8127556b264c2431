// PreparedMessage.swift - a stored message made ready to send, and the shard's cache of them
//
// A message read back from the spool is parsed into a template once. Recipients
// without merge variables share one rendered, encoded payload (the body is encoded
// once for the whole campaign); a personalised recipient gets its own rendering.

import Bytes
public import SMTP
import Spool

/// A message ready for its transactions. Confined to its shard's loop thread.
final class PreparedMessage {
    let id: MessageID
    let sender: ReversePath
    let metadata: MessageMetadata
    let template: MessageTemplate
    /// DSN requests made when the message was submitted (RFC 3461), relayed to servers that offer DSN.
    let dsn: DSNRequests
    let hostname: String
    /// The payload every recipient without variables shares, made on first use.
    private var shared: MessagePayload?
    private var scratch: [UInt8] = []

    init(_ stored: StoredMessage, hostname: String) {
        id = stored.id
        sender = (try? ReversePath(parsing: stored.sender)) ?? .null
        metadata = stored.metadata
        template = MessageTemplate(stored.body, mergeFields: !MessageHints.isLiteral(stored.metadata.hints))
        dsn = stored.metadata.hints.isEmpty ? DSNRequests() : MessageHints.dsn(stored.metadata.hints)
        self.hostname = hostname
    }

    /// payload - the encoded message for a recipient with `variables` (none: the shared one).
    func payload(variables: [(String, String)], queueID: String) throws(EncodingError) -> MessagePayload {
        if variables.isEmpty, let shared { return shared }
        scratch.removeAll(keepingCapacity: true)
        template.render(variables, queueID: queueID, messageIDDomain: hostname, into: &scratch)
        let payload = try scratch.withUnsafeBytes { raw in
            Result { () throws(EncodingError) in try MessagePayload(encoding: raw) }
        }.get()
        if variables.isEmpty { shared = payload }
        return payload
    }
}

/// The messages read last, by id, least recently used first out. Loop-confined.
struct MessageCache {
    private var entries: [MessageID: (message: PreparedMessage, used: UInt64)] = [:]
    private var clock: UInt64 = 0
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    mutating func get(_ id: MessageID) -> PreparedMessage? {
        guard let entry = entries[id] else { return nil }
        clock += 1
        entries[id]!.used = clock
        return entry.message
    }

    mutating func put(_ id: MessageID, _ message: PreparedMessage) {
        if entries.count >= capacity, let oldest = entries.min(by: { $0.value.used < $1.value.used })?.key {
            entries[oldest] = nil
        }
        clock += 1
        entries[id] = (message, clock)
    }
}

/// The engine's reading of a message's opaque hints (`MessageMetadata.hints`).
///
/// Hints are lines of text; the engine knows these: `literal`, a message whose
/// `{{field}}` text is content, not merge references (mail submitted over SMTP,
/// `carrier send`), and the DSN requests of mail submitted over SMTP (RFC 3461):
/// `dsn-ret=FULL|HDRS`, `dsn-envid=XTEXT`, and per recipient (by its index in the
/// message) `dsn-notify.N=NEVER|SUCCESS,FAILURE,DELAY` and `dsn-orcpt.N=XTEXT`
/// (an rfc822 original recipient). Values are xtext, so no line can hold a line
/// break. Anything else is kept for other tools.
public enum MessageHints {
    /// The hints of a literal message.
    public static let literal: [UInt8] = Array("literal".utf8)

    /// isLiteral - true when `hints` has a `literal` line.
    public static func isLiteral(_ hints: [UInt8]) -> Bool {
        hints.split(separator: 0x0A).contains { $0.elementsEqual(literal) }
    }

    /// encode - hint lines for a literal message with these DSN requests.
    public static func encode(literal isLiteral: Bool, dsn: DSNRequests) -> [UInt8] {
        if dsn.isEmpty { return isLiteral ? literal : [] }     /* nearly every message */
        var lines: [String] = isLiteral ? ["literal"] : []
        if let ret = dsn.ret { lines.append("dsn-ret=\(ret == "HDRS" ? "HDRS" : "FULL")") }
        if let envelopeID = dsn.envelopeID { lines.append("dsn-envid=" + XText.encode(envelopeID)) }
        for index in dsn.recipients.keys.sorted() {
            let request = dsn.recipients[index]!
            if let notify = request.notify {
                let known = notify.filter { ["SUCCESS", "FAILURE", "DELAY"].contains($0) }
                lines.append("dsn-notify.\(index)=" + (known.isEmpty ? "NEVER" : known.joined(separator: ",")))
            }
            if let original = request.originalRecipient { lines.append("dsn-orcpt.\(index)=" + XText.encode(original)) }
        }
        return Array(lines.joined(separator: "\n").utf8)
    }

    /// dsn - the DSN requests in `hints` (none when it has no dsn- lines; a value that
    /// does not decode is left out).
    public static func dsn(_ hints: [UInt8]) -> DSNRequests {
        var requests = DSNRequests()
        for raw in hints.split(separator: 0x0A) where raw.starts(with: "dsn-".utf8) {
            let line = String(decoding: raw, as: UTF8.self)
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals]
            let value = String(line[line.index(after: equals)...])
            switch key {
            case "dsn-ret":
                if value == "FULL" || value == "HDRS" { requests.ret = value }
            case "dsn-envid":
                requests.envelopeID = try? XText.decode(value)
            default:
                guard let dot = key.firstIndex(of: "."), let index = Int(key[key.index(after: dot)...]), index >= 0 else { continue }
                switch key[..<dot] {
                case "dsn-notify":
                    requests.recipients[index, default: RecipientDSN()].notify =
                        value == "NEVER" ? [] : value.split(separator: ",").map(String.init)
                case "dsn-orcpt":
                    if let original = try? XText.decode(value) { requests.recipients[index, default: RecipientDSN()].originalRecipient = original }
                default:
                    continue
                }
            }
        }
        return requests
    }
}

/// The DSN requests of a message (RFC 3461): what to return, the sender's envelope id, and
/// per recipient (by its index in the message) when to notify and the original address.
///
/// A value; safe to send between threads.
public struct DSNRequests: Sendable, Equatable {
    /// RET: "FULL" or "HDRS".
    public var ret: String?
    /// ENVID, decoded.
    public var envelopeID: String?
    /// NOTIFY and ORCPT by recipient index.
    public var recipients: [Int: RecipientDSN] = [:]

    public init(ret: String? = nil, envelopeID: String? = nil, recipients: [Int: RecipientDSN] = [:]) {
        self.ret = ret
        self.envelopeID = envelopeID
        self.recipients = recipients
    }

    /// True when nothing was asked.
    public var isEmpty: Bool { ret == nil && envelopeID == nil && recipients.isEmpty }

    /// wantsFailureNotice - false when the recipient's NOTIFY leaves out FAILURE (NEVER
    /// included); true when it has no NOTIFY (the MTA's default applies).
    public func wantsFailureNotice(recipient index: Int) -> Bool {
        guard let notify = recipients[index]?.notify else { return true }
        return notify.contains("FAILURE")
    }
}
