// TCPEchoTests.swift - TCP connect, listen, echo, addresses and connect failures

import EventCore
import CarrierTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("TCP")
struct TCPEchoTests {
    /// 1,000 concurrent connections spread over two loop threads; every byte comes back.
    @Test func thousandConnectionsOverTwoLoopsEchoEveryByte() throws {
        SystemLimits.raiseOpenFileLimit()
        let connections = 1_000
        let bytesEach = 32 * 1024
        let threads = try (0..<2).map { try LoopThread.start(name: "echo-\($0)") }
        defer { threads.forEach { $0.stopAndJoin() } }

        /* One listener per thread on the same port: SO_REUSEPORT spreads accepts. */
        let accepted = TestCounter()
        let firstPort = TestWaiter<UInt16>()
        threads[0].execute { loop in
            let listener = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!, reusePort: true) { connection in
                accepted.add()
                connection.handler = EchoServerHandler()
                connection.startReading()
            }
            firstPort.fulfill(listener.localAddress.port)
        }
        let port = try #require(firstPort.wait(seconds: 10))
        let secondReady = TestWaiter<Bool>()
        threads[1].execute { loop in
            _ = try! TCPListener(loop: loop, address: SocketAddress(ip: IPAddress("127.0.0.1")!, port: port), reusePort: true) { connection in
                accepted.add()
                connection.handler = EchoServerHandler()
                connection.startReading()
            }
            secondReady.fulfill(true)
        }
        #expect(secondReady.wait(seconds: 10) == true)

        /* Clients: half on each loop, all open at once. */
        let verified = TestCounter()
        let mismatched = TestCounter()
        let finished = TestCounter()
        let allDone = TestWaiter<Bool>()
        for index in 0..<connections {
            threads[index % 2].execute { loop in
                TCPConnection.connect(loop: loop, to: SocketAddress(ip: IPAddress("127.0.0.1")!, port: port),
                                      timeoutMilliseconds: 10_000) { result in
                    let report: (Int, Int) -> Void = { bytes, bad in
                        verified.add(bytes)
                        mismatched.add(bad)
                        if finished.add() == connections { allDone.fulfill(true) }
                    }
                    switch result {
                    case .success(let connection):
                        EchoCheckingClient(seed: index, total: bytesEach, report: report).start(on: connection)
                    case .failure:
                        report(0, 1)
                    }
                }
            }
        }
        #expect(allDone.wait(seconds: 120) == true)
        #expect(finished.value == connections)
        #expect(mismatched.value == 0)
        #expect(verified.value == connections * bytesEach)
        #expect(accepted.value == connections)
    }

    /// IPv6 loopback works, and a local source address is used when asked for.
    @Test func ipv6AndSourceAddress() throws {
        let thread = try LoopThread.start(name: "tcp-addr")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<(v6: String, source: String)>()
        thread.execute { loop in
            var seen: [String] = []
            let v6 = try! TCPListener(loop: loop, address: SocketAddress("[::1]:0")!) { connection in
                seen.append(connection.remoteAddress?.ip.description ?? "?")
                connection.close()
            }
            let v4 = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { connection in
                seen.append(connection.remoteAddress?.ip.description ?? "?")
                connection.close()
            }
            TCPConnection.connect(loop: loop, to: v6.localAddress) { first in
                TCPConnection.connect(loop: loop, to: v4.localAddress, from: SocketAddress("127.0.0.2:0")!) { second in
                    _ = try? first.get().close()
                    _ = try? second.get().close()
                    let check = LoopTimer(loop: loop)
                    check.schedule(after: 50) { check in
                        check.close()
                        result.fulfill((seen.first ?? "none", seen.dropFirst().first ?? "none"))
                    }
                }
            }
        }
        let outcome = try #require(result.wait(seconds: 10))
        #expect(outcome.v6 == "::1")
        #expect(outcome.source == "127.0.0.2")
    }

    /// A connect that fails before any I/O (a source address this host does not have)
    /// reports on the next loop turn, never from inside the call.
    @Test func earlyConnectFailureIsReportedLater() throws {
        let thread = try LoopThread.start(name: "tcp-early")
        defer { thread.stopAndJoin() }
        let result = TestWaiter<(insideCall: Bool, error: IOError?)>()
        thread.execute { loop in
            var returned = false
            /* 192.0.2.1 (TEST-NET-1) is never local: bind fails, nothing is sent anywhere. */
            TCPConnection.connect(loop: loop, to: SocketAddress("127.0.0.1:9")!, from: SocketAddress("192.0.2.1:0")!) { outcome in
                if case .failure(let error) = outcome { result.fulfill((!returned, error)) } else { result.fulfill((!returned, nil)) }
            }
            returned = true
        }
        let outcome = try #require(result.wait(seconds: 10))
        #expect(outcome.insideCall == false)
        #expect(outcome.error?.name == "EADDRNOTAVAIL")
    }

    /// A closed port is refused; a listener that never accepts makes connect time out.
    @Test func refusedAndTimedOutConnects() throws {
        /* A raw socket with a full accept queue: Linux drops further SYNs. */
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                _ = bind(fd, pointer, length)
                _ = listen(fd, 0)
                _ = getsockname(fd, pointer, &length)
            }
        }
        let stalledPort = UInt16(bigEndian: address.sin_port)

        let thread = try LoopThread.start(name: "tcp-fail")
        defer { thread.stopAndJoin() }
        let refused = TestWaiter<IOError?>()
        let timedOut = TestWaiter<IOError?>()
        thread.execute { loop in
            /* Find a closed port: bind one, note it, close it. */
            let probe = try! TCPListener(loop: loop, address: SocketAddress("127.0.0.1:0")!) { _ in }
            let closedPort = probe.localAddress
            probe.close()
            TCPConnection.connect(loop: loop, to: closedPort) { result in
                if case .failure(let error) = result { refused.fulfill(error) } else { refused.fulfill(nil) }
            }
            /* Fill the stalled listener's queue, then one more must time out. */
            let target = SocketAddress(ip: IPAddress("127.0.0.1")!, port: stalledPort)
            var fillers: [TCPConnection] = []
            for _ in 0..<3 {
                fillers.append(TCPConnection.connect(loop: loop, to: target, timeoutMilliseconds: 300) { _ in })
            }
            let late = LoopTimer(loop: loop)
            late.schedule(after: 50) { late in
                late.close()
                TCPConnection.connect(loop: loop, to: target, timeoutMilliseconds: 300) { result in
                    if case .failure(let error) = result { timedOut.fulfill(error) } else { timedOut.fulfill(nil) }
                    fillers.forEach { $0.close() }
                }
            }
        }
        let refusal = try #require(refused.wait(seconds: 10) ?? nil)
        #expect(refusal.isConnectionRefused)
        let timeout = try #require(timedOut.wait(seconds: 10) ?? nil)
        #expect(timeout.isTimeout)
    }
}
