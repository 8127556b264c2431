// DeliveryStatusNotification.swift - bounce messages: RFC 3464 delivery status notifications
//
// When recipients of a message bounce or expire, the sender gets one DSN per
// message listing them: a multipart/report (RFC 6522) with a human-readable
// part, a message/delivery-status part (RFC 3464 §2: per-message fields,
// then one block of per-recipient fields each) and the original headers as
// text/rfc822-headers. The layout follows Postfix's bounces, which receivers
// and feedback tooling already parse.
//
// Everything put into the notice comes from outside: addresses from the
// injector, diagnostics from remote servers. A CR or LF in any of it would
// start a header line or field of its own, so every control character in a
// value becomes a space before it is written. Long fields (a Diagnostic-Code
// carrying a multi-line reply) are folded at spaces to 78 columns where
// possible, and hard-folded before 998 octets where a word is longer, so no
// line breaks RFC 5322 §2.1.1's limit. The original headers' own lines are
// hard-folded the same way if one is over the limit.
//
// The caller sends the result with the null reverse-path `<>` (RFC 3464 §2)
// and never builds a notice for a message that itself had a null sender.

#if canImport(Glibc)
import Glibc
#endif

/// One recipient a notice reports on.
///
/// A value; safe to send between threads.
public struct BounceNotice: Sendable, Hashable {
    public var recipient: String                /* the address as given in RCPT TO */
    public var status: String                   /* enhanced status code, e.g. "5.1.1" */
    public var diagnostic: String               /* the remote reply, e.g. "550 5.1.1 no such user" */
    public var remoteMTA: String?               /* the host that answered, when one did */
    public var action: String                   /* RFC 3464 action: "failed" (or "delayed" for a warning) */
    public var originalRecipient: String?       /* ORCPT as the sender gave it (an rfc822 address) */

    public init(recipient: String, status: String, diagnostic: String, remoteMTA: String? = nil, action: String = "failed",
                originalRecipient: String? = nil) {
        self.recipient = recipient
        self.status = status
        self.diagnostic = diagnostic
        self.remoteMTA = remoteMTA
        self.action = action
        self.originalRecipient = originalRecipient
    }
}

/// Builds delivery status notifications.
///
/// A namespace of pure functions; safe from any thread.
public enum DeliveryStatusNotification {
    /// Folding target for the notice's own lines (RFC 5322 §2.1.1 "should").
    static let foldWidth = 78
    /// Hard limit for any line, line ending excluded (RFC 5322 §2.1.1 "must").
    static let maximumLineLength = 998

    /// build - the complete notice message, CRLF line endings, for `notices` of one message.
    ///
    /// `originalHeaders` is the header block of the bounced message (a whole
    /// message is cut to its headers); `date` is milliseconds since the epoch;
    /// `envelopeID` is the sender's ENVID, reported as Original-Envelope-Id.
    public static func build(originalSender: String, originalMessageID: String?, originalHeaders: [UInt8],
                             notices: [BounceNotice], reportingMTA: String, queueID: String, date: Int64,
                             envelopeID: String? = nil) -> [UInt8] {
        let mta = clean(reportingMTA)
        let headers = crlfLines(self.headers(of: originalHeaders))
        let human = humanReadable(notices, reportingMTA: mta)
        let report = deliveryStatus(notices, reportingMTA: mta, queueID: clean(queueID), envelopeID: envelopeID.map(clean))
        let boundary = chooseBoundary(queueID: queueID, date: date, parts: [human, report, headers])

        var out: [UInt8] = []
        out.reserveCapacity(human.count + report.count + headers.count + 1024)
        field("From", "Mail Delivery System <MAILER-DAEMON@\(mta)>", &out)
        field("To", "<\(clean(originalSender))>", &out)
        field("Subject", "Undelivered Mail Returned to Sender", &out)
        field("Date", rfc5322Date(date), &out)
        field("Message-ID", "<\(clean(queueID)).\(date).dsn@\(mta)>", &out)
        if let id = originalMessageID.map(clean), !id.isEmpty {
            field("In-Reply-To", id, &out)
            field("References", id, &out)
        }
        field("Auto-Submitted", "auto-replied", &out)
        field("MIME-Version", "1.0", &out)
        field("Content-Type", "multipart/report; report-type=delivery-status; boundary=\"\(boundary)\"", &out)
        if (human + report + headers).contains(where: { $0 >= 0x80 }) { field("Content-Transfer-Encoding", "8bit", &out) }
        line("", &out)
        line("This is a MIME-encapsulated message.", &out)

        part(boundary, ["Content-Description: Notification", "Content-Type: text/plain; charset=utf-8"], human, &out)
        part(boundary, ["Content-Description: Delivery report", "Content-Type: message/delivery-status"], report, &out)
        part(boundary, ["Content-Description: Undelivered Message Headers", "Content-Type: text/rfc822-headers"], headers, &out)
        line("", &out)
        line("--" + boundary + "--", &out)
        return out
    }

    /// headers - the header block of a raw message: every line before the first blank line, line endings kept.
    public static func headers(of message: [UInt8]) -> [UInt8] {
        message.withUnsafeBufferPointer { Array($0[..<RawMessage.headersEnd($0)]) }
    }

    // MARK: parts

    /// humanReadable - the first part: what happened, one paragraph per recipient.
    private static func humanReadable(_ notices: [BounceNotice], reportingMTA: String) -> [UInt8] {
        var out: [UInt8] = []
        line("This is the mail system at host \(reportingMTA).", &out)
        line("", &out)
        line("I'm sorry to have to inform you that your message could not", &out)
        line("be delivered to one or more recipients. It's attached below.", &out)
        line("", &out)
        for notice in notices {
            folded("<\(clean(notice.recipient))>: " + describe(notice), indent: "    ", &out)
            line("", &out)
        }
        return out
    }

    /// describe - the human-readable reason for one recipient.
    private static func describe(_ notice: BounceNotice) -> String {
        let diagnostic = clean(notice.diagnostic)
        guard let host = notice.remoteMTA.map(clean), !host.isEmpty else { return diagnostic }
        return "host \(host) said: \(diagnostic)"
    }

    /// deliveryStatus - the message/delivery-status part: per-message fields, then one block per recipient.
    private static func deliveryStatus(_ notices: [BounceNotice], reportingMTA: String, queueID: String, envelopeID: String?) -> [UInt8] {
        var out: [UInt8] = []
        if let envelopeID, !envelopeID.isEmpty { field("Original-Envelope-Id", envelopeID, &out) }
        field("Reporting-MTA", "dns; \(reportingMTA)", &out)
        field("X-Carrier-Queue-ID", queueID, &out)
        for notice in notices {
            line("", &out)
            if let original = notice.originalRecipient.map(clean), !original.isEmpty {
                field("Original-Recipient", "rfc822; \(original)", &out)
            }
            field("Final-Recipient", "rfc822; \(clean(notice.recipient))", &out)
            field("Action", clean(notice.action), &out)
            field("Status", clean(notice.status), &out)
            if let host = notice.remoteMTA.map(clean), !host.isEmpty { field("Remote-MTA", "dns; \(host)", &out) }
            field("Diagnostic-Code", "smtp; \(clean(notice.diagnostic))", &out)
        }
        return out
    }

    /// part - one body part: delimiter, its headers, a blank line, its content.
    private static func part(_ boundary: String, _ headers: [String], _ content: [UInt8], _ out: inout [UInt8]) {
        line("", &out)
        line("--" + boundary, &out)
        for header in headers { line(header, &out) }
        line("", &out)
        out.append(contentsOf: content)
        if let last = out.last, last != 0x0A { line("", &out) }
    }

    // MARK: lines

    /// field - `Name: value` as a header line, folded to fit.
    private static func field(_ name: String, _ value: String, _ out: inout [UInt8]) {
        folded(name + ": " + value, indent: nil, &out)
    }

    /// line - one line and CRLF.
    private static func line(_ text: String, _ out: inout [UInt8]) {
        out.append(contentsOf: text.utf8)
        out.append(contentsOf: [0x0D, 0x0A])
    }

    /// folded - `text` as lines of at most `foldWidth` octets where a space allows, never over `maximumLineLength`.
    ///
    /// With `indent` nil this is RFC 5322 header folding: the line breaks
    /// before a space, which starts the continuation line. With an indent it
    /// is text wrapping: the space is dropped and the continuation starts with
    /// the indent. A run without spaces longer than the hard limit is cut at
    /// a UTF-8 character boundary (a header continuation then gets a space).
    static func folded(_ text: String, indent: String?, _ out: inout [UInt8]) {
        let bytes = Array(text.utf8)
        var start = 0
        var prefix: [UInt8] = []                    /* what precedes bytes[start...] on this line */
        while true {
            let width = foldWidth - prefix.count
            let hardWidth = maximumLineLength - prefix.count
            var cut: Int?
            if bytes.count - start > width {
                /* The last space within the width, else the first one within the hard limit. */
                cut = ((start + 1)...(start + width)).last { bytes[$0] == 0x20 }
                    ?? ((start + width + 1)..<min(bytes.count, start + hardWidth + 1)).first { bytes[$0] == 0x20 }
                if cut == nil, bytes.count - start > hardWidth {
                    var hard = start + hardWidth
                    while hard > start + 1, bytes[hard] & 0xC0 == 0x80 { hard -= 1 }
                    cut = hard
                }
            }
            guard let cut else {
                out.append(contentsOf: prefix)
                out.append(contentsOf: bytes[start...])
                out.append(contentsOf: [0x0D, 0x0A])
                return
            }
            out.append(contentsOf: prefix)
            out.append(contentsOf: bytes[start..<cut])
            out.append(contentsOf: [0x0D, 0x0A])
            start = cut
            if let indent {
                if bytes[cut] == 0x20 { start += 1 }
                prefix = Array(indent.utf8)
            } else {
                prefix = bytes[cut] == 0x20 ? [] : [0x20]
            }
        }
    }

    /// clean - a value with every control character (CR and LF included) turned into a space, trimmed.
    static func clean(_ value: String) -> String {
        var bytes = Array(value.utf8)
        for index in bytes.indices where bytes[index] < 0x20 || bytes[index] == 0x7F { bytes[index] = 0x20 }
        return RawMessage.trimmingSpaces(String(decoding: bytes, as: UTF8.self))
    }

    /// crlfLines - header lines with CRLF endings, any line over the hard limit folded.
    private static func crlfLines(_ headers: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(headers.count + 64)
        headers.withUnsafeBufferPointer { headers in
            var position = 0
            while position < headers.count {
                let end = RawMessage.lineEnd(headers, from: position, limit: headers.count)
                var content = end
                if content > position, headers[content - 1] == 0x0A { content -= 1 }
                if content > position, headers[content - 1] == 0x0D { content -= 1 }
                /* A bare CR inside a line is not a line end anywhere; make it a space. */
                var text = headers[position..<content].map { $0 == 0x0D ? 0x20 : $0 }
                var limit = maximumLineLength       /* continuation lines start with the folding space */
                while text.count > limit {
                    var cut = limit
                    while cut > 1, text[cut] & 0xC0 == 0x80 { cut -= 1 }
                    out.append(contentsOf: text[..<cut])
                    out.append(contentsOf: [0x0D, 0x0A, 0x20])
                    text.removeFirst(cut)
                    limit = maximumLineLength - 1
                }
                out.append(contentsOf: text)
                out.append(contentsOf: [0x0D, 0x0A])
                position = end
            }
        }
        return out
    }

    /// chooseBoundary - a boundary built from the queue id and date that occurs in none of the parts.
    private static func chooseBoundary(queueID: String, date: Int64, parts: [[UInt8]]) -> String {
        let safe = String(String.UnicodeScalarView(queueID.unicodeScalars.filter {
            ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") || $0 == "." || $0 == "-"
        }).prefix(40))
        let base = "=_carrier." + safe + "." + String(date)
        var candidate = base
        var attempt = 0
        while parts.contains(where: { contains($0, Array(candidate.utf8)) }) {
            attempt += 1
            candidate = base + "." + String(attempt)
        }
        return candidate
    }

    /// contains - true when `needle` occurs in `haystack` (memchr for its first octet, then memcmp).
    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard let first = needle.first, haystack.count >= needle.count else { return false }
        return haystack.withUnsafeBytes { hay in
            needle.withUnsafeBytes { pin in
                var offset = 0
                let last = hay.count - pin.count
                while offset <= last, let found = memchr(hay.baseAddress! + offset, Int32(first), last - offset + 1) {
                    let at = UnsafeRawPointer(found) - hay.baseAddress!
                    if memcmp(hay.baseAddress! + at, pin.baseAddress!, pin.count) == 0 { return true }
                    offset = at + 1
                }
                return false
            }
        }
    }
}

/// rfc5322Date - `Tue, 15 Nov 1994 08:12:31 +0000` for milliseconds since the epoch, in UTC.
public func rfc5322Date(_ milliseconds: Int64) -> String {
    var seconds = time_t(milliseconds / 1000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    return "\(days[Int(parts.tm_wday)]), \(parts.tm_mday) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
        + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
}
