// BlastReportTests.swift - the HTML report holds three well-formed SVG charts; the text and JSON agree

import Blast
import CarrierTesting
import Foundation
import Testing

#if canImport(FoundationXML)
import FoundationXML
#endif

@Suite("Blast reports")
struct BlastReportTests {
    /// The page parses as XML and has the three charts with their ids, drawn with SVG elements.
    @Test func htmlHasThreeSVGCharts() throws {
        let receiver = try TestReceiver.start(ReceiverOptions(tempfailEvery: 5))
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 30)
        configuration.rate = 40
        let report = try BlastRunner.run(configuration)
        let html = report.html

        let parser = XMLParser(data: Data(html.utf8))
        let collector = SVGCollector()
        parser.delegate = collector
        #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        #expect(Set(collector.charts.keys) == ["chart-throughput", "chart-latency", "chart-replies"])
        #expect(collector.charts["chart-throughput"]?.contains("polyline") == true)
        #expect(collector.charts["chart-latency"]?.filter { $0 == "polyline" }.count == 3)
        #expect(collector.charts["chart-replies"]?.filter { $0 == "rect" }.count == 2)
        #expect(collector.svgNamespaces == ["http://www.w3.org/2000/svg"])

        /* Self-contained: nothing is fetched and nothing runs. */
        #expect(!html.contains("<script"))
        #expect(!html.contains("http://") || html.replacingOccurrences(of: "http://www.w3.org/", with: "").contains("http://") == false)
        #expect(!html.contains("https://"))
        #expect(!html.contains("<link"))
    }

    /// The text summary names the figures a person looks for first.
    @Test func textSummaryHasTheFigures() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        let report = try BlastRunner.run(blastConfiguration(to: receiver, messages: 12))
        let text = report.text
        #expect(text.contains("sent         12 messages"))
        #expect(text.contains("end to end"))
        #expect(text.contains("replies      250: 12"))
        #expect(!text.contains("FAILED"))
    }

    /// JSON escapes strings and writes no NaN: a run that sent nothing still parses.
    @Test func jsonOfAFailedRunParses() throws {
        let closed = try TestReceiver.start()
        let address = closed.address
        closed.stop()
        var configuration = BlastConfiguration(target: .address(address))
        configuration.connections = 1
        configuration.threads = 1
        configuration.messages = 3
        configuration.reconnectAttempts = 1
        let report = try BlastRunner.run(configuration)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        #expect(object["messages_sent"] as? Int == 0)
        #expect(object["passed"] as? Bool == false)
        #expect((object["errors_by_type"] as? [String: Int]) == ["connect_refused": 1])
        #expect(report.html.contains("no data"))
    }

    /// Progress lines show the rate and the last second's percentiles.
    @Test func progressLinesAreReported() throws {
        let receiver = try TestReceiver.start()
        defer { receiver.stop() }
        var configuration = blastConfiguration(to: receiver, messages: 1)
        configuration.messages = nil
        configuration.durationNanoseconds = 1_300_000_000
        configuration.rate = 50
        let lines = TestLog<String>()
        let report = try BlastRunner.run(configuration) { lines.append($0.line) }
        let first = try #require(lines.elements.first)
        #expect(first.contains("/s  p50 "))
        #expect(first.contains(" p99 "))
        #expect(first.contains("backlog"))
        #expect(first.contains("ETA"))
        #expect(report.timeSeries.count >= 2)
    }
}

/// Collects, per SVG chart id, the names of the elements inside it.
private final class SVGCollector: NSObject, XMLParserDelegate {
    var charts: [String: [String]] = [:]
    var svgNamespaces: Set<String> = []
    private var current: String?

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
        if elementName == "svg" {
            current = attributeDict["id"]
            if let namespace = attributeDict["xmlns"] { svgNamespaces.insert(namespace) }
            if let current { charts[current] = [] }
        } else if let current {
            charts[current, default: []].append(elementName)
        }
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
        if elementName == "svg" { current = nil }
    }
}
