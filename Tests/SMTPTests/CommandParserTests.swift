// CommandParserTests.swift - server command lines: verbs, paths, parameters, limits, line ends, splits

import SMTP
import Testing

/// A stream fed to a CommandParser the way a server session feeds it.
private struct CommandFeed {
    var parser: CommandParser
    var buffered: [UInt8] = []      /* received, not yet consumed */
    var results: [CommandResult] = []
    var mostBuffered = 0            /* the largest the buffer grew */

    init(parser: CommandParser = CommandParser()) {
        self.parser = parser
    }

    /// feed - append `bytes` and take every result they complete.
    mutating func feed(_ bytes: some Collection<UInt8>) {
        buffered += bytes
        mostBuffered = max(mostBuffered, buffered.count)
        while true {
            let count = buffered.count
            let (result, consumed) = buffered.withUnsafeBytes { parser.parse($0) }
            #expect(consumed >= 0 && consumed <= count)
            buffered.removeFirst(consumed)
            guard let result else { break }
            results.append(result)
        }
    }
}

/// results - what `text` parses to, fed in pieces of `step` octets.
private func results(_ bytes: [UInt8], step: Int = .max, parser: CommandParser = CommandParser()) -> [CommandResult] {
    var feed = CommandFeed(parser: parser)
    var offset = 0
    repeat {
        let end = bytes.count - offset > step ? offset + step : bytes.count
        feed.feed(bytes[offset..<end])
        offset = end
    } while offset < bytes.count
    return feed.results
}

/// results - the same for text.
private func results(_ text: String, step: Int = .max, parser: CommandParser = CommandParser()) -> [CommandResult] {
    results(Array(text.utf8), step: step, parser: parser)
}

/// mailbox - a valid address for expectations.
private func mailbox(_ text: String) -> MailAddress {
    try! MailAddress(parsing: text)
}

/// status - the code and enhanced code of an error result ("500 5.5.2"), or "command" and the verb.
private func status(_ result: CommandResult?) -> String {
    switch result {
    case .error(let reply)?, .refusedChunk(let reply, _)?: return "\(reply.code) \(reply.enhanced.map { "\($0)" } ?? "-")"
    case .command(let command)?: return "command " + String("\(command)".prefix { $0 != "(" })
    case nil: return "nothing"
    }
}

@Suite("Command parser")
struct CommandParserTests {
    /// Every verb, in several spellings.
    @Test(arguments: [
        ("HELO client.example", Command.helo("client.example")),
        ("helo  client.example ", .helo("client.example")),
        ("EHLO [192.0.2.1]", .ehlo("[192.0.2.1]")),
        ("eHlO mx.example.org", .ehlo("mx.example.org")),
        ("MAIL FROM:<alice@example.com>", .mail(.mailbox(mailbox("alice@example.com")), MailParameters())),
        ("mail from:<alice@example.com>", .mail(.mailbox(mailbox("alice@example.com")), MailParameters())),
        ("MAIL FROM:<>", .mail(.null, MailParameters())),
        ("MAIL FROM: <alice@example.com>", .mail(.mailbox(mailbox("alice@example.com")), MailParameters())),
        ("MAIL  FROM:<\"a b\"@example.com>", .mail(.mailbox(mailbox("\"a b\"@example.com")), MailParameters())),
        ("RCPT TO:<bob@example.org>", .rcpt(mailbox("bob@example.org"), RecipientParameters())),
        ("Rcpt To:<bob@[IPv6:2001:db8::1]>", .rcpt(mailbox("bob@[IPv6:2001:db8::1]"), RecipientParameters())),
        ("RCPT TO:<@relay.example,@hop-2.example:bob@example.org>", .rcpt(mailbox("bob@example.org"), RecipientParameters())),
        ("MAIL FROM:<@relay.example:alice@example.com>", .mail(.mailbox(mailbox("alice@example.com")), MailParameters())),
        ("RCPT TO:<用户@例子.广告>", .rcpt(mailbox("用户@例子.广告"), RecipientParameters())),
        ("DATA", .data),
        ("data ", .data),
        ("BDAT 1000", .bdat(size: 1000, last: false)),
        ("BDAT 0 LAST", .bdat(size: 0, last: true)),
        ("bdat 65536  last ", .bdat(size: 65536, last: true)),
        ("BDAT 999999999999999999 LAST", .bdat(size: 999_999_999_999_999_999, last: true)),
        ("RSET", .rset),
        ("NOOP", .noop),
        ("NOOP is ignored", .noop),
        ("QUIT", .quit),
        ("VRFY postmaster", .vrfy("postmaster")),
        ("VRFY Smith <smith@example.com>", .vrfy("Smith <smith@example.com>")),
        ("HELP", .help),
        ("HELP MAIL", .help),
        ("STARTTLS", .starttls),
        ("starttls", .starttls),
        ("AUTH PLAIN", .auth(mechanism: "PLAIN", initialResponse: nil)),
        ("auth plain AHVzZXIAcGFzcw==", .auth(mechanism: "PLAIN", initialResponse: "AHVzZXIAcGFzcw==")),
        ("AUTH EXTERNAL =", .auth(mechanism: "EXTERNAL", initialResponse: "=")),
        ("AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=",
         .auth(mechanism: "SCRAM-SHA-256", initialResponse: "biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=")),
        ("AUTH X_MY-MECH", .auth(mechanism: "X_MY-MECH", initialResponse: nil)),
    ])
    func everyVerb(line: String, expected: Command) {
        #expect(results(line + "\r\n") == [.command(expected)])
    }

    /// MAIL FROM parameters, in any case, alone and together.
    @Test(arguments: [
        ("SIZE=12345", MailParameters(size: 12345)),
        ("size=0", MailParameters(size: 0)),
        ("SIZE=99999999999999999999", MailParameters(size: .max)),
        ("BODY=7BIT", MailParameters(body: .sevenBit)),
        ("body=8bitmime", MailParameters(body: .eightBitMIME)),
        ("BODY=BINARYMIME", MailParameters(body: .binaryMIME)),
        ("SMTPUTF8", MailParameters(smtpUTF8: true)),
        ("AUTH=<>", MailParameters(auth: "<>")),
        ("AUTH=e+3Dmc2@example.com", MailParameters(auth: "e=mc2@example.com")),
        ("RET=FULL", MailParameters(dsnReturn: .full)),
        ("ret=hdrs", MailParameters(dsnReturn: .headers)),
        ("ENVID=QQ314159", MailParameters(envelopeID: "QQ314159")),
        ("ENVID=a+2Bb", MailParameters(envelopeID: "a+b")),
        ("SIZE=5000  BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<> ",
         MailParameters(size: 5000, body: .eightBitMIME, smtpUTF8: true, auth: "<>", dsnReturn: .headers, envelopeID: "x")),
    ])
    func mailParameters(parameters: String, expected: MailParameters) {
        #expect(results("MAIL FROM:<a@example.com> \(parameters)\r\n")
                == [.command(.mail(.mailbox(mailbox("a@example.com")), expected))])
    }

    /// RCPT TO parameters (RFC 3461).
    @Test(arguments: [
        ("NOTIFY=NEVER", RecipientParameters(notify: .never)),
        ("NOTIFY=SUCCESS", RecipientParameters(notify: .success)),
        ("notify=failure,delay", RecipientParameters(notify: [.failure, .delay])),
        ("NOTIFY=SUCCESS,FAILURE,DELAY", RecipientParameters(notify: [.success, .failure, .delay])),
        ("ORCPT=rfc822;bob@example.org", RecipientParameters(originalRecipient: .init(addressType: "rfc822", address: "bob@example.org"))),
        ("ORCPT=RFC822;b+2Bob@example.org", RecipientParameters(originalRecipient: .init(addressType: "rfc822", address: "b+ob@example.org"))),
        ("NOTIFY=DELAY ORCPT=rfc822;x@y", RecipientParameters(notify: .delay, originalRecipient: .init(addressType: "rfc822", address: "x@y"))),
    ])
    func recipientParameters(parameters: String, expected: RecipientParameters) {
        #expect(results("RCPT TO:<bob@example.org> \(parameters)\r\n")
                == [.command(.rcpt(mailbox("bob@example.org"), expected))])
    }

    /// Every rejection, with its code and enhanced code.
    @Test(arguments: [
        /* Unknown, empty and unimplemented. */
        ("FOO", "500 5.5.2"), ("", "500 5.5.2"), ("MAILFROM:<a@b.c>", "500 5.5.2"), (" NOOP", "500 5.5.2"),
        ("EXPN staff", "502 5.5.1"), ("TURN", "502 5.5.1"), ("ETRN example.com", "502 5.5.1"),
        /* Command syntax. */
        ("HELO", "501 5.5.2"), ("EHLO   ", "501 5.5.2"), ("MAIL", "501 5.5.2"), ("MAIL FROM:a@b.c", "501 5.5.2"),
        ("MAIL TO:<a@b.c>", "501 5.5.2"), ("MAIL FROM:<a@b.c", "501 5.5.2"), ("MAIL FROM:<a@b.c>SIZE=1", "501 5.5.2"),
        ("MAIL FROM:", "501 5.5.2"), ("RCPT TO:b@c.d", "501 5.5.2"), ("RCPT FROM:<b@c.d>", "501 5.5.2"),
        ("DATA now", "501 5.5.2"), ("RSET all", "501 5.5.2"), ("QUIT now", "501 5.5.2"), ("STARTTLS x", "501 5.5.2"),
        ("VRFY", "501 5.5.2"), ("BDAT", "501 5.5.2"), ("BDAT x", "501 5.5.2"), ("BDAT 10 FIRST", "501 5.5.2"),
        ("BDAT -1", "501 5.5.2"), ("BDAT 10 LAST x", "501 5.5.2"), ("BDAT 1234567890123456789", "501 5.5.4"),
        ("AUTH", "501 5.5.2"), ("AUTH PLAIN a b", "501 5.5.2"), ("AUTH PL@IN", "501 5.5.2"), ("AUTH PLAIN d!==", "501 5.5.2"),
        ("AUTH ABCDEFGHIJKLMNOPQRSTU", "501 5.5.2"),
        /* Addresses. */
        ("MAIL FROM:<a@@b.c>", "501 5.1.7"), ("MAIL FROM:<a b@c.d>", "501 5.1.7"), ("MAIL FROM:<@bad..route:a@b.c>", "501 5.1.7"),
        ("MAIL FROM:<@relay.example:>", "501 5.1.7"), ("MAIL FROM:<@relay.example>", "501 5.1.7"), ("MAIL FROM:<\"a>b\"@c.d>", "501 5.5.2"),
        ("RCPT TO:<>", "501 5.1.3"), ("RCPT TO:<bob>", "501 5.1.3"), ("RCPT TO:<Postmaster>", "501 5.1.3"),
        ("RCPT TO:<bob@-example.org>", "501 5.1.3"), ("RCPT TO:<@a,b:bob@c.d>", "501 5.1.3"),
        /* Parameters: unknown, duplicate, bad values. */
        ("MAIL FROM:<a@b.c> FOO=1", "555 5.5.4"), ("MAIL FROM:<a@b.c> NOTIFY=NEVER", "555 5.5.4"),
        ("RCPT TO:<a@b.c> SIZE=1", "555 5.5.4"), ("RCPT TO:<a@b.c> XFOO", "555 5.5.4"),
        ("MAIL FROM:<a@b.c> SIZE=1 SIZE=2", "501 5.5.4"), ("MAIL FROM:<a@b.c> SMTPUTF8 smtputf8", "501 5.5.4"),
        ("RCPT TO:<a@b.c> NOTIFY=SUCCESS NOTIFY=DELAY", "501 5.5.4"), ("RCPT TO:<a@b.c> ORCPT=rfc822;x ORCPT=rfc822;y", "501 5.5.4"),
        ("MAIL FROM:<a@b.c> SIZE=x", "501 5.5.4"), ("MAIL FROM:<a@b.c> SIZE", "501 5.5.4"), ("MAIL FROM:<a@b.c> SIZE=", "501 5.5.4"),
        ("MAIL FROM:<a@b.c> BODY=9BIT", "501 5.5.4"), ("MAIL FROM:<a@b.c> SMTPUTF8=yes", "501 5.5.4"),
        ("MAIL FROM:<a@b.c> RET=ALL", "501 5.5.4"), ("MAIL FROM:<a@b.c> ENVID=+ZZ", "501 5.5.4"),
        ("MAIL FROM:<a@b.c> ENVID=" + String(repeating: "x", count: 101), "501 5.5.4"),
        ("MAIL FROM:<a@b.c> AUTH=a+0Db@c.d", "501 5.5.4"), ("MAIL FROM:<a@b.c> AUTH=a+3db@c.d", "501 5.5.4"),
        ("MAIL FROM:<a@b.c> =1", "501 5.5.4"), ("MAIL FROM:<a@b.c> -X=1", "501 5.5.4"), ("MAIL FROM:<a@b.c> X_Y=1", "501 5.5.4"),
        ("MAIL FROM:<a@b.c> SIZE=1=2", "501 5.5.4"),
        ("RCPT TO:<a@b.c> NOTIFY=NEVER,SUCCESS", "501 5.5.4"), ("RCPT TO:<a@b.c> NOTIFY=SOMETIMES", "501 5.5.4"),
        ("RCPT TO:<a@b.c> NOTIFY=SUCCESS,", "501 5.5.4"), ("RCPT TO:<a@b.c> ORCPT=bob@example.org", "501 5.5.4"),
        ("RCPT TO:<a@b.c> ORCPT=;bob", "501 5.5.4"), ("RCPT TO:<a@b.c> ORCPT=rfc822;", "501 5.5.4"),
        /* Octets that never belong in a command line. */
        ("NOOP\u{0}", "500 5.5.2"), ("NO\rOP", "500 5.5.2"), ("NOOP\t", "500 5.5.2"), ("VRFY a\u{7F}", "500 5.5.2"),
        ("HELO \u{1B}[31m", "500 5.5.2"),
    ])
    func rejections(line: String, expected: String) {
        let parsed = results(line + "\r\n")
        #expect(parsed.count == 1)
        #expect(status(parsed.first) == expected, "\(line)")
    }

    /// Reply texts say what was wrong, in Postfix's words where it has them.
    @Test func replyTexts() {
        #expect(results("FOO\r\n") == [.error(Reply(code: 500, enhanced: EnhancedStatus(5, 5, 2), text: "5.5.2 Command unrecognized"))])
        #expect(results("MAIL FROM:a@b.c\r\n")
                == [.error(Reply(code: 501, enhanced: EnhancedStatus(5, 5, 2), text: "5.5.2 Syntax: MAIL FROM:<address>"))])
        #expect(results("RCPT TO:<bob>\r\n")
                == [.error(Reply(code: 501, enhanced: EnhancedStatus(5, 1, 3), text: "5.1.3 Bad recipient address syntax: no \"@\" in address"))])
        #expect(results("MAIL FROM:<a@b.c> FOO=1\r\n")
                == [.error(Reply(code: 555, enhanced: EnhancedStatus(5, 5, 4), text: "5.5.4 Unsupported option: FOO=1"))])
        #expect(results("MAIL FROM:<a@b.c> SIZE=1 size=2\r\n")
                == [.error(Reply(code: 501, enhanced: EnhancedStatus(5, 5, 4), text: "5.5.4 Duplicate SIZE parameter"))])
        #expect(results("BDAT\r\n")
                == [.refusedChunk(Reply(code: 501, enhanced: EnhancedStatus(5, 5, 2), text: "5.5.2 Syntax: BDAT chunk-size [LAST]"), size: nil)])
        /* A refused BDAT line says how much chunk follows when it can: the session skips it. */
        let refused = Reply(code: 501, enhanced: EnhancedStatus(5, 5, 2), text: "5.5.2 Syntax: BDAT chunk-size [LAST]")
        #expect(results("BDAT 10 FIRST\r\n") == [.refusedChunk(refused, size: 10)])
        #expect(results("bdat 1234567890123456789 LAST\r\n")
                == [.refusedChunk(Reply(code: 501, enhanced: EnhancedStatus(5, 5, 4), text: "5.5.4 Bad BDAT chunk size (more than 18 digits)"), size: nil)])
        #expect(results("BDATX 10\r\n").first.map { if case .error = $0 { true } else { false } } == true, "not BDAT")
        #expect(results("STARTTLS now\r\n")
                == [.error(Reply(code: 501, enhanced: EnhancedStatus(5, 5, 2), text: "5.5.2 Syntax: STARTTLS"))])
        #expect(results("NOOP\u{1}\r\n")
                == [.error(Reply(code: 500, enhanced: EnhancedStatus(5, 5, 2), text: "5.5.2 Control character 0x01 in command line"))])
        #expect(results(String(repeating: "x", count: 600) + "\r\n")
                == [.error(Reply(code: 500, enhanced: EnhancedStatus(5, 5, 6), text: "5.5.6 Line too long (limit 512 octets)"))])
    }

    /// RFC 5321 §4.1.1.3: `<Postmaster>` without a domain, when the server names its postmaster.
    @Test func postmasterWithoutDomain() {
        let parser = CommandParser(postmaster: mailbox("postmaster@mx.example"))
        #expect(results("RCPT TO:<Postmaster>\r\nRCPT TO:<POSTMASTER> NOTIFY=NEVER\r\n", parser: parser) == [
            .command(.rcpt(mailbox("postmaster@mx.example"), RecipientParameters())),
            .command(.rcpt(mailbox("postmaster@mx.example"), RecipientParameters(notify: .never))),
        ])
    }

    /// 512 octets with CRLF is a command; 513 is too long, and the next line still parses.
    @Test func commandLineLimit() {
        let line512 = "NOOP " + String(repeating: "x", count: 512 - 7) + "\r\n"
        let line513 = "NOOP " + String(repeating: "x", count: 513 - 7) + "\r\n"
        #expect(line512.utf8.count == CommandParser.maximumCommandLineLength)
        #expect(results(line512) == [.command(.noop)])
        for step in [1, 100, 511, 512, 513, 4096] {
            #expect(results(line513 + "QUIT\r\n", step: step).map(status) == ["500 5.5.6", "command quit"])
        }
        /* A 512-octet line whose last octet is a bare LF is a bare-LF error, not too long. */
        #expect(results(String(repeating: "x", count: 511) + "\n").map(status) == ["500 5.5.2"])
    }

    /// AUTH lines may be 12,288 octets with CRLF (RFC 4954 §4); one more is too long.
    @Test func authLineLimit() {
        let prefix = "AUTH PLAIN "
        let exact = prefix + String(repeating: "A", count: 12_288 - prefix.utf8.count - 2) + "\r\n"
        let over = prefix + String(repeating: "A", count: 12_289 - prefix.utf8.count - 2) + "\r\n"
        #expect(exact.utf8.count == CommandParser.maximumAuthLineLength)
        let response = String(repeating: "A", count: 12_288 - prefix.utf8.count - 2)
        #expect(results(exact) == [.command(.auth(mechanism: "PLAIN", initialResponse: response))])
        #expect(results(over + "NOOP\r\n", step: 4096).map(status) == ["500 5.5.6", "command noop"])
        /* The wider limit is for AUTH only. */
        #expect(results("AUTHX " + String(repeating: "A", count: 600) + "\r\n").map(status) == ["500 5.5.6"])
    }

    /// AUTH continuation lines: base64, empty, "*", junk, and the same 12,288 limit.
    @Test func authContinuations() {
        var parser = CommandParser()
        /// next - one continuation from `text`.
        func next(_ text: String) -> (AuthContinuation?, Int) {
            var bytes = Array(text.utf8)
            return bytes.withUnsafeMutableBytes { parser.authContinuation(UnsafeRawBufferPointer($0)) }
        }
        #expect(next("dGVzdA==\r\nQUIT\r\n") == (.response("dGVzdA=="), 10))
        #expect(next("\r\n") == (.response(""), 2))
        #expect(next("*\r\n") == (.cancel, 3))
        #expect(next("dGVz") == (nil, 0))
        #expect(next("not base64!\r\n") == (.error(Reply(code: 501, enhanced: EnhancedStatus(5, 5, 2),
                                                          text: "5.5.2 Cannot Base64-decode client response")), 13))
        #expect(next("dGVzdA==\n") == (.error(Reply(code: 500, enhanced: EnhancedStatus(5, 5, 2),
                                                    text: "5.5.2 Bare <LF> received; end commands with <CR><LF>")), 9))
        let exact = String(repeating: "A", count: 12_286) + "\r\n"
        let (response, length) = next(exact)
        #expect(length == 12_288)
        guard case .response(let text)? = response else { Issue.record("expected a response: \(String(describing: response).prefix(80))"); return }
        #expect(text.utf8.count == 12_286)
        let (over, consumed) = next(String(repeating: "A", count: 12_287) + "\r\n")
        #expect(consumed == 12_289)
        guard case .error(let reply)? = over else { Issue.record("expected an error"); return }
        #expect(reply.code == 500 && reply.enhanced == EnhancedStatus(5, 5, 6))
    }

    /// A 1 MB line in 4 KiB reads: one 500 5.5.6, never more than a line buffered, then parsing goes on.
    @Test(arguments: ["NOOP ", "AUTH PLAIN ", "MAIL FROM:<", ""])
    func megabyteLine(prefix: String) {
        var feed = CommandFeed()
        let line = Array(prefix.utf8) + [UInt8](repeating: UInt8(ascii: "A"), count: 1 << 20) + Array("\r\n".utf8)
        let stream = Array("NOOP\r\n".utf8) + line + Array("MAIL FROM:<a@b.c>\r\nQUIT\r\n".utf8)
        var offset = 0
        while offset < stream.count {
            let end = min(stream.count, offset + 4096)
            feed.feed(stream[offset..<end])
            offset = end
        }
        #expect(feed.results.map(status) == ["command noop", "500 5.5.6", "command mail", "command quit"])
        #expect(feed.results[2] == .command(.mail(.mailbox(mailbox("a@b.c")), MailParameters())))
        #expect(feed.buffered.isEmpty)
        let limit = prefix.hasPrefix("AUTH") ? CommandParser.maximumAuthLineLength : CommandParser.maximumCommandLineLength
        #expect(feed.mostBuffered < limit + 4096)
        #expect(!feed.parser.isDiscardingLine)
    }

    /// Over-long lines are skipped across reads; the buffer never holds the line.
    @Test func overlongLineIsNeverBuffered() {
        var feed = CommandFeed()
        feed.feed(Array(repeating: UInt8(ascii: "x"), count: 4096))
        #expect(feed.results.map(status) == ["500 5.5.6"])
        #expect(feed.buffered.isEmpty && feed.parser.isDiscardingLine)
        for _ in 0..<256 { feed.feed(Array(repeating: UInt8(ascii: "x"), count: 4096)) }
        #expect(feed.results.count == 1 && feed.buffered.isEmpty)
        feed.feed(Array("x\r\nRSET\r\nNO".utf8))
        #expect(feed.results.map(status) == ["500 5.5.6", "command rset"])
        #expect(feed.buffered == Array("NO".utf8))
        #expect(feed.mostBuffered == 4096)
    }

    /// Pipelined commands in one read come out in order (RFC 2920).
    @Test func pipelinedCommands() {
        let text = "EHLO c.example\r\nMAIL FROM:<a@b.c> SIZE=10\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@h.i> NOTIFY=NEVER\r\nDATA\r\n"
        #expect(results(text) == [
            .command(.ehlo("c.example")),
            .command(.mail(.mailbox(mailbox("a@b.c")), MailParameters(size: 10))),
            .command(.rcpt(mailbox("d@e.f"), RecipientParameters())),
            .command(.rcpt(mailbox("g@h.i"), RecipientParameters(notify: .never))),
            .command(.data),
        ])
    }

    /// Any split of the input gives the same results, errors and over-long lines included.
    @Test(arguments: [1, 2, 3, 5, 7, 13, 64, 511, 512, 513, 4096])
    func splitAnywhere(step: Int) {
        let text = "EHLO c.example\r\nMAIL FROM:<a@b.c> BODY=8BITMIME\r\nFOO\r\nNOOP\nRCPT TO:<d@e.f>\r\n"
            + "NOOP " + String(repeating: "y", count: 2000) + "\r\nRCPT TO:<>\r\n"
            + "AUTH PLAIN " + String(repeating: "QUFB", count: 1000) + "\r\nVRFY x\u{0}\r\nBDAT 12 LAST\r\nQUIT\r\n"
        let whole = results(text)
        #expect(whole.count == 11)
        #expect(results(text, step: step) == whole)
    }

    /// RFC 5321 §2.3.8: commands end with CRLF. A bare LF ends the line (so
    /// the parser stays in step) but the line is refused, not obeyed.
    @Test func bareLineFeedIsRefused() {
        #expect(results("NOOP\nQUIT\r\n").map(status) == ["500 5.5.2", "command quit"])
        #expect(results("DATA\n.\nQUIT\r\n").map(status) == ["500 5.5.2", "500 5.5.2", "command quit"])
        #expect(results("\n").map(status) == ["500 5.5.2"])
        #expect(results("RSET\r\r\n").map(status) == ["500 5.5.2"])
    }

    /// NUL and invalid UTF-8 anywhere in a line, and valid UTF-8 where addresses allow it.
    @Test func nulAndUTF8() {
        let invalid: [[UInt8]] = [
            Array("VRFY ".utf8) + [0xFF] + Array("\r\n".utf8),
            Array("MAIL FROM:<".utf8) + [0xC3, 0x28] + Array("@b.c>\r\n".utf8),
            Array("RCPT TO:<a@b.c> ORCPT=rfc822;".utf8) + [0xE2, 0x82] + Array("\r\n".utf8),
            Array("HELO x".utf8) + [0xED, 0xA0, 0x80] + Array("\r\n".utf8),     /* a UTF-16 surrogate */
            Array("HELO x".utf8) + [0xC0, 0xAF] + Array("\r\n".utf8),           /* overlong "/" */
            Array("MAIL FROM:<a@b.c>".utf8) + [0] + Array(" SIZE=1\r\n".utf8),
            [0] + Array("\r\n".utf8),
        ]
        for bytes in invalid {
            #expect(results(bytes + Array("NOOP\r\n".utf8)).map(status) == ["500 5.5.2", "command noop"])
        }
        #expect(results("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n")
                == [.command(.mail(.mailbox(mailbox("jörg@bücher.example")), MailParameters(smtpUTF8: true)))])
    }

    /// Nothing is consumed from an incomplete line; empty input gives nothing.
    @Test func incompleteInput() {
        var parser = CommandParser()
        for text in ["", "M", "MAIL FROM:<a@b.c>", "MAIL FROM:<a@b.c>\r"] {
            var bytes = Array(text.utf8)
            let (result, consumed) = bytes.withUnsafeMutableBytes { parser.parse(UnsafeRawBufferPointer($0)) }
            #expect(result == nil && consumed == 0)
        }
    }
}
