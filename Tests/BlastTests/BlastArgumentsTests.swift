// BlastArgumentsTests.swift - option parsing, envelope naming, message building, per-thread shares

@testable import Blast
import EventCore
import SMTP
import Testing

@Suite("Blast arguments and messages")
struct BlastArgumentsTests {
    @Test(arguments: [("60s", 60_000_000_000), ("2m", 120_000_000_000), ("1h", 3_600_000_000_000),
                      ("500ms", 500_000_000), ("1.5", 1_500_000_000), (" 10s ", 10_000_000_000)] as [(String, UInt64)])
    func parsesDurations(text: String, nanoseconds: UInt64) throws {
        #expect(try BlastArguments.duration(text) == nanoseconds)
    }

    @Test(arguments: ["", "s", "-1s", "10x", "0s", "1d"])
    func refusesBadDurations(text: String) {
        #expect(throws: BlastError.self) { try BlastArguments.duration(text) }
    }

    @Test func parsesRates() throws {
        #expect(try BlastArguments.rate("500/s") == 500)
        #expect(try BlastArguments.rate("500") == 500)
        #expect(try BlastArguments.rate("3000/m") == 50)
        #expect(try BlastArguments.rate("7200/h") == 2)
        for bad in ["", "/s", "0/s", "10/d", "a/s", "5/s/s"] {
            #expect(throws: BlastError.self, "\(bad)") { try BlastArguments.rate(bad) }
        }
    }

    @Test func parsesTargets() throws {
        #expect(try BlastArguments.target("127.0.0.1:2525", defaultPort: 25) == .address(SocketAddress("127.0.0.1:2525")!))
        #expect(try BlastArguments.target("[::1]:2525", defaultPort: 25) == .address(SocketAddress("[::1]:2525")!))
        #expect(try BlastArguments.target("::1", defaultPort: 26) == .address(SocketAddress("[::1]:26")!))
        #expect(try BlastArguments.target("mx.example.test:587", defaultPort: 25) == .host("mx.example.test", port: 587))
        #expect(try BlastArguments.target("mx.example.test", defaultPort: 25) == .host("mx.example.test", port: 25))
        for bad in ["", "mx:0", "mx:99999", "bad host:25", "a/b:25"] {
            #expect(throws: BlastError.self, "\(bad)") { try BlastArguments.target(bad, defaultPort: 25) }
        }
    }

    @Test func parsesAuthentication() throws {
        let plain = try BlastArguments.authentication("plain:alice:pa:ss")
        #expect(plain == BlastAuthentication(mechanism: .plain, credentials: .password("alice", "pa:ss")))
        let scram = try BlastArguments.authentication("SCRAM-SHA-256:bob:x")
        #expect(scram.mechanism == .scramSHA256)
        let oauth = try BlastArguments.authentication("XOAUTH2:carol:token")
        #expect(oauth.credentials == SMTPCredentials(username: "carol", secret: .oauth2Token("token")))
        for bad in ["PLAIN:alice", "NTLM:a:b", "PLAIN::x"] {
            #expect(throws: BlastError.self, "\(bad)") { try BlastArguments.authentication(bad) }
        }
    }

    /// Message n goes to user<n*R+j>@domain and carries its number in four headers.
    @Test func generatedMessagesCarryTheirNumber() throws {
        var configuration = BlastConfiguration(target: .address(SocketAddress("127.0.0.1:25")!))
        configuration.recipientsPerMessage = 3
        configuration.recipientDomain = "sink.test"
        configuration.content = .generated(size: 1000)
        let factory = try BlastMessageFactory(configuration, runID: "run1")
        let message = factory.message(7, date: ByteBuffer(string: "Tue, 05 May 2026 10:11:12 +0000"))
        #expect(message.recipients.map(\.description) == ["user21@sink.test", "user22@sink.test", "user23@sink.test"])
        #expect(message.sender.description == "<blast@example.test>")
        let text = message.payload.dotStuffed.description
        #expect(text.hasPrefix("From: <blast@example.test>\r\nTo: undisclosed-recipients:;\r\nSubject: Carrier blast message 7\r\n"))
        #expect(text.contains("\r\nDate: Tue, 05 May 2026 10:11:12 +0000\r\n"))
        #expect(text.contains("\r\nMessage-ID: <blast-7.run1@blast.example.test>\r\nX-Carrier-Id: blast-7\r\n"))
        #expect(text.hasSuffix("\r\n.\r\n"))
        #expect(!text.contains("\r\n..") && !text.contains("\n\n"))
        /* The plain form is the stuffed one without the terminator; about the asked size. */
        #expect(message.payload.normalized.description + ".\r\n" == text)
        #expect(abs(message.payload.size - 1000) < 20)
        for line in text.split(separator: "\r\n") { #expect(line.utf8.count <= 78) }

        configuration.recipientsPerMessage = 1
        let single = try BlastMessageFactory(configuration, runID: "run1").message(12, date: ByteBuffer(string: "d"))
        #expect(single.payload.dotStuffed.description.contains("\r\nTo: user12@sink.test\r\n"))
        #expect(single.recipients.map(\.description) == ["user12@sink.test"])
    }

    @Test(arguments: [1, 10, 100, 5000, 50_000])
    func generatedSizesAreClose(size: Int) throws {
        var configuration = BlastConfiguration(target: .address(SocketAddress("127.0.0.1:25")!))
        configuration.content = .generated(size: size)
        let payload = try BlastMessageFactory(configuration, runID: "r").payload(123_456, date: ByteBuffer(string: "Tue, 05 May 2026 10:11:12 +0000"))
        #expect(payload.size >= size - 10)
        #expect(payload.size <= max(size, 400) + 10)
    }

    /// Templates: {{n}} replaced, line endings normalised, dot lines stuffed only in the DATA form.
    @Test func templatesAreEncodedOnce() throws {
        var configuration = BlastConfiguration(target: .address(SocketAddress("127.0.0.1:25")!))
        configuration.content = .template(Array("Subject: {{n}}\n\n.x{{n}}\nend {{n}}{{n}}".utf8))
        let payload = try BlastMessageFactory(configuration, runID: "r").payload(42, date: ByteBuffer())
        #expect(payload.normalized.description == "Subject: 42\r\n\r\n.x42\r\nend 4242\r\n")
        #expect(payload.dotStuffed.description == "Subject: 42\r\n\r\n..x42\r\nend 4242\r\n.\r\n")

        configuration.content = .template(Array(("Subject: x\n\n" + String(repeating: "a", count: 1200) + "\n").utf8))
        #expect(throws: BlastError.self) { try BlastMessageFactory(configuration, runID: "r") }
    }

    /// Shares: worker k of T sends numbers k, k+T, ...; together exactly 0 ..< N.
    @Test(arguments: [(10, 3), (7, 7), (100, 4), (5, 2)] as [(Int, Int)])
    func sharesCoverEveryMessageOnce(messages: Int, threads: Int) throws {
        var configuration = BlastConfiguration(target: .address(SocketAddress("127.0.0.1:25")!))
        configuration.messages = messages
        configuration.connections = 11
        let plan = BlastPlan(configuration, destinations: [], tls: nil,
                             factory: try BlastMessageFactory(configuration, runID: "r"), threads: threads)
        var numbers: [Int] = []
        for k in 0..<threads {
            let budget = try #require(plan.budget(worker: k))
            numbers += (0..<budget).map { plan.messageNumber(worker: k, local: $0) }
        }
        #expect(numbers.sorted() == Array(0..<messages))
        #expect((0..<threads).map { plan.slots(worker: $0) }.reduce(0, +) == 11)
    }

    /// The options reach the session: TLS policy, pipelining, chunking, one AUTH mechanism, timeouts.
    @Test func planConfiguresTheSession() throws {
        var configuration = BlastConfiguration(target: .address(SocketAddress("127.0.0.1:25")!))
        configuration.messages = 1
        configuration.security = .startTLS
        configuration.pipelining = false
        configuration.chunking = true
        configuration.timeoutMilliseconds = 1234
        configuration.authentication = BlastAuthentication(mechanism: .cramMD5, credentials: .password("a", "b"))
        let tls = try TLSContext.client()
        var plan = BlastPlan(configuration, destinations: [], tls: tls,
                             factory: try BlastMessageFactory(configuration, runID: "r"), threads: 1)
        #expect(plan.connection.session.tls == .required)
        #expect(plan.connection.tls === tls)
        #expect(!plan.connection.implicitTLS)
        #expect(!plan.connection.session.pipelining)
        #expect(plan.connection.session.chunking)
        #expect(plan.connection.session.mechanisms == [.cramMD5])
        #expect(!plan.connection.session.allowPlaintextAuthentication)
        #expect(plan.connection.session.timeouts.command == 1234)
        #expect(plan.connection.connectTimeoutMilliseconds == 1234)
        #expect(plan.connection.tlsHandshakeTimeoutMilliseconds == 1234)
        #expect(configuration.window(pipelining: true) == 1)

        configuration.security = .plaintext
        configuration.pipelining = true
        configuration.chunking = false
        plan = BlastPlan(configuration, destinations: [], tls: tls,
                         factory: try BlastMessageFactory(configuration, runID: "r"), threads: 1)
        #expect(plan.connection.session.tls == .never)
        #expect(plan.connection.tls == nil)
        #expect(!plan.connection.session.chunking)
        #expect(plan.connection.session.allowPlaintextAuthentication)
        #expect(configuration.window(pipelining: true) == 4)
        #expect(configuration.window(pipelining: false) == 1)
    }

    @Test func appendsDecimals() {
        var buffer = ByteBuffer()
        for value in [0, 7, 10, 123_456_789, Int.max] {
            buffer.clear()
            buffer.appendDecimal(value)
            #expect(buffer.description == String(value))
        }
    }
}
