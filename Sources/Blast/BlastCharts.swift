// BlastCharts.swift - inline SVG line and bar charts for the HTML report
//
// The report must render anywhere, offline, without scripts: each chart is
// one <svg> element built from text, with its axes, grid, ticks, legend and
// a <title> for screen readers. Output is well-formed XML (every element
// closed, every attribute quoted, text escaped), so a test can parse it.

#if canImport(Glibc)
import Glibc
#endif

/// One line of a line chart.
struct ChartSeries {
    let name: String
    let color: String                   /* CSS colour */
    let points: [(x: Double, y: Double)]
}

/// One bar of a bar chart.
struct ChartBar {
    let label: String
    let value: Double
    let color: String
}

/// SVG charts as text.
enum BlastCharts {
    private static let width = 880.0
    private static let height = 320.0
    private static let left = 72.0
    private static let right = 24.0
    private static let top = 40.0
    private static let bottom = 48.0

    /// lineChart - `series` over a shared x axis, with a legend.
    static func lineChart(id: String, title: String, xLabel: String, yLabel: String, series: [ChartSeries]) -> String {
        let xs = series.flatMap { $0.points.map(\.x) }
        let ys = series.flatMap { $0.points.map(\.y) }
        let xAxis = axis(upTo: max(xs.max() ?? 1, 1e-9))
        let yAxis = axis(upTo: max(ys.max() ?? 1, 1e-9))
        var svg = open(id: id, title: title)
        svg += grid(x: xAxis, y: yAxis, xLabel: xLabel, yLabel: yLabel)
        for line in series where !line.points.isEmpty {
            let coordinates = line.points.map { "\(coordinate(plotX($0.x, xAxis))),\(coordinate(plotY($0.y, yAxis)))" }
            svg += "<polyline fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"2\" points=\"\(coordinates.joined(separator: " "))\"/>\n"
            if line.points.count <= 60 {
                for point in line.points {
                    svg += "<circle cx=\"\(coordinate(plotX(point.x, xAxis)))\" cy=\"\(coordinate(plotY(point.y, yAxis)))\" "
                        + "r=\"2.5\" fill=\"\(line.color)\"/>\n"
                }
            }
        }
        /* Legend, right-aligned above the plot. */
        var legendX = width - right
        for line in series.reversed() {
            legendX -= Double(line.name.count) * 7 + 30
            svg += "<rect x=\"\(coordinate(legendX))\" y=\"14\" width=\"14\" height=\"4\" fill=\"\(line.color)\"/>"
            svg += "<text x=\"\(coordinate(legendX + 18))\" y=\"20\" class=\"legend\">\(escape(line.name))</text>\n"
        }
        if xs.isEmpty { svg += noData() }
        return svg + "</svg>\n"
    }

    /// barChart - one bar per category, its value written above it.
    static func barChart(id: String, title: String, xLabel: String, yLabel: String, bars: [ChartBar]) -> String {
        let yAxis = axis(upTo: max(bars.map(\.value).max() ?? 1, 1))
        var svg = open(id: id, title: title)
        svg += grid(x: nil, y: yAxis, xLabel: xLabel, yLabel: yLabel)
        let plotWidth = width - left - right
        let slot = plotWidth / Double(max(bars.count, 1))
        let barWidth = min(slot * 0.7, 80)
        for (index, bar) in bars.enumerated() {
            let x = left + slot * Double(index) + (slot - barWidth) / 2
            let y = plotY(bar.value, yAxis)
            let base = height - bottom
            svg += "<rect x=\"\(coordinate(x))\" y=\"\(coordinate(y))\" width=\"\(coordinate(barWidth))\" "
                + "height=\"\(coordinate(base - y))\" fill=\"\(bar.color)\"><title>\(escape(bar.label)): \(label(bar.value, step: 1))</title></rect>\n"
            svg += "<text x=\"\(coordinate(x + barWidth / 2))\" y=\"\(coordinate(y - 6))\" text-anchor=\"middle\" class=\"value\">"
                + "\(label(bar.value, step: 1))</text>\n"
            svg += "<text x=\"\(coordinate(x + barWidth / 2))\" y=\"\(coordinate(base + 18))\" text-anchor=\"middle\" class=\"tick\">"
                + "\(escape(bar.label))</text>\n"
        }
        if bars.isEmpty { svg += noData() }
        return svg + "</svg>\n"
    }

    // MARK: Pieces

    /// An axis from 0 to a round maximum, with its tick step.
    private struct Axis {
        let maximum: Double
        let step: Double
    }

    /// axis - 0 ... a round number at or above `value`, in about five ticks of 1, 2 or 5 times a power of ten.
    private static func axis(upTo value: Double) -> Axis {
        let raw = value / 5
        let magnitude = pow(10, floor(log10(raw)))
        let residual = raw / magnitude
        let step = (residual <= 1 ? 1 : residual <= 2 ? 2 : residual <= 5 ? 5 : 10) * magnitude
        return Axis(maximum: (value / step).rounded(.up) * step, step: step)
    }

    /// open - the <svg> start tag with its id, size and accessible title, and the visible title.
    private static func open(id: String, title: String) -> String {
        "<svg id=\"\(escape(id))\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" "
            + "width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(escape(title))\">\n"
            + "<title>\(escape(title))</title>\n"
            + "<text x=\"\(Int(left))\" y=\"22\" class=\"chart-title\">\(escape(title))</text>\n"
    }

    /// grid - horizontal grid lines with y labels, x ticks (when there is an x axis), axis titles.
    private static func grid(x: Axis?, y: Axis, xLabel: String, yLabel: String) -> String {
        var svg = ""
        var tick = 0.0
        while tick <= y.maximum + y.step / 2 {
            let py = coordinate(plotY(tick, y))
            svg += "<line x1=\"\(Int(left))\" y1=\"\(py)\" x2=\"\(Int(width - right))\" y2=\"\(py)\" class=\"grid\"/>"
            svg += "<text x=\"\(Int(left - 8))\" y=\"\(py)\" text-anchor=\"end\" dominant-baseline=\"middle\" class=\"tick\">"
                + "\(label(tick, step: y.step))</text>\n"
            tick += y.step
        }
        if let x {
            tick = 0
            while tick <= x.maximum + x.step / 2 {
                let px = coordinate(plotX(tick, x))
                svg += "<line x1=\"\(px)\" y1=\"\(Int(height - bottom))\" x2=\"\(px)\" y2=\"\(Int(height - bottom + 5))\" class=\"axis\"/>"
                svg += "<text x=\"\(px)\" y=\"\(Int(height - bottom + 18))\" text-anchor=\"middle\" class=\"tick\">"
                    + "\(label(tick, step: x.step))</text>\n"
                tick += x.step
            }
        }
        svg += "<line x1=\"\(Int(left))\" y1=\"\(Int(top))\" x2=\"\(Int(left))\" y2=\"\(Int(height - bottom))\" class=\"axis\"/>"
        svg += "<line x1=\"\(Int(left))\" y1=\"\(Int(height - bottom))\" x2=\"\(Int(width - right))\" y2=\"\(Int(height - bottom))\" class=\"axis\"/>\n"
        svg += "<text x=\"\(Int(left + (width - left - right) / 2))\" y=\"\(Int(height - 8))\" text-anchor=\"middle\" class=\"axis-title\">"
            + "\(escape(xLabel))</text>\n"
        let middle = Int(top + (height - top - bottom) / 2)
        svg += "<text x=\"16\" y=\"\(middle)\" transform=\"rotate(-90 16 \(middle))\" text-anchor=\"middle\" class=\"axis-title\">"
            + "\(escape(yLabel))</text>\n"
        return svg
    }

    /// noData - the note drawn across an empty chart.
    private static func noData() -> String {
        "<text x=\"\(Int(width / 2))\" y=\"\(Int(height / 2))\" text-anchor=\"middle\" class=\"axis-title\">no data</text>\n"
    }

    /// plotX - the horizontal position of `value` on `axis`.
    private static func plotX(_ value: Double, _ axis: Axis) -> Double {
        left + (width - left - right) * value / axis.maximum
    }

    /// plotY - the vertical position of `value` on `axis` (0 at the bottom).
    private static func plotY(_ value: Double, _ axis: Axis) -> Double {
        (height - bottom) - (height - top - bottom) * value / axis.maximum
    }

    /// coordinate - a position with one decimal.
    private static func coordinate(_ value: Double) -> String { BlastFormat.fixed(value, 1) }

    /// label - a tick value with as many decimals as its step needs.
    private static func label(_ value: Double, step: Double) -> String {
        step >= 1 ? BlastFormat.fixed(value, 0) : BlastFormat.fixed(value, Int(-floor(log10(step))))
    }

    /// escape - text safe inside XML elements and attributes.
    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
