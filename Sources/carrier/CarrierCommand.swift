// CarrierCommand.swift - the `carrier` command: a thin front end over the Carrier module

import ArgumentParser
import Carrier

@main
struct CarrierCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "carrier",
        abstract: "A high-throughput bulk SMTP delivery engine.",
        subcommands: [
            Demo.self,
            ServeCommand.self,
            CampaignCommand.self,
            SendCommand.self,
            SinkCommand.self,
            BlastCommand.self,
            QueueCommand.self,
            ShapingCommand.self,
            HashPasswordCommand.self,
        ]
    )
}
