// BlastAgainstPeersTests.swift - carrier blast against real peers, and its report in a real browser
//
// Peers installed by `make test`: Postfix's smtp-sink (a fast C receiver),
// Python's aiosmtpd with STARTTLS and AUTH (a different implementation of
// the same RFCs), and headless Chromium, which renders the HTML report. A
// test whose peer is missing is skipped with the reason in its name.

import Blast
import CarrierTesting
import EventCore
import SMTP
import Sink
import Testing

#if canImport(Glibc)
import Glibc
#endif

private let smtpSink = executablePath(["/usr/sbin/smtp-sink"])
private let chromium = executablePath(["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"])
private let python = which("python3")

/// True when python3 can import aiosmtpd.
private let aiosmtpdAvailable: Bool = {
    guard let python, let process = try? ChildProcess(python, ["-c", "import aiosmtpd"], environment: childEnvironment) else {
        return false
    }
    return process.wait(seconds: 20) == 0
}()

/// The environment for children: this process's PATH, so pyenv's python is the one found.
private let childEnvironment = ["PATH=\(getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin")", "HOME=/tmp"]

/// A scratch directory for one test.
private func scratchDirectory(_ name: String) -> String {
    let path = "/tmp/carrier-peers-\(getpid())-\(name)"
    mkdir(path, 0o755)
    return path
}

@Suite("Blast against real peers")
struct BlastAgainstPeersTests {
    @Test("Postfix smtp-sink receives every message", .enabled(if: smtpSink != nil, "Postfix smtp-sink is not installed"))
    func postfixSmtpSink() throws {
        let port = try freeLoopbackPort()
        let sink = try ChildProcess(smtpSink!, ["-u", "nobody", "127.0.0.1:\(port)", "100"])
        defer { sink.terminate() }
        try #require(waitForListener(port: port), "smtp-sink did not listen")
        var blast = BlastConfiguration(target: .address(SocketAddress(ip: IPAddress("127.0.0.1")!, port: port)))
        blast.messages = 300
        blast.connections = 5
        blast.threads = 1
        let report = try BlastRunner.run(blast)
        #expect(report.messagesSent == 300)
        #expect(report.errors == 0)
        #expect(report.replyCodes[250] == 300)
    }

    @Test("aiosmtpd with STARTTLS and AUTH counts what blast sent",
          .enabled(if: aiosmtpdAvailable, "python3 with aiosmtpd is not installed"))
    func aiosmtpdWithStartTLSAndAuth() throws {
        let directory = scratchDirectory("aiosmtpd")
        let identity = try TLSCertificate.makeSelfSigned(commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        try identity.write(certificateTo: "\(directory)/cert.pem", privateKeyTo: "\(directory)/key.pem")
        let port = try freeLoopbackPort()
        let script = String(#filePath[..<#filePath.lastIndex(of: "/")!]) + "/Peers/aiosmtpd_server.py"
        let server = try ChildProcess(python!, [script, String(port), "\(directory)/cert.pem", "\(directory)/key.pem",
                                                 "\(directory)/count"], outputPath: "\(directory)/server.log",
                                      environment: childEnvironment)
        try #require(waitForListener(port: port, seconds: 20), "aiosmtpd did not listen")
        var total = 0
        for mechanism in [SASLMechanism.plain, .login] {
            var blast = BlastConfiguration(target: .address(SocketAddress(ip: IPAddress("127.0.0.1")!, port: port)))
            blast.messages = 40
            blast.connections = 2
            blast.threads = 1
            blast.security = .startTLS
            blast.verifyPeer = false
            blast.authentication = BlastAuthentication(mechanism: mechanism, credentials: .password("alice", "s3cret"))
            let report = try BlastRunner.run(blast)
            #expect(report.messagesSent == 40, "\(mechanism)")
            #expect(report.errors == 0, "\(mechanism): \(report.errorTypes)")
            total += report.messagesSent
        }
        server.terminate()
        let counted = readFile("\(directory)/count").flatMap { Int($0) }
        #expect(counted == total)
    }

    @Test("The HTML report renders in headless Chromium with its three charts",
          .enabled(if: chromium != nil, "chromium is not installed"))
    func reportRendersInChromium() throws {
        var sinkSettings = SinkConfiguration()
        sinkSettings.listen = [SocketAddress("127.0.0.1:0")!]
        sinkSettings.threads = 1
        let sink = try SinkServer.start(sinkSettings)
        defer { sink.stop() }
        var blast = BlastConfiguration(target: .address(sink.addresses[0]))
        blast.messages = 500
        blast.connections = 2
        blast.threads = 1
        let report = try BlastRunner.run(blast)
        let directory = scratchDirectory("chromium")
        try writeText("\(directory)/report.html", report.html)

        /* The DOM after rendering holds the three charts, each an SVG with drawn content. */
        let dom = try ChildProcess(chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                                               "file://\(directory)/report.html"], outputPath: "\(directory)/dom.html",
                                   environment: childEnvironment)
        #expect(dom.wait(seconds: 60) == 0)
        let rendered = readFile("\(directory)/dom.html") ?? ""
        for id in ["chart-throughput", "chart-latency", "chart-replies"] {
            #expect(rendered.contains("id=\"\(id)\""), "chart \(id) missing from the rendered page")
        }
        #expect(rendered.split(separator: "<svg", omittingEmptySubsequences: false).count - 1 >= 3)

        /* And it paints: a screenshot is a real PNG of some size. */
        let shot = try ChildProcess(chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                                                "--screenshot=\(directory)/report.png", "file://\(directory)/report.html"],
                                    outputPath: "\(directory)/shot.log", environment: childEnvironment)
        #expect(shot.wait(seconds: 60) == 0)
        let png = readBytes("\(directory)/report.png") ?? []
        #expect(png.count > 10_000)
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
    }
}

/// readFile - a whole file as text (invalid UTF-8 replaced), nil when missing.
private func readFile(_ path: String) -> String? {
    readBytes(path).map { String(decoding: $0, as: UTF8.self) }
}

/// readBytes - a whole file, nil when missing.
private func readBytes(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return bytes
}

/// writeText - replace a file with `text`.
private func writeText(_ path: String, _ text: String) throws {
    guard let file = fopen(path, "wb") else { throw PeerTestError(description: "cannot write \(path)") }
    defer { fclose(file) }
    _ = Array(text.utf8).withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
}

/// A test set-up failure with its reason.
private struct PeerTestError: Error, CustomStringConvertible {
    let description: String
}
