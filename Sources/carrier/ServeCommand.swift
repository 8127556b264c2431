// ServeCommand.swift - `carrier serve`: the delivery daemon (or a one-off drain)

import ArgumentParser
import Carrier
import Delivery
import Spool

/// `carrier serve`: deliver what the spool holds, from a config file or flags.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the delivery engine over a spool.",
        discussion: """
        With --config, everything comes from carrier.toml (see the README); flags given as well \
        override it. Without it, --spool and --route describe a one-off run. SIGTERM drains \
        gracefully; SIGHUP re-reads the config file's routes and shaping.
        """
    )

    @Option(help: ArgumentHelp("carrier.toml to read.", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("The spool's folder (default Queue).", valueName: "dir"))
    var spool: String?

    @Option(name: .customLong("route"), help: ArgumentHelp("A static route, DOMAIN=HOST:PORT[,HOST:PORT...]; * for every domain. Repeatable.", valueName: "route"))
    var routes: [String] = []

    @Option(help: ArgumentHelp("A shaping file (limits, retries, rules) over the shipped defaults.", valueName: "file"))
    var shaping: String?

    @Option(help: ArgumentHelp("The delivery log (JSON Lines).", valueName: "file"))
    var log: String?

    @Option(name: .customLong("dns"), help: ArgumentHelp("DNS server for MX lookups (repeatable; default /etc/resolv.conf).", valueName: "addr"))
    var dnsServers: [String] = []

    @Flag(help: "No MX lookups: every domain needs a route.")
    var noDNS = false

    @Option(help: ArgumentHelp("The port MX hosts are reached on.", valueName: "port"))
    var mxPort: UInt16?

    @Option(help: ArgumentHelp("The EHLO name.", valueName: "name"))
    var hostname: String?

    @Option(name: .customLong("smtp-listen"), help: ArgumentHelp("Accept mail over SMTP on ADDR:PORT (repeatable); loopback may send without AUTH.", valueName: "addr"))
    var smtpListen: [String] = []

    @Option(name: .customLong("http-listen"), help: ArgumentHelp("Serve the HTTP injection API on ADDR:PORT (repeatable).", valueName: "addr"))
    var httpListen: [String] = []

    @Option(name: .customLong("http-token"), help: ArgumentHelp("A bearer token the HTTP API accepts (repeatable; at least 16 characters).", valueName: "token"))
    var httpTokens: [String] = []

    @Flag(help: "Accept and queue mail from the listeners but deliver nothing (like Postfix's hold); run again without it to deliver.")
    var hold = false

    @Flag(help: "Deliver everything due, then exit 0 once only recipients deferred into the future are left.")
    var drain = false

    @Option(help: ArgumentHelp("With --drain: give up after this many seconds (exit 1).", valueName: "seconds"))
    var timeout = 0

    @Flag(help: "No progress line.")
    var quiet = false

    func run() throws {
        var overrides = ServeOverrides()
        overrides.spoolDirectory = spool
        overrides.routes = routes
        overrides.shapingFile = shaping
        overrides.logPath = log
        overrides.dnsServers = dnsServers
        overrides.noDNS = noDNS
        overrides.mxPort = mxPort
        overrides.hostname = hostname
        overrides.smtpListen = smtpListen
        overrides.httpListen = httpListen
        overrides.httpTokens = httpTokens
        var settings: CarrierSettings
        if let config {
            do { settings = try CarrierFile.load(config) } catch { throw ValidationError("\(error)") }
        } else {
            settings = CarrierSettings()
            do { settings.engine.scheduler = try ShapingFile.defaults() } catch { throw ValidationError("\(error)") }
        }
        do { try overrides.apply(to: &settings) } catch { throw ValidationError("\(error)") }
        var options = ServeOptions(settings: settings, configurationFile: config)
        options.overrides = overrides
        options.drain = drain
        options.hold = hold
        if hold && drain { throw ValidationError("--hold and --drain exclude each other") }
        options.progress = !quiet
        options.timeoutSeconds = timeout
        let summary: ServeSummary
        do { summary = try ServeRunner.run(options) } catch { throw ValidationError("\(error)") }
        print(summary.text())
        if let path = settings.engine.logPath { print("delivery log: \(path)") }
        if drain && !summary.drained { throw ExitCode(1) }
    }
}
