// SubmissionIntake.swift - a message received over SMTP made into what the spool stores
//
// Pure functions, no I/O: the listener calls them on its loop thread between
// the end of DATA and the enqueue. They
//   - take the priority class and campaign from the X-Carrier-Class and
//     X-Carrier-Campaign header fields (removed here, so they never reach a
//     recipient), else from the authenticated user's defaults, else from the
//     listener's default class; and the message's expiry time from
//     X-Carrier-Expires (seconds from now; removed too);
//   - add a Received field (RFC 5321 §4.4) naming the client, the protocol
//     (RFC 3848: ESMTP, ESMTPS, ESMTPA, ESMTPSA) and the queue id;
//   - mark the message literal: the engine substitutes `{{field}}` merge
//     references only in campaign templates, never in submitted mail.

public import EventCore
import Delivery
public import SMTP
public import Spool

#if canImport(Glibc)
import Glibc
#endif

/// Who handed a message over and how; the Received field is written from it.
///
/// A value; safe to send between threads.
public struct SubmissionContext: Sendable {
    public var hostname: String
    /// The client's address as written in the Received field (`192.0.2.1`, `IPv6:2001:db8::1`).
    public var client: String
    public var heloName: String?
    public var isTLS: Bool
    public var authenticatedUser: String?
    /// The RFC 5322 date of receipt (`rfc5322Date`; the listener reuses one per second).
    public var date: String

    public init(hostname: String, client: String, heloName: String?, isTLS: Bool,
                authenticatedUser: String?, date: String) {
        self.hostname = hostname
        self.client = client
        self.heloName = heloName
        self.isTLS = isTLS
        self.authenticatedUser = authenticatedUser
        self.date = date
    }
}

extension SubmissionContext {
    /// clientText - how the Received field names a client address.
    public static func clientText(_ address: IPAddress?) -> String {
        address.map(NetworkPrefix.unmapped).map { $0.isIPv6 ? "IPv6:\($0)" : "\($0)" } ?? "unknown"
    }
}

/// Why a received message is refused before it is stored (answered 550 5.6.0).
public struct IntakeRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Turns received messages into spool messages.
public enum SubmissionIntake {
    /// The header fields that steer a message inside Carrier; removed before storing.
    public static let classField: StaticString = "x-carrier-class"
    public static let campaignField: StaticString = "x-carrier-campaign"
    public static let expiresField: StaticString = "x-carrier-expires"

    /// prepare - the message to enqueue for `received`, stored under `id`; `now` (ms since
    /// the epoch) is what X-Carrier-Expires counts from.
    public static func prepare(
        _ received: ReceivedMessage, id: MessageID, context: SubmissionContext,
        defaults: SubmissionUserDefaults?, defaultPriority: PriorityClass, now: Int64 = nowMilliseconds()
    ) throws(IntakeRefusal) -> NewMessage {
        let sender: String
        switch received.sender {
        case .null: sender = ""
        case .mailbox(let address): sender = address.description
        }
        var headerClass: String?
        var headerCampaign: String?
        var headerExpires: String?
        var body: [UInt8] = []
        body.reserveCapacity(received.body.readableBytes + 256)
        appendReceivedField(received, id: id, context: context, to: &body)
        received.body.withUnsafeReadableBytes { bytes in
            let end = headerEnd(bytes)
            var start = 0
            while start < end {
                let stop = fieldEnd(bytes, from: start, limit: end)
                if fieldNamed(classField, bytes, start, stop) {
                    headerClass = fieldValue(bytes, start, stop)
                } else if fieldNamed(campaignField, bytes, start, stop) {
                    headerCampaign = fieldValue(bytes, start, stop)
                } else if fieldNamed(expiresField, bytes, start, stop) {
                    headerExpires = fieldValue(bytes, start, stop)
                } else {
                    body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<stop]))
                }
                start = stop
            }
            body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[end...]))
        }
        var metadata = MessageMetadata(priority: defaults?.priority ?? defaultPriority)
        metadata.campaign = defaults?.campaign ?? ""
        metadata.tenant = defaults?.tenant ?? ""
        if let headerClass {
            guard let priority = PriorityClass(name: headerClass) else {
                throw IntakeRefusal(message: "X-Carrier-Class must be transactional or bulk, not \(headerClass.prefix(64))")
            }
            metadata.priority = priority
        }
        if let headerCampaign { metadata.campaign = String(headerCampaign.prefix(256)) }
        if let headerExpires {
            guard let expires = expiryTime(seconds: headerExpires, now: now) else {
                throw IntakeRefusal(message: "X-Carrier-Expires must be a positive whole number of seconds, not \(headerExpires.prefix(64))")
            }
            metadata.expires = expires
        }
        /* DSN requests (RFC 3461) travel in the hints: relayed to servers that offer DSN, and
           NOTIFY decides whether a failure sends a notice. */
        var dsn = DSNRequests(ret: received.mailParameters.dsnReturn?.rawValue, envelopeID: received.mailParameters.envelopeID)
        for (index, recipient) in received.recipients.enumerated() {
            let parameters = recipient.parameters
            var request = RecipientDSN()
            if let notify = parameters.notify {
                request.notify = [(RecipientParameters.Notify.success, "SUCCESS"), (.failure, "FAILURE"), (.delay, "DELAY")]
                    .filter { notify.contains($0.0) }.map(\.1)
            }
            if let original = parameters.originalRecipient, original.addressType == "rfc822" {
                request.originalRecipient = original.address
            }
            if request.notify != nil || request.originalRecipient != nil { dsn.recipients[index] = request }
        }
        metadata.hints = MessageHints.encode(literal: true, dsn: dsn)
        let recipients = received.recipients.map { NewRecipient($0.address.description) }
        return NewMessage(sender: sender, body: body, metadata: metadata, recipients: recipients)
    }

    /// expiryTime - `now` plus `seconds` (decimal digits, more than zero) in ms; nil when
    /// the text is not such a number or the time would not fit.
    static func expiryTime(seconds text: String, now: Int64) -> Int64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let seconds = Int64(text), seconds > 0 else { return nil }
        let (milliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        guard !overflow else { return nil }
        let (time, late) = now.addingReportingOverflow(milliseconds)
        return late ? nil : time
    }

    /// appendReceivedField - `Received: from HELO ([IP]) by HOST (Carrier) with ESMTPSA id ID for <rcpt>; DATE`.
    static func appendReceivedField(_ received: ReceivedMessage, id: MessageID, context: SubmissionContext, to out: inout [UInt8]) {
        out.append(contentsOf: "Received: from ".utf8)
        out.append(contentsOf: sanitised(context.heloName ?? "unknown").utf8)
        out.append(contentsOf: " ([".utf8)
        out.append(contentsOf: context.client.utf8)
        out.append(contentsOf: "])\r\n\tby ".utf8)
        out.append(contentsOf: sanitised(context.hostname).utf8)
        /* RFC 3848: SMTP after HELO; ESMTP, with S for TLS and A for AUTH, after EHLO. */
        out.append(contentsOf: (received.extendedHello ? " (Carrier) with ESMTP" : " (Carrier) with SMTP").utf8)
        if received.extendedHello && context.isTLS { out.append(UInt8(ascii: "S")) }
        if received.extendedHello && context.authenticatedUser != nil { out.append(UInt8(ascii: "A")) }
        out.append(contentsOf: " id ".utf8)
        out.append(contentsOf: id.description.utf8)
        if received.recipients.count == 1 {
            out.append(contentsOf: "\r\n\tfor ".utf8)
            out.append(contentsOf: received.recipients[0].address.path.utf8)
        }
        out.append(contentsOf: "; ".utf8)
        out.append(contentsOf: context.date.utf8)
        out.append(contentsOf: "\r\n".utf8)
    }

    /// sanitised - `text` with anything but printable ASCII outside parentheses replaced, so it cannot break the field.
    private static func sanitised(_ text: String) -> String {
        if text.utf8.count <= 255 && text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "(") && $0 != UInt8(ascii: ")") }) {
            return text
        }
        return String(String.UnicodeScalarView(text.unicodeScalars.prefix(255).map {
            ($0.value > 0x20 && $0.value < 0x7F && $0 != "(" && $0 != ")") ? $0 : "_"
        }))
    }

    /// headerEnd - the offset of the blank line ending the header section (or the end, if none).
    static func headerEnd(_ bytes: UnsafeRawBufferPointer) -> Int {
        var start = 0
        while start < bytes.count {
            if bytes[start] == 0x0D && start + 1 < bytes.count && bytes[start + 1] == 0x0A { return start }
            if bytes[start] == 0x0A { return start }
            guard let lineEnd = nextLine(bytes, from: start) else { return bytes.count }
            start = lineEnd
        }
        return bytes.count
    }

    /// fieldEnd - the end of the field starting at `start`: its line and every continuation line.
    static func fieldEnd(_ bytes: UnsafeRawBufferPointer, from start: Int, limit: Int) -> Int {
        var stop = nextLine(bytes, from: start) ?? limit
        while stop < limit && (bytes[stop] == 0x20 || bytes[stop] == 0x09) {
            stop = nextLine(bytes, from: stop) ?? limit
        }
        return min(stop, limit)
    }

    /// nextLine - the offset just past the LF ending the line at `start`; nil when there is none.
    private static func nextLine(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress,
              let found = memchr(base + start, 0x0A, bytes.count - start) else { return nil }
        return UnsafeRawPointer(found) - base + 1
    }

    /// fieldNamed - true when the field at `start` is called `name` (ASCII, lowercase; compared without case).
    /// Spaces or tabs between the name and the colon (RFC 5322 §4.5.3's obsolete syntax) are allowed.
    static func fieldNamed(_ name: StaticString, _ bytes: UnsafeRawBufferPointer, _ start: Int, _ stop: Int) -> Bool {
        let count = name.utf8CodeUnitCount
        guard stop - start > count else { return false }
        let letters = name.utf8Start
        for index in 0..<count where bytes[start + index] | 0x20 != letters[index] { return false }
        var index = start + count
        while index < stop && (bytes[index] == 0x20 || bytes[index] == 0x09) { index += 1 }
        return index < stop && bytes[index] == UInt8(ascii: ":")
    }

    /// fieldValue - the value after the colon, unfolded and trimmed.
    static func fieldValue(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ stop: Int) -> String {
        var index = start
        while index < stop && bytes[index] != UInt8(ascii: ":") { index += 1 }
        let raw = bytes[min(index + 1, stop)..<stop].filter { $0 != 0x0D && $0 != 0x0A }
        let text = String(decoding: raw, as: UTF8.self)
        return String(text.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
