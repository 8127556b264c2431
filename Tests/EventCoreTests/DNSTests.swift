// DNSTests.swift - DNSResolver against DNSTestResponder and a real dnsmasq; DNSMessage on hand-made bytes
//
// Everything runs on loopback. Each resolver is made, queried and closed on a
// LoopThread through runOnLoop; the test thread only sees Sendable results.
// The resolver closes itself from inside its own completion in every lookup,
// which exercises the deferred close path on each run.

@testable import EventCore
import CarrierTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("DNS")
struct DNSTests {
    // MARK: Against DNSTestResponder

    @Test func mxRecordsSortedByPreferenceWithTTLs() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("example.test", .mx, .answer([
            .mx(preference: 20, host: "MX2.Example.Test", ttl: 300),
            .mx(preference: 10, host: "mx1.example.test", ttl: 60),
            .mx(preference: 10, host: "mx1b.example.test", ttl: 120),
        ]))
        let result = try lookup(responder.server) { $0.queryMX("example.test", $1) }
        #expect(try result.get() == [
            MXRecord(preference: 10, host: "mx1.example.test", ttl: 60),
            MXRecord(preference: 10, host: "mx1b.example.test", ttl: 120),
            MXRecord(preference: 20, host: "mx2.example.test", ttl: 300),
        ])
    }

    @Test func aRecords() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("host.test", .a, .answer([
            .a(try #require(IPAddress("192.0.2.1")), ttl: 30),
            .a(try #require(IPAddress("192.0.2.2")), ttl: 40),
        ]))
        let result = try lookup(responder.server) { $0.queryA("host.test.", $1) }
        #expect(try result.get() == [
            AddressRecord(address: try #require(IPAddress("192.0.2.1")), ttl: 30),
            AddressRecord(address: try #require(IPAddress("192.0.2.2")), ttl: 40),
        ])
    }

    @Test func aaaaRecords() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("host.test", .aaaa, .answer([.aaaa(try #require(IPAddress("2001:db8::1")), ttl: 50)]))
        let result = try lookup(responder.server) { $0.queryAAAA("host.test", $1) }
        #expect(try result.get() == [AddressRecord(address: try #require(IPAddress("2001:db8::1")), ttl: 50)])
    }

    @Test func unknownNameIsNXDOMAIN() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        let result = try lookup(responder.server) { $0.queryMX("missing.test", $1) }
        #expect(result == .failure(.nxdomain("missing.test")))
    }

    @Test func otherTypesOnlyIsNoData() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("host.test", .a, .answer([.a(try #require(IPAddress("192.0.2.1")), ttl: 30)]))
        /* Zero answers: c-ares itself reports ENODATA. */
        let empty = try lookup(responder.server) { $0.queryMX("host.test", $1) }
        #expect(empty == .failure(.noData("host.test")))
        /* An answer of the wrong type: c-ares says success, our parser finds no MX. */
        responder.set("odd.test", .mx, .answer([.a(try #require(IPAddress("192.0.2.9")), ttl: 30)]))
        let wrongType = try lookup(responder.server) { $0.queryMX("odd.test", $1) }
        #expect(wrongType == .failure(.noData("odd.test")))
    }

    /// SERVFAIL is reported as such, at once: the resolver does not hide it behind retries.
    @Test func servfailIsTyped() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("broken.test", .mx, .servfail)
        let result = try lookup(responder.server, tries: 2) { $0.queryMX("broken.test", $1) }
        #expect(result == .failure(.serverFailure("broken.test")))
        #expect(result.failure?.isTemporary == true)
        #expect(responder.queriesReceived == 1)
    }

    @Test func silentServerTimesOut() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("slow.test", .mx, .drop)
        let started = MonotonicClock.nanoseconds()
        let result = try lookup(responder.server, timeoutMilliseconds: 300, tries: 1) { $0.queryMX("slow.test", $1) }
        let elapsed = Double(MonotonicClock.nanoseconds() - started) / 1e9
        #expect(result == .failure(.timeout("slow.test")))
        #expect(elapsed >= 0.25 && elapsed < 3, "timed out after \(elapsed) s")
        #expect(responder.queriesReceived == 1)
    }

    @Test func closeCancelsPendingQueryOnce() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("slow.test", .mx, .drop)
        let thread = try LoopThread.start(name: "dns-close")
        defer { thread.stopAndJoin() }
        let server = responder.server
        let outcome = try runOnLoop(thread) { (loop, done: @escaping @Sendable (Result<(Int, [Result<[MXRecord], DNSError>]), DNSConfigurationError>) -> Void) in
            let resolver: DNSResolver
            do throws(DNSConfigurationError) {
                resolver = try DNSResolver(loop: loop, configuration: DNSConfiguration(servers: [server]))
            } catch {
                return done(.failure(error))
            }
            var results: [Result<[MXRecord], DNSError>] = []
            resolver.queryMX("slow.test") { results.append($0) }
            /* Close while the query is on the wire, then wait a little for any second completion. */
            let timer = LoopTimer(loop: loop)
            timer.schedule(after: 50) { _ in
                resolver.close()
                let closedCount = results.count
                resolver.queryMX("slow.test") { results.append($0) }
                timer.schedule(after: 100) { timer in
                    timer.close()
                    done(.success((closedCount, results)))
                }
            }
        }
        let (countAfterClose, results) = try outcome.get()
        #expect(countAfterClose == 1)
        #expect(results.count == 2)
        #expect(results.allSatisfy { $0 == .failure(.cancelled("slow.test")) })
    }

    @Test func closeFromCompletionCancelsTheRest() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("example.test", .mx, .answer([.mx(preference: 10, host: "mx.example.test", ttl: 60)]))
        responder.set("slow.test", .mx, .drop)
        let thread = try LoopThread.start(name: "dns-reenter")
        defer { thread.stopAndJoin() }
        let server = responder.server
        let outcome = try runOnLoop(thread) { (loop, done: @escaping @Sendable (Result<[Result<[MXRecord], DNSError>], DNSConfigurationError>) -> Void) in
            let resolver: DNSResolver
            do throws(DNSConfigurationError) {
                resolver = try DNSResolver(loop: loop, configuration: DNSConfiguration(servers: [server]))
            } catch {
                return done(.failure(error))
            }
            var results: [Result<[MXRecord], DNSError>] = []
            resolver.queryMX("slow.test") { result in
                results.append(result)
                done(.success(results))
            }
            resolver.queryMX("example.test") { result in
                results.append(result)
                resolver.close()
            }
        }
        let results = try outcome.get()
        #expect(results == [
            .success([MXRecord(preference: 10, host: "mx.example.test", ttl: 60)]),
            .failure(.cancelled("slow.test")),
        ])
    }

    @Test func loopShutdownCancelsPendingAndRefusesNewQueries() throws {
        let responder = try startedResponder()
        defer { responder.stop() }
        responder.set("slow.test", .mx, .drop)
        let thread = try LoopThread.start(name: "dns-shutdown")
        defer { thread.stopAndJoin() }
        let server = responder.server
        let outcome = try runOnLoop(thread) { (loop, done: @escaping @Sendable (Result<[Result<[MXRecord], DNSError>], DNSConfigurationError>) -> Void) in
            let busy: DNSResolver
            let idle: DNSResolver
            do throws(DNSConfigurationError) {
                busy = try DNSResolver(loop: loop, configuration: DNSConfiguration(servers: [server]))
                idle = try DNSResolver(loop: loop, configuration: DNSConfiguration(servers: [server]))
            } catch {
                return done(.failure(error))
            }
            var results: [Result<[MXRecord], DNSError>] = []
            /* The busy resolver hears the shutdown through its socket's poll; the idle one on next use. */
            busy.queryMX("slow.test") { results.append($0) }
            let timer = LoopTimer(loop: loop)
            timer.schedule(after: 50) { _ in
                loop.shutdown()
                idle.queryMX("slow.test") { results.append($0) }
                /* The refusal arrives on the next turn, never inside the call; look after it. */
                #expect(results.count == 1)
                loop.nextTurn { done(.success(results)) }
            }
        }
        #expect(try outcome.get() == [.failure(.cancelled("slow.test")), .failure(.cancelled("slow.test"))])
    }

    @Test func badServerIsAConfigurationError() throws {
        let thread = try LoopThread.start(name: "dns-config")
        defer { thread.stopAndJoin() }
        let refused = try runOnLoop(thread) { (loop, done: @escaping @Sendable (Bool) -> Void) in
            do throws(DNSConfigurationError) {
                let resolver = try DNSResolver(loop: loop, configuration: DNSConfiguration(servers: ["mx.example.test"]))
                resolver.close()
                done(false)
            } catch {
                done(error.description.contains("mx.example.test"))
            }
        }
        #expect(refused)
    }

    // MARK: Against dnsmasq

    @Test func dnsmasqAnswersMXAAndAAAA() throws {
        let dnsmasq = "/usr/sbin/dnsmasq"
        try #require(access(dnsmasq, X_OK) == 0, "\(dnsmasq) is missing: install dnsmasq-base (make test does)")
        /*
         * The free port is only free when we looked: another test's TCP client may take it
         * (dnsmasq binds TCP too) before dnsmasq starts. If dnsmasq dies, try another port.
         */
        var started: (process: ChildProcess, server: String)?
        for _ in 0..<5 where started == nil {
            let port = try freeUDPPort()
            let process = try ChildProcess(dnsmasq, [
                "--keep-in-foreground", "--port=\(port)", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--user=root", "--pid-file=", "--conf-file=/dev/null",
                "--log-facility=/dev/null", "--local-ttl=300", "--local=/test/",
                "--mx-host=example.test,mx2.example.test,20", "--mx-host=example.test,mx1.example.test,10",
                "--host-record=mx1.example.test,127.0.0.1,::1",
            ])
            let server = "127.0.0.1:\(port)"
            /* dnsmasq binds after it starts; ask until it answers, or notice that it died. */
            for _ in 0..<50 where process.isRunning {
                let probe = try lookup(server, timeoutMilliseconds: 100, tries: 1) { $0.queryMX("example.test", $1) }
                if case .success = probe {
                    started = (process, server)
                    break
                }
                usleep(100_000)
            }
            if started == nil { process.terminate() }
        }
        let (process, server) = try #require(started, "dnsmasq did not start and answer on a free loopback port in 5 tries")
        defer { process.terminate() }

        let mx = try lookup(server) { $0.queryMX("example.test", $1) }
        #expect(try mx.get() == [
            MXRecord(preference: 10, host: "mx1.example.test", ttl: 300),
            MXRecord(preference: 20, host: "mx2.example.test", ttl: 300),
        ])
        let a = try lookup(server) { $0.queryA("mx1.example.test", $1) }
        #expect(try a.get() == [AddressRecord(address: try #require(IPAddress("127.0.0.1")), ttl: 300)])
        let aaaa = try lookup(server) { $0.queryAAAA("MX1.example.test", $1) }
        #expect(try aaaa.get() == [AddressRecord(address: try #require(IPAddress("::1")), ttl: 300)])
        let missing = try lookup(server) { $0.queryA("nope.test", $1) }
        #expect(missing == .failure(.nxdomain("nope.test")))
        let noData = try lookup(server) { $0.queryA("example.test", $1) }
        #expect(noData == .failure(.noData("example.test")))
    }

    // MARK: DNSMessage on hand-made responses

    @Test func parserSkipsCNAMEAndFollowsCompression() throws {
        /* CNAME example.test -> mx.example.test, then an MX whose host is "mx" + pointer to the question name. */
        let message = response(answers: [
            record(type: 5, ttl: 60, rdata: [2] + Array("mx".utf8) + [0xC0, 0x0C]),
            record(type: 15, ttl: 0x8000_0000, rdata: [0, 5, 4] + Array("mail".utf8) + [0xC0, 0x0C]),
        ])
        #expect(parseMX(message) == .success([MXRecord(preference: 5, host: "mail.example.test", ttl: 0)]))
    }

    @Test func parserRejectsPointerLoopsAndForwardPointers() {
        /* The MX rdata starts at 42, so its name is at 44 (header 12, question 18, record head 12, preference 2). */
        let selfPointer = response(answers: [record(type: 15, ttl: 1, rdata: [0, 1, 0xC0, 44])])
        #expect(parseMX(selfPointer) == .failure(.malformedResponse("example.test")))
        let labelLoop = response(answers: [record(type: 15, ttl: 1, rdata: [0, 1, 1, UInt8(ascii: "a"), 0xC0, 44])])
        #expect(parseMX(labelLoop) == .failure(.malformedResponse("example.test")))
        /* A well-formed name at 58, in the next record's rdata: valid, but not a prior occurrence. */
        let forward = response(answers: [
            record(type: 15, ttl: 1, rdata: [0, 1, 0xC0, 58]),
            record(type: 16, ttl: 1, rdata: [2] + Array("mx".utf8) + [0]),
        ])
        #expect(parseMX(forward) == .failure(.malformedResponse("example.test")))
    }

    @Test func parserMapsRcodesAndEmptyAnswers() {
        #expect(parseMX(response(rcode: 3, answers: [])) == .failure(.nxdomain("example.test")))
        #expect(parseMX(response(rcode: 2, answers: [])) == .failure(.serverFailure("example.test")))
        #expect(parseMX(response(answers: [])) == .failure(.noData("example.test")))
    }

    @Test func parserRejectsEveryTruncation() {
        let message = response(answers: [
            record(type: 15, ttl: 60, rdata: [0, 10, 2] + Array("mx".utf8) + [0xC0, 0x0C]),
            record(type: 1, ttl: 60, rdata: [192, 0, 2, 1]),
        ])
        #expect(parseMX(message) == .success([MXRecord(preference: 10, host: "mx.example.test", ttl: 60)]))
        for length in 0..<message.count {
            #expect(parseMX(Array(message[..<length])) == .failure(.malformedResponse("example.test")), "prefix \(length)")
        }
    }

    @Test func parserSurvivesMutatedMessages() {
        let message = response(answers: [
            record(type: 15, ttl: 60, rdata: [0, 10, 2] + Array("mx".utf8) + [0xC0, 0x0C]),
            record(type: 28, ttl: 60, rdata: Array(repeating: 1, count: 16)),
        ])
        /* A fixed-seed xorshift: the same mutations on every run, none of which may trap. */
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Int(truncatingIfNeeded: state >> 1)
        }
        for _ in 0..<5000 {
            var mutated = message
            for _ in 0...(next() % 4) {
                mutated[next() % mutated.count] = UInt8(truncatingIfNeeded: next())
            }
            _ = parseMX(mutated)
            _ = mutated.withUnsafeBytes { raw in
                try? DNSMessage.addressRecords(in: raw, type: .aaaa, name: "example.test")
            }
        }
    }
}

// MARK: Helpers

/// A test precondition that failed outside an expectation (a socket or spawn call).
private struct SetupFailure: Error, CustomStringConvertible {
    let description: String
}

/// startedResponder - a DNSTestResponder that is already answering.
private func startedResponder() throws -> DNSTestResponder {
    let responder = try DNSTestResponder()
    try responder.start()
    return responder
}

/// lookup - make a resolver for `server` on a fresh loop thread, run one query, close it, return the outcome.
private func lookup<T: Sendable>(
    _ server: String,
    timeoutMilliseconds: Int = 2000,
    tries: Int = 1,
    _ ask: @escaping @Sendable (DNSResolver, @escaping (Result<T, DNSError>) -> Void) -> Void
) throws -> Result<T, DNSError> {
    let thread = try LoopThread.start(name: "dns-test")
    defer { thread.stopAndJoin() }
    let configuration = DNSConfiguration(servers: [server], timeoutMilliseconds: timeoutMilliseconds, tries: tries)
    let outcome = try runOnLoop(thread) { (loop, done: @escaping @Sendable (Result<Result<T, DNSError>, DNSConfigurationError>) -> Void) in
        do throws(DNSConfigurationError) {
            let resolver = try DNSResolver(loop: loop, configuration: configuration)
            ask(resolver) { result in
                resolver.close()
                done(.success(result))
            }
        } catch {
            done(.failure(error))
        }
    }
    return try outcome.get()
}

/// freeUDPPort - a UDP port on 127.0.0.1 that was free a moment ago.
private func freeUDPPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw SetupFailure(description: "socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard bound else { throw SetupFailure(description: "bind 127.0.0.1:0: errno \(errno)") }
    return UInt16(bigEndian: address.sin_port)
}

/// response - a DNS response to "example.test" MX with `answers` (already encoded records).
private func response(rcode: UInt8 = 0, answers: [[UInt8]]) -> [UInt8] {
    let question: [UInt8] = [7] + Array("example".utf8) + [4] + Array("test".utf8) + [0, 0, 15, 0, 1]
    return [0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, UInt8(answers.count), 0, 0, 0, 0]
        + question + answers.flatMap { $0 }
}

/// record - one answer record owned by the question name (pointer to offset 12).
private func record(type: UInt16, ttl: UInt32, rdata: [UInt8]) -> [UInt8] {
    [0xC0, 0x0C, UInt8(type >> 8), UInt8(type & 0xFF), 0, 1,
     UInt8(ttl >> 24), UInt8(ttl >> 16 & 0xFF), UInt8(ttl >> 8 & 0xFF), UInt8(ttl & 0xFF),
     UInt8(rdata.count >> 8), UInt8(rdata.count & 0xFF)] + rdata
}

/// parseMX - DNSMessage.mxRecords over `bytes`, as a Result.
private func parseMX(_ bytes: [UInt8]) -> Result<[MXRecord], DNSError> {
    bytes.withUnsafeBytes { raw in
        do throws(DNSError) {
            return .success(try DNSMessage.mxRecords(in: raw, name: "example.test"))
        } catch {
            return .failure(error)
        }
    }
}

extension Result {
    /// The error, when this is a failure.
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
