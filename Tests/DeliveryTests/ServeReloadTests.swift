// ServeReloadTests.swift - `carrier serve` as a process: SIGHUP re-reads carrier.toml and the
// command line's flags still override it

#if canImport(Glibc)
import Glibc
#endif
import CarrierTesting
import Testing

/// waitUntil - poll `condition` every 20 ms for up to `seconds`; whether it came true.
private func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    for _ in 0..<Int(seconds * 50) {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// submit - one message to an SMTP listener on 127.0.0.1:`port` as a loopback client (no
/// AUTH): each command written once its reply to the one before came.
private func submit(port: UInt16, from: String, to: String) throws {
    let fd = try #require(connectLoopback(port: port), "connect to 127.0.0.1:\(port)")
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

    var received: [UInt8] = []
    /* A reply ends with a line whose code is followed by a space. */
    func reply() -> String {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let text = String(decoding: received, as: UTF8.self)
            let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
            if text.hasSuffix("\r\n"), let last = lines.dropLast().last, last.count >= 4, last.dropFirst(3).first == " " {
                received = []
                return text
            }
            let got = read(fd, &chunk, chunk.count)
            if got <= 0 { return text }
            received += chunk[..<got]
        }
    }
    func send(_ text: String) { _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }

    try #require(reply().hasPrefix("220"))
    for (command, code) in [("EHLO client.test\r\n", "250"), ("MAIL FROM:<\(from)>\r\n", "250"), ("RCPT TO:<\(to)>\r\n", "250"),
                            ("DATA\r\n", "354"), ("Subject: after SIGHUP\r\n\r\nSent after the reload.\r\n.\r\n", "250"), ("QUIT\r\n", "221")] {
        send(command)
        let answer = reply()
        try #require(answer.hasPrefix(code), "\(command.prefix(20)) -> \(answer)")
    }
}

@Suite("Serve reload", .serialized)
struct ServeReloadTests {
    /// carrier.toml routes every domain to a port nobody listens on, `--route` to the sink.
    /// After a SIGHUP, a message sent through the listener still goes by the flag.
    @Test func sighupKeepsTheCommandLineRoute() throws {
        let carrier = try #require(carrierPath(), "the carrier executable is built next to the tests")
        let folder = TemporaryFolder("reload")
        defer { folder.remove() }
        let sink = try startRecordingSink(record: folder.file("record.jsonl"))
        defer { sink.stop() }
        let nowhere = try freeLoopbackPort()
        let smtpPort = try freeLoopbackPort()
        let config = folder.file("carrier.toml")
        writeFile(config, Array("""
            [spool]
            directory = "\(folder.file("Queue"))"
            shards = 1
            [delivery]
            dns_servers = ["none"]
            [[route]]
            domain = "*"
            hosts = ["127.0.0.1:\(nowhere)"]

            """.utf8))
        let output = folder.file("serve.out")
        let serve = try ChildProcess(carrier, ["serve", "--config", config, "--route", "*=127.0.0.1:\(sink.addresses[0].port)",
                                               "--smtp-listen", "127.0.0.1:\(smtpPort)", "--quiet"], outputPath: output)
        defer { serve.terminate() }
        func serveOutput() -> String { String(decoding: readFile(output) ?? [], as: UTF8.self) }
        /* The listener starts after the signals are blocked: a SIGHUP from now on is taken. */
        try #require(waitForListener(port: smtpPort), "serve listens: \(serveOutput())")

        kill(serve.pid, SIGHUP)
        try #require(waitUntil(seconds: 5) { serveOutput().contains("SIGHUP: routes and shaping reloaded") }, "reloaded: \(serveOutput())")
        try submit(port: smtpPort, from: "news@origin.test", to: "someone@dest.test")
        #expect(waitUntil(seconds: 5) { sink.statistics.messagesAccepted == 1 },
                "the message went to the sink --route names, not to the file's route: \(serveOutput())")
    }
}
