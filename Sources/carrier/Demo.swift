// Demo.swift - `carrier demo`: the campaign demo, and the event core over loopback

import ArgumentParser
import Carrier

/// `carrier demo`: a 100,000-recipient personalised campaign delivered to a local sink.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deliver a 100,000-recipient personalised campaign to three local test providers, live.",
        subcommands: [DemoCampaign.self, LoopbackDemo.self],
        defaultSubcommand: DemoCampaign.self
    )
}

/// The campaign demo (the default).
struct DemoCampaign: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "campaign",
        abstract: "Deliver a personalised campaign to fast.demo, limited.demo (200/s) and flaky.demo (451 to a third)."
    )

    @Option(help: ArgumentHelp("Recipients in the campaign.", valueName: "n"))
    var recipients = 100_000

    @Option(help: ArgumentHelp("The spool's folder (emptied first).", valueName: "dir"))
    var spool = "Queue/demo"

    @Flag(help: "No live display.")
    var quiet = false

    func run() throws {
        var options = DemoOptions()
        options.recipients = recipients
        options.directory = spool
        options.live = !quiet
        let status: Int32
        do { status = try DemoRunner.run(options) } catch { throw ValidationError("\(error)") }
        if status != 0 { throw ExitCode(status) }
    }
}

/// Runs the loopback benchmark (plain TCP and TLS) and prints its figures.
struct LoopbackDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loopback",
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
