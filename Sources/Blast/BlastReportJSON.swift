// BlastReportJSON.swift - the machine-readable report (`--json FILE`)
//
// Written by hand, without Foundation: a small value tree serialised with
// keys in a fixed order, so two reports diff cleanly. Latencies are in
// milliseconds with microsecond precision. The fields:
//
//   messages_sent, messages_attempted, messages_failed, messages_unsent,
//   messages_overdue, messages_per_second, megabytes_per_second, bytes_sent,
//   elapsed_seconds, cpu_seconds, cpu_microseconds_per_message, recipients_*
//   (delivered, deferred, bounced, aborted, overdue), connection_*,
//   errors, error_ratio, max_error_ratio, passed, errors_by_type{},
//   replies{code: count}, enhanced_replies{code: count},
//   phases{phase: {count, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms}},
//   time_series[{time, duration, sent, attempted, errors, messages_per_second,
//   p50_ms, p90_ms, p99_ms, max_ms, backlog}], and the run's settings.
//
// messages_unsent counts the messages with no final reply: never handed over,
// or cut off in flight at the --duration deadline. In open loop (--rate)
// messages_overdue of them were due before the run ended: they are errors
// (recipient_overdue, one per recipient, in errors and error_ratio) and are
// timed in phases.end_to_end from their due time to the end of the run, so
// sent + failed + unsent is every message the schedule held.

/// A JSON value, enough for reports.
enum BlastJSON {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double, decimals: Int)
    case string(String)
    case array([BlastJSON])
    case object([(String, BlastJSON)])

    /// milliseconds - a latency in ms with microsecond precision.
    static func milliseconds(_ value: Double) -> BlastJSON { .number(value, decimals: 3) }

    /// text - the value serialised, objects and arrays indented by two spaces.
    func text(indent: Int = 0) -> String {
        var out = ""
        write(into: &out, indent: indent)
        return out
    }

    /// write - the value appended to `out`, nested values indented from `indent`.
    private func write(into out: inout String, indent: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .integer(let value): out += String(value)
        case .number(let value, let decimals): out += value.isFinite ? BlastFormat.fixed(value, decimals) : "null"
        case .string(let value): BlastJSON.quote(value, into: &out)
        case .array(let items):
            guard !items.isEmpty else { out += "[]"; return }
            /* Arrays of scalars or of small objects stay one item per line. */
            out += "[\n"
            for (index, item) in items.enumerated() {
                out += String(repeating: " ", count: indent + 2)
                item.writeCompact(into: &out)
                out += index == items.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "]"
        case .object(let members):
            guard !members.isEmpty else { out += "{}"; return }
            out += "{\n"
            for (index, (key, value)) in members.enumerated() {
                out += String(repeating: " ", count: indent + 2)
                BlastJSON.quote(key, into: &out)
                out += ": "
                value.write(into: &out, indent: indent + 2)
                out += index == members.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "}"
        }
    }

    /// writeCompact - the value on one line.
    private func writeCompact(into out: inout String) {
        switch self {
        case .array(let items):
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += ", " }
                item.writeCompact(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { out += ", " }
                BlastJSON.quote(key, into: &out)
                out += ": "
                value.writeCompact(into: &out)
            }
            out += "}"
        default:
            write(into: &out, indent: 0)
        }
    }

    /// quote - a JSON string literal, escaping quotes, backslashes and control characters.
    private static func quote(_ text: String, into out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

extension BlastReport {
    /// The report as JSON text (the `--json` file).
    public var json: String {
        jsonValue.text() + "\n"
    }

    var jsonValue: BlastJSON {
        let phaseMembers: [(String, BlastJSON)] = BlastPhase.allCases.map { phase in
            let summary = phases[phase] ?? LatencySummary(count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0)
            return (phase.key, .object([
                ("count", .integer(summary.count)),
                ("p50_ms", .milliseconds(summary.p50)), ("p90_ms", .milliseconds(summary.p90)),
                ("p99_ms", .milliseconds(summary.p99)), ("p999_ms", .milliseconds(summary.p999)),
                ("max_ms", .milliseconds(summary.max)), ("mean_ms", .milliseconds(summary.mean)),
            ]))
        }
        let series: [BlastJSON] = timeSeries.map { point in
            .object([
                ("time", .number(point.time, decimals: 3)), ("duration", .number(point.duration, decimals: 3)),
                ("sent", .integer(point.sent)), ("attempted", .integer(point.attempted)), ("errors", .integer(point.errors)),
                ("messages_per_second", .number(point.rate, decimals: 1)),
                ("p50_ms", .milliseconds(point.p50)), ("p90_ms", .milliseconds(point.p90)),
                ("p99_ms", .milliseconds(point.p99)), ("max_ms", .milliseconds(point.max)),
                ("backlog", .integer(point.backlog)),
            ])
        }
        return .object([
            ("target", .string(configuration.target.description)),
            ("destinations", .array(destinations.map { .string($0) })),
            ("mode", .string(configuration.rate == nil ? "closed" : "open")),
            ("rate", configuration.rate.map { .number($0, decimals: 3) } ?? .null),
            ("connections", .integer(configuration.connections)),
            ("threads", .integer(threads)),
            ("window", .integer(configuration.window)),
            ("security", .string(configuration.security.rawValue)),
            ("pipelining", .bool(configuration.pipelining)),
            ("chunking", .bool(configuration.chunking)),
            ("auth", configuration.authentication.map { .string($0.mechanism.rawValue) } ?? .null),
            ("recipients_per_message", .integer(configuration.recipientsPerMessage)),
            ("elapsed_seconds", .number(elapsedSeconds, decimals: 6)),
            ("cpu_seconds", .number(cpuSeconds, decimals: 6)),
            ("cpu_microseconds_per_message", .number(cpuMicrosecondsPerMessage, decimals: 3)),
            ("messages_sent", .integer(messagesSent)),
            ("messages_attempted", .integer(messagesAttempted)),
            ("messages_failed", .integer(messagesFailed)),
            ("messages_unsent", .integer(messagesUnsent)),
            ("messages_overdue", .integer(messagesOverdue)),
            ("messages_per_second", .number(messagesPerSecond, decimals: 3)),
            ("bytes_sent", .integer(bytesSent)),
            ("megabytes_per_second", .number(megabytesPerSecond, decimals: 3)),
            ("recipients_delivered", .integer(recipientsDelivered)),
            ("recipients_deferred", .integer(recipientsDeferred)),
            ("recipients_bounced", .integer(recipientsBounced)),
            ("recipients_aborted", .integer(recipientsAborted)),
            ("recipients_overdue", .integer(recipientsOverdue)),
            ("connection_attempts", .integer(connectionAttempts)),
            ("connections_ready", .integer(connectionsReady)),
            ("connections_failed", .integer(connectionsFailed)),
            ("errors", .integer(errors)),
            ("error_ratio", .number(errorRatio, decimals: 6)),
            ("max_error_ratio", .number(configuration.maxErrorRatio, decimals: 6)),
            ("passed", .bool(passed)),
            ("errors_by_type", .object(errorTypes.sorted { $0.key < $1.key }.map { ($0.key, .integer($0.value)) })),
            ("replies", .object(replyCodes.sorted { $0.key < $1.key }.map { ("\($0.key)", .integer($0.value)) })),
            ("enhanced_replies", .object(enhancedCodes.sorted { $0.key < $1.key }.map { ($0.key, .integer($0.value)) })),
            ("phases", .object(phaseMembers)),
            ("time_series", .array(series)),
        ])
    }
}
