// MetricsExposition.swift - what `GET /metrics` reports, as Prometheus text
//
// The text exposition format 0.0.4, which Prometheus, VictoriaMetrics, the
// OpenTelemetry collector and Grafana Agent scrape: per metric a `# HELP` and a
// `# TYPE` line, then its samples, one per line. Written by hand: the format is a
// few rules, where a client library would be a package dependency with a registry
// of its own.
//
// Rendering is a pure function of `MetricsFigures`, so its exact text is tested;
// the HTTP handler gathers the figures (HTTPInjectionServer.swift). The engine's
// metrics are absent when no engine runs (`carrier serve --hold`), a listener's
// when it is not configured; the spool's are always there.
//
// Per-domain series are capped. A series per domain ever seen would let one
// campaign to many small domains grow every scrape (and the server's memory)
// without bound, so the busiest domains keep series of their own and the rest are
// summed under domain="other". Ranking by totals since start keeps the set stable
// once traffic has settled; a domain that enters or leaves it makes its own series
// and "other" jump, which Prometheus' rate() reads as a counter reset.

public import Delivery
public import Spool

/// What `GET /metrics` reports: a plain copy of the counters at one moment.
///
/// A value; safe to send between threads. Counters count from the start of
/// `carrier serve`; the spool's gauges describe what is on disk.
public struct MetricsFigures: Sendable {
    public var startedMilliseconds: Int64 = 0       /* when serve started, ms since the epoch */
    public var nowMilliseconds: Int64 = 0           /* when these figures were taken */
    public var smtp: SubmissionStatistics?          /* nil: no SMTP listener */
    public var http = HTTPInjectionStatistics()
    public var engine: ShardStatus?                 /* nil: no engine runs (--hold) */
    public var deliveryConnections = 0              /* open or being opened, every site and shard */
    public var spool = ShardCounts()                /* pending, messages, segments, bytes are read */

    public init() {}
}

/// Renders `MetricsFigures` in Prometheus' text exposition format.
///
/// Pure functions of their input; safe from any thread.
public enum MetricsExposition {
    /// The `Content-Type` of the text.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
    /// Domains with series of their own; the rest are summed under domain="other".
    public static let defaultDomainLimit = 100

    /// text - `figures` as exposition text; at most `domainLimit` domains (and "other")
    /// per per-domain metric.
    public static func text(_ figures: MetricsFigures, domainLimit: Int = defaultDomainLimit) -> String {
        var out = ExpositionWriter()

        /* The process. */
        out.metric("carrier_start_time_seconds", .gauge,
                   "Start time of carrier serve (when its HTTP API began listening), in seconds since the Unix epoch.",
                   seconds(figures.startedMilliseconds))
        out.metric("carrier_uptime_seconds", .gauge, "Seconds since carrier serve started (its HTTP API began listening).",
                   seconds(figures.nowMilliseconds - figures.startedMilliseconds))
        out.metric("carrier_delivery_held", .gauge,
                   "1 when carrier serve runs with --hold (mail is accepted and queued, nothing is delivered), else 0.",
                   figures.engine == nil ? "1" : "0")

        /* The injectors: the SMTP listener when there is one, the HTTP API (which answers this). */
        if let smtp = figures.smtp {
            out.metric("carrier_smtp_connections_total", .counter, "Connections the SMTP listener admitted.", smtp.connections)
            out.metric("carrier_smtp_connections_refused_total", .counter,
                       "Connections the SMTP listener refused with 421 (over max_connections or max_connections_per_client).",
                       smtp.connectionsRefused)
            out.metric("carrier_smtp_connections_open", .gauge, "Connections open to the SMTP listener.", smtp.connectionsOpen)
            out.metric("carrier_smtp_messages_accepted_total", .counter,
                       "Messages the SMTP listener stored and answered 250.", smtp.messagesAccepted)
            out.metric("carrier_smtp_messages_refused_total", .counter,
                       "Messages the SMTP listener refused after their data (bad content, or storing failed).", smtp.messagesRefused)
            out.metric("carrier_smtp_recipients_accepted_total", .counter,
                       "Recipients of the messages the SMTP listener accepted.", smtp.recipientsAccepted)
            out.metric("carrier_smtp_recipients_refused_total", .counter,
                       "Recipients of the messages the SMTP listener refused after their data (RCPT commands refused on their own are not counted).",
                       smtp.recipientsRefused)
        }
        out.metric("carrier_http_messages_accepted_total", .counter,
                   "Injection requests (one message each) the HTTP API stored and answered 200.", figures.http.messagesAccepted)
        out.metric("carrier_http_messages_refused_total", .counter,
                   "Injection requests the HTTP API refused (bad token or body, too large, too slow, storing failed).",
                   figures.http.messagesRefused)
        out.metric("carrier_http_recipients_accepted_total", .counter,
                   "Recipients of the messages the HTTP API accepted.", figures.http.recipientsAccepted)
        out.metric("carrier_http_recipients_refused_total", .counter,
                   "Recipients of the messages the HTTP API read and then refused (a request refused before its body was parsed adds none).",
                   figures.http.recipientsRefused)

        /* The engine, when one runs. */
        if let engine = figures.engine {
            var total = DomainCounters()
            for counts in engine.byDomain.values { total.add(counts) }
            out.metric("carrier_recipients_delivered_total", .counter, "Recipients delivered.", total.delivered)
            out.metric("carrier_recipients_deferred_total", .counter,
                       "Temporary delivery failures (attempts: a recipient deferred twice counts twice).", total.deferred)
            out.metric("carrier_recipients_bounced_total", .counter, "Recipients bounced.", total.bounced)
            out.metric("carrier_recipients_expired_total", .counter,
                       "Recipients expired (past max_age or their message's expiry time).", total.expired)
            let domains = cappedDomains(engine.byDomain, limit: domainLimit)
            let cap = " The \(domainLimit) domains with the most outcomes have series of their own, the rest are summed under domain=\"other\"."
            let perDomain: [(String, String, KeyPath<DomainCounters, Int>)] = [
                ("carrier_domain_recipients_delivered_total", "Recipients delivered, by recipient domain.", \.delivered),
                ("carrier_domain_recipients_deferred_total", "Temporary delivery failures (attempts), by recipient domain.", \.deferred),
                ("carrier_domain_recipients_bounced_total", "Recipients bounced, by recipient domain.", \.bounced),
                ("carrier_domain_recipients_expired_total", "Recipients expired, by recipient domain.", \.expired),
            ]
            for (name, help, field) in perDomain {
                out.family(name, .counter, help + cap)
                for (domain, counts) in domains { out.sample(name, label: ("domain", domain), String(counts[keyPath: field])) }
            }
            out.metric("carrier_delivery_connections_open", .gauge,
                       "Outgoing SMTP connections open or being opened, over every site.", figures.deliveryConnections)
            out.metric("carrier_delivery_transactions_in_flight", .gauge, "SMTP transactions started and not finished.", engine.inFlight)
            out.metric("carrier_delivery_recipients_ready", .gauge, "Recipients the scheduler may send now.", engine.ready)
            out.metric("carrier_delivery_recipients_waiting", .gauge,
                       "Recipients deferred to a later time or held by a suspension.", engine.waiting)
        }

        /* The spool. */
        out.metric("carrier_spool_recipients_pending", .gauge, "Recipients in the spool without a final outcome.", figures.spool.pending)
        out.metric("carrier_spool_messages_pending", .gauge,
                   "Messages in the spool with recipients pending (a message stored in several shards counts in each).",
                   figures.spool.messages)
        out.metric("carrier_spool_segments", .gauge, "Segment files of the spool.", figures.spool.segments)
        out.metric("carrier_spool_bytes", .gauge, "Size of the spool's segment files, in bytes.", figures.spool.bytes)
        return out.text
    }

    /// cappedDomains - the `limit` domains with the most outcomes (ties by name), busiest
    /// first, then "other" summing the rest when there are any. A domain named "other"
    /// joins that sum, so no two series share a label.
    static func cappedDomains(_ byDomain: [String: DomainCounters], limit: Int) -> [(String, DomainCounters)] {
        func outcomes(_ counts: DomainCounters) -> Int { counts.delivered + counts.deferred + counts.bounced + counts.expired }
        let ranked = byDomain.filter { $0.key != "other" }
            .sorted { (outcomes($0.value), $1.key) > (outcomes($1.value), $0.key) }
        var result = ranked.prefix(max(0, limit)).map { ($0.key, $0.value) }
        let rest = ranked.dropFirst(max(0, limit)).map(\.value) + (byDomain["other"].map { [$0] } ?? [])
        if !rest.isEmpty {
            var other = DomainCounters()
            for counts in rest { other.add(counts) }
            result.append(("other", other))
        }
        return result
    }

    /// seconds - milliseconds as seconds with three decimals ("1764475200.123").
    static func seconds(_ milliseconds: Int64) -> String {
        let sign = milliseconds < 0 ? "-" : ""
        let magnitude = milliseconds.magnitude
        let fraction = String(magnitude % 1000)
        return sign + String(magnitude / 1000) + "." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }
}

/// Appends metric families and samples to the exposition text. A value, used by one caller.
struct ExpositionWriter {
    enum Kind: String {
        case counter, gauge
    }

    private(set) var text = ""

    /// metric - a family with one sample and no labels.
    mutating func metric(_ name: String, _ kind: Kind, _ help: String, _ value: Int) {
        metric(name, kind, help, String(value))
    }

    /// metric - a family with one sample and no labels, its value already text.
    mutating func metric(_ name: String, _ kind: Kind, _ help: String, _ value: String) {
        family(name, kind, help)
        text += name + " " + value + "\n"
    }

    /// family - the `# HELP` and `# TYPE` lines that open a family.
    mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        text += "# HELP " + name + " " + ExpositionWriter.escapeHelp(help) + "\n"
        text += "# TYPE " + name + " " + kind.rawValue + "\n"
    }

    /// sample - one sample with one label.
    mutating func sample(_ name: String, label: (name: String, value: String), _ value: String) {
        text += name + "{" + label.name + "=\"" + ExpositionWriter.escapeLabelValue(label.value) + "\"} " + value + "\n"
    }

    /// escapeHelp - a `# HELP` text escaped: backslash and line feed.
    static func escapeHelp(_ text: String) -> String {
        escape(text, quote: false)
    }

    /// escapeLabelValue - a label value escaped: backslash, double quote and line feed.
    static func escapeLabelValue(_ value: String) -> String {
        escape(value, quote: true)
    }

    /// escape - `text` with backslash and line feed escaped, and the double quote when `quote`.
    private static func escape(_ text: String, quote: Bool) -> String {
        /* Most values need nothing: keep them as they are. */
        let special = text.utf8.contains { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\n") || (quote && $0 == UInt8(ascii: "\"")) }
        guard special else { return text }
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\"" where quote: escaped += "\\\""
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}

extension DomainCounters {
    /// add - another set of counts.
    mutating func add(_ other: DomainCounters) {
        delivered += other.delivered
        deferred += other.deferred
        bounced += other.bounced
        expired += other.expired
    }
}
