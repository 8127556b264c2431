// InjectRequestTests.swift - the HTTP API's JSON body: what is built, and the field named for each mistake

import Foundation
@testable import Injection
import Spool
import Testing

@Suite struct InjectRequestTests {
    func parse(_ json: String) throws(InjectRequestError) -> NewMessage {
        try InjectRequest.parse(Data(json.utf8), now: 1_796_000_000_000).message
    }

    @Test func rawContentWithSubstitutionsOwnValuesFirst() throws {
        let message = try parse("""
        {"envelope_sender": "news@origin.test", "content": "Subject: Hi {{name}}\\r\\n\\r\\n{{greeting}} {{name}}, #{{n}} {{ok}}\\r\\n",
         "recipients": [{"email": "a@one.test", "substitutions": {"name": "Ann", "n": 7, "ok": true}}, {"email": "b@two.test"}],
         "substitutions": {"greeting": "Hello", "name": "friend"}, "campaign": "spring", "future_field": [1, 2]}
        """)
        #expect(message.sender == "news@origin.test")
        #expect(message.metadata.campaign == "spring")
        #expect(message.metadata.priority == .bulk, "more than one recipient: bulk by default")
        #expect(message.recipients.count == 2)
        #expect(message.recipients[0].variables.map(\.0) == ["n", "name", "ok", "greeting"])
        #expect(message.recipients[0].variables.first { $0.0 == "name" }?.1 == "Ann")
        #expect(message.recipients[0].variables.first { $0.0 == "n" }?.1 == "7")
        #expect(message.recipients[0].variables.first { $0.0 == "ok" }?.1 == "true")
        #expect(message.recipients[1].variables.map { "\($0.0)=\($0.1)" } == ["greeting=Hello", "name=friend"])
        #expect(String(decoding: message.body, as: UTF8.self).hasPrefix("Subject: Hi {{name}}"))
        #expect(message.metadata.hints.isEmpty, "an API message is a template")
    }

    @Test func builderContentMakesAMultipartWithPerRecipientTo() throws {
        let message = try parse("""
        {"envelope_sender": "news@origin.test", "class": "transactional",
         "content": {"subject": "Hi {{name}}", "from": {"email": "news@origin.test", "name": "The \\"News\\""},
                     "reply_to": "help@origin.test", "headers": {"X-Campaign": "c1"},
                     "text_body": "Hello {{name}}\\nbye", "html_body": "<p>Hello {{name}}</p>"},
         "recipients": [{"email": "a@one.test", "name": "Ann"}, {"email": "b@two.test"}]}
        """)
        let text = String(decoding: message.body, as: UTF8.self)
        #expect(text.contains("From: \"The News\" <news@origin.test>\r\n"))
        #expect(text.contains("Reply-To: <help@origin.test>\r\n"))
        #expect(text.contains("To: \"{{name}}\" <{{email}}>\r\n"))
        #expect(text.contains("Subject: Hi {{name}}\r\n"))
        #expect(text.contains("X-Campaign: c1\r\n"))
        #expect(text.contains("Content-Type: multipart/alternative; boundary="))
        #expect(text.contains("Hello {{name}}\r\nbye\r\n"), "LF line ends become CRLF")
        #expect(text.contains("Content-Type: text/html; charset=utf-8"))
        #expect(message.metadata.priority == .transactional)
        #expect(message.recipients[0].variables.map { "\($0.0)=\($0.1)" } == ["email=a@one.test", "name=Ann"])
        #expect(message.recipients[1].variables.map { "\($0.0)=\($0.1)" } == ["email=b@two.test", "name="],
                "no name: an empty one, so a top-level substitution cannot fill To:")
    }

    /// A recipient's own substitutions cannot fill the builder's To: (the first pair of a
    /// name wins; they came first, and a "name" closing the quotes added addresses to To:).
    @Test func substitutionsDoNotReachTheBuildersTo() throws {
        let message = try parse(#"""
        {"envelope_sender": "news@origin.test",
         "content": {"subject": "Hi", "from": {"email": "news@origin.test"}, "text_body": "Hello {{name}} {{n}}"},
         "recipients": [{"email": "a@one.test", "name": "Ann",
                         "substitutions": {"name": "x\" <evil@elsewhere.test>, \"", "email": "evil@elsewhere.test", "n": "7"}}]}
        """#)
        let pairs = message.recipients[0].variables
        #expect(pairs.first { $0.0 == "name" }?.1 == "Ann")
        #expect(pairs.first { $0.0 == "email" }?.1 == "a@one.test")
        #expect(pairs.first { $0.0 == "n" }?.1 == "7", "other substitutions still apply")
    }

    /// A line over 998 octets is refused at injection, naming the content or the recipient
    /// whose substitution makes it so (it was accepted, then bounced 554 at delivery).
    @Test func overLongLinesAreRefusedAtInjection() throws {
        func refusal(_ json: String) -> InjectRequestError? {
            do { _ = try parse(json); return nil } catch { return error }
        }
        let long = String(repeating: "x", count: 1_200)
        #expect(refusal(#"{"envelope_sender": "a@b.test", "content": "Subject: hi\r\n\r\n\#(long)\r\n", "recipients": [{"email": "a@b.test"}]}"#)?.field == "content")
        #expect(refusal(#"{"envelope_sender": "a@b.test", "content": {"subject": "s", "html_body": "<p>\#(long)</p>"}, "recipients": [{"email": "a@b.test"}]}"#)?.field == "content")
        let grown = refusal(#"{"envelope_sender": "a@b.test", "content": "Subject: hi\r\n\r\nDear {{name}}\r\n", "recipients": [{"email": "a@b.test", "substitutions": {"name": "Ann"}}, {"email": "c@b.test", "substitutions": {"name": "\#(long)"}}]}"#)
        #expect(grown?.field == "recipients[1].substitutions", "\(String(describing: grown))")
        /* 998 octets exactly is fine. */
        let edge = String(repeating: "y", count: 998)
        #expect(refusal(#"{"envelope_sender": "a@b.test", "content": "Subject: hi\r\n\r\n\#(edge)\r\n", "recipients": [{"email": "a@b.test"}]}"#) == nil)
    }

    @Test func eachMistakeNamesItsField() {
        let cases: [(String, String, String)] = [
            ("{", "", "not valid JSON"),
            ("[1]", "", "must be a JSON object"),
            (#"{"content": "x", "recipients": [{"email": "a@b.test"}]}"#, "envelope_sender", "missing"),
            (#"{"envelope_sender": 5, "content": "x", "recipients": [{"email": "a@b.test"}]}"#, "envelope_sender", "must be a string, not a number"),
            (#"{"envelope_sender": "not an address", "content": "x", "recipients": [{"email": "a@b.test"}]}"#, "envelope_sender", "not a valid address"),
            (#"{"envelope_sender": "a@b.test", "recipients": [{"email": "a@b.test"}]}"#, "content", "missing"),
            (#"{"envelope_sender": "a@b.test", "content": 3, "recipients": [{"email": "a@b.test"}]}"#, "content", "must be a message string or a builder object"),
            (#"{"envelope_sender": "a@b.test", "content": {"subject": "s"}, "recipients": [{"email": "a@b.test"}]}"#, "content", "needs text_body or html_body"),
            (#"{"envelope_sender": "a@b.test", "content": {"text_body": "t", "attachments": []}, "recipients": [{"email": "a@b.test"}]}"#, "content.attachments", "not supported"),
            (#"{"envelope_sender": "a@b.test", "content": "x"}"#, "recipients", "missing"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": {}}"#, "recipients", "must be an array"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": []}"#, "recipients", "must not be empty"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}, "c@d.test"]}"#, "recipients[1]", "must be an object"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}, {"email": 7}]}"#, "recipients[1].email", "must be a string"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "no-at"}]}"#, "recipients[0].email", "not a valid address"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test", "substitutions": {"x": [1]}}]}"#, "recipients[0].substitutions.x", "string, number or boolean"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "substitutions": "x"}"#, "substitutions", "must be an object"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "class": "urgent"}"#, "class", "transactional"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_in": 0}"#, "expires_in", "positive whole number of seconds, not 0"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_in": -5}"#, "expires_in", "positive whole number"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_in": 1.5}"#, "expires_in", "positive whole number"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_in": "600"}"#, "expires_in", "not a string"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_in": 9223372036854775807}"#, "expires_in", "too far ahead"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_at": "tomorrow"}"#, "expires_at", "RFC 3339"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_at": 1796083200}"#, "expires_at", "must be a string"),
            (#"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}], "expires_at": "2026-11-29T00:00:00Z"}"#, "expires_at", "not in the future"),
        ]
        for (json, field, message) in cases {
            do {
                _ = try parse(json)
                Issue.record("accepted: \(json)")
            } catch {
                #expect(error.field == field, "\(json) -> \(error)")
                #expect(error.message.contains(message), "\(json) -> \(error)")
            }
        }
    }

    /// `expires_in` counts seconds from the request; `expires_at` is an RFC 3339 time (any
    /// offset, fractions to the millisecond); with both, the earlier wins; with neither, none.
    @Test func expiryFieldsSetTheMessagesExpiryTime() throws {
        let base = #"{"envelope_sender": "a@b.test", "content": "x", "recipients": [{"email": "a@b.test"}]"#
        let now: Int64 = 1_796_000_000_000          /* 2026-11-30T00:53:20Z */
        #expect(try parse(base + "}").metadata.expires == 0)
        #expect(try parse(base + #", "expires_in": 600}"#).metadata.expires == now + 600_000)
        #expect(try parse(base + #", "expires_at": "2026-12-01T00:00:00Z"}"#).metadata.expires == 1_796_083_200_000)
        #expect(try parse(base + #", "expires_at": "2026-11-30T08:13:20.25+02:00"}"#).metadata.expires == 1_796_019_200_250)
        #expect(try parse(base + #", "expires_in": 600, "expires_at": "2026-12-01T00:00:00Z"}"#).metadata.expires == now + 600_000)
        #expect(try parse(base + #", "expires_in": 86400, "expires_at": "2026-11-30T01:00:00Z"}"#).metadata.expires == 1_796_000_400_000)
    }

    @Test func rfc3339TimesAreReadStrictly() {
        #expect(InjectRequest.rfc3339Milliseconds("1970-01-01T00:00:00Z") == 0)
        #expect(InjectRequest.rfc3339Milliseconds("1969-12-31t23:00:00z") == -3_600_000)
        #expect(InjectRequest.rfc3339Milliseconds("1970-01-01 00:00:00-01:00") == 3_600_000)
        #expect(InjectRequest.rfc3339Milliseconds("2028-02-29T23:59:60Z") == 1_835_481_599_000, "a leap day; a leap second counts as :59")
        #expect(InjectRequest.rfc3339Milliseconds("2026-11-30T06:13:20.123456Z") == 1_796_019_200_123)
        for bad in ["", "2026-11-30", "2026-11-30T10:00:00", "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-30T24:00:00Z",
                    "2026-11-30T10:60:00Z", "2026-11-30T10:00:00.Z", "2026-11-30T10:00:00+0200", "2026-11-30T10:00:00Z ", "26-11-30T10:00:00Z"] {
            #expect(InjectRequest.rfc3339Milliseconds(bad) == nil, "\(bad)")
        }
    }
}
