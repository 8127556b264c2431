// InjectionTestSupport.swift - a listener over a real spool, real client programs, reading back what was stored

import CarrierTesting
import EventCore
import Foundation
import Injection
import SMTPStreams
import Spool
import Testing

let peersFolder = String(#filePath[..<#filePath.lastIndex(of: "/")!]) + "/Peers"
let python = which("python3")
let childEnvironment = ["PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")", "HOME=/tmp"]
let testUser = "alice"
let testPassword = "correct horse battery staple"

/// A listener on 127.0.0.1 over a fresh fsync spool, torn down by `stop()`.
final class ListenerFixture {
    let folder: TemporaryFolder
    let spool: Spool
    let server: SubmissionServer
    var port: UInt16 { server.addresses[0].port }

    init(_ label: String, tls: Bool = false, users: Bool = true, _ configure: (inout SubmissionConfiguration) -> Void = { _ in }) throws {
        folder = TemporaryFolder(label)
        spool = try Spool(SpoolConfiguration(directory: folder.path + "/Queue", shards: 2))
        var configuration = SubmissionConfiguration()
        configuration.listen = [SocketAddress("127.0.0.1:0")!]
        configuration.hostname = "carrier.test"
        if users {
            let line = SubmissionUsers.line(user: testUser, password: testPassword,
                                            defaults: SubmissionUserDefaults(priority: .bulk, campaign: "alice-default"),
                                            crypto: OpenSSLCrypto())
            configuration.users = try SubmissionUsers(parsing: line + "\n", file: "users")
        }
        if tls {
            let certificate = try TLSCertificate.makeSelfSigned(commonName: "carrier.test", ipAddresses: ["127.0.0.1"])
            try certificate.write(certificateTo: folder.file("cert.pem"), privateKeyTo: folder.file("key.pem"))
            configuration.tlsCertificate = folder.file("cert.pem")
            configuration.tlsKey = folder.file("key.pem")
        }
        configure(&configuration)
        server = try SubmissionServer.start(configuration, spool: spool)
    }

    /// stored - every pending message with its body and recipients, oldest first.
    func stored() throws -> [(message: StoredMessage, recipients: [String])] {
        var byMessage: [MessageID: [String]] = [:]
        var shardOf: [MessageID: SpoolShard] = [:]
        for shard in spool.shards {
            for (pending, recipient) in try shard.pendingWithAddresses({ _ in true }) {
                byMessage[pending.key.message, default: []].append(recipient.address)
                shardOf[pending.key.message] = shard
            }
        }
        return try byMessage.keys.sorted().map { (try shardOf[$0]!.message($0), byMessage[$0]!.sorted()) }
    }

    func stop() {
        server.stop()
        spool.close()
        folder.remove()
    }
}

/// runPeer - run smtp_clients.py SCENARIO against `port`; its JSON answer.
func runPeer(_ scenario: String, port: UInt16, _ arguments: [String] = [], seconds: Double = 60) throws -> [String: Any] {
    let python = try #require(python, "python3 is on PATH")
    let output = TemporaryFolder("peer")
    defer { output.remove() }
    let process = try ChildProcess(python, [peersFolder + "/smtp_clients.py", scenario, "127.0.0.1", String(port)] + arguments,
                                   outputPath: output.file("out"), environment: childEnvironment)
    let code = process.wait(seconds: seconds)
    let text = (try? String(contentsOfFile: output.file("out"), encoding: .utf8)) ?? ""
    try #require(code == 0, "smtp_clients.py \(scenario) exited \(String(describing: code)): \(text)")
    let line = text.split(separator: "\n").last.map(String.init) ?? ""
    return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "JSON from the peer: \(text)")
}

/// text - a stored body as text.
func text(_ message: StoredMessage) -> String { String(decoding: message.body, as: UTF8.self) }
