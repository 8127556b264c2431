// DemoRunner.swift - `carrier demo`: a personalised campaign delivered to a local sink
//
// The README's first command. It starts the built-in sink on loopback with three
// receiving "providers" on three addresses (127.0.0.1-3): fast.demo takes all it
// gets; limited.demo takes 200 messages a second (the sink answers 421 above 220/s,
// so any overshoot would show); flaky.demo answers 451 to a third of its recipients
// (always the same ones). A 100,000-recipient personalised campaign goes into a spool
// under Queue/demo, the engine delivers it with a live per-domain display, and the
// demo checks what the sink received against what the engine reports.

public import Delivery
import EventCore
import Scheduler
import Sink
import Spool

#if canImport(Glibc)
import Glibc
#endif

/// The demo's settings.
///
/// A value; safe to send between threads.
public struct DemoOptions: Sendable {
    public var recipients = 100_000
    public var directory = "Queue/demo"
    /// The limited provider's rate, messages per second.
    public var limitedRate = 200
    /// Stop waiting for retries after this long (the flaky domain's refusals never end).
    public var retryWindowSeconds = 10.0
    public var live = true

    public init() {}
}

/// Runs the demo.
public enum DemoRunner {
    static let domains = ["fast.demo", "limited.demo", "flaky.demo"]

    /// run - the whole demo; returns the exit status (0 when every check held).
    public static func run(_ options: DemoOptions) throws(EngineError) -> Int32 {
        let started = monotonicSeconds()
        _ = system("rm -rf '\(options.directory)'")

        /* The sink: three addresses, one per provider; limits and faults per domain. */
        var sinkConfiguration = SinkConfiguration()
        sinkConfiguration.listen = (1...3).map { SocketAddress("127.0.0.\($0):0")! }
        sinkConfiguration.threads = 1
        sinkConfiguration.hostname = "sink.demo"
        sinkConfiguration.domainRules = [
            SinkDomainRule(domain: "flaky.demo", action: .refuse(code: 451, rate: 1.0 / 3)),
            SinkDomainRule(domain: "limited.demo", action: .rateLimit(count: options.limitedRate * 11 / 10, seconds: 1)),
        ]
        let sink: SinkServer
        do { sink = try SinkServer.start(sinkConfiguration) } catch { throw EngineError("the demo sink: \(error)") }
        defer { sink.stop() }

        /* The spool and the campaign: every recipient with a name and a code of its own. */
        let spool: Spool
        do { spool = try Spool(SpoolConfiguration(directory: options.directory)) } catch { throw EngineError("the spool: \(error)") }
        defer { spool.close() }
        var planned: [String: Int] = [:]
        let loadStart = monotonicSeconds()
        let writer = spool.campaign(sender: "news@carrier.demo", body: Array(demoTemplate.utf8),
                                    metadata: MessageMetadata(campaign: "demo-newsletter", priority: .bulk))
        do {
            for n in 0..<options.recipients {
                let domain = n % 100 < 87 ? domains[0] : n % 100 < 90 ? domains[1] : domains[2]
                planned[domain, default: 0] += 1
                try writer.add(NewRecipient("reader\(n)@\(domain)", variables: [("name", "Reader \(n)"), ("code", String(n &* 7919 % 100_000))]))
            }
            _ = try writer.finish()
        } catch {
            throw EngineError("enqueue: \(error)")
        }
        let loadSeconds = monotonicSeconds() - loadStart
        print("carrier demo: \(options.recipients) personalised recipients queued in \(options.directory) in \(fixed(loadSeconds, 2)) s (fsync)")

        /* The engine: one route per provider, their limits, retries compressed to seconds. */
        var configuration = EngineConfiguration()
        configuration.hostname = "carrier.demo"
        configuration.dns = nil
        configuration.logPath = options.directory + "/delivery.log"
        configuration.routes = RouteTable(domains.enumerated().map { index, domain in
            Route(domain: domain, hops: [NextHop(host: sink.addresses[index].ip.description, port: sink.addresses[index].port)])
        })
        var scheduler: SchedulerConfiguration
        do { scheduler = try ShapingFile.defaults() } catch { throw EngineError("\(error)") }
        var limited = Limits(messageRate: Rate(options.limitedRate, per: 1), messageBurst: 10)
        limited.maxConnections = 4
        scheduler = SchedulerConfiguration(
            shaping: Shaping(defaults: scheduler.shaping.defaults, mxSuffixes: scheduler.shaping.mxSuffixes,
                             sites: scheduler.shaping.sites, domains: ["limited.demo": limited]),
            retry: RetryPolicy(retryInterval: 2_000, maxRetryInterval: 8_000, maxAge: 86_400_000, jitter: 0.2),
            health: scheduler.health, rules: scheduler.rules, domainBurst: scheduler.domainBurst)
        configuration.scheduler = scheduler
        let engine = try DeliveryEngine(spool: spool, configuration: configuration)

        /* Deliver, showing each provider once a second. */
        let deliveryStart = monotonicSeconds()
        var status = engine.status()
        var lastShown = 0.0
        var firstDrained: Double?
        var shownLines = 0
        var previous: [String: Int] = [:]
        var finishedAt: [String: Double] = [:]
        while true {
            usleep(100_000)
            status = engine.status()
            let now = monotonicSeconds() - deliveryStart
            for domain in domains where finishedAt[domain] == nil && (status.byDomain[domain]?.delivered ?? 0) == planned[domain] {
                finishedAt[domain] = now
            }
            if options.live && isatty(1) != 0 && now - lastShown >= 1 {
                lastShown = now
                if shownLines > 0 { print("\u{1B}[\(shownLines)A", terminator: "") }
                let lines = display(status, planned: planned, seconds: now, previous: previous)
                previous = status.byDomain.mapValues(\.delivered)
                for line in lines { print("\u{1B}[2K" + line) }
                shownLines = lines.count
            }
            let finished = status.byDomain.values.reduce(0) { $0 + $1.delivered + $1.bounced + $1.expired }
            if DeliveryEngine.isDrained(status) {
                /* Only deferred recipients are left: give their retries a window, then stop. */
                if firstDrained == nil { firstDrained = now }
                if status.waiting == 0 || now - firstDrained! >= options.retryWindowSeconds { break }
            } else if finished == options.recipients {
                break
            }
            if now > 110 { break }
        }
        engine.stop()
        let deliverySeconds = monotonicSeconds() - deliveryStart
        sink.stop()
        status = engine.status()
        let statistics = sink.statistics

        /* The summary, and what must hold. */
        print("")
        print("summary (\(fixed(deliverySeconds, 1)) s of delivery):")
        var delivered = 0, deferred = 0, bounced = 0
        for domain in domains {
            let counts = status.byDomain[domain] ?? DomainCounters()
            delivered += counts.delivered
            deferred += counts.deferred
            bounced += counts.bounced + counts.expired
            let seconds = finishedAt[domain] ?? deliverySeconds
            let rate = counts.delivered > 0 ? Double(counts.delivered) / max(0.001, seconds) : 0
            let when = finishedAt[domain].map { "all delivered after " + fixed($0, 1) + " s" } ?? "retrying until the end"
            print("  " + pad(domain, 13) + " queued " + pad(planned[domain] ?? 0, 6) + "  delivered " + pad(counts.delivered, 6)
                  + "  temporary failures " + pad(counts.deferred, 6) + "  bounced " + pad(counts.bounced, 3)
                  + "  " + pad(fixed(rate, 0), 6, right: true) + " msg/s, " + when)
        }
        let stillDeferred = status.waiting + status.ready
        print("  delivered \(delivered), still deferred \(stillDeferred) (flaky.demo refuses the same third every time; they would keep retrying), bounced \(bounced)")
        print("  the sink accepted \(statistics.messagesAccepted) messages and answered \(statistics.replies4xx) 4xx replies")
        print("  delivery log: \(configuration.logPath!); spool: \(options.directory) (carrier queue stats --spool \(options.directory))")

        var problems: [String] = []
        if statistics.messagesAccepted != delivered { problems.append("the sink accepted \(statistics.messagesAccepted) messages, the engine counted \(delivered) deliveries") }
        if bounced != 0 { problems.append("\(bounced) recipients bounced; none should") }
        if delivered + stillDeferred != options.recipients { problems.append("delivered + deferred = \(delivered + stillDeferred), not \(options.recipients)") }
        if (status.byDomain["fast.demo"]?.delivered ?? 0) != planned["fast.demo"] { problems.append("fast.demo was not fully delivered") }
        if (status.byDomain["limited.demo"]?.delivered ?? 0) != planned["limited.demo"] { problems.append("limited.demo was not fully delivered") }
        print(problems.isEmpty ? "carrier demo: every recipient is delivered or correctly deferred (\(fixed(monotonicSeconds() - started, 1)) s in all)"
                               : "carrier demo: FAILED: " + problems.joined(separator: "; "))
        return problems.isEmpty ? 0 : 1
    }

    /// display - one line per provider: progress bar, counts and rate.
    static func display(_ status: ShardStatus, planned: [String: Int], seconds: Double, previous: [String: Int]) -> [String] {
        var lines = ["delivering for \(fixed(seconds, 0)) s: ready \(status.ready), in flight \(status.inFlight), waiting to retry \(status.waiting)"]
        for domain in domains {
            let counts = status.byDomain[domain] ?? DomainCounters()
            let total = max(1, planned[domain] ?? 1)
            let filled = min(30, counts.delivered * 30 / total)
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
            let rate = counts.delivered - (previous[domain] ?? 0)
            lines.append("  " + pad(domain, 13) + " [" + bar + "] " + pad(counts.delivered, 6) + "/" + pad(String(total), 6, right: true)
                         + "  " + pad(rate, 6) + " msg/s now   4xx so far " + pad(counts.deferred, 6))
        }
        return lines
    }

    static let demoTemplate = """
    From: Carrier Demo <news@carrier.demo>
    Subject: Hello {{name}}, your code is {{code}}
    MIME-Version: 1.0
    Content-Type: multipart/alternative; boundary="demo-boundary"

    --demo-boundary
    Content-Type: text/plain; charset=utf-8

    Hello {{name}},

    your personal code is {{code}}. This message came through Carrier's demo.
    --demo-boundary
    Content-Type: text/html; charset=utf-8

    <p>Hello <b>{{name}}</b>,</p><p>your personal code is <code>{{code}}</code>.</p>
    --demo-boundary--

    """.replacingNewlines()
}

extension String {
    /// replacingNewlines - LF line ends as CRLF.
    func replacingNewlines() -> String {
        split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
    }
}
