// DeliveryStatusNotificationTests.swift - bounce messages: MIME structure, RFC 3464 fields, folding,
// injection; the DSN requests kept in a message's hints

import SMTP
import Testing
@testable import Delivery

/// A header block and body, fields unfolded (CRLF before white space removed).
private struct Entity {
    var fields: [(name: String, value: String)]
    var body: String

    /// value - the first field of that name (case-insensitive), its value trimmed of the leading space.
    func value(_ name: String) -> String? {
        fields.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// values - every field of that name, in order.
    func values(_ name: String) -> [String] {
        fields.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }
}

/// entity - parse "fields CRLF CRLF body" (no blank line: all fields).
private func entity(_ text: Substring) -> Entity {
    let split = text.firstRange(of: "\r\n\r\n")
    let head = split.map { text[..<$0.lowerBound] } ?? text
    let body = split.map { String(text[$0.upperBound...]) } ?? ""
    var fields: [(name: String, value: String)] = []
    for line in head.split(separator: "\r\n", omittingEmptySubsequences: false) where !line.isEmpty {
        if line.first == " " || line.first == "\t", !fields.isEmpty {
            fields[fields.count - 1].value += line
        } else if let colon = line.firstIndex(of: ":") {
            fields.append((String(line[..<colon]), String(line[line.index(after: colon)...].drop { $0 == " " })))
        } else {
            fields.append(("", String(line)))
        }
    }
    return Entity(fields: fields, body: body)
}

/// A parsed notice: the top-level entity, its boundary and its three parts.
private struct ParsedNotice {
    var top: Entity
    var boundary: String
    var parts: [Entity]
}

/// parse - a notice's structure; records an issue and returns nil when the MIME structure is wrong.
private func parse(_ message: [UInt8]) -> ParsedNotice? {
    let text = String(decoding: message, as: UTF8.self)
    let top = entity(text[...])
    guard let type = top.value("Content-Type"), let start = type.firstRange(of: "boundary=\"") else {
        Issue.record("no boundary in \(top.value("Content-Type") ?? "nil")")
        return nil
    }
    let boundary = String(type[start.upperBound...].prefix { $0 != "\"" })
    /* Delimiters start lines: split "\r\n" + body at "\r\n--boundary". */
    let pieces = ("\r\n" + top.body).split(separator: "\r\n--" + boundary, omittingEmptySubsequences: false)
    guard pieces.count == 5, pieces[4] == "--\r\n" else {
        Issue.record("expected preamble, three parts and the close delimiter; got \(pieces.count) pieces")
        return nil
    }
    let parts = pieces[1...3].map { piece -> Entity in
        #expect(piece.hasPrefix("\r\n"), "delimiter line has trailing text")
        return entity(piece.dropFirst(2))
    }
    return ParsedNotice(top: top, boundary: boundary, parts: parts)
}

/// groups - the blank-line separated field groups of a message/delivery-status body.
private func groups(_ body: String) -> [Entity] {
    body.split(separator: "\r\n\r\n").map { entity($0 + "\r\n\r\n") }
}

/// checkLines - every line ends in CRLF (no bare CR or LF) and is at most 998 octets.
private func checkLines(_ message: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
    var length = 0
    for (index, byte) in message.enumerated() {
        if byte == 0x0D {
            #expect(index + 1 < message.count && message[index + 1] == 0x0A, "bare CR at \(index)", sourceLocation: sourceLocation)
        } else if byte == 0x0A {
            #expect(index > 0 && message[index - 1] == 0x0D, "bare LF at \(index)", sourceLocation: sourceLocation)
            #expect(length - 1 <= 998, "line of \(length - 1) octets before \(index)", sourceLocation: sourceLocation)
            length = 0
            continue
        }
        length += 1
    }
    #expect(message.suffix(2) == [0x0D, 0x0A], sourceLocation: sourceLocation)
}

private let originalMessage = Array("Subject: Spring sale\nFrom: news@shop.example\nMessage-ID: <orig@shop.example>\n\nSecret body text\n".utf8)

/// build - a notice for `notices` with the fixed test envelope.
private func build(_ notices: [BounceNotice], headers: [UInt8] = originalMessage, messageID: String? = "<orig@shop.example>") -> [UInt8] {
    DeliveryStatusNotification.build(originalSender: "news@shop.example", originalMessageID: messageID, originalHeaders: headers,
                                     notices: notices, reportingMTA: "mta.carrier.example", queueID: "Q1", date: 784_887_151_000)
}

@Suite("Delivery status notifications")
struct DeliveryStatusNotificationTests {
    static let notices = [
        BounceNotice(recipient: "bob@example.com", status: "5.1.1", diagnostic: "550 5.1.1 no such user", remoteMTA: "mx.example.com"),
        BounceNotice(recipient: "carol@example.org", status: "4.4.7", diagnostic: "delivery time expired"),
    ]

    @Test func structureAndTopLevelFields() throws {
        let message = build(DeliveryStatusNotificationTests.notices)
        checkLines(message)
        let notice = try #require(parse(message))
        let top = notice.top
        #expect(top.value("From") == "Mail Delivery System <MAILER-DAEMON@mta.carrier.example>")
        #expect(top.value("To") == "<news@shop.example>")
        #expect(top.value("Subject") == "Undelivered Mail Returned to Sender")
        #expect(top.value("Auto-Submitted") == "auto-replied")
        #expect(top.value("MIME-Version") == "1.0")
        #expect(top.value("Date") == "Tue, 15 Nov 1994 08:12:31 +0000")
        #expect(top.value("Message-ID") == "<Q1.784887151000.dsn@mta.carrier.example>")
        #expect(top.value("In-Reply-To") == "<orig@shop.example>")
        #expect(top.value("References") == "<orig@shop.example>")
        #expect(top.value("Content-Transfer-Encoding") == nil)
        #expect(top.value("Content-Type") == "multipart/report; report-type=delivery-status; boundary=\"\(notice.boundary)\"")

        #expect(notice.parts.map { $0.value("Content-Type") } ==
            ["text/plain; charset=utf-8", "message/delivery-status", "text/rfc822-headers"])
        #expect(notice.parts[0].body.contains("<bob@example.com>: host mx.example.com said: 550 5.1.1 no such user"))
        #expect(notice.parts[0].body.contains("<carol@example.org>: delivery time expired"))
    }

    @Test func deliveryStatusFields() throws {
        let notice = try #require(parse(build(DeliveryStatusNotificationTests.notices)))
        let status = groups(notice.parts[1].body)
        #expect(status.count == 3)
        guard status.count == 3 else { return }
        #expect(status[0].value("Reporting-MTA") == "dns; mta.carrier.example")
        #expect(status[0].value("X-Carrier-Queue-ID") == "Q1")

        #expect(status[1].fields.map(\.name) == ["Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code"])
        #expect(status[1].value("Final-Recipient") == "rfc822; bob@example.com")
        #expect(status[1].value("Action") == "failed")
        #expect(status[1].value("Status") == "5.1.1")
        #expect(status[1].value("Remote-MTA") == "dns; mx.example.com")
        #expect(status[1].value("Diagnostic-Code") == "smtp; 550 5.1.1 no such user")

        #expect(status[2].fields.map(\.name) == ["Final-Recipient", "Action", "Status", "Diagnostic-Code"])
        #expect(status[2].value("Status") == "4.4.7")
    }

    /// The sender's ENVID and a recipient's ORCPT (RFC 3461) come back as RFC 3464's
    /// Original-Envelope-Id (per message, first) and Original-Recipient (before Final-Recipient).
    @Test func envelopeIDAndOriginalRecipient() throws {
        var notices = DeliveryStatusNotificationTests.notices
        notices[0].originalRecipient = "bobby@alias.example"
        let message = DeliveryStatusNotification.build(
            originalSender: "news@shop.example", originalMessageID: nil, originalHeaders: originalMessage, notices: notices,
            reportingMTA: "mta.carrier.example", queueID: "Q1", date: 784_887_151_000, envelopeID: "order-17\r\nX-Injected: 1")
        checkLines(message)
        let notice = try #require(parse(message))
        let status = groups(notice.parts[1].body)
        try #require(status.count == 3)
        #expect(status[0].fields.map(\.name) == ["Original-Envelope-Id", "Reporting-MTA", "X-Carrier-Queue-ID"])
        #expect(status[0].value("Original-Envelope-Id") == "order-17  X-Injected: 1", "CR and LF become spaces: no field of its own")
        #expect(status[1].fields.map(\.name).prefix(2) == ["Original-Recipient", "Final-Recipient"])
        #expect(status[1].value("Original-Recipient") == "rfc822; bobby@alias.example")
        #expect(status[2].value("Original-Recipient") == nil)
    }

    @Test func originalHeadersOnlyWithCRLF() throws {
        let message = build(DeliveryStatusNotificationTests.notices)
        let notice = try #require(parse(message))
        #expect(notice.parts[2].body == "Subject: Spring sale\r\nFrom: news@shop.example\r\nMessage-ID: <orig@shop.example>\r\n")
        #expect(!String(decoding: message, as: UTF8.self).contains("Secret body text"))
    }

    @Test func noMessageIDNoReferences() throws {
        let notice = try #require(parse(build(DeliveryStatusNotificationTests.notices, messageID: nil)))
        #expect(notice.top.value("In-Reply-To") == nil)
        #expect(notice.top.value("References") == nil)
    }

    /// A CR or LF from a remote reply or an address cannot start a field, a header or a delimiter.
    @Test func valuesCannotInject() throws {
        let hostile = BounceNotice(recipient: "a@x.io\r\nBcc: b@evil.example", status: "5.0.0\nX-Injected: 1",
                                   diagnostic: "550 no\r\nBcc: evil@example.com\r\n\r\n--fake\r\nFinal-Recipient: rfc822; c@x.io",
                                   remoteMTA: "mx\r\nX-Also: 1")
        let message = DeliveryStatusNotification.build(
            originalSender: "s@x.io\r\nBcc: t@evil.example", originalMessageID: "<id>\r\nX-Ref: 1", originalHeaders: originalMessage,
            notices: [hostile], reportingMTA: "mta\nX-Mta: 1", queueID: "Q\r\n1", date: 0)
        checkLines(message)
        let text = String(decoding: message, as: UTF8.self)
        for line in text.split(separator: "\r\n") {
            #expect(!line.hasPrefix("Bcc:") && !line.hasPrefix("X-Injected") && !line.hasPrefix("X-Also")
                && !line.hasPrefix("X-Ref") && !line.hasPrefix("X-Mta") && line != "--fake", "injected line: \(line)")
        }
        let notice = try #require(parse(message))
        let status = groups(notice.parts[1].body)
        #expect(status.count == 2)
        #expect(status.last?.values("Final-Recipient") == ["rfc822; a@x.io  Bcc: b@evil.example"])
        #expect(status.last?.value("Diagnostic-Code")
            == "smtp; 550 no  Bcc: evil@example.com    --fake  Final-Recipient: rfc822; c@x.io")
    }

    @Test func longDiagnosticsAreFoldedAtSpaces() throws {
        let words = (0..<120).map { "word\($0)" }.joined(separator: " ")
        let message = build([BounceNotice(recipient: "a@x.io", status: "5.0.0", diagnostic: "550 " + words)])
        checkLines(message)
        let text = String(decoding: message, as: UTF8.self)
        let notice = try #require(parse(message))
        #expect(groups(notice.parts[1].body).last?.value("Diagnostic-Code") == "smtp; 550 " + words)
        /* Generated lines keep to 78 octets where a space allows. */
        let start = try #require(text.firstRange(of: "Diagnostic-Code:"))
        let fieldLines = text[start.lowerBound...].split(separator: "\r\n").prefix { $0.hasPrefix("Diagnostic-Code:") || $0.hasPrefix(" ") }
        #expect(fieldLines.count > 5)
        #expect(fieldLines.allSatisfy { $0.utf8.count <= 78 })
        /* The human-readable part wraps too, with an indent. */
        #expect(notice.parts[0].body.split(separator: "\r\n").allSatisfy { $0.utf8.count <= 78 })
    }

    @Test func wordsLongerThanALineAreHardFolded() throws {
        let long = String(repeating: "X", count: 3000)
        let accented = String(repeating: "é", count: 1500)
        let message = build([
            BounceNotice(recipient: "a@x.io", status: "5.0.0", diagnostic: long),
            BounceNotice(recipient: "b@x.io", status: "5.0.0", diagnostic: accented),
        ])
        checkLines(message)
        let notice = try #require(parse(message))
        let status = groups(notice.parts[1].body)
        #expect(status.count == 3)
        /* Hard folds insert a space; the text is all there once spaces are ignored. */
        #expect(status[1].value("Diagnostic-Code")?.filter { $0 != " " } == "smtp;" + long)
        #expect(status[2].value("Diagnostic-Code")?.filter { $0 != " " } == "smtp;" + accented)
        /* Cuts fall between characters: every line is valid UTF-8 on its own. */
        for line in message.split(separator: 0x0A) {
            #expect(String(validating: line, as: UTF8.self) != nil)
        }
        #expect(notice.top.value("Content-Transfer-Encoding") == "8bit")
    }

    @Test func overlongOriginalHeaderLinesAreFolded() throws {
        let headers = Array(("Subject: " + String(repeating: "s", count: 2500) + "\r\nX-Bare: a\rb\r\n").utf8)
        let message = build(DeliveryStatusNotificationTests.notices, headers: headers)
        checkLines(message)
        let notice = try #require(parse(message))
        #expect(entity(notice.parts[2].body[...]).value("Subject")?.filter { $0 != " " } == String(repeating: "s", count: 2500))
        #expect(entity(notice.parts[2].body[...]).value("X-Bare") == "a b")
    }

    @Test func theBoundaryAvoidsTheContent() throws {
        let headers = Array("Subject: x\r\nX-Trick: --=_carrier.Q1.784887151000\r\n".utf8)
        let message = build(DeliveryStatusNotificationTests.notices, headers: headers)
        let notice = try #require(parse(message))
        #expect(notice.boundary != "=_carrier.Q1.784887151000")
        #expect(notice.boundary.hasPrefix("=_carrier.Q1.784887151000"))
        let text = String(decoding: message, as: UTF8.self)
        #expect(text.split(separator: "\r\n").filter { $0.hasPrefix("--" + notice.boundary) }.count == 4)
        #expect(entity(notice.parts[2].body[...]).value("X-Trick") == "--=_carrier.Q1.784887151000")
    }

    @Test(arguments: [
        ("A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n"),
        ("A: 1\nB: 2\n\nbody\n", "A: 1\nB: 2\n"),
        ("A: 1\n folded\n\nb", "A: 1\n folded\n"),
        ("A: 1\r\n", "A: 1\r\n"),
        ("A: 1", "A: 1"),
        ("\r\nbody", ""),
        ("", ""),
    ])
    func headersOfAMessage(_ message: String, _ expected: String) {
        #expect(DeliveryStatusNotification.headers(of: Array(message.utf8)) == Array(expected.utf8))
    }

    @Test(arguments: [(Int64(0), "Thu, 1 Jan 1970 00:00:00 +0000"), (784_887_151_999, "Tue, 15 Nov 1994 08:12:31 +0000"),
                      (1_709_210_096_000, "Thu, 29 Feb 2024 12:34:56 +0000")])
    func dates(_ milliseconds: Int64, _ expected: String) {
        #expect(rfc5322Date(milliseconds) == expected)
    }
}

@Suite("Message hints")
struct MessageHintsTests {
    /// DSN requests survive the hints' text form, whatever their values hold, and never add
    /// a line of their own.
    @Test func dsnRequestsRoundTripAndCannotInjectLines() {
        var dsn = DSNRequests(ret: "HDRS", envelopeID: "env=1\nliteral\r\n+x")
        dsn.recipients[0] = RecipientDSN(notify: [], originalRecipient: nil)
        dsn.recipients[3] = RecipientDSN(notify: ["SUCCESS", "FAILURE"], originalRecipient: "first@alias.test\ndsn-ret=FULL")
        let hints = MessageHints.encode(literal: true, dsn: dsn)
        #expect(MessageHints.isLiteral(hints))
        #expect(MessageHints.dsn(hints) == dsn)
        #expect(hints.split(separator: 0x0A).count == 6, "literal, ret, envid, notify.0, notify.3, orcpt.3: one line each")
        #expect(!MessageHints.isLiteral(MessageHints.encode(literal: false, dsn: DSNRequests())))
        #expect(MessageHints.dsn(MessageHints.literal).isEmpty)
    }

    /// NOTIFY decides the failure notice: NEVER or a list without FAILURE says no; no NOTIFY
    /// leaves it to the MTA (yes).
    @Test func notifyDecidesTheFailureNotice() {
        let dsn = DSNRequests(recipients: [0: RecipientDSN(notify: []), 1: RecipientDSN(notify: ["SUCCESS"]),
                                           2: RecipientDSN(notify: ["FAILURE", "DELAY"]), 3: RecipientDSN(originalRecipient: "x@y.test")])
        #expect((0...4).map { dsn.wantsFailureNotice(recipient: $0) } == [false, false, true, true, true])
    }
}
