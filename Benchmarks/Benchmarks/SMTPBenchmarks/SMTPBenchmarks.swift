// SMTPBenchmarks.swift - the DATA body encoder on a 50 KB HTML newsletter
//
// One benchmark iteration encodes the body 1,000 times (scalingFactor .kilo),
// so the throughput row reads in thousands of encodes per second and
// bytes/s = throughput x the body size printed at start-up. The CRLF body is
// the steady-state case (a body already in wire form, only dot lines to
// stuff); the LF variant inserts a CR on every line, the cost of a template
// written on Unix. The streaming benchmarks reuse one output buffer per
// iteration, so their malloc count is what the encoder itself allocates per
// 1,000 encodes; `encodeWhole` allocates its result each time by design.

import Benchmark
import Bytes
import SMTP

/// xorshift64 (Marsaglia 2003), so the body is the same in every run.
struct XorShift: RandomNumberGenerator {
    var state: UInt64                   /* never zero */

    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

/// newsletter - about 50 KB of HTML newsletter: MIME headers, lines of at most 72 columns,
/// CSS rules and a lone "." that start with a dot (stuffed on the wire), some UTF-8.
func newsletter(ending: String) -> ByteBuffer {
    let words = [
        "subscribers", "weekly", "digest", "product", "launch", "café", "update", "release", "notes",
        "the", "and", "our", "team", "you", "with", "for", "new", "features", "pricing", "€29",
        "webinar", "Zürich", "register", "today", "—", "read", "more", "about", "performance",
        "delivery", "inbox", "campaign", "schedule", "naïve", "résumé", "offer", "limited", "time",
    ]
    var lines = [
        "From: \"Carrier Weekly\" <news@carrier.example>",
        "To: <reader@example.com>",
        "Subject: =?UTF-8?Q?Carrier_Weekly_=E2=80=94_issue_42?=",
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "<html><head><style>",
        ".header { background: #0a3d62; color: #ffffff; padding: 12px 24px; }",
        ".button { display: inline-block; border-radius: 4px; padding: 8px 16px; }",
        "</style></head><body>",
    ]
    var random = XorShift(state: 0x5EED)
    var size = 0
    var paragraph = 0
    while size < 51_000 {
        /* A paragraph filled to 72 columns; every ninth one is followed by two lines starting with ".". */
        var line = "<p>"
        for _ in 0..<Int.random(in: 40...90, using: &random) {
            let word = words.randomElement(using: &random)!
            if line.utf8.count + 1 + word.utf8.count > 72 {
                lines.append(line)
                line = ""
            }
            line += line.isEmpty ? word : " " + word
        }
        lines.append(line + "</p>")
        paragraph += 1
        if paragraph % 9 == 0 {
            lines.append(".")
            lines.append(".note-\(paragraph) { margin: 0 auto; }")
        }
        size = lines.reduce(0) { $0 + $1.utf8.count + ending.utf8.count }
    }
    lines.append("</body></html>")
    return ByteBuffer(string: lines.joined(separator: ending) + ending)
}

let benchmarks: @Sendable () -> Void = {
    let crlf = newsletter(ending: "\r\n")
    let lf = newsletter(ending: "\n")
    print("newsletter body: \(crlf.readableBytes) octets with CRLF, \(lf.readableBytes) with LF")

    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(5),
        maxIterations: 1_000
    )

    for (name, body) in [("Encode 50 KB newsletter body", crlf), ("Encode 50 KB newsletter body (LF endings)", lf)] {
        Benchmark(name, configuration: configuration) { benchmark in
            var out = ByteBuffer(capacity: 2 * body.readableBytes)
            for _ in benchmark.scaledIterations {
                out.clear()
                var encoder = MessageEncoder()
                body.withUnsafeReadableBytes { try! encoder.encode($0, into: &out) }
                try! encoder.finish(into: &out)
                blackHole(out.readableBytes)
            }
        }
    }

    Benchmark("Encode 50 KB newsletter body (encodeWhole)", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! MessageEncoder.encodeWhole(crlf).readableBytes)
        }
    }

    clientSessionBenchmarks()
}
