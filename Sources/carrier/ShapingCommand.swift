// ShapingCommand.swift - `carrier shaping`: print the shipped shaping file, or check one

import ArgumentParser
import Carrier
import Scheduler
#if canImport(Glibc)
import Glibc
#endif

/// `carrier shaping`: the per-destination limits, retry, health and response rules.
struct ShapingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shaping",
        abstract: "Print the shipped shaping file, or check a shaping file and show what it sets.",
        discussion: """
            A shaping file is TOML: [defaults], [mx_suffix."..."], [site."..."] and [domain."..."] limits \
            (max_connections, initial_connections, max_messages_per_connection, \
            max_recipients_per_transaction, message_rate, message_burst, connection_rate, connection_burst), \
            [retry], [health] and [[rule]] response rules. An operator's file is laid over the shipped one.
            """
    )

    @Flag(name: .customLong("print-defaults"), help: "Print the shipped shaping file (documented) and exit.")
    var printDefaults = false

    @Option(help: ArgumentHelp("A shaping file to check.", valueName: "file"))
    var check: String?

    func run() throws {
        if printDefaults || check == nil {
            print(defaultShapingFile)
            return
        }
        let path = check!
        guard let text = readTextFile(path) else { throw ValidationError("cannot read \(path)") }
        let configuration: SchedulerConfiguration
        do {
            configuration = try ShapingFile.parse(text, file: path)
        } catch {
            throw ValidationError("\(error)")
        }
        let shaping = configuration.shaping
        print("\(path): OK")
        print("defaults: \(describe(shaping.defaults))")
        for (suffix, limits) in shaping.mxSuffixes.sorted(by: { $0.key < $1.key }) { print("mx_suffix \(suffix): \(describe(limits))") }
        for (site, limits) in shaping.sites.sorted(by: { $0.key < $1.key }) { print("site \(site): \(describe(limits))") }
        for (domain, limits) in shaping.domains.sorted(by: { $0.key < $1.key }) { print("domain \(domain): \(describe(limits))") }
        for (campaign, weight) in shaping.campaignWeights.sorted(by: { $0.key < $1.key }) { print("campaign \(campaign): weight \(weight)") }
        print("scheduler: domain_burst=\(configuration.domainBurst)")
        let retry = configuration.retry
        print("retry: first after \(retry.retryInterval) ms, doubling to \(retry.maxRetryInterval) ms, expire after \(retry.maxAge) ms, jitter \(retry.jitter)")
        let health = configuration.health
        print("health: pause after \(health.threshold) failures for \(health.cooldown) ms, up to \(health.maxCooldown) ms")
        for rule in configuration.rules { print("rule \(rule.name): \(rule.codeClass)xx containing \(rule.contains) -> \(rule.action) on \(rule.scope)") }
    }

    private func describe(_ limits: Limits) -> String {
        var parts: [String] = []
        if let value = limits.maxConnections { parts.append("max_connections=\(value)") }
        if let value = limits.initialConnections { parts.append("initial_connections=\(value)") }
        if let value = limits.maxMessagesPerConnection { parts.append("max_messages_per_connection=\(value)") }
        if let value = limits.maxRecipientsPerTransaction { parts.append("max_recipients_per_transaction=\(value)") }
        if let value = limits.messageRate { parts.append("message_rate=\(value)") }
        if let value = limits.messageBurst { parts.append("message_burst=\(value)") }
        if let value = limits.connectionRate { parts.append("connection_rate=\(value)") }
        if let value = limits.connectionBurst { parts.append("connection_burst=\(value)") }
        return parts.isEmpty ? "(nothing set)" : parts.joined(separator: " ")
    }
}
