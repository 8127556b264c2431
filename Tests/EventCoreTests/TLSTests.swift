// TLSTests.swift - TLS echo, resumption and every typed handshake failure

import EventCore
import CarrierTesting
import Testing

/// A throwaway PKI made once per test run.
private enum PKI {
    static let authority = try! TLSCertificate.makeAuthority(commonName: "Carrier Test CA")
    static let localhost = try! authority.issue(commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"])
    static let expired = try! authority.issue(commonName: "localhost", dnsNames: ["localhost"], notBefore: -7200, notAfter: -3600)
    static let otherName = try! authority.issue(commonName: "other.test", dnsNames: ["other.test"])
    static let selfSigned = try! TLSCertificate.makeSelfSigned(commonName: "localhost", dnsNames: ["localhost"])

    static func client(verify: Bool = true) -> TLSContext {
        var configuration = TLSClientConfiguration()
        configuration.trustRoots = .pem(authority.certificatePEM)
        configuration.verifyPeer = verify
        return try! TLSContext.client(configuration)
    }

    static func server(_ certificate: TLSCertificate) -> TLSContext {
        try! TLSContext.server(TLSServerConfiguration(identity: .pem(certificate)))
    }
}

/// What a TLS client attempt ended with.
private enum Attempt: Sendable, Equatable {
    case connected(resumed: Bool, version: String)
    case failed(TLSError)
    case tcpFailed
}

/// Listen on loopback and run a TLS echo server with `certificate`.
private func startTLSEchoServer(_ loop: Loop, _ certificate: TLSCertificate) -> TCPListener {
    let context = PKI.server(certificate)
    return try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { connection in
        TLSConnection.server(over: connection, context: context) { result in
            if case .success(let tls) = result {
                tls.handler = EchoServerHandler()
                tls.startReading()
            }
        }
    }
}

/// Connect to `server` and handshake as a client; report how it ended.
private func attempt(
    _ loop: Loop, to server: SocketAddress, context: TLSContext, serverName: String,
    cache: TLSSessionCache? = nil, timeout: UInt64 = 5_000, done: @escaping (Attempt) -> Void
) {
    TCPConnection.connect(loop: loop, to: server) { result in
        guard case .success(let tcp) = result else { return done(.tcpFailed) }
        TLSConnection.client(over: tcp, context: context, serverName: serverName, sessionCache: cache,
                             handshakeTimeoutMilliseconds: timeout) { outcome in
            switch outcome {
            case .success(let tls):
                done(.connected(resumed: tls.isSessionReused, version: tls.protocolVersion))
                tls.close()
            case .failure(let error):
                done(.failed(error))
            }
        }
    }
}

@Suite("TLS")
struct TLSTests {
    /// Data echoes intact through a verified TLS 1.3 connection, on several connections at once.
    @Test func echoThroughVerifiedTLS() throws {
        let thread = try LoopThread.start(name: "tls-echo")
        defer { thread.stopAndJoin() }
        let connections = 20
        let bytesEach = 256 * 1024
        let verified = TestCounter(), mismatched = TestCounter(), finished = TestCounter()
        let allDone = TestWaiter<Bool>()
        thread.execute { loop in
            let listener = startTLSEchoServer(loop, PKI.localhost)
            let context = PKI.client()
            for index in 0..<connections {
                TCPConnection.connect(loop: loop, to: listener.localAddress) { result in
                    let tcp = try! result.get()
                    TLSConnection.client(over: tcp, context: context, serverName: "localhost") { outcome in
                        let report: (Int, Int) -> Void = { bytes, bad in
                            verified.add(bytes)
                            mismatched.add(bad)
                            if finished.add() == connections {
                                listener.close()
                                allDone.fulfill(true)
                            }
                        }
                        switch outcome {
                        case .success(let tls):
                            #expect(tls.peerVerified)
                            #expect(tls.protocolVersion == "TLSv1.3")
                            EchoCheckingClient(seed: index, total: bytesEach, report: report).start(on: tls)
                        case .failure(let error):
                            Issue.record("handshake failed: \(error)")
                            report(0, 1)
                        }
                    }
                }
            }
        }
        #expect(allDone.wait(seconds: 60) == true)
        #expect(mismatched.value == 0)
        #expect(verified.value == connections * bytesEach)
    }

    /// A reconnect to the same destination resumes the cached session.
    @Test func reconnectResumesTheSession() throws {
        let thread = try LoopThread.start(name: "tls-resume")
        defer { thread.stopAndJoin() }
        let cache = TLSSessionCache()
        let result = TestWaiter<[Attempt]>()
        thread.execute { loop in
            let listener = startTLSEchoServer(loop, PKI.localhost)
            let context = PKI.client()
            var attempts: [Attempt] = []
            /* The first connection must read once so the server's session ticket arrives. */
            TCPConnection.connect(loop: loop, to: listener.localAddress) { tcpResult in
                TLSConnection.client(over: try! tcpResult.get(), context: context, serverName: "localhost",
                                     sessionCache: cache) { outcome in
                    let tls = try! outcome.get()
                    attempts.append(.connected(resumed: tls.isSessionReused, version: tls.protocolVersion))
                    EchoCheckingClient(seed: 1, total: 100) { _, _ in
                        let key = cache.count
                        #expect(key == 1)
                        attempt(loop, to: listener.localAddress, context: context, serverName: "localhost",
                                cache: cache) { second in
                            attempts.append(second)
                            listener.close()
                            result.fulfill(attempts)
                        }
                    }.start(on: tls)
                }
            }
        }
        let attempts = try #require(result.wait(seconds: 20))
        #expect(attempts == [.connected(resumed: false, version: "TLSv1.3"), .connected(resumed: true, version: "TLSv1.3")])
    }

    /// A session made without verification is never offered by a verifying context, even
    /// through the same cache and key: resuming would skip the certificate checks.
    @Test func unverifiedSessionIsNotResumedUnderVerification() throws {
        let thread = try LoopThread.start(name: "tls-scope")
        defer { thread.stopAndJoin() }
        let cache = TLSSessionCache()
        let result = TestWaiter<[Attempt]>()
        thread.execute { loop in
            let listener = startTLSEchoServer(loop, PKI.selfSigned)
            var attempts: [Attempt] = []
            TCPConnection.connect(loop: loop, to: listener.localAddress) { tcp in
                TLSConnection.client(over: try! tcp.get(), context: PKI.client(verify: false), serverName: "localhost",
                                     sessionCache: cache) { outcome in
                    let tls = try! outcome.get()
                    attempts.append(.connected(resumed: tls.isSessionReused, version: tls.protocolVersion))
                    EchoCheckingClient(seed: 2, total: 100) { _, _ in
                        #expect(cache.count == 1)
                        attempt(loop, to: listener.localAddress, context: PKI.client(), serverName: "localhost",
                                cache: cache) { second in
                            attempts.append(second)
                            listener.close()
                            result.fulfill(attempts)
                        }
                    }.start(on: tls)
                }
            }
        }
        let attempts = try #require(result.wait(seconds: 20))
        #expect(attempts.count == 2)
        #expect(attempts.first == .connected(resumed: false, version: "TLSv1.3"))
        guard case .failed(.untrustedIssuer) = attempts.last else {
            Issue.record("expected untrustedIssuer, got \(String(describing: attempts.last))")
            return
        }
    }

    /// close_notify followed by FIN is one end of stream, and a repeated half-close is harmless.
    @Test func peerCloseIsReportedOnce() throws {
        final class EndCounter: ByteStreamHandler {
            var ends = 0
            let report: (Int, (any Error)?) -> Void
            init(report: @escaping (Int, (any Error)?) -> Void) { self.report = report }
            func streamRead(_ stream: any ByteStream, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }
            func streamReadEOF(_ stream: any ByteStream) {
                ends += 1
                stream.shutdownWrite()
                stream.shutdownWrite()
            }
            func streamClosed(_ stream: any ByteStream, error: (any Error)?) { report(ends, error) }
        }
        let thread = try LoopThread.start(name: "tls-eof")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<(ends: Int, error: String?)>()
        thread.execute { loop in
            let serverContext = PKI.server(PKI.localhost)
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { connection in
                TLSConnection.server(over: connection, context: serverContext) { outcome in
                    /* close_notify, then the transport closes (FIN). */
                    (try? outcome.get())?.close()
                }
            }
            TCPConnection.connect(loop: loop, to: listener.localAddress) { tcp in
                TLSConnection.client(over: try! tcp.get(), context: PKI.client(), serverName: "localhost") { outcome in
                    let tls = try! outcome.get()
                    var closer: LoopTimer?
                    tls.handler = EndCounter { ends, error in
                        closer?.close()
                        listener.close()
                        result.fulfill((ends, error.map { String(describing: $0) }))
                    }
                    tls.startReading()
                    /* After the peer's FIN has surely arrived, close our side. */
                    closer = LoopTimer(loop: loop)
                    closer?.schedule(after: 200) { _ in tls.close() }
                }
            }
        }
        let outcome = try #require(result.wait(seconds: 10))
        #expect(outcome.ends == 1)
        #expect(outcome.error == nil)
    }

    /// Starting TLS on a transport that already closed fails, on the next turn, as a transport error.
    @Test func handshakeOverAClosedTransportFails() throws {
        let thread = try LoopThread.start(name: "tls-closed")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<(insideCall: Bool, error: TLSError?)>()
        thread.execute { loop in
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { $0.close() }
            TCPConnection.connect(loop: loop, to: listener.localAddress) { tcp in
                let connection = try! tcp.get()
                connection.close()
                var returned = false
                TLSConnection.client(over: connection, context: PKI.client(), serverName: "localhost") { outcome in
                    listener.close()
                    if case .failure(let error) = outcome { result.fulfill((!returned, error)) } else { result.fulfill((!returned, nil)) }
                }
                returned = true
            }
        }
        let outcome = try #require(result.wait(seconds: 10))
        #expect(outcome.insideCall == false)
        guard case .transport = outcome.error else {
            Issue.record("expected a transport error, got \(String(describing: outcome.error))")
            return
        }
    }

    /// Verification against an IP address uses the certificate's IP SAN.
    @Test func verifiesAnIPAddressName() throws {
        let outcome = try runAttempt(certificate: PKI.localhost, serverName: "127.0.0.1")
        #expect(outcome == .connected(resumed: false, version: "TLSv1.3"))
    }

    @Test func expiredCertificateIsTyped() throws {
        let outcome = try runAttempt(certificate: PKI.expired, serverName: "localhost")
        guard case .failed(.certificateExpired) = outcome else {
            Issue.record("expected certificateExpired, got \(outcome)")
            return
        }
    }

    @Test func untrustedIssuerIsTyped() throws {
        let outcome = try runAttempt(certificate: PKI.selfSigned, serverName: "localhost")
        guard case .failed(.untrustedIssuer) = outcome else {
            Issue.record("expected untrustedIssuer, got \(outcome)")
            return
        }
    }

    @Test func nameMismatchIsTyped() throws {
        let outcome = try runAttempt(certificate: PKI.otherName, serverName: "localhost")
        guard case .failed(.nameMismatch) = outcome else {
            Issue.record("expected nameMismatch, got \(outcome)")
            return
        }
    }

    /// Without verification the same mismatched certificate is accepted, and reported unverified.
    @Test func unverifiedModeConnectsButReportsIt() throws {
        let thread = try LoopThread.start(name: "tls-noverify")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<Bool?>()
        thread.execute { loop in
            let listener = startTLSEchoServer(loop, PKI.selfSigned)
            TCPConnection.connect(loop: loop, to: listener.localAddress) { tcp in
                TLSConnection.client(over: try! tcp.get(), context: PKI.client(verify: false), serverName: "localhost") { outcome in
                    listener.close()
                    switch outcome {
                    case .success(let tls):
                        result.fulfill(tls.peerVerified)
                        tls.close()
                    case .failure:
                        result.fulfill(nil)
                    }
                }
            }
        }
        #expect(result.wait(seconds: 10) == .some(false))
    }

    /// A peer that answers the ClientHello with plaintext is a protocol error.
    @Test func plaintextPeerIsAProtocolError() throws {
        let outcome = try runAgainstRawServer { connection in
            connection.write(ByteBuffer(string: "220 mail.example ESMTP not TLS\r\n"))
        }
        guard case .failed(.protocolError) = outcome else {
            Issue.record("expected protocolError, got \(outcome)")
            return
        }
    }

    /// A peer that never answers makes the handshake time out.
    @Test func silentPeerTimesOut() throws {
        let outcome = try runAgainstRawServer(timeout: 300) { _ in }
        #expect(outcome == .failed(.handshakeTimeout))
    }

    /// A bad CA file or a key that does not match is a configuration error, not a crash.
    @Test func badConfigurationIsTyped() {
        var client = TLSClientConfiguration()
        client.trustRoots = .file("/nonexistent/ca.pem")
        #expect(throws: TLSError.self) { try TLSContext.client(client) }
        let mismatched = TLSCertificate(certificatePEM: PKI.localhost.certificatePEM, privateKeyPEM: PKI.otherName.privateKeyPEM)
        do {
            _ = try TLSContext.server(TLSServerConfiguration(identity: .pem(mismatched)))
            Issue.record("a mismatched key was accepted")
        } catch {
            guard case .configuration = error else {
                Issue.record("wrong error \(error)")
                return
            }
        }
    }

    /// runAttempt - one client handshake against a TLS echo server with `certificate`.
    private func runAttempt(certificate: TLSCertificate, serverName: String) throws -> Attempt {
        let thread = try LoopThread.start(name: "tls-attempt")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<Attempt>()
        thread.execute { loop in
            let listener = startTLSEchoServer(loop, certificate)
            attempt(loop, to: listener.localAddress, context: PKI.client(), serverName: serverName) {
                listener.close()
                result.fulfill($0)
            }
        }
        return try #require(result.wait(seconds: 10))
    }

    /// runAgainstRawServer - a client handshake against a plain TCP server doing `onAccept`.
    private func runAgainstRawServer(timeout: UInt64 = 5_000, onAccept: @escaping @Sendable (TCPConnection) -> Void) throws -> Attempt {
        let thread = try LoopThread.start(name: "tls-raw")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<Attempt>()
        thread.execute { loop in
            let drain = EchoServerHandler()
            var accepted: [TCPConnection] = []
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { connection in
                accepted.append(connection)
                connection.handler = drain
                onAccept(connection)
            }
            attempt(loop, to: listener.localAddress, context: PKI.client(), serverName: "localhost", timeout: timeout) {
                listener.close()
                accepted.forEach { $0.close() }
                result.fulfill($0)
            }
        }
        return try #require(result.wait(seconds: 10))
    }
}
