// ServeRunner.swift - `carrier serve` as a process: open the spool, run the engine,
// answer signals, drain, report
//
// SIGINT, SIGTERM and SIGHUP are blocked before any thread exists, so every thread
// inherits the mask and the main thread takes them with sigtimedwait between its
// once-a-second looks at the engine. SIGTERM (and SIGINT) drain gracefully: no new
// transactions, the ones in flight finish and are recorded, then the spool closes.
// SIGHUP re-reads the configuration file, lays the command line's flags over it again
// (ServeOverrides) and applies its routes and shaping.

public import Delivery
import Injection
import Scheduler
public import Spool

#if canImport(Glibc)
import Glibc
#endif

/// How a serve run goes.
///
/// A value; safe to send between threads.
public struct ServeOptions: Sendable {
    public var settings: CarrierSettings
    /// The file the settings came from (SIGHUP reads it again); nil for flags only.
    public var configurationFile: String?
    /// The flags laid over the file, at start and again after each SIGHUP.
    public var overrides = ServeOverrides()
    /// Exit once nothing is ready or in flight (only recipients deferred into the future left).
    public var drain = false
    /// A progress line on standard error once a second.
    public var progress = true
    /// Give up draining after this many seconds (0: never).
    public var timeoutSeconds = 0
    /// Accept and queue mail (SMTP, HTTP) but deliver nothing, like Postfix's hold.
    public var hold = false

    public init(settings: CarrierSettings, configurationFile: String? = nil) {
        self.settings = settings
        self.configurationFile = configurationFile
    }
}

/// What a serve run did.
public struct ServeSummary: Sendable {
    public var status: ShardStatus
    public var seconds: Double
    public var drained: Bool
    public var recovery: [RecoveryReport]

    /// The per-domain totals as text, busiest first.
    public func text(top: Int = 20) -> String {
        var delivered = 0, deferred = 0, bounced = 0, expired = 0
        for counts in status.byDomain.values {
            delivered += counts.delivered; deferred += counts.deferred; bounced += counts.bounced; expired += counts.expired
        }
        var lines = ["carrier serve: \(fixed(seconds, 1)) s, delivered \(delivered), deferred \(deferred) (attempts), bounced \(bounced), expired \(expired); still queued: \(status.ready) ready, \(status.waiting) waiting"]
        let busiest = status.byDomain.sorted { ($0.value.delivered + $0.value.deferred, $1.key) > ($1.value.delivered + $1.value.deferred, $0.key) }
        for (domain, counts) in busiest.prefix(top) {
            let rate = seconds > 0 ? Double(counts.delivered) / seconds : 0
            lines.append("  " + pad(domain, 32) + "  delivered " + pad(counts.delivered, 7) + "  deferred " + pad(counts.deferred, 6)
                         + "  bounced " + pad(counts.bounced, 5) + "  expired " + pad(counts.expired, 5) + "  " + pad(fixed(rate, 1), 8, right: true) + " msg/s")
        }
        if status.byDomain.count > top { lines.append("  ... and \(status.byDomain.count - top) more domains") }
        return lines.joined(separator: "\n")
    }
}

/// Runs the engine for the command line.
public enum ServeRunner {
    /// run - serve until a signal (or, with `drain`, until drained); returns the summary.
    public static func run(_ options: ServeOptions) throws(EngineError) -> ServeSummary {
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let spool: Spool
        do { spool = try Spool(options.settings.spool) } catch { throw EngineError("cannot open the spool: \(error)") }
        defer { spool.close() }
        reportRecovery(spool, command: "carrier serve")
        let engine = options.hold ? nil : try DeliveryEngine(spool: spool, configuration: options.settings.engine)
        /* The listeners write `received` records to the engine's log (held: to a log of their own). */
        var log = engine?.deliveryLog
        if engine == nil, let path = options.settings.engine.logPath {
            do { log = try DeliveryLog(path: path, maxBytes: options.settings.engine.logMaxBytes) } catch { throw EngineError("delivery log: \(error)") }
        }
        defer { if engine == nil { log?.close() } }
        /* Injectors start once the engine is subscribed, so what they accept is picked up at once. */
        var smtp: SubmissionServer?
        var http: HTTPInjectionServer?
        do {
            if let listener = options.settings.submission {
                smtp = try SubmissionServer.start(listener, spool: spool, log: log)
                writeStandardError("carrier serve: SMTP listener on \(smtp!.addresses.map(\.description).joined(separator: ", "))\n")
            }
            if let listener = options.settings.http {
                http = try HTTPInjectionServer.start(listener, spool: spool, log: log, engine: engine, submission: smtp)
                writeStandardError("carrier serve: HTTP API on \(http!.addresses.map(\.description).joined(separator: ", "))\n")
            }
        } catch {
            smtp?.stop()
            engine?.stop()
            throw EngineError("\(error)")
        }
        let started = monotonicSeconds()
        var lastProgress = started
        var drained = false
        var status = engine?.status() ?? ShardStatus()
        running: while true {
            var timeout = timespec(tv_sec: 0, tv_nsec: options.drain ? 20_000_000 : 100_000_000)
            let signal = sigtimedwait(&signals, nil, &timeout)
            switch signal {
            case SIGINT, SIGTERM:
                writeStandardError("carrier serve: \(signal == SIGINT ? "SIGINT" : "SIGTERM"): draining the transactions in flight\n")
                break running
            case SIGHUP:
                if let engine { reload(engine, options) }
            default:
                break
            }
            status = engine?.status() ?? ShardStatus()
            let now = monotonicSeconds()
            if options.progress && now - lastProgress >= 1 {
                lastProgress = now
                var line = engine == nil ? "[" + pad(fixed(now - started, 1), 6, right: true) + "s] holding: nothing is delivered" : progressLine(status, seconds: now - started)
                if let smtp { line += "  |  smtp in: \(smtp.statistics.messagesAccepted) accepted, \(smtp.statistics.messagesRefused) refused" }
                writeStandardError(line + "\n")
            }
            if options.drain && engine != nil && DeliveryEngine.isDrained(status) {
                drained = true
                break
            }
            if options.timeoutSeconds > 0 && now - started > Double(options.timeoutSeconds) {
                writeStandardError("carrier serve: --timeout of \(options.timeoutSeconds) s reached\n")
                break
            }
        }
        /* Stop taking mail first (answering what is being stored), then drain the deliveries. */
        smtp?.stop()
        http?.stop()
        engine?.stop()
        status = engine?.status() ?? status
        return ServeSummary(status: status, seconds: monotonicSeconds() - started, drained: drained, recovery: spool.recoveryReports)
    }

    /// reload - read the configuration file again and apply its routes and shaping.
    private static func reload(_ engine: DeliveryEngine, _ options: ServeOptions) {
        guard let file = options.configurationFile else {
            writeStandardError("carrier serve: SIGHUP: no configuration file to read again (flags only)\n")
            return
        }
        do {
            engine.reload(try reloadedConfiguration(file, options))
            writeStandardError("carrier serve: SIGHUP: routes and shaping reloaded from \(file)\n")
        } catch {
            writeStandardError("carrier serve: SIGHUP: \(error); keeping the running configuration\n")
        }
    }

    /// reloadedConfiguration - the engine's configuration after a SIGHUP: `file` read
    /// again with the command line's flags laid over it, as at start; the delivery log
    /// stays the one opened at start.
    static func reloadedConfiguration(_ file: String, _ options: ServeOptions) throws(ConfigurationError) -> EngineConfiguration {
        var settings = try CarrierFile.load(file)
        try options.overrides.apply(to: &settings)
        var configuration = settings.engine
        configuration.logPath = options.settings.engine.logPath
        return configuration
    }

    /// progressLine - one line: totals so far and what is left.
    public static func progressLine(_ status: ShardStatus, seconds: Double) -> String {
        var delivered = 0, deferred = 0, bounced = 0, expired = 0
        for counts in status.byDomain.values {
            delivered += counts.delivered; deferred += counts.deferred; bounced += counts.bounced; expired += counts.expired
        }
        let rate = seconds > 0 ? Double(delivered) / seconds : 0
        return "[" + pad(fixed(seconds, 1), 6, right: true) + "s] delivered \(delivered) (\(fixed(rate, 0))/s)  deferred \(deferred)  bounced \(bounced)  expired \(expired)"
            + "  |  ready \(status.ready)  in flight \(status.inFlight)  waiting \(status.waiting)"
    }
}

/// monotonicSeconds - a clock for durations.
func monotonicSeconds() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

/// fixed - `value` with `digits` decimals.
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (abs(value) * scale).rounded()
    let whole = Int(rounded / scale)
    let fraction = Int(rounded) - whole * Int(scale)
    let sign = value < 0 && rounded > 0 ? "-" : ""
    guard digits > 0 else { return sign + String(whole) }
    let text = String(fraction)
    return sign + String(whole) + "." + String(repeating: "0", count: max(0, digits - text.count)) + text
}

/// pad - `value` right-aligned (numbers) or left-aligned (text) in `width` columns.
func pad(_ value: Int, _ width: Int) -> String { pad(String(value), width, right: true) }

func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - text.count))
    return right ? fill + text : text + fill
}

/// reportRecovery - what opening `spool` found damaged: torn tails cut, segments
/// quarantined, messages whose pending recipients were lost. Every command that opens the
/// spool for writing says it, because the next one to open it finds it clean.
public func reportRecovery(_ spool: Spool, command: String) {
    for report in spool.recoveryReports
    where !report.quarantined.isEmpty || report.truncatedBytes > 0 || !report.affectedMessages.isEmpty {
        writeStandardError("\(command): shard \(report.shard): truncated \(report.truncatedBytes) octets, quarantined \(report.quarantined), "
                           + "affected messages \(report.affectedMessages.map(\.description))\n")
    }
}
