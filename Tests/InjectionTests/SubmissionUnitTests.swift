// SubmissionUnitTests.swift - the users file and the intake, without sockets

import Bytes
import Delivery
import EventCore
import Injection
import SMTP
import SMTPStreams
import Spool
import Testing

@Suite struct SubmissionUsersTests {
    @Test func aHashedLineVerifiesItsPasswordOnlyAndKeepsTheDefaults() throws {
        let line = SubmissionUsers.line(user: "bob", password: "s3cret pass", defaults: SubmissionUserDefaults(priority: .bulk, campaign: "news", tenant: "acme"),
                                        crypto: OpenSSLCrypto())
        #expect(!line.contains("s3cret"), "the password is never written")
        let users = try SubmissionUsers(parsing: "# users\n\n" + line + "\n", file: "users")
        #expect(users.count == 1)
        #expect(users.verify(username: "bob", password: "s3cret pass"))
        #expect(!users.verify(username: "bob", password: "s3cret pasS"))
        #expect(!users.verify(username: "eve", password: "s3cret pass"))
        #expect(users.scramSHA256(username: "bob")?.iterations == 4096)
        #expect(users.cramMD5Secret(username: "bob") == nil, "no plain passwords, so no CRAM-MD5")
        #expect(users.defaults["bob"] == SubmissionUserDefaults(priority: .bulk, campaign: "news", tenant: "acme"))
    }

    @Test func aPasswordThatVerifiedOnceIsRecognisedAgainAndAWrongOneIsNot() throws {
        let users = try SubmissionUsers(parsing: SubmissionUsers.line(user: "carol", password: "pw-1", crypto: OpenSSLCrypto()), file: "u")
        for _ in 0..<3 { #expect(users.verify(username: "carol", password: "pw-1")) }
        #expect(!users.verify(username: "carol", password: "pw-2"), "a remembered password does not let another one in")
        #expect(users.verify(username: "carol", password: "pw-1"))
    }

    @Test func malformedLinesNameTheLine() {
        let good = SubmissionUsers.line(user: "bob", password: "pw", crypto: OpenSSLCrypto())
        let cases: [(String, Int, String)] = [
            ("bob\n", 1, "expected USER"),
            ("bob plaintext-password\n", 1, "is not SCRAM-SHA-256"),
            ("# c\n" + good + "\n" + good + "\n", 3, "appears twice"),
            (good.replacingOccurrences(of: "$4096:", with: "$1000:") + "\n", 1, "from 4096 to 100000"),
            (good.replacingOccurrences(of: "$4096:", with: "$200000:") + "\n", 1, "from 4096 to 100000"),
            (good + " class=urgent\n", 1, "class must be"),
            (good + " colour=red\n", 1, "unknown setting"),
        ]
        for (text, line, message) in cases {
            #expect(throws: SubmissionUsersError.self) { try SubmissionUsers(parsing: text, file: "u") }
            do {
                _ = try SubmissionUsers(parsing: text, file: "u")
            } catch {
                #expect(error.line == line, "\(text)")
                #expect(error.message.contains(message), "\(error)")
            }
        }
    }
}

@Suite struct SubmissionIntakeTests {
    func received(_ body: String, recipients: [String] = ["rcpt@dest.test"]) throws -> ReceivedMessage {
        ReceivedMessage(heloName: "client.test", sender: try ReversePath(parsing: "from@client.test"), mailParameters: MailParameters(),
                        recipients: try recipients.map { (try MailAddress(parsing: $0), RecipientParameters()) },
                        body: ByteBuffer(string: body), isTLS: true, authenticatedUser: "alice")
    }

    let context = SubmissionContext(hostname: "mx.carrier.test", client: "192.0.2.1", heloName: "client.test",
                                    isTLS: true, authenticatedUser: "alice", date: "Mon, 30 Nov 2026 06:00:00 +0000")
    let id = MessageID(high: 0x123, low: 0x456)

    @Test func steeringHeadersAreReadAndRemovedFoldedOrNot() throws {
        let body = "From: a@client.test\r\nx-carrier-class:  bulk \r\nSubject: hi\r\nX-Carrier-Campaign: spring\r\n sale\r\n\r\nX-Carrier-Class: transactional\r\n"
        let message = try SubmissionIntake.prepare(try received(body), id: id, context: context,
                                                   defaults: SubmissionUserDefaults(priority: .transactional, campaign: "default"),
                                                   defaultPriority: .transactional)
        #expect(message.metadata.priority == .bulk)
        #expect(message.metadata.campaign == "spring sale", "folded value unfolded")
        let text = String(decoding: message.body, as: UTF8.self)
        let expectedTrace = "Received: from client.test ([192.0.2.1])\r\n\tby mx.carrier.test (Carrier) with ESMTPSA id \(id)\r\n\tfor <rcpt@dest.test>; Mon, 30 Nov 2026 06:00:00 +0000\r\n"
        #expect(text == expectedTrace + "From: a@client.test\r\nSubject: hi\r\n\r\nX-Carrier-Class: transactional\r\n",
                "header fields removed; the same text in the body stays")
        #expect(message.sender == "from@client.test")
        #expect(message.recipients.map(\.address) == ["rcpt@dest.test"])
        #expect(MessageHints.isLiteral(message.metadata.hints))
    }

    @Test func aHELOClientIsWrittenAsSMTP() throws {
        let base = try received("Subject: x\r\n\r\nbody\r\n")
        let helo = ReceivedMessage(heloName: "old.client", sender: base.sender, mailParameters: base.mailParameters,
                                   recipients: base.recipients, body: base.body, isTLS: true, authenticatedUser: "alice",
                                   extendedHello: false)
        let message = try SubmissionIntake.prepare(helo, id: id, context: context, defaults: nil, defaultPriority: .bulk)
        #expect(String(decoding: message.body, as: UTF8.self).contains("(Carrier) with SMTP id "))
    }

    @Test func defaultsApplyWithoutHeadersAndABadClassIsRefused() throws {
        let plain = try SubmissionIntake.prepare(try received("Subject: x\r\n\r\nbody\r\n", recipients: ["a@d.test", "b@d.test"]), id: id,
                                                 context: context, defaults: SubmissionUserDefaults(priority: .bulk, campaign: "c", tenant: "t"),
                                                 defaultPriority: .transactional)
        #expect(plain.metadata.priority == .bulk && plain.metadata.campaign == "c" && plain.metadata.tenant == "t")
        #expect(!String(decoding: plain.body, as: UTF8.self).contains("\tfor <"), "no `for` with several recipients")
        #expect(throws: IntakeRefusal.self) {
            try SubmissionIntake.prepare(try received("X-Carrier-Class: urgent\r\n\r\nbody\r\n"), id: id, context: context,
                                         defaults: nil, defaultPriority: .transactional)
        }
    }

    /// X-Carrier-Expires: seconds from the receipt, removed like the other steering fields;
    /// anything but a positive whole number is refused (550 5.6.0, like a bad class).
    @Test func anExpiresHeaderSetsTheExpiryAndABadOneIsRefused() throws {
        let message = try SubmissionIntake.prepare(try received("Subject: code\r\nX-Carrier-Expires: \t600 \r\n\r\n123456\r\n"), id: id,
                                                   context: context, defaults: nil, defaultPriority: .transactional, now: 1_000_000)
        #expect(message.metadata.expires == 1_600_000)
        #expect(!String(decoding: message.body, as: UTF8.self).lowercased().contains("x-carrier-expires"), "removed before storing")
        let plain = try SubmissionIntake.prepare(try received("Subject: x\r\n\r\nbody\r\n"), id: id, context: context,
                                                 defaults: nil, defaultPriority: .transactional, now: 1_000_000)
        #expect(plain.metadata.expires == 0)
        for bad in ["0", "-60", "10m", "1.5", "", "+600", "99999999999999999999", "9223372036854775"] {
            do {
                _ = try SubmissionIntake.prepare(try received("X-Carrier-Expires: \(bad)\r\n\r\nbody\r\n"), id: id, context: context,
                                                 defaults: nil, defaultPriority: .transactional, now: 1_000_000)
                Issue.record("accepted X-Carrier-Expires: \(bad)")
            } catch {
                #expect(error is IntakeRefusal && "\(error)".contains("X-Carrier-Expires must be a positive whole number of seconds"), "\(error)")
            }
        }
    }

    @Test func obsoleteSpaceBeforeTheColonIsStillAField() throws {
        let message = try SubmissionIntake.prepare(try received("X-Carrier-Class \t: bulk\r\nX-Carrier-Classic: keep\r\n\r\nbody\r\n"), id: id,
                                                   context: context, defaults: nil, defaultPriority: .transactional)
        #expect(message.metadata.priority == .bulk)
        let text = String(decoding: message.body, as: UTF8.self)
        #expect(!text.contains("X-Carrier-Class ") && text.contains("X-Carrier-Classic: keep\r\n"), "only the exact name is removed")
    }

    @Test func mappedIPv4ClientsAreWrittenAsIPv4() {
        #expect(SubmissionContext.clientText(IPAddress("::ffff:192.0.2.9")) == "192.0.2.9")
        #expect(SubmissionContext.clientText(IPAddress("2001:db8::1")) == "IPv6:2001:db8::1")
        #expect(SubmissionContext.clientText(nil) == "unknown")
    }

    @Test func aMessageWithoutHeaderSectionKeepsItsBody() throws {
        let message = try SubmissionIntake.prepare(try received("just text, no blank line"), id: id, context: context, defaults: nil,
                                                   defaultPriority: .bulk)
        #expect(String(decoding: message.body, as: UTF8.self).hasSuffix("+0000\r\njust text, no blank line"))
        #expect(message.metadata.priority == .bulk)
    }
}
