// SinkCommand.swift - `carrier sink`: the test receiver, a thin front end over the Sink module

import ArgumentParser
import Sink

/// Parses `carrier sink` options into a `SinkConfiguration` and runs it until SIGINT or SIGTERM.
struct SinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sink",
        abstract: "Receive SMTP mail as fast as possible: the test receiver for load tests and Carrier's own tests.",
        discussion: """
            Accepts every message with "250 2.0.0 Ok: queued as ID" and forgets it, unless told to record, \
            store or refuse. ESMTP with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING, ENHANCEDSTATUSCODES \
            and DSN; STARTTLS or implicit TLS; AUTH PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-256 (also without \
            TLS: this is a test tool).

            Prints "carrier sink listening on ADDRESS (N threads)" on standard output once it listens, a \
            counter line on standard error each second, and a summary when SIGINT or SIGTERM stops it.

            Faults are deterministic: each decision hashes the seed, what is decided and a key (the \
            recipient address; the message's X-Carrier-Id, else its Message-ID, else its envelope; the \
            connection or data phase number), so a test can predict exactly which recipients and messages \
            are refused (Sink.SinkFaults documents the function). Tempfail and permfail rates apply to each \
            RCPT (451 4.3.0 / 550 5.1.1) and to each end of data (451 4.3.0 / 554 5.6.0).

            --record writes one JSON object per accepted message and line: time, connection, queue_id, \
            remote, helo, mail_from, rcpt_to, size, message_id, x_carrier_id, tls, auth.
            """
    )

    @Option(name: .customLong("listen"),
            help: ArgumentHelp("Address to listen on; repeatable. Port 0 picks a free port. (default: 127.0.0.1:2525)", valueName: "ip:port"))
    var listen: [String] = []

    @Option(help: ArgumentHelp("Loop threads, each listening with SO_REUSEPORT. (default: one per CPU)", valueName: "n"))
    var threads: Int?

    @Option(help: ArgumentHelp("Name in the greeting, the EHLO reply and the self-signed certificate. (default: this host's name)", valueName: "name"))
    var hostname: String?

    @Option(name: .customLong("max-size"), help: ArgumentHelp("Largest message in octets (SIZE); 0 for no limit.", valueName: "octets"))
    var maxSize = 50 << 20

    @Option(name: .customLong("max-recipients"), help: ArgumentHelp("Most recipients per message; more get 452 4.5.3.", valueName: "n"))
    var maxRecipients = 1_000

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate chain; offers STARTTLS (with --tls-key).", valueName: "file"))
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key of --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Flag(name: .customLong("tls-self-signed"), help: "Make a throwaway certificate for the hostname, localhost, 127.0.0.1 and ::1.")
    var tlsSelfSigned = false

    @Flag(name: .customLong("implicit-tls"), help: "TLS from the first byte (port 465 style) instead of STARTTLS.")
    var implicitTLS = false

    @Flag(name: .customLong("require-tls"), help: "Refuse mail until STARTTLS (530 5.7.0).")
    var requireTLS = false

    @Option(name: .customLong("auth"), help: ArgumentHelp("A user AUTH accepts; repeatable. 235 on success, 535 on failure.", valueName: "user:pass"))
    var auth: [String] = []

    @Flag(name: .customLong("require-auth"), help: "Refuse mail until AUTH (530 5.7.0).")
    var requireAuth = false

    @Option(help: ArgumentHelp("Seed of every fault decision.", valueName: "n"))
    var seed: UInt64 = 1

    @Option(name: .customLong("tempfail-rate"), help: ArgumentHelp("Share of messages refused with 451 4.3.0, half at RCPT and half at end of data.", valueName: "0..1"))
    var tempfailRate = 0.0

    @Option(name: .customLong("permfail-rate"), help: ArgumentHelp("Share of messages refused permanently, half at RCPT (550 5.1.1) and half at end of data (554 5.6.0).", valueName: "0..1"))
    var permfailRate = 0.0

    @Option(name: .customLong("greeting-421-rate"), help: ArgumentHelp("Share of connections greeted with 421 4.3.2 and closed.", valueName: "0..1"))
    var greeting421Rate = 0.0

    @Option(name: .customLong("disconnect-rate"), help: ArgumentHelp("Share of DATA/BDAT phases cut off by closing the connection.", valueName: "0..1"))
    var disconnectRate = 0.0

    @Option(name: .customLong("delay-ms"), help: ArgumentHelp("Hold every reply back this long (a slow server).", valueName: "ms"))
    var delayMs: UInt64 = 0

    @Option(name: .customLong("max-connections"), help: ArgumentHelp("Most open connections across threads; more get 421 4.7.0 and are closed.", valueName: "n"))
    var maxConnections: Int?

    @Option(name: .customLong("domain-rule"), help: ArgumentHelp(
        "Per-domain behaviour; repeatable. DOMAIN=CODE:RATE refuses that share of the domain's recipients "
            + "(slow.test=451:0.3); DOMAIN=rate:N/s (or /m, /h) answers 421 4.7.0 and closes above N per unit.",
        valueName: "rule"))
    var domainRule: [String] = []

    @Option(help: ArgumentHelp("Append one JSON line per accepted message to this file.", valueName: "file"))
    var record: String?

    @Option(help: ArgumentHelp("Store accepted messages in this Maildir (DIR/new).", valueName: "dir"))
    var maildir: String?

    @Option(name: .customLong("stats-json"), help: ArgumentHelp("Write the final statistics as JSON to this file at exit.", valueName: "file"))
    var statsJSON: String?

    @Flag(help: "No live counter line on standard error.")
    var quiet = false

    /// makeConfiguration - the options as a checked `SinkConfiguration`.
    func makeConfiguration() throws -> SinkConfiguration {
        do {
            var configuration = SinkConfiguration()
            if !listen.isEmpty { configuration.listen = try listen.map { text throws(SinkConfigurationError) in try SinkConfiguration.parseListen(text) } }
            if let threads { configuration.threads = threads }
            if let hostname { configuration.hostname = hostname }
            configuration.maximumMessageSize = maxSize
            configuration.maximumRecipients = maxRecipients
            switch (tlsCert, tlsKey, tlsSelfSigned) {
            case (nil, nil, false): break
            case (nil, nil, true): configuration.tls = .selfSigned
            case (let cert?, let key?, false): configuration.tls = .files(certificateChain: cert, privateKey: key)
            case (_, _, true): throw ValidationError("--tls-self-signed cannot be combined with --tls-cert/--tls-key")
            default: throw ValidationError("--tls-cert and --tls-key go together")
            }
            configuration.implicitTLS = implicitTLS
            configuration.requireTLS = requireTLS
            for text in auth {
                let (user, password) = try SinkConfiguration.parseUser(text)
                configuration.users[user] = password
            }
            configuration.requireAuthentication = requireAuth
            configuration.faults = SinkFaults(seed: seed)
            configuration.faults.tempfailRate = tempfailRate
            configuration.faults.permfailRate = permfailRate
            configuration.faults.greeting421Rate = greeting421Rate
            configuration.faults.disconnectRate = disconnectRate
            configuration.replyDelayMilliseconds = delayMs
            configuration.maximumConnections = maxConnections
            configuration.domainRules = try domainRule.map { text throws(SinkConfigurationError) in try SinkDomainRule(parsing: text) }
            configuration.recordPath = record
            configuration.maildirPath = maildir
            configuration.statisticsPath = statsJSON
            configuration.liveStatistics = !quiet
            try configuration.validate()
            return configuration
        } catch let error as SinkConfigurationError {
            throw ValidationError(error.description)
        }
    }

    func validate() throws {
        _ = try makeConfiguration()
    }

    func run() throws {
        /* A SinkError (a port in use, an unreadable certificate) prints as "Error: ...", without usage. */
        try SinkRunner.runUntilSignalled(try makeConfiguration())
    }
}
