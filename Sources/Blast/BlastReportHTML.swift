// BlastReportHTML.swift - the report as one self-contained HTML page (`--report FILE.html`)
//
// Three charts as inline SVG (throughput per second, end-to-end latency
// percentiles over time, replies by code) plus the figures and tables of
// the text summary. No script, no stylesheet or font from elsewhere: the
// page opens from disk, offline, and prints. The charts carry the ids
// `chart-throughput`, `chart-latency` and `chart-replies`.

extension BlastReport {
    /// The report as an HTML page.
    public var html: String {
        let escape = BlastCharts.escape
        var page = """
        <!DOCTYPE html>
        <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
        <head>
        <meta charset="utf-8"/>
        <title>carrier blast report</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 2em; color: #1d2430; }
        h1 { font-size: 1.4em; margin-bottom: 0.2em; }
        p.shape { color: #4a5566; margin-top: 0; }
        table { border-collapse: collapse; margin: 1em 0; }
        th, td { padding: 0.25em 0.8em; text-align: right; border-bottom: 1px solid #dde3ea; }
        th:first-child, td:first-child { text-align: left; }
        .verdict-passed { color: #1b7f3b; font-weight: bold; }
        .verdict-failed { color: #b42318; font-weight: bold; }
        figure { margin: 1.5em 0; }
        svg .grid { stroke: #e4e8ee; stroke-width: 1; }
        svg .axis { stroke: #6b7685; stroke-width: 1; }
        svg .tick { font-size: 11px; fill: #4a5566; }
        svg .value { font-size: 11px; fill: #1d2430; }
        svg .legend { font-size: 12px; fill: #1d2430; }
        svg .chart-title { font-size: 14px; font-weight: bold; fill: #1d2430; }
        svg .axis-title { font-size: 12px; fill: #4a5566; }
        </style>
        </head>
        <body>
        <h1>carrier blast report</h1>

        """
        page += "<p class=\"shape\">\(escape(shape))</p>\n"

        /* Key figures and the verdict. */
        let verdict = passed ? "<span class=\"verdict-passed\">passed</span>"
            : "<span class=\"verdict-failed\">failed: \(escape(failureReason ?? ""))</span>"
        page += "<table>\n"
        let figures: [(String, String)] = [
            ("messages sent", "\(messagesSent)"),
            ("messages per second", BlastFormat.fixed(messagesPerSecond, 1)),
            ("MB per second", BlastFormat.fixed(megabytesPerSecond, 2)),
            ("messages attempted / failed / unsent (overdue)",
             "\(messagesAttempted) / \(messagesFailed) / \(messagesUnsent) (\(messagesOverdue))"),
            ("recipients delivered / deferred / bounced / aborted / overdue",
             "\(recipientsDelivered) / \(recipientsDeferred) / \(recipientsBounced) / \(recipientsAborted) / \(recipientsOverdue)"),
            ("connections opened / ready / failed", "\(connectionAttempts) / \(connectionsReady) / \(connectionsFailed)"),
            ("elapsed", BlastFormat.fixed(elapsedSeconds, 3) + " s"),
            ("CPU per message", BlastFormat.fixed(cpuMicrosecondsPerMessage, 1) + " µs"),
            ("errors (ratio)", "\(errors) (\(BlastFormat.fixed(errorRatio, 4)))"),
        ]
        for (name, value) in figures { page += "<tr><td>\(escape(name))</td><td>\(escape(value))</td></tr>\n" }
        page += "<tr><td>verdict (max error ratio \(BlastFormat.fixed(configuration.maxErrorRatio, 4)))</td><td>\(verdict)</td></tr>\n"
        page += "</table>\n"

        /* The three charts. */
        let throughput = ChartSeries(name: "messages/s", color: "#2563eb",
                                     points: timeSeries.map { ($0.time, $0.rate) })
        page += "<figure>\n" + BlastCharts.lineChart(id: "chart-throughput", title: "Throughput per second",
                                                     xLabel: "seconds", yLabel: "messages sent per second",
                                                     series: [throughput]) + "</figure>\n"
        let latency = [
            ChartSeries(name: "p50", color: "#16a34a", points: timeSeries.map { ($0.time, $0.p50) }),
            ChartSeries(name: "p90", color: "#d97706", points: timeSeries.map { ($0.time, $0.p90) }),
            ChartSeries(name: "p99", color: "#dc2626", points: timeSeries.map { ($0.time, $0.p99) }),
        ]
        page += "<figure>\n" + BlastCharts.lineChart(id: "chart-latency", title: "End-to-end latency percentiles per second",
                                                     xLabel: "seconds", yLabel: "milliseconds", series: latency) + "</figure>\n"
        let bars = replyCodes.sorted { $0.key < $1.key }.map { code, count in
            ChartBar(label: "\(code)", value: Double(count),
                     color: code < 300 ? "#16a34a" : code < 400 ? "#2563eb" : code < 500 ? "#d97706" : "#dc2626")
        }
        page += "<figure>\n" + BlastCharts.barChart(id: "chart-replies", title: "Replies by code (per recipient)",
                                                    xLabel: "reply code", yLabel: "recipients", bars: bars) + "</figure>\n"

        /* Phase latencies. */
        page += "<h2>Latency by phase (ms)</h2>\n<table>\n<tr><th>phase</th><th>count</th><th>p50</th><th>p90</th>"
            + "<th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>\n"
        for phase in measuredPhases {
            guard let summary = phases[phase] else { continue }
            let cells = [summary.p50, summary.p90, summary.p99, summary.p999, summary.max, summary.mean]
                .map { "<td>\(BlastFormat.fixed($0, 3))</td>" }.joined()
            page += "<tr><td>\(escape(phase.title))</td><td>\(summary.count)</td>\(cells)</tr>\n"
        }
        page += "</table>\n"

        /* Replies and errors. */
        page += table("Replies by code", replyCodes.sorted { $0.key < $1.key }.map { ("\($0.key)", $0.value) })
        page += table("Replies by enhanced code", enhancedCodes.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        page += table("Errors by type", errorTypes.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        page += "</body>\n</html>\n"
        return page
    }

    /// table - a titled two-column table of counts; nothing when empty.
    private func table(_ title: String, _ rows: [(String, Int)]) -> String {
        guard !rows.isEmpty else { return "" }
        var out = "<h2>\(BlastCharts.escape(title))</h2>\n<table>\n"
        for (name, count) in rows { out += "<tr><td>\(BlastCharts.escape(name))</td><td>\(count)</td></tr>\n" }
        return out + "</table>\n"
    }
}
