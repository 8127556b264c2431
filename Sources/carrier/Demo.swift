// Demo.swift - `carrier demo`: what this machine's event core does over loopback

import ArgumentParser
import Carrier

/// Runs the loopback benchmark (plain TCP and TLS) and prints its figures.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the event core over loopback: echo round trips and bulk transfer, TCP and TLS."
    )

    @Option(help: "Concurrent echo connections.")
    var connections = 50

    @Option(help: "Round trips per connection.")
    var roundTrips = 2_000

    @Option(help: "Echo message size in bytes.")
    var messageSize = 64

    @Option(help: "Bulk transfer size in MiB.")
    var bulkMiB = 256

    @Option(help: "Runs of each measurement; the figures are medians.")
    var repetitions = 5

    func validate() throws {
        guard connections > 0, roundTrips > 0, messageSize > 0, bulkMiB > 0, repetitions > 0 else {
            throw ValidationError("every count must be positive")
        }
    }

    func run() throws {
        let report = try LoopbackReport.measure(
            connections: connections, roundTrips: roundTrips, messageSize: messageSize,
            bulkBytes: bulkMiB << 20, repetitions: repetitions)
        print(report.text)
    }
}
