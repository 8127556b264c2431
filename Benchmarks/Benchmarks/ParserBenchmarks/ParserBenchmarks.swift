// ParserBenchmarks.swift - reply parsing (client side) and command parsing (server side) per message
//
// One inner iteration parses exactly one reply or one command (scalingFactor
// .kilo), so the throughput row reads in replies or commands per second and
// the scaled malloc row is per reply or command; run with `--scale` to see
// mallocs per 1,000, where fractions show. Each benchmark walks a stream
// that holds its mix 200 times over and starts again at the end, as a
// session parses what one read delivered. The mixes are what a pipelining
// client and server exchange in one transaction.

import Benchmark
import SMTP

/// The server replies of one pipelined transaction, after EHLO: five replies.
let replyMix = [
    "250-mx.example.org Hello client.example.com [192.0.2.1]\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
        + "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n",
    "250 2.1.0 Ok\r\n",
    "250 2.1.5 Ok\r\n",
    "354 End data with <CR><LF>.<CR><LF>\r\n",
    "250 2.0.0 Ok: queued as 4Xk9qT1ZzBz9v\r\n",
]

/// The client commands of one pipelined transaction: five commands.
let commandMix = [
    "MAIL FROM:<newsletter@lists.example.com> SIZE=51234 BODY=8BITMIME\r\n",
    "RCPT TO:<alice@example.org>\r\n",
    "RCPT TO:<bob.smith@mail.example.net> NOTIFY=FAILURE,DELAY\r\n",
    "DATA\r\n",
    "RSET\r\n",
]

/// stream - `items` repeated until the stream holds `count` of them.
func stream(_ items: [String], count: Int) -> [UInt8] {
    Array((0..<count).map { items[$0 % items.count] }.joined().utf8)
}

/// replies - parse one reply per inner iteration from `bytes`, wrapping at its end.
func replies(_ benchmark: Benchmark, _ bytes: [UInt8]) {
    var parser = ReplyParser()
    bytes.withUnsafeBytes { bytes in
        var offset = 0
        for _ in benchmark.scaledIterations {
            if offset == bytes.count { offset = 0 }
            let (reply, consumed) = try! parser.parse(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            offset += consumed
            blackHole(reply!)
        }
    }
}

/// commands - parse one command per inner iteration from `bytes`, wrapping at its end.
func commands(_ benchmark: Benchmark, _ bytes: [UInt8]) {
    var parser = CommandParser()
    bytes.withUnsafeBytes { bytes in
        var offset = 0
        for _ in benchmark.scaledIterations {
            if offset == bytes.count { offset = 0 }
            let (result, consumed) = parser.parse(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            offset += consumed
            guard case .command(let command)? = result else { fatalError("not a command: \(String(describing: result))") }
            blackHole(command)
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .cpuTotal, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 100_000
    )

    let mix = stream(replyMix, count: 1_000)
    Benchmark("Reply parsing: transaction mix (1 EHLO of 10 lines + 4 single-line)") { benchmark in
        replies(benchmark, mix)
    }

    let single = stream(["250 2.1.5 Ok\r\n"], count: 1_000)
    Benchmark("Reply parsing: 250 2.1.5 Ok") { benchmark in
        replies(benchmark, single)
    }

    let ehlo = stream([replyMix[0]], count: 1_000)
    Benchmark("Reply parsing: EHLO reply of 10 lines") { benchmark in
        replies(benchmark, ehlo)
    }

    let transaction = stream(commandMix, count: 1_000)
    Benchmark("Command parsing: transaction mix (MAIL, 2 RCPT, DATA, RSET)") { benchmark in
        commands(benchmark, transaction)
    }
}
