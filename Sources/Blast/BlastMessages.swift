// BlastMessages.swift - the messages a blast sends: envelopes, generated bodies, {{n}} templates
//
// Every message differs (its number is in the headers), so the hot path
// builds one buffer per message: the headers are written from pre-encoded
// pieces and decimal digits, the body is one memcpy from a shared buffer,
// and the buffer ends with the DATA terminator. Neither the headers nor a
// generated body has a line that starts with ".", so the dot-stuffed form is
// the plain form plus ".\r\n": `MessagePayload.normalized` is a prefix of
// `dotStuffed`, sharing its storage, and a message costs one allocation for
// its bytes. A template is encoded (CRLF, dot-stuffing) once when the run
// starts and split at each `{{n}}`; digits never start a line or end one, so
// substituting them after encoding gives what encoding after substituting
// would. A template with dot lines needs the two forms built separately.

import Bytes
import SMTP

#if canImport(Glibc)
import Glibc
#endif

/// Builds message number n: its envelope and its payload.
///
/// A value; each worker thread keeps its own copy (the buffers inside are
/// shared, never mutated). Recipient naming is the one documented in
/// BlastConfiguration.swift.
struct BlastMessageFactory: Sendable {
    private let sender: ReversePath
    private let domain: String                      /* "@domain", ready to append */
    private let domainBytes: ByteBuffer             /* the same, for headers */
    private let recipients: Int                     /* per message */
    private let body: Body

    private enum Body: Sendable {
        case generated(GeneratedMessage)
        case template(MessageTemplate)
    }

    /// The pieces of a generated message around the parts that vary.
    private struct GeneratedMessage: Sendable {
        let from: ByteBuffer            /* "From: <sender>\r\nTo: " */
        let subject: ByteBuffer         /* "Subject: Carrier blast message " */
        let date: ByteBuffer            /* "Date: " */
        let messageID: ByteBuffer       /* "\r\nMessage-ID: <blast-" */
        let messageIDEnd: ByteBuffer    /* ".<run>@<helo>>\r\nX-Carrier-Id: blast-" */
        let trailer: ByteBuffer         /* MIME headers, blank line, body, ".\r\n" */
    }

    /// A template split at each `{{n}}`, in both wire forms.
    private struct MessageTemplate: Sendable {
        let plain: [ByteBuffer]         /* CRLF-normalised segments */
        let stuffed: [ByteBuffer]       /* dot-stuffed segments, the last ending ".\r\n" */
        let sameWhenStuffed: Bool       /* no dot line: stuffed == plain + ".\r\n" */
        let has8BitData: Bool
    }

    /// Prepare the messages of `configuration`; `runID` makes Message-IDs unique across runs.
    init(_ configuration: BlastConfiguration, runID: String) throws(BlastError) {
        do {
            sender = try ReversePath(parsing: configuration.sender)
        } catch {
            throw .invalidConfiguration("--from \(configuration.sender): \(error)")
        }
        domain = "@" + configuration.recipientDomain
        domainBytes = ByteBuffer(string: domain)
        recipients = configuration.recipientsPerMessage
        switch configuration.content {
        case .generated(let size):
            body = .generated(BlastMessageFactory.generated(configuration, sender: sender, runID: runID, size: size))
        case .template(let bytes):
            body = .template(try BlastMessageFactory.template(bytes))
        }
    }

    /// message - message number `n`, dated `date` (the text after "Date: ").
    func message(_ n: Int, date: ByteBuffer) -> OutboundMessage {
        var addresses: [MailAddress] = []
        addresses.reserveCapacity(recipients)
        for j in 0..<recipients {
            /* The domain was checked by validate(), and user<k> is a dot-atom. */
            addresses.append(try! MailAddress(parsing: "user\(n * recipients + j)\(domain)"))
        }
        return OutboundMessage(sender: sender, recipients: addresses, payload: payload(n, date: date))
    }

    /// payload - the body of message `n`.
    func payload(_ n: Int, date: ByteBuffer) -> MessagePayload {
        switch body {
        case .generated(let parts):
            var out = ByteBuffer(capacity: parts.from.readableBytes + parts.trailer.readableBytes + date.readableBytes + 256)
            out.append(parts.from)
            if recipients == 1 {
                out.append("user")
                out.appendDecimal(n)
                out.append(domainBytes)
                out.append("\r\n")
            } else {
                out.append("undisclosed-recipients:;\r\n")
            }
            out.append(parts.subject)
            out.appendDecimal(n)
            out.append("\r\n")
            out.append(parts.date)
            out.append(date)
            out.append(parts.messageID)
            out.appendDecimal(n)
            out.append(parts.messageIDEnd)
            out.appendDecimal(n)
            out.append(parts.trailer)
            return MessagePayload(normalized: out.prefix(out.readableBytes - 3), dotStuffed: out, has8BitData: false)
        case .template(let template):
            let stuffed = BlastMessageFactory.join(template.stuffed, n)
            if template.sameWhenStuffed {
                return MessagePayload(normalized: stuffed.prefix(stuffed.readableBytes - 3), dotStuffed: stuffed,
                                      has8BitData: template.has8BitData)
            }
            return MessagePayload(normalized: BlastMessageFactory.join(template.plain, n), dotStuffed: stuffed,
                                  has8BitData: template.has8BitData)
        }
    }

    /// join - the segments with the decimal `n` between each pair.
    private static func join(_ segments: [ByteBuffer], _ n: Int) -> ByteBuffer {
        var size = 0
        for segment in segments { size += segment.readableBytes + 20 }
        var out = ByteBuffer(capacity: size)
        for (index, segment) in segments.enumerated() {
            if index > 0 { out.appendDecimal(n) }
            out.append(segment)
        }
        return out
    }

    // MARK: Preparation

    /// generated - the fixed parts of a generated message of about `size` octets.
    private static func generated(_ configuration: BlastConfiguration, sender: ReversePath, runID: String,
                                  size: Int) -> GeneratedMessage {
        let from = ByteBuffer(string: "From: \(sender)\r\nTo: ")
        let subject = ByteBuffer(string: "Subject: Carrier blast message ")
        let date = ByteBuffer(string: "Date: ")
        let messageID = ByteBuffer(string: "\r\nMessage-ID: <blast-")
        let messageIDEnd = ByteBuffer(string: ".\(runID)@\(configuration.heloName)>\r\nX-Carrier-Id: blast-")
        let mime = "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"

        /* The headers of a middle-of-the-run message, to size the body around them. */
        let typicalTo = configuration.recipientsPerMessage == 1
            ? "user100000@\(configuration.recipientDomain)\r\n".utf8.count : "undisclosed-recipients:;\r\n".utf8.count
        let headers = from.readableBytes + typicalTo + subject.readableBytes + 8 + date.readableBytes
            + 31 + messageID.readableBytes + 6 + messageIDEnd.readableBytes + 6 + mime.utf8.count
        var trailer = ByteBuffer(string: mime)
        trailer.append(bodyText(octets: max(size - headers, 2)))
        trailer.append(".\r\n")
        return GeneratedMessage(from: from, subject: subject, date: date, messageID: messageID,
                                messageIDEnd: messageIDEnd, trailer: trailer)
    }

    /// bodyText - `octets` of printable lines (at most 78 octets each, CRLF included), none starting with ".".
    static func bodyText(octets: Int) -> ByteBuffer {
        let alphabet = Array("Carrier load test body text: the quick brown fox jumps over the lazy dog 0123456789 ".utf8)
        var out = ByteBuffer(capacity: octets)
        var remaining = octets
        var line = 0
        while remaining > 0 {
            let length = min(78, remaining)
            if length <= 2 {
                /* Too short for text: the body ends with a line break. */
                out.append("\r\n")
                remaining = 0
                continue
            }
            for index in 0..<(length - 2) { out.append(alphabet[(line * 7 + index) % alphabet.count]) }
            out.append("\r\n")
            remaining -= length
            line += 1
        }
        return out
    }

    /// template - encode a message template once and split it at each `{{n}}`.
    private static func template(_ bytes: [UInt8]) throws(BlastError) -> MessageTemplate {
        let plainPolicy = EncoderPolicy(bareLineEndings: .normalize, longLines: .reject, dotStuffing: false)
        let stuffedPolicy = EncoderPolicy(bareLineEndings: .normalize, longLines: .reject, dotStuffing: true)
        let plain: ByteBuffer
        let stuffed: ByteBuffer
        do {
            plain = try bytes.withUnsafeBytes { raw throws(EncodingError) in try MessageEncoder.encodeWhole(raw, policy: plainPolicy) }
            stuffed = try bytes.withUnsafeBytes { raw throws(EncodingError) in try MessageEncoder.encodeWhole(raw, policy: stuffedPolicy) }
        } catch {
            throw .template("\(error)")
        }
        let has8BitData = bytes.withUnsafeBytes { MessageEncoder.containsEightBitOctets($0) }
        return MessageTemplate(plain: split(plain), stuffed: split(stuffed),
                               sameWhenStuffed: stuffed.readableBytes == plain.readableBytes + 3,
                               has8BitData: has8BitData)
    }

    /// split - the buffer cut at every `{{n}}` (the placeholders dropped).
    private static func split(_ buffer: ByteBuffer) -> [ByteBuffer] {
        let bytes = buffer.readableByteArray
        let marker = Array("{{n}}".utf8)
        var segments: [ByteBuffer] = []
        var start = 0
        var index = 0
        while index + marker.count <= bytes.count {
            if bytes[index] == marker[0] && Array(bytes[index..<(index + marker.count)]) == marker {
                segments.append(ByteBuffer(bytes: bytes[start..<index]))
                index += marker.count
                start = index
            } else {
                index += 1
            }
        }
        segments.append(ByteBuffer(bytes: bytes[start...]))
        return segments
    }
}

/// The Date header's text, formatted once per second of wall-clock time.
///
/// Owned by one worker, used on its thread.
struct BlastDateCache {
    private var second = -1                 /* time(2) of `text` */
    private(set) var text = ByteBuffer()    /* "Tue, 05 May 2026 10:11:12 +0000" */

    /// current - the date for now, reformatted when the second changed.
    mutating func current() -> ByteBuffer {
        var now = time(nil)
        guard now != second else { return text }
        second = now
        var parts = tm()
        gmtime_r(&now, &parts)
        var bytes = [CChar](repeating: 0, count: 64)
        let count = strftime(&bytes, bytes.count, "%a, %d %b %Y %H:%M:%S +0000", &parts)
        text = ByteBuffer(bytes: bytes.prefix(count).map { UInt8(bitPattern: $0) })
        return text
    }
}

extension ByteBuffer {
    /// appendDecimal - the decimal digits of a non-negative `value`, without a String.
    mutating func appendDecimal(_ value: Int) {
        withUnsafeMutableWritableBytes(minimumCapacity: 20) { tail in
            var digits = value
            var count = 0
            repeat {
                tail[count] = UInt8(truncatingIfNeeded: 0x30 + digits % 10)
                digits /= 10
                count += 1
            } while digits > 0
            var low = 0
            var high = count - 1
            while low < high {
                tail.swapAt(low, high)
                low += 1
                high -= 1
            }
            return count
        }
    }
}
