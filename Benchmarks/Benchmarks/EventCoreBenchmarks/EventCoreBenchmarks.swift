// EventCoreBenchmarks.swift - the event core over loopback: round trips, connections, bulk transfer
//
// Each benchmark drives the same LoopbackBenchmark rig `carrier demo` uses: a
// server loop thread and a client loop thread on loopback. Set-up (threads,
// listeners, connections) happens in `setup`, outside the measured closure.

import Benchmark
import Carrier
import Synchronization

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .cpuTotal, .mallocCountTotal],
        maxDuration: .seconds(5),
        maxIterations: 1_000
    )

    for transport in [LoopbackBenchmark.Transport.tcp, .tls] {
        /* One iteration = 1,000 echo round trips of 64 bytes on one connection, so the
           malloc count per iteration / 1,000 is allocations per round trip, both ends. */
        let echo = Fixture<(LoopbackBenchmark, LoopbackBenchmark.EchoSession)>()
        Benchmark("Echo 1000 round trips (\(transport.rawValue), 64 B)") { _ in
            let (rig, session) = echo.value
            _ = rig.roundTrips(session, perConnection: 1_000, messageSize: 64)
        } setup: {
            let rig = try LoopbackBenchmark.start(transport: transport)
            let session = try rig.openEchoSession(connections: 1)
            _ = rig.roundTrips(session, perConnection: 1_000, messageSize: 64)
            echo.set((rig, session))
        } teardown: {
            echo.take()?.0.stop()
        }

        /* One iteration = 100 connections opened and closed, 4 at a time; for TLS each is a
           full TLS 1.3 handshake (P-256 certificate, no resumption). */
        let connect = Fixture<LoopbackBenchmark>()
        Benchmark("Connect 100 (\(transport.rawValue))") { _ in
            _ = try connect.value.connections(100, concurrency: 4)
        } setup: {
            connect.set(try LoopbackBenchmark.start(transport: transport))
        } teardown: {
            connect.take()?.stop()
        }

        /* One iteration = 64 MiB sent one way on an open connection and acknowledged;
           TLS against TCP in the same run gives the bulk ratio. */
        let bulk = Fixture<(LoopbackBenchmark, LoopbackBenchmark.BulkSession)>()
        Benchmark("Bulk 64 MiB (\(transport.rawValue))") { _ in
            let (rig, session) = bulk.value
            _ = rig.bulk(session, bytes: 64 << 20)
        } setup: {
            let rig = try LoopbackBenchmark.start(transport: transport)
            let session = try rig.openBulkSession()
            _ = rig.bulk(session, bytes: 16 << 20)
            bulk.set((rig, session))
        } teardown: {
            bulk.take()?.0.stop()
        }
    }
}

/// State made in a benchmark's setup and used by its closure and teardown.
final class Fixture<Value: Sendable>: Sendable {
    private let slot = Mutex<Value?>(nil)
    var value: Value { slot.withLock { $0! } }
    func set(_ value: Value) { slot.withLock { $0 = value } }
    func take() -> Value? { slot.withLock { value in defer { value = nil }; return value } }
}
