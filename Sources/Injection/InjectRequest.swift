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
// for more), `campaign` and `tenant`. Unknown fields are ignored, as KumoMTA
// does. Every problem is reported with the path of the field at fault.

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
                /* The builder's To: is the recipient's own: a top-level "name" never fills it. */
                variables.append(("email", parsed.description))
                let name = try recipient["name"].map { v throws(InjectRequestError) in try string(v, path + ".name") } ?? ""
                variables.append(("name", String(name.unicodeScalars.filter { $0 != "\"" && $0 != "\\" })))
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
        return InjectRequest(message: NewMessage(sender: sender, body: content.body, metadata: metadata, recipients: recipients))
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
