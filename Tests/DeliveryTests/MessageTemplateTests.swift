// MessageTemplateTests.swift - merge fields: substitution, escaping by context, MIME structure, added headers

import CarrierTesting
import Testing
@testable import Delivery

/// render - a template from text, rendered with queue id "q1" and domain "mx.example.net", as text.
private func render(_ template: String, _ variables: [(String, String)]) -> String {
    let rendered = MessageTemplate(Array(template.utf8)).render(variables, queueID: "q1", messageIDDomain: "mx.example.net")
    return String(decoding: rendered, as: UTF8.self)
}

/// headerLines - the header lines of a rendered message (up to the blank line), line endings removed.
///
/// Split on LF octets: a Swift String holds CR LF as one Character, which "\n" would not match.
private func headerLines(_ message: String) -> [Substring] {
    var lines: [Substring] = []
    for line in message.utf8.split(separator: 0x0A, omittingEmptySubsequences: false) {
        let text = line.last == 0x0D ? line.dropLast() : line
        if text.isEmpty { break }
        lines.append(Substring(text))
    }
    return lines
}

@Suite("Message templates")
struct MessageTemplateTests {
    @Test func substitutesInHeadersAndBodyAndAddsHeaders() {
        let out = render("Subject: Hi {{name}}\nFrom: a@example.org\n\nHello {{ name }}, code {{code}}.\n",
                         [("name", "Bob"), ("code", "42")])
        #expect(out == "Message-ID: <q1@mx.example.net>\nX-Carrier-Id: q1\nSubject: Hi Bob\nFrom: a@example.org\n\nHello Bob, code 42.\n")
    }

    @Test func keepsCRLFAndUsesItForAddedHeaders() {
        let out = render("Subject: {{s}}\r\n\r\nBody {{s}}\r\n", [("s", "x")])
        #expect(out == "Message-ID: <q1@mx.example.net>\r\nX-Carrier-Id: q1\r\nSubject: x\r\n\r\nBody x\r\n")
    }

    @Test func traceFieldsStayOnTopAndALiteralMessageKeepsItsBraces() {
        let text = "Received: from a ([192.0.2.1])\r\n\tby b; Mon, 30 Nov 2026 06:00:00 +0000\r\nReturn-Path: <s@x.test>\r\nSubject: {{s}}\r\n\r\n{{s}}\r\n"
        let out = String(decoding: MessageTemplate(Array(text.utf8), mergeFields: false)
            .render([("s", "no")], queueID: "q1", messageIDDomain: "mx.example.net"), as: UTF8.self)
        #expect(out == "Received: from a ([192.0.2.1])\r\n\tby b; Mon, 30 Nov 2026 06:00:00 +0000\r\nReturn-Path: <s@x.test>\r\n"
                + "Message-ID: <q1@mx.example.net>\r\nX-Carrier-Id: q1\r\nSubject: {{s}}\r\n\r\n{{s}}\r\n")
    }

    @Test func fieldsAndPersonalisation() {
        let template = MessageTemplate(Array("Subject: {{a}} {{ b.c }}\n\n{{a}} {{d-e_f}}\n".utf8))
        #expect(template.fields == ["a", "b.c", "d-e_f"])
        #expect(template.isPersonalised)
        let plain = MessageTemplate(Array("Subject: none\n\nNo fields { here } {x}.\n".utf8))
        #expect(plain.fields.isEmpty)
        #expect(!plain.isPersonalised)
        #expect(String(decoding: plain.render([], queueID: "q", messageIDDomain: "d"), as: UTF8.self)
            == "Message-ID: <q@d>\nX-Carrier-Id: q\nSubject: none\n\nNo fields { here } {x}.\n")
    }

    @Test func missingVariablesRenderEmptyAndTheFirstOfANameWins() {
        #expect(render("S: x\n\n[{{a}}][{{b}}]\n", [("a", "1"), ("a", "2")]).hasSuffix("\n\n[1][]\n"))
        /* Names match exactly: case matters. */
        #expect(render("S: x\n\n[{{Name}}]\n", [("name", "lower")]).hasSuffix("\n\n[]\n"))
    }

    /// Text that looks like a reference but is not one stays as written.
    @Test(arguments: [
        ("{{}}", "{{}}"),
        ("{{ two words }}", "{{ two words }}"),
        ("{{v}", "{{v}"),
        ("{{v }x}", "{{v }x}"),
        ("{{{v}}}", "{V}"),
        ("{{v}}}}", "V}}"),
        ("{{ v\t}}", "V"),
        ("{{v/x}}", "{{v/x}}"),
        ("a{{v}}b{{v}}c", "aVbVc"),
        ("{{", "{{"),
    ])
    func referenceSyntax(_ body: String, _ expected: String) {
        #expect(render("S: x\n\n" + body, [("v", "V")]).hasSuffix("\n\n" + expected))
    }

    @Test func headerValuesCannotInjectHeaderLines() {
        let out = render("Subject: Hello {{name}}\nTo: {{email}}\n\nBody {{name}}\n",
                         [("name", "Bob\r\nBcc: victim@example.com"), ("email", "a@b\nX-Evil: 1")])
        let lines = headerLines(out)
        #expect(lines == ["Message-ID: <q1@mx.example.net>", "X-Carrier-Id: q1",
                          "Subject: Hello Bob  Bcc: victim@example.com", "To: a@b X-Evil: 1"])
        /* In the text body the value goes in as is (the encoder normalises line endings later). */
        #expect(out.hasSuffix("\n\nBody Bob\r\nBcc: victim@example.com\n"))
    }

    @Test func queueIDAndDomainCannotInjectEither() {
        let rendered = MessageTemplate(Array("S: x\n\nb\n".utf8)).render([], queueID: "q\r\nBcc: x", messageIDDomain: "d\nY: z")
        #expect(headerLines(String(decoding: rendered, as: UTF8.self)) == ["Message-ID: <q  Bcc: x@d Y: z>", "X-Carrier-Id: q  Bcc: x", "S: x"])
    }

    @Test func keepsAnExistingMessageIDWhateverItsCase() {
        let out = render("message-ID: <orig@example.org>\nSubject: s\n\nb\n", [])
        #expect(headerLines(out) == ["X-Carrier-Id: q1", "message-ID: <orig@example.org>", "Subject: s"])
        let merged = render("Message-Id: <{{id}}@example.org>\n\nb\n", [("id", "7\n8")])
        #expect(headerLines(merged) == ["X-Carrier-Id: q1", "Message-Id: <7 8@example.org>"])
    }

    @Test func replacesASpoofedCarrierID() {
        let out = render("Subject: s\nX-CARRIER-ID: forged\n  continued\nx-carrier-id: again\nFrom: f@example.org\n\nb\n", [])
        #expect(headerLines(out) == ["Message-ID: <q1@mx.example.net>", "X-Carrier-Id: q1", "Subject: s", "From: f@example.org"])
        #expect(!out.contains("forged") && !out.contains("again") && !out.contains("continued"))
    }

    @Test func foldedHeadersStayFoldedAndAreSubstituted() {
        let out = render("Subject: first {{a}}\n\tsecond {{a}}\n\nb\n", [("a", "A\nB")])
        #expect(headerLines(out).suffix(2) == ["Subject: first A B", "\tsecond A B"])
    }

    @Test func headersOnlyAndBodyOnlyMessages() {
        #expect(render("Subject: {{a}}", [("a", "1")]) == "Message-ID: <q1@mx.example.net>\r\nX-Carrier-Id: q1\r\nSubject: 1")
        #expect(render("\nbody {{a}}\n", [("a", "1")]) == "Message-ID: <q1@mx.example.net>\nX-Carrier-Id: q1\n\nbody 1\n")
        #expect(render("", []) == "Message-ID: <q1@mx.example.net>\r\nX-Carrier-Id: q1\r\n")
    }

    @Test func topLevelHTMLIsEscapedAndPlainTextIsNot() {
        let value = ("v", "<b>\"Tom\" & 'Jerry'</b>")
        let html = render("Content-Type: text/HTML; charset=utf-8\nSubject: {{v}}\n\n<p>{{v}}</p>\n", [value])
        #expect(html.hasSuffix("\n\n<p>&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;</p>\n"))
        #expect(html.contains("Subject: <b>\"Tom\" & 'Jerry'</b>\n"))
        let plain = render("Content-Type: text/plain\n\n{{v}}\n", [value])
        #expect(plain.hasSuffix("\n\n<b>\"Tom\" & 'Jerry'</b>\n"))
    }

    static let alternative = """
        From: news@example.org\r
        Subject: News for {{name}}\r
        MIME-Version: 1.0\r
        Content-Type: multipart/alternative;\r
         boundary="b1 x"\r
        \r
        Preamble {{name}}\r
        --b1 x\r
        Content-Type: text/plain; charset=utf-8\r
        \r
        Hi {{name}}\r
        --b1 x  \r
        Content-Type: text/html; charset=utf-8\r
        X-Part: {{name}}\r
        \r
        <p>Hi {{name}}</p>\r
        --b1 x--\r
        Epilogue {{name}}\r

        """

    @Test func multipartAlternativeEscapesOnlyTheHTMLPart() {
        let template = MessageTemplate(Array(MessageTemplateTests.alternative.utf8))
        let out = String(decoding: template.render([("name", "A&B\r\nC: d")], queueID: "q1", messageIDDomain: "m"), as: UTF8.self)
        let expected = """
            Message-ID: <q1@m>\r
            X-Carrier-Id: q1\r
            From: news@example.org\r
            Subject: News for A&B  C: d\r
            MIME-Version: 1.0\r
            Content-Type: multipart/alternative;\r
             boundary="b1 x"\r
            \r
            Preamble {{name}}\r
            --b1 x\r
            Content-Type: text/plain; charset=utf-8\r
            \r
            Hi A&B\r
            C: d\r
            --b1 x  \r
            Content-Type: text/html; charset=utf-8\r
            X-Part: A&B  C: d\r
            \r
            <p>Hi A&amp;B\r
            C: d</p>\r
            --b1 x--\r
            Epilogue {{name}}\r

            """
        #expect(out == expected)
        #expect(template.fields == ["name"])
    }

    static let nested = """
        Subject: {{a}}
        Content-Type: multipart/mixed; boundary=outer

        --outer
        Content-Type: multipart/alternative; boundary="inner"

        --inner
        Content-Type: text/plain

        plain {{a}}
        --inner
        Content-Type: text/html

        html {{a}}
        --inner--
        --outer
        Content-Type: text/html
        Content-Transfer-Encoding: quoted-printable

        qp {{qp}}
        --outer
        Content-Type: text/plain; name="{{a}}.txt"
        Content-Transfer-Encoding: BASE64

        e3tiNjR9fQ== {{b64}}
        --outer
        Content-Type: text/html

        last {{a}}
        --outer--

        """

    @Test func nestedMultipartAndEncodedParts() {
        let template = MessageTemplate(Array(MessageTemplateTests.nested.utf8))
        #expect(template.fields == ["a"])
        let out = String(decoding: template.render([("a", "<x>"), ("qp", "Q"), ("b64", "B")], queueID: "q1", messageIDDomain: "m"),
                         as: UTF8.self)
        #expect(out.contains("Subject: <x>\n"))
        #expect(out.contains("\nplain <x>\n"))
        #expect(out.contains("\nhtml &lt;x&gt;\n"))
        #expect(out.contains("\nqp {{qp}}\n"))
        #expect(out.contains("name=\"<x>.txt\""))
        #expect(out.contains("\ne3tiNjR9fQ== {{b64}}\n"))
        #expect(out.contains("\nlast &lt;x&gt;\n"))
    }

    @Test func boundaryTextInsideAnotherLineIsNotADelimiter() {
        let message = "Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nsee --zz here {{v}}\n"
            + "--zz\nContent-Type: text/html\n\n{{v}}\n--zz--\n"
        let out = render(message, [("v", "<")])
        #expect(out.contains("see --zz here <\n"))
        #expect(out.contains("\n\n&lt;\n--zz--\n"))
    }

    @Test func multipartWithoutDelimitersReadsAsText() {
        #expect(render("Content-Type: multipart/mixed; boundary=q\n\nno parts {{v}}\n", [("v", "<")]).hasSuffix("\n\nno parts <\n"))
    }

    @Test func renderAppendsToTheBuffer() {
        let template = MessageTemplate(Array("S: {{v}}\n\n{{v}}\n".utf8))
        var out = Array("prefix|".utf8)
        template.render([("v", "1")], queueID: "a", messageIDDomain: "d", into: &out)
        template.render([("v", "2")], queueID: "b", messageIDDomain: "d", into: &out)
        #expect(String(decoding: out, as: UTF8.self)
            == "prefix|Message-ID: <a@d>\nX-Carrier-Id: a\nS: 1\n\n1\nMessage-ID: <b@d>\nX-Carrier-Id: b\nS: 2\n\n2\n")
    }

    @Test func nonASCIIValuesPassThrough() {
        #expect(render("S: {{v}}\n\n{{v}}\n", [("v", "Zoë 日本")]).hasSuffix("S: Zoë 日本\n\nZoë 日本\n"))
    }

    /// Property: whatever the values hold, the header block keeps its line count, and an HTML part
    /// never receives a raw "<" or "&" from a value.
    @Test func randomValuesNeverChangeTheStructure() {
        var random = SplitMix64(seed: 7)
        let alphabet = Array("ab<>&\"'\r\n :\t{}".utf8)
        let template = MessageTemplate(Array(MessageTemplateTests.alternative.utf8))
        for _ in 0..<300 {
            let length = Int(random.next() % 24)
            let value = String(decoding: (0..<length).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }, as: UTF8.self)
            let out = String(decoding: template.render([("name", value)], queueID: "q", messageIDDomain: "m"), as: UTF8.self)
            #expect(headerLines(out).count == 7)
            let html = out.split(separator: "<p>Hi ")[1].split(separator: "</p>")[0]
            #expect(!html.contains("<") && !html.contains(">") && !html.contains("\""))
            #expect(html.replacingAll("&amp;", "").replacingAll("&lt;", "").replacingAll("&gt;", "")
                .replacingAll("&quot;", "").replacingAll("&#39;", "").contains("&") == false)
        }
    }
}

extension Substring {
    /// replacingAll - every occurrence of `target` replaced (Foundation-free).
    fileprivate func replacingAll(_ target: String, _ replacement: String) -> String {
        String(self).split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

extension String {
    /// replacingAll - every occurrence of `target` replaced (Foundation-free).
    fileprivate func replacingAll(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
