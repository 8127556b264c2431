// InjectRequest.swift - the HTTP API's JSON body, checked field by field
//
// The shape is KumoMTA's `POST /api/inject/v1`, so senders written for it
// need no change:
//
//     { "envelope_sender": "news@example.com",
//       "content": "Subject: hi {{name}}\r\n\r\nHello {{name}}",     (or a builder object, below)
//       "recipients": [ {"email": "a@example.net", "name": "A", "substitutions": {"name": "Ann"}} ],
//       "substitutions": { "unsubscribe": "https://..." } }
//
// `content` is either a whole RFC 5322 message (a template: `{{field}}` is
// replaced per recipient) or an object with `subject`, `from` ({email, name}),
// `reply_to`, `headers` ({name: value}), `text_body` and `html_body`, from
// which the message is built; then each recipient's `To:` is its own address
// (and name). A recipient's substitutions win over the top-level ones; values
// may be strings, numbers or booleans. Carrier's own optional fields: `class`
// ("transactional" or "bulk"; default transactional for one recipient, bulk
// for more), `campaign`, `tenant`, and the message's expiry time: `expires_in`
// (seconds from now, a positive whole number) and/or `expires_at` (an RFC 3339
// time in the future; with both, the earlier wins). Unknown fields are
// ignored, as KumoMTA does. Every problem is reported with the path of the
// field at fault.

import Delivery
import Foundation
import SMTP
import Spool

/// Any JSON value, decoded without loss of kind (string, number, boolean, null, array, object).
enum JSONValue: Decodable, Sendable {
    case string(String)
    case number(Double, text: String)
    case boolean(Bool)
    case null
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let flag = try? container.decode(Bool.self) { self = .boolean(flag) }
        else if let text = try? container.decode(String.self) { self = .string(text) }
        else if let whole = try? container.decode(Int64.self) { self = .number(Double(whole), text: String(whole)) }
        else if let number = try? container.decode(Double.self) { self = .number(number, text: String(number)) }
        else if let items = try? container.decode([JSONValue].self) { self = .array(items) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    var kind: String {
        switch self {
        case .string: return "a string"
        case .number: return "a number"
        case .boolean: return "a boolean"
        case .null: return "null"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A request the API refuses: the field at fault (a path such as `recipients[3].email`) and why.
public struct InjectRequestError: Error, Sendable, Equatable, CustomStringConvertible {
    public let field: String
    public let message: String
    public var description: String { field.isEmpty ? message : "\(field): \(message)" }
}

/// A checked injection request, ready for the spool.
struct InjectRequest {
    var message: NewMessage

    /// parse - check `body` (the request's JSON) and build the spool message, or name the field at fault.
    static func parse(_ body: Data, now: Int64) throws(InjectRequestError) -> InjectRequest {
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: body)
        } catch {
            throw InjectRequestError(field: "", message: "the body is not valid JSON (\(describe(error)))")
        }
        guard case .object(let fields) = root else { throw InjectRequestError(field: "", message: "the body must be a JSON object, not \(root.kind)") }

        let sender = try string(fields["envelope_sender"], "envelope_sender")
        if !sender.isEmpty {
            do { _ = try MailAddress(parsing: sender) } catch {
                throw InjectRequestError(field: "envelope_sender", message: "not a valid address: \(error)")
            }
        }
        let globals = try substitutions(fields["substitutions"], "substitutions")

        guard let recipientsValue = fields["recipients"] else { throw InjectRequestError(field: "recipients", message: "missing") }
        guard case .array(let list) = recipientsValue else {
            throw InjectRequestError(field: "recipients", message: "must be an array of objects, not \(recipientsValue.kind)")
        }
        guard !list.isEmpty else { throw InjectRequestError(field: "recipients", message: "must not be empty") }

        let content = try buildContent(fields["content"], now: now)
        var recipients: [NewRecipient] = []
        recipients.reserveCapacity(list.count)
        for (index, item) in list.enumerated() {
            let path = "recipients[\(index)]"
            guard case .object(let recipient) = item else { throw InjectRequestError(field: path, message: "must be an object, not \(item.kind)") }
            let email = try string(recipient["email"], path + ".email")
            let parsed: MailAddress
            do { parsed = try MailAddress(parsing: email) } catch {
                throw InjectRequestError(field: path + ".email", message: "not a valid address: \(error)")
            }
            var variables = try substitutions(recipient["substitutions"], path + ".substitutions")
            if content.builder {
                /* The builder's To: is the recipient's own: neither a top-level "name" nor the
                   recipient's substitutions fill it (first pair wins, so these go first; a
                   substituted name could close the quotes and add addresses to To:). */
                let name = try recipient["name"].map { v throws(InjectRequestError) in try string(v, path + ".name") } ?? ""
                variables.insert(contentsOf: [("email", parsed.description),
                                              ("name", String(name.unicodeScalars.filter { $0 != "\"" && $0 != "\\" }))], at: 0)
            }
            /* Own values first: the first pair of a name wins when rendering. */
            for global in globals where !variables.contains(where: { $0.0 == global.0 }) { variables.append(global) }
            recipients.append(NewRecipient(parsed.description, variables: variables))
        }

        var metadata = MessageMetadata(priority: recipients.count == 1 ? .transactional : .bulk)
        if let value = fields["class"] {
            let text = try string(value, "class")
            guard let priority = PriorityClass(name: text) else { throw InjectRequestError(field: "class", message: "must be \"transactional\" or \"bulk\", not \"\(text)\"") }
            metadata.priority = priority
        }
        if let value = fields["campaign"] { metadata.campaign = try string(value, "campaign") }
        if let value = fields["tenant"] { metadata.tenant = try string(value, "tenant") }
        metadata.expires = try expiry(fields, now: now)
        try checkLines(content.body, recipients: recipients)
        return InjectRequest(message: NewMessage(sender: sender, body: content.body, metadata: metadata, recipients: recipients))
    }

    /// checkLines - refuse a message some recipient would get with a line over 998 octets
    /// (RFC 5322 §2.1.1): the engine does not fold lines, so it would be accepted here and
    /// bounce at delivery. The template alone is checked first (its own fault: "content");
    /// each recipient's rendering only when their longest value could push a line with a
    /// `{{field}}` over the limit (HTML escaping grows a value at most sixfold).
    private static func checkLines(_ body: [UInt8], recipients: [NewRecipient]) throws(InjectRequestError) {
        let template = MessageTemplate(body, mergeFields: true)
        func encodes(_ variables: [(String, String)]) -> Int? {
            let rendered = template.render(variables, queueID: "check", messageIDDomain: "check.invalid")
            let result = rendered.withUnsafeBytes { raw in
                Result { () throws(EncodingError) in try MessagePayload(encoding: raw) }
            }
            if case .failure(.lineTooLong(let line)) = result { return line }
            return nil
        }
        let advice = "is longer than 998 octets (RFC 5322 §2.1.1); break it, or encode the body as quoted-printable or base64"
        if let line = encodes([]) { throw InjectRequestError(field: "content", message: "line \(line) of the message \(advice)") }
        /* The longest a line with references could grow to, for anyone's values. */
        let longest = longestValue(recipients)
        var worst = 0
        var start = 0
        while start < body.count {
            let end = body[start...].firstIndex(of: UInt8(ascii: "\n")) ?? body.count
            var references = 0
            var index = start
            while index + 1 < end {
                if body[index] == UInt8(ascii: "{") && body[index + 1] == UInt8(ascii: "{") { references += 1; index += 2 } else { index += 1 }
            }
            if references > 0 { worst = max(worst, (end - start) + references * 6 * longest) }
            start = end + 1
        }
        guard worst > 998 else { return }
        for (index, recipient) in recipients.enumerated() {
            if let line = encodes(recipient.variables) {
                throw InjectRequestError(field: recipients.count == 1 ? "recipients[0].substitutions" : "recipients[\(index)].substitutions",
                                         message: "makes line \(line) of the message for \(recipient.address) longer than 998 octets; break it, or shorten the value")
            }
        }
    }

    /// longestValue - the most octets any recipient's substitution value has.
    private static func longestValue(_ recipients: [NewRecipient]) -> Int {
        recipients.reduce(0) { longest, recipient in recipient.variables.reduce(longest) { max($0, $1.1.utf8.count) } }
    }

    // MARK: Content

    /// buildContent - the message template from a string, or built from a builder object.
    private static func buildContent(_ value: JSONValue?, now: Int64) throws(InjectRequestError) -> (body: [UInt8], builder: Bool) {
        guard let value else { throw InjectRequestError(field: "content", message: "missing") }
        switch value {
        case .string(let text):
            guard !text.isEmpty else { throw InjectRequestError(field: "content", message: "must not be empty") }
            return (Array(text.utf8), false)
        case .object(let parts):
            if parts["attachments"] != nil {
                throw InjectRequestError(field: "content.attachments", message: "attachments are not supported; send the whole MIME message as the content string")
            }
            if parts["amp_html_body"] != nil {
                throw InjectRequestError(field: "content.amp_html_body", message: "AMP bodies are not supported")
            }
            let text = try parts["text_body"].map { v throws(InjectRequestError) in try string(v, "content.text_body") }
            let html = try parts["html_body"].map { v throws(InjectRequestError) in try string(v, "content.html_body") }
            guard text != nil || html != nil else { throw InjectRequestError(field: "content", message: "needs text_body or html_body") }
            var head: [String] = []
            if let from = parts["from"] { head.append("From: " + (try mailbox(from, "content.from"))) }
            if let replyTo = parts["reply_to"] { head.append("Reply-To: " + (try mailbox(replyTo, "content.reply_to"))) }
            head.append("To: \"{{name}}\" <{{email}}>")
            if let subject = parts["subject"] { head.append("Subject: " + oneLine(try string(subject, "content.subject"))) }
            head.append("Date: " + rfc5322Date(now))
            head.append("MIME-Version: 1.0")
            if let extra = parts["headers"] {
                guard case .object(let headers) = extra else { throw InjectRequestError(field: "content.headers", message: "must be an object of name: value, not \(extra.kind)") }
                for name in headers.keys.sorted() {
                    guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) else {
                        throw InjectRequestError(field: "content.headers", message: "\"\(name)\" is not a header field name")
                    }
                    head.append(name + ": " + oneLine(try string(headers[name], "content.headers.\(name)")))
                }
            }
            var out = head.joined(separator: "\r\n") + "\r\n"
            switch (text, html) {
            case (let text?, let html?):
                let boundary = "=_carrier_" + String(UInt64(now), radix: 36) + "_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
                out += "Content-Type: multipart/alternative; boundary=\"\(boundary)\"\r\n\r\n"
                out += "--\(boundary)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + crlf(text) + "\r\n"
                out += "--\(boundary)\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + crlf(html) + "\r\n"
                out += "--\(boundary)--\r\n"
            case (let text?, nil):
                out += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + crlf(text)
            case (nil, let html?):
                out += "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + crlf(html)
            case (nil, nil):
                break
            }
            return (Array(out.utf8), true)
        default:
            throw InjectRequestError(field: "content", message: "must be a message string or a builder object, not \(value.kind)")
        }
    }

    /// mailbox - `"Name" <email>` from {email, name}, or an address string.
    private static func mailbox(_ value: JSONValue, _ path: String) throws(InjectRequestError) -> String {
        let email: String, name: String?
        switch value {
        case .string(let text): email = text; name = nil
        case .object(let fields):
            email = try string(fields["email"], path + ".email")
            name = try fields["name"].map { v throws(InjectRequestError) in try string(v, path + ".name") }
        default: throw InjectRequestError(field: path, message: "must be an address or {email, name}, not \(value.kind)")
        }
        do { _ = try MailAddress(parsing: email) } catch {
            throw InjectRequestError(field: path, message: "not a valid address: \(error)")
        }
        guard let name, !name.isEmpty else { return "<\(email)>" }
        return "\"" + oneLine(String(name.unicodeScalars.filter { $0 != "\"" && $0 != "\\" })) + "\" <\(email)>"
    }

    // MARK: Expiry

    /// expiry - the message's expiry time (ms since the epoch; 0: none) from `expires_in`
    /// and `expires_at`; with both, the earlier.
    private static func expiry(_ fields: [String: JSONValue], now: Int64) throws(InjectRequestError) -> Int64 {
        var expires: Int64 = 0
        if let value = fields["expires_in"] {
            guard case .number(_, let text) = value, let seconds = Int64(text), seconds > 0 else {
                let shown = if case .number(_, let text) = value { text } else { value.kind }
                throw InjectRequestError(field: "expires_in", message: "must be a positive whole number of seconds, not \(shown)")
            }
            let (milliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1000)
            let (time, late) = now.addingReportingOverflow(milliseconds)
            guard !overflow && !late else { throw InjectRequestError(field: "expires_in", message: "\(seconds) seconds is too far ahead") }
            expires = time
        }
        if let value = fields["expires_at"] {
            let text = try string(value, "expires_at")
            guard let time = rfc3339Milliseconds(text) else {
                throw InjectRequestError(field: "expires_at", message: "must be an RFC 3339 time such as \"2026-05-04T12:30:00Z\", not \"\(text.prefix(64))\"")
            }
            guard time > now else { throw InjectRequestError(field: "expires_at", message: "\"\(text)\" is not in the future") }
            expires = expires == 0 ? time : min(expires, time)
        }
        return expires
    }

    /// rfc3339Milliseconds - an RFC 3339 date-time (`2026-05-04T12:30:00Z`, `...00.250+02:00`;
    /// `t` or a space for `T`, `z` for `Z`) in ms since the epoch; nil when it is not one.
    /// Fractions below a millisecond are dropped; a leap second counts as the second before.
    static func rfc3339Milliseconds(_ text: String) -> Int64? {
        let octets = Array(text.utf8)
        var at = 0
        func number(_ width: Int) -> Int? {
            guard at + width <= octets.count else { return nil }
            var value = 0
            for octet in octets[at..<(at + width)] {
                guard octet >= UInt8(ascii: "0") && octet <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(octet - UInt8(ascii: "0"))
            }
            at += width
            return value
        }
        func expect(_ choices: String) -> Bool {
            guard at < octets.count, choices.utf8.contains(octets[at]) else { return false }
            at += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
              expect("Tt "), let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2),
              (1...12).contains(month), hour < 24, minute < 60, second <= 60 else { return nil }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let monthDays = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard (1...monthDays[month - 1]).contains(day) else { return nil }
        var milliseconds = 0
        if expect(".") {
            var digits = 0
            while at < octets.count, octets[at] >= UInt8(ascii: "0") && octets[at] <= UInt8(ascii: "9") {
                if digits < 3 { milliseconds = milliseconds * 10 + Int(octets[at] - UInt8(ascii: "0")) }
                digits += 1
                at += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 3) { milliseconds *= 10 }
        }
        var offset = 0
        if !expect("Zz") {
            guard at < octets.count, octets[at] == UInt8(ascii: "+") || octets[at] == UInt8(ascii: "-") else { return nil }
            let sign = octets[at] == UInt8(ascii: "-") ? -1 : 1
            at += 1
            guard let hours = number(2), expect(":"), let minutes = number(2), hours < 24, minutes < 60 else { return nil }
            offset = sign * (hours * 60 + minutes)
        }
        guard at == octets.count else { return nil }
        /* Days since 1970-01-01 of the civil date (Howard Hinnant's days_from_civil). */
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        let seconds = ((days * 24 + hour) * 60 + minute - offset) * 60 + min(second, 59)
        return Int64(seconds) * 1000 + Int64(milliseconds)
    }

    // MARK: Fields

    private static func string(_ value: JSONValue?, _ path: String) throws(InjectRequestError) -> String {
        guard let value else { throw InjectRequestError(field: path, message: "missing") }
        guard case .string(let text) = value else { throw InjectRequestError(field: path, message: "must be a string, not \(value.kind)") }
        return text
    }

    /// substitutions - an object of name: scalar as (name, text) pairs in name order; absent or null is none.
    private static func substitutions(_ value: JSONValue?, _ path: String) throws(InjectRequestError) -> [(String, String)] {
        guard let value else { return [] }
        if case .null = value { return [] }
        guard case .object(let fields) = value else { throw InjectRequestError(field: path, message: "must be an object, not \(value.kind)") }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(fields.count)
        for name in fields.keys.sorted() {
            switch fields[name]! {
            case .string(let text): pairs.append((name, text))
            case .number(_, let text): pairs.append((name, text))
            case .boolean(let flag): pairs.append((name, flag ? "true" : "false"))
            case .null: pairs.append((name, ""))
            case let other: throw InjectRequestError(field: "\(path).\(name)", message: "must be a string, number or boolean, not \(other.kind)")
            }
        }
        return pairs
    }

    /// oneLine - `text` with line breaks turned into spaces (a header value cannot start a new field).
    private static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\r" || $0 == "\n" || $0 == "\r\n" ? " " : $0 })
    }

    /// crlf - every line ending as CRLF.
    private static func crlf(_ text: String) -> String {
        text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
    }

    private static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            return (context.underlyingError.map { "\($0.localizedDescription)" } ?? context.debugDescription)
        }
        return "\(error)"
    }
}
