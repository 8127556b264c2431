// PreparedMessage.swift - a stored message made ready to send, and the shard's cache of them
//
// A message read back from the spool is parsed into a template once. Recipients
// without merge variables share one rendered, encoded payload (the body is encoded
// once for the whole campaign); a personalised recipient gets its own rendering.

import Bytes
import SMTP
import Spool

/// A message ready for its transactions. Confined to its shard's loop thread.
final class PreparedMessage {
    let id: MessageID
    let sender: ReversePath
    let metadata: MessageMetadata
    let template: MessageTemplate
    let hostname: String
    /// The payload every recipient without variables shares, made on first use.
    private var shared: MessagePayload?
    private var scratch: [UInt8] = []

    init(_ stored: StoredMessage, hostname: String) {
        id = stored.id
        sender = (try? ReversePath(parsing: stored.sender)) ?? .null
        metadata = stored.metadata
        template = MessageTemplate(stored.body, mergeFields: !MessageHints.isLiteral(stored.metadata.hints))
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
/// Hints are lines of text; the engine knows one: `literal`, a message whose
/// `{{field}}` text is content, not merge references (mail submitted over
/// SMTP, `carrier send`). Anything else is kept for other tools.
public enum MessageHints {
    /// The hints of a literal message.
    public static let literal: [UInt8] = Array("literal".utf8)

    /// isLiteral - true when `hints` has a `literal` line.
    public static func isLiteral(_ hints: [UInt8]) -> Bool {
        hints.split(separator: 0x0A).contains { $0.elementsEqual(literal) }
    }
}
