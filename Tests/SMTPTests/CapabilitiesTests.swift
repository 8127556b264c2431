// CapabilitiesTests.swift - EHLO replies to capabilities and back

import SMTP
import Testing

/// ehlo - a 250 EHLO reply with `lines` after the greeting line.
private func ehlo(_ lines: [String]) -> Reply {
    Reply(code: 250, text: "mx.example.org Hello", additionalLines: lines)
}

@Suite("Capabilities")
struct CapabilitiesTests {
    /// A Postfix EHLO reply, every extension the client uses.
    @Test func postfixReply() {
        let capabilities = Capabilities(ehloReply: ehlo([
            "PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES",
            "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING",
        ]))
        #expect(capabilities == Capabilities(
            pipelining: true, size: 10_240_000, eightBitMIME: true, smtpUTF8: true, chunking: true,
            startTLS: true, enhancedStatusCodes: true, dsn: true, authMechanisms: ["PLAIN", "LOGIN"],
            keywords: ["VRFY": [], "ETRN": []]))
        #expect(!capabilities.binaryMIME)
    }

    /// One keyword per case: each sets exactly its own field.
    @Test(arguments: [
        ("PIPELINING", Capabilities(pipelining: true)),
        ("SIZE", Capabilities(size: 0)),
        ("SIZE 0", Capabilities(size: 0)),
        ("SIZE 52428800", Capabilities(size: 52_428_800)),
        ("SIZE unlimited", Capabilities(size: 0)),
        ("SIZE 99999999999999999999", Capabilities(size: .max)),
        ("8BITMIME", Capabilities(eightBitMIME: true)),
        ("SMTPUTF8", Capabilities(smtpUTF8: true)),
        ("CHUNKING", Capabilities(chunking: true)),
        ("BINARYMIME", Capabilities(binaryMIME: true)),
        ("STARTTLS", Capabilities(startTLS: true)),
        ("ENHANCEDSTATUSCODES", Capabilities(enhancedStatusCodes: true)),
        ("DSN", Capabilities(dsn: true)),
        ("AUTH CRAM-MD5 scram-sha-256", Capabilities(authMechanisms: ["CRAM-MD5", "SCRAM-SHA-256"])),
        ("AUTH=PLAIN LOGIN", Capabilities(authMechanisms: ["PLAIN", "LOGIN"])),
        ("auth=login", Capabilities(authMechanisms: ["LOGIN"])),
        ("AUTH", Capabilities()),
        ("pipelining", Capabilities(pipelining: true)),
        ("Size 1000", Capabilities(size: 1000)),
        ("XCLIENT NAME ADDR PROTO", Capabilities(keywords: ["XCLIENT": ["NAME", "ADDR", "PROTO"]])),
        ("x-custom  a   b ", Capabilities(keywords: ["X-CUSTOM": ["a", "b"]])),
        ("", Capabilities()),
        ("-X", Capabilities()),
        ("S!ZE 10", Capabilities()),
        ("250-STUFF", Capabilities(keywords: ["250-STUFF": []])),
    ])
    func keyword(line: String, expected: Capabilities) {
        #expect(Capabilities(ehloReply: ehlo([line])) == expected)
    }

    /// Both AUTH forms together (old servers send both): each mechanism once, in order.
    @Test func bothAuthForms() {
        let capabilities = Capabilities(ehloReply: ehlo(["AUTH LOGIN PLAIN CRAM-MD5", "AUTH=LOGIN PLAIN XOAUTH2"]))
        #expect(capabilities.authMechanisms == ["LOGIN", "PLAIN", "CRAM-MD5", "XOAUTH2"])
    }

    /// The greeting line is never a keyword; a reply with no more lines offers nothing.
    @Test func greetingIsNotAKeyword() {
        #expect(Capabilities(ehloReply: Reply(code: 250, text: "PIPELINING")) == Capabilities())
    }

    /// What a server advertises, a client reads back the same.
    @Test func serverLinesRoundTrip() {
        let offered = Capabilities(
            pipelining: true, size: 35_882_577, eightBitMIME: true, smtpUTF8: true, chunking: true, binaryMIME: true,
            startTLS: true, enhancedStatusCodes: true, dsn: true, authMechanisms: ["PLAIN", "SCRAM-SHA-256"],
            keywords: ["XFORWARD": ["NAME", "ADDR"], "ETRN": []])
        let lines = offered.ehloReplyLines(domain: "mx.example.org")
        #expect(lines == [
            "mx.example.org", "PIPELINING", "SIZE 35882577", "STARTTLS", "AUTH PLAIN SCRAM-SHA-256",
            "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING", "BINARYMIME", "ETRN", "XFORWARD NAME ADDR",
        ])
        let reply = Reply(code: 250, text: lines[0], additionalLines: Array(lines.dropFirst()))
        #expect(Capabilities(ehloReply: reply) == offered)
    }

    /// SIZE 0 (no limit) is advertised as a bare SIZE; nothing offered is only the domain line.
    @Test func minimalServerLines() {
        #expect(Capabilities(size: 0).ehloReplyLines(domain: "sink") == ["sink", "SIZE"])
        #expect(Capabilities().ehloReplyLines(domain: "sink") == ["sink"])
    }
}
