// StartTLSTests.swift - plaintext injected before a STARTTLS upgrade never surfaces after it
//
// CVE-2011-0411: a man in the middle appends commands to the plaintext "go
// ahead"; a vulnerable peer buffers them and runs them as if they came over
// TLS. Both directions are tested: bytes after the server's go-ahead (seen by
// the client) and bytes pipelined after the client's STARTTLS (seen by the server).

import EventCore
import CarrierTesting
import Testing

private let authority = try! TLSCertificate.makeAuthority(commonName: "StartTLS Test CA")
private let serverCertificate = try! authority.issue(commonName: "localhost", dnsNames: ["localhost"])

/// Collects plaintext until EOF or close, then reports it once.
private final class Collector: ByteStreamHandler {
    var bytes: [UInt8] = []
    let report: (String) -> Void
    var reported = false
    init(report: @escaping (String) -> Void) { self.report = report }
    func streamRead(_ stream: any ByteStream, _ chunk: UnsafeRawBufferPointer) -> Int {
        bytes.append(contentsOf: chunk)
        if bytes.last == UInt8(ascii: "\n") { finish(stream) }
        return chunk.count
    }
    func streamReadEOF(_ stream: any ByteStream) { finish(stream) }
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) { finish(stream) }
    private func finish(_ stream: any ByteStream) {
        guard !reported else { return }
        reported = true
        report(String(decoding: bytes, as: UTF8.self))
    }
}

/// Waits for one CRLF-terminated line in plaintext, then calls `upgrade` from inside the read.
private final class LineThenUpgrade: ByteStreamHandler {
    var seen: [UInt8] = []
    let upgrade: (any ByteStream, String) -> Void
    init(upgrade: @escaping (any ByteStream, String) -> Void) { self.upgrade = upgrade }
    func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let end = bytes.firstIndex(of: UInt8(ascii: "\n")) else { return 0 }
        let line = String(decoding: bytes[..<end], as: UTF8.self)
        /* The injected bytes follow in the same read; the upgrade must drop them. */
        upgrade(stream, line)
        return end + 1
    }
    func streamReadEOF(_ stream: any ByteStream) {}
    func streamClosed(_ stream: any ByteStream, error: (any Error)?) {}
}

@Suite("STARTTLS")
struct StartTLSTests {
    /// The server sends "GO" plus injected plaintext in one write; the client upgrades after
    /// "GO" and must read only what the server sent over TLS.
    @Test func clientDiscardsPlaintextAfterTheGoAhead() throws {
        let thread = try LoopThread.start(name: "starttls-c")
        defer { thread.stopAndJoin() }
        let received = TestWaiter<String>()
        thread.execute { loop in
            let serverContext = try! TLSContext.server(TLSServerConfiguration(identity: .pem(serverCertificate)))
            var client = TLSClientConfiguration()
            client.trustRoots = .pem(authority.certificatePEM)
            let clientContext = try! TLSContext.client(client)
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { connection in
                connection.write(ByteBuffer(string: "220 GO\r\nINJECTED-PLAINTEXT\r\n"))
                TLSConnection.server(over: connection, context: serverContext) { result in
                    if case .success(let tls) = result { tls.write(ByteBuffer(string: "250 over-tls\r\n")) }
                }
            }
            TCPConnection.connect(loop: loop, to: listener.localAddress) { result in
                let tcp = try! result.get()
                tcp.handler = LineThenUpgrade { stream, line in
                    #expect(line == "220 GO\r")
                    TLSConnection.client(over: stream, context: clientContext, serverName: "localhost") { outcome in
                        switch outcome {
                        case .success(let tls):
                            tls.handler = Collector { text in
                                received.fulfill(text)
                                tls.close()
                                listener.close()
                            }
                            tls.startReading()
                        case .failure(let error):
                            received.fulfill("handshake failed: \(error)")
                        }
                    }
                }
                tcp.startReading()
            }
        }
        #expect(received.wait(seconds: 10) == "250 over-tls\r\n")
    }

    /// The client pipelines injected plaintext after STARTTLS; the server upgrades after the
    /// command and must read only what the client sent over TLS.
    @Test func serverDiscardsPlaintextPipelinedAfterStartTLS() throws {
        let thread = try LoopThread.start(name: "starttls-s")
        defer { thread.stopAndJoin() }
        let received = TestWaiter<String>()
        thread.execute { loop in
            let serverContext = try! TLSContext.server(TLSServerConfiguration(identity: .pem(serverCertificate)))
            var client = TLSClientConfiguration()
            client.trustRoots = .pem(authority.certificatePEM)
            let clientContext = try! TLSContext.client(client)
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { connection in
                connection.handler = LineThenUpgrade { stream, line in
                    #expect(line == "STARTTLS\r")
                    stream.write(ByteBuffer(string: "220 2.0.0 Ready\r\n"))
                    TLSConnection.server(over: stream, context: serverContext) { result in
                        guard case .success(let tls) = result else { return received.fulfill("server handshake failed") }
                        tls.handler = Collector { text in
                            received.fulfill(text)
                            tls.close()
                        }
                        tls.startReading()
                    }
                }
                connection.startReading()
            }
            TCPConnection.connect(loop: loop, to: listener.localAddress) { result in
                let tcp = try! result.get()
                tcp.write(ByteBuffer(string: "STARTTLS\r\nRCPT TO:<injected@evil.test>\r\n"))
                tcp.handler = LineThenUpgrade { stream, _ in
                    TLSConnection.client(over: stream, context: clientContext, serverName: "localhost") { outcome in
                        if case .success(let tls) = outcome {
                            tls.write(ByteBuffer(string: "EHLO after-tls\r\n"))
                        }
                        listener.close()
                    }
                }
                tcp.startReading()
            }
        }
        #expect(received.wait(seconds: 10) == "EHLO after-tls\r\n")
    }
}
