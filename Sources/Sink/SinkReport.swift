// SinkReport.swift - the sink's figures as text: the live line, the final summary, the JSON file
//
// The live line is written once a second while the sink runs; the summary
// and the JSON object once, at exit. Field names in the JSON are the
// statistics' names in snake case, so a script can read them without a schema.

extension SinkStatistics {
    /// liveLine - one line for standard error: connections, the last second's rate, totals, refusals.
    public func liveLine(messagesPerSecond: Double) -> String {
        "carrier sink: \(connectionsCurrent) connections (\(connectionsTotal) total), "
            + "\(Int(messagesPerSecond.rounded())) msg/s, \(messagesAccepted) messages, "
            + "\(messageRecipients) recipients, 4xx \(replies4xx), 5xx \(replies5xx)\n"
    }

    /// Messages accepted per second since the start.
    public var averageMessagesPerSecond: Double {
        elapsedSeconds > 0 ? Double(messagesAccepted) / elapsedSeconds : 0
    }

    /// A few lines for the end of a run.
    public var summary: String {
        let codes = replies.keys.sorted().map { "\($0): \(replies[$0]!)" }.joined(separator: ", ")
        return """
            carrier sink: \(formatted(elapsedSeconds)) s
              connections  \(connectionsTotal) total, \(connectionsRefused) refused (max connections), \(greetingsRefused) greeted with 421
              messages     \(messagesAccepted) accepted (\(Int(averageMessagesPerSecond.rounded())) msg/s), \(messagesRefused) refused, \(disconnects) cut off mid-DATA, \(SinkStatistics.size(bytesAccepted))
              recipients   \(messageRecipients) in accepted messages; RCPT \(recipientsAccepted) accepted, \(recipientsRefused) refused
              replies      2xx \(replies2xx), 4xx \(replies4xx), 5xx \(replies5xx)\(codes.isEmpty ? "" : " (\(codes))")

            """
    }

    /// The statistics as one JSON object (`--stats-json`).
    public var json: String {
        var writer = JSONWriter()
        writer.beginObject()
        writer.key("elapsed_seconds"); writer.decimal(elapsedSeconds)
        writer.key("connections_current"); writer.integer(connectionsCurrent)
        writer.key("connections_total"); writer.integer(connectionsTotal)
        writer.key("connections_refused"); writer.integer(connectionsRefused)
        writer.key("greetings_refused"); writer.integer(greetingsRefused)
        writer.key("messages_accepted"); writer.integer(messagesAccepted)
        writer.key("messages_refused"); writer.integer(messagesRefused)
        writer.key("messages_per_second"); writer.decimal(averageMessagesPerSecond)
        writer.key("message_recipients"); writer.integer(messageRecipients)
        writer.key("recipients_accepted"); writer.integer(recipientsAccepted)
        writer.key("recipients_refused"); writer.integer(recipientsRefused)
        writer.key("bytes_accepted"); writer.integer(bytesAccepted)
        writer.key("disconnects"); writer.integer(disconnects)
        writer.key("replies_2xx"); writer.integer(replies2xx)
        writer.key("replies_4xx"); writer.integer(replies4xx)
        writer.key("replies_5xx"); writer.integer(replies5xx)
        writer.key("replies")
        writer.beginObject()
        for code in replies.keys.sorted() {
            writer.key(String(code))
            writer.integer(replies[code]!)
        }
        writer.endObject()
        writer.endObject()
        writer.newline()
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// formatted - a number with one decimal.
    private func formatted(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// size - octets in the largest binary unit that keeps a whole part.
    static func size(_ bytes: Int) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) bytes" }
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction) \(units[unit])"
    }
}
