// BlastCommand.swift - `carrier blast`: load-test a receiving MTA and report honest latencies

import ArgumentParser
import Blast

#if canImport(Glibc)
import Glibc
#endif

/// Parses the options into a `BlastConfiguration`, runs it, prints and writes the report.
struct BlastCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blast",
        abstract: "Load-test a receiving MTA: send as fast as it accepts (or at a fixed rate) and report latency percentiles.",
        discussion: """
        Closed loop (default): each connection keeps up to --window messages in flight when the \
        server offers PIPELINING (one otherwise) and sends the next as soon as one completes. \
        Open loop (--rate): message n is due at start + n/rate whatever the replies; due messages \
        queue for a free connection and latency counts from the due time, so a target that falls \
        behind shows in the percentiles (coordinated omission corrected, as wrk2 does).

        Envelope: message n (0, 1, 2, ...) goes to --recipients addresses user<k>@<rcpt-domain> \
        with k = n*recipients + j, j = 0..recipients-1; every recipient of a run is used once. \
        Generated messages (--size) carry From, To, Subject, Date, Message-ID and \
        X-Carrier-Id: blast-<n>; a --message file has every {{n}} replaced by n.

        Errors counted: failed connections (by type), recipients refused with 4xx or 5xx, \
        recipients cut off by a lost connection, and in open loop the recipients of overdue \
        messages. The error ratio divides them by the recipients attempted or overdue plus the \
        failed connections; above --max-error-ratio the exit status is 1.

        --duration ends the run at the deadline: messages still in flight are cut off and, like \
        those never handed over, reported unsent. In open loop every message due before the \
        deadline counts: one without a final reply is overdue, an error timed end to end up to \
        the deadline, so a backlog shows in the percentiles.
        """
    )

    // Target.
    @Option(name: .customLong("to"), help: ArgumentHelp("Send to HOST:PORT (a name, an IPv4 address or [IPv6]).", valueName: "host:port"))
    var to: String?

    @Option(help: ArgumentHelp("Send to the MX hosts of DOMAIN, lowest preference first.", valueName: "domain"))
    var mx: String?

    @Option(help: "Port for --mx, or for --to without a port (default 25).")
    var port: UInt16?

    @Option(name: .customLong("dns-server"), help: ArgumentHelp("DNS server IP[:PORT] for --to NAME and --mx (repeatable).", valueName: "ip:port"))
    var dnsServers: [String] = []

    // Load shape.
    @Option(help: "Connections kept open at once.")
    var connections = 10

    @Option(help: "Loop threads (default: the number of processors).")
    var threads: Int?

    @Option(help: "Messages to send (default 1000 unless --duration is given).")
    var messages: Int?

    @Option(help: ArgumentHelp("Stop after this long, counted once the connections are up: 60s, 2m, 1h, 500ms.", valueName: "duration"))
    var duration: String?

    @Option(help: ArgumentHelp("Send at this fixed rate (open loop): 500/s, 3000/m.", valueName: "rate"))
    var rate: String?

    @Option(help: "Generated message size in octets (default 1000).")
    var size: Int?

    @Option(help: ArgumentHelp("Send this message file instead; {{n}} becomes the message number.", valueName: "file.eml"))
    var message: String?

    @Option(help: "Recipients per message.")
    var recipients = 1

    @Option(help: "Envelope sender and From address.")
    var from = "blast@example.test"

    @Option(name: .customLong("rcpt-domain"), help: "Recipient domain (default: the --mx domain, else example.test).")
    var rcptDomain: String?

    @Option(help: "EHLO name.")
    var helo = "blast.example.test"

    @Option(name: .customLong("messages-per-connection"), help: "QUIT and reconnect after this many messages.")
    var messagesPerConnection: Int?

    @Option(name: .customLong("source"), help: ArgumentHelp("Local address to connect from (repeatable; round-robin).", valueName: "ip"))
    var sources: [String] = []

    @Option(help: "Messages in flight per pipelining connection.")
    var window = 4

    // Protocol.
    @Flag(help: "Require STARTTLS.")
    var starttls = false

    @Flag(help: "Implicit TLS from the first byte (port 465 style).")
    var tls = false

    @Flag(help: "Do not verify the server's certificate.")
    var insecure = false

    @Option(help: ArgumentHelp("Verify against the CAs in this PEM file instead of the system roots.", valueName: "file"))
    var ca: String?

    @Option(name: .customLong("server-name"), help: "Name the certificate must carry (default: the target host).")
    var serverName: String?

    @Option(help: ArgumentHelp("AUTH as MECH:user:pass; MECH is PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256 or XOAUTH2 (pass = token).", valueName: "mech:user:pass"))
    var auth: String?

    @Flag(name: .customLong("no-pipelining"), help: "Do not pipeline, even when the server offers PIPELINING.")
    var noPipelining = false

    @Flag(help: "Send bodies with BDAT when the server offers CHUNKING.")
    var chunking = false

    @Option(help: ArgumentHelp("Limit for a connect, a TLS handshake and every reply.", valueName: "duration"))
    var timeout = "30s"

    // Output.
    @Option(help: ArgumentHelp("Write the machine-readable report here.", valueName: "file"))
    var json: String?

    @Option(help: ArgumentHelp("Write a self-contained HTML report with charts here.", valueName: "file.html"))
    var report: String?

    @Option(name: .customLong("max-error-ratio"), help: "Exit with status 1 when the error ratio is above this.")
    var maxErrorRatio = 0.01

    @Flag(help: "No progress line.")
    var quiet = false

    func validate() throws {
        guard (to == nil) != (mx == nil) else { throw ValidationError("give exactly one of --to HOST:PORT and --mx DOMAIN") }
        guard !(starttls && tls) else { throw ValidationError("--starttls and --tls exclude each other") }
        guard !(size != nil && message != nil) else { throw ValidationError("--size and --message exclude each other") }
        guard !(insecure && ca != nil) else { throw ValidationError("--insecure and --ca exclude each other") }
        _ = try blastConfiguration()
    }

    func run() throws {
        let configuration = try blastConfiguration()
        BlastRunner.stopOnInterrupt()

        /* On a terminal the progress line redraws itself; in a log it is one line per second. */
        let terminal = isatty(2) != 0
        var drawn = false
        let result = try BlastRunner.run(configuration) { progress in
            guard !quiet else { return }
            writeError(terminal ? "\r" + progress.line + "\u{1B}[K" : progress.line + "\n")
            drawn = true
        }
        if terminal && drawn { writeError("\n") }
        print(result.text, terminator: "")
        if let json { try BlastFiles.write(result.json, to: json) }
        if let report { try BlastFiles.write(result.html, to: report) }
        if let reason = result.failureReason {
            writeError("carrier blast: \(reason)\n")
            throw ExitCode(1)
        }
    }

    /// writeError - text to standard error, unbuffered.
    private func writeError(_ text: String) {
        var text = text
        text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// blastConfiguration - the options as a checked `BlastConfiguration`.
    private func blastConfiguration() throws -> BlastConfiguration {
        do {
            let target = try mx.map { BlastTarget.mx(domain: $0, port: port ?? 25) }
                ?? BlastArguments.target(to ?? "", defaultPort: port ?? 25)
            var configuration = BlastConfiguration(target: target)
            configuration.dnsServers = dnsServers
            configuration.connections = connections
            configuration.threads = threads ?? BlastConfiguration.processorCount
            configuration.durationNanoseconds = try duration.map { try BlastArguments.duration($0) }
            configuration.messages = messages ?? (duration == nil ? 1000 : nil)
            configuration.rate = try rate.map { try BlastArguments.rate($0) }
            if let message {
                configuration.content = .template(try BlastFiles.read(message))
            } else {
                configuration.content = .generated(size: size ?? 1000)
            }
            configuration.recipientsPerMessage = recipients
            configuration.sender = from
            configuration.recipientDomain = rcptDomain ?? mx ?? "example.test"
            configuration.heloName = helo
            configuration.messagesPerConnection = messagesPerConnection
            configuration.sources = try sources.map { try BlastArguments.source($0) }
            configuration.window = window
            configuration.security = starttls ? .startTLS : tls ? .implicitTLS : .plaintext
            configuration.verifyPeer = !insecure
            if let ca { configuration.trustRoots = .file(ca) }
            configuration.serverName = serverName
            configuration.authentication = try auth.map { try BlastArguments.authentication($0) }
            configuration.pipelining = !noPipelining
            configuration.chunking = chunking
            configuration.timeoutMilliseconds = max(1, try BlastArguments.duration(timeout) / 1_000_000)
            configuration.maxErrorRatio = maxErrorRatio
            try configuration.validate()
            return configuration
        } catch {
            throw ValidationError("\(error)")
        }
    }
}
