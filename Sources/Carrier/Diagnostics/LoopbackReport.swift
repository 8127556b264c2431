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
    public let tcp: Figures
    public let tls: Figures

    /// TLS bulk throughput as a fraction of plain TCP's.
    public var tlsBulkRatio: Double { tls.bulkMiBPerSecond / tcp.bulkMiBPerSecond }

    /// measure - run both transports, one after the other, with the same settings.
    public static func measure(connections: Int, roundTrips: Int, messageSize: Int, bulkBytes: Int) throws -> LoopbackReport {
        func figures(_ transport: LoopbackBenchmark.Transport) throws -> Figures {
            let rig = try LoopbackBenchmark.start(transport: transport)
            defer { rig.stop() }
            let session = try rig.openEchoSession(connections: connections)
            /* A short warm-up, then the measured runs. */
            _ = rig.roundTrips(session, perConnection: max(1, roundTrips / 10), messageSize: messageSize)
            let echo = rig.roundTrips(session, perConnection: roundTrips, messageSize: messageSize)
            let connects = try rig.connections(1_000, concurrency: 4)
            _ = try rig.bulk(bytes: min(bulkBytes, 16 << 20))
            let bulk = try rig.bulk(bytes: bulkBytes)
            return Figures(
                transport: transport,
                roundTripsPerSecond: Double(connections * roundTrips) / (Double(echo) / 1e9),
                connectionsPerSecond: 1_000 / (Double(connects) / 1e9),
                bulkMiBPerSecond: Double(bulkBytes) / Double(1 << 20) / (Double(bulk) / 1e9))
        }
        return LoopbackReport(connections: connections, messageSize: messageSize,
                              tcp: try figures(.tcp), tls: try figures(.tls))
    }

    /// The report as aligned text.
    public var text: String {
        func row(_ f: Figures) -> String {
            let name = f.transport.rawValue.uppercased() + (f.transport == .tcp ? "  " : "  ")
            return "  \(name) \(format(f.roundTripsPerSecond, 0).leftPad(9)) round trips/s  "
                + "\(format(f.connectionsPerSecond, 0).leftPad(7)) connections/s\(f.transport == .tls ? " (full handshakes)" : "")  "
                + "\(format(f.bulkMiBPerSecond, 0).leftPad(6)) MiB/s bulk"
        }
        return """
        Carrier event core over loopback (\(connections) echo connections, \(messageSize)-byte messages; one server and one client loop thread)
        \(row(tcp))
        \(row(tls))
          TLS bulk throughput is \(format(tlsBulkRatio * 100, 1))% of plain TCP
        """
    }
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
