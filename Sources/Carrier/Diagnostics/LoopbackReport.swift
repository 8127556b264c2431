// LoopbackReport.swift - the figures `carrier demo` prints, measured with LoopbackBenchmark

/// Round-trip rate and bulk throughput for TCP and TLS, measured in one run.
public struct LoopbackReport: Sendable {
    /// One transport's figures.
    public struct Figures: Sendable {
        public let transport: LoopbackBenchmark.Transport
        public let roundTripsPerSecond: Double
        public let connectionsPerSecond: Double
        public let bulkMiBPerSecond: Double
    }

    public let connections: Int
    public let messageSize: Int
    public let repetitions: Int
    public let tcp: Figures
    public let tls: Figures

    /// TLS bulk throughput as a fraction of plain TCP's.
    public var tlsBulkRatio: Double { tls.bulkMiBPerSecond / tcp.bulkMiBPerSecond }

    /// measure - run both transports with the same settings.
    ///
    /// Both rigs run side by side and bulk transfers alternate between them,
    /// `repetitions` each; every figure is the median of its runs, so a
    /// passing disturbance on this machine moves one sample, not the result.
    public static func measure(
        connections: Int, roundTrips: Int, messageSize: Int, bulkBytes: Int, repetitions: Int = 5
    ) throws -> LoopbackReport {
        let tcpRig = try LoopbackBenchmark.start(transport: .tcp)
        defer { tcpRig.stop() }
        let tlsRig = try LoopbackBenchmark.start(transport: .tls)
        defer { tlsRig.stop() }
        let rigs = [tcpRig, tlsRig]

        var echo: [[UInt64]] = [[], []]
        var connect: [[UInt64]] = [[], []]
        var bulk: [[UInt64]] = [[], []]
        let echoSessions = try rigs.map { try $0.openEchoSession(connections: connections) }
        let bulkSessions = try rigs.map { try $0.openBulkSession() }
        for (rig, session) in zip(rigs, echoSessions) {
            /* Warm-up: first touches of buffers, TCP windows opening. */
            _ = rig.roundTrips(session, perConnection: max(1, roundTrips / 10), messageSize: messageSize)
        }
        for (rig, session) in zip(rigs, bulkSessions) { _ = rig.bulk(session, bytes: min(bulkBytes, 16 << 20)) }
        for _ in 0..<repetitions {
            for index in rigs.indices {
                echo[index].append(rigs[index].roundTrips(echoSessions[index], perConnection: roundTrips, messageSize: messageSize))
                connect[index].append(try rigs[index].connections(connectionsPerRun, concurrency: 4))
                bulk[index].append(rigs[index].bulk(bulkSessions[index], bytes: bulkBytes))
            }
        }
        func figures(_ index: Int) -> Figures {
            Figures(
                transport: rigs[index].transport,
                roundTripsPerSecond: Double(connections * roundTrips) / seconds(median(echo[index])),
                connectionsPerSecond: Double(connectionsPerRun) / seconds(median(connect[index])),
                bulkMiBPerSecond: Double(bulkBytes) / Double(1 << 20) / seconds(median(bulk[index])))
        }
        return LoopbackReport(connections: connections, messageSize: messageSize, repetitions: repetitions,
                              tcp: figures(0), tls: figures(1))
    }

    /// Connections opened (and, for TLS, fully handshaken) per measured run.
    private static let connectionsPerRun = 500

    /// The report as aligned text.
    public var text: String {
        func row(_ f: Figures) -> String {
            let name = f.transport.rawValue.uppercased() + (f.transport == .tcp ? "  " : "  ")
            return "  \(name) \(format(f.roundTripsPerSecond, 0).leftPad(9)) round trips/s  "
                + "\(format(f.connectionsPerSecond, 0).leftPad(7)) connections/s\(f.transport == .tls ? " (full handshakes)" : "")  "
                + "\(format(f.bulkMiBPerSecond, 0).leftPad(6)) MiB/s bulk"
        }
        return """
        Carrier event core over loopback: one server and one client loop thread; \(connections) echo connections, \(messageSize)-byte messages
        (medians of \(repetitions) alternating runs)
        \(row(tcp))
        \(row(tls))
          TLS bulk throughput is \(format(tlsBulkRatio * 100, 1))% of plain TCP
        """
    }
}

/// median - the middle value (upper middle for an even count).
private func median(_ values: [UInt64]) -> UInt64 {
    values.sorted()[values.count / 2]
}

/// seconds - nanoseconds as seconds.
private func seconds(_ nanoseconds: UInt64) -> Double {
    Double(nanoseconds) / 1e9
}

/// format - a number with `decimals` digits after the point.
private func format(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    if decimals == 0 { return String(Int(rounded)) }
    let whole = Int(rounded)
    let fraction = Int(((rounded - Double(whole)) * scale).rounded())
    let digits = String(fraction)
    return "\(whole).\(String(repeating: "0", count: max(0, decimals - digits.count)))\(digits)"
}

extension String {
    fileprivate func leftPad(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
