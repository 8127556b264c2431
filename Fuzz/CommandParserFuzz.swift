// CommandParserFuzz.swift - libFuzzer harness for CommandParser (Sources/SMTP/CommandParser.swift)
//
// The input is the client's byte stream. The harness drives the parser as a
// server session would: after an AUTH command it reads two lines as AUTH
// continuations. Every chunking must give the same results; `consumed`
// stays within the input; no more than one line's worth is ever left
// buffered; every rejection is a 5xx reply with its enhanced code in the
// text, and no control octet reaches a command's text or a reply.

import SMTP

/// One thing the parser returned.
private enum Event: Equatable {
    case command(CommandResult)
    case auth(AuthContinuation)
}

/// run - parse `stream` read in `lengths` pieces.
private func run(_ stream: UnsafeRawBufferPointer, _ lengths: [Int]) -> [Event] {
    var parser = CommandParser()
    var events: [Event] = []
    var buffered: [UInt8] = []
    var authLines = 0
    var offset = 0
    for length in lengths {
        buffered += stream[offset..<(offset + length)]
        offset += length
        while true {
            let count = buffered.count
            let event: Event?
            let consumed: Int
            if authLines > 0 {
                let (result, used) = buffered.withUnsafeBytes { parser.authContinuation($0) }
                event = result.map { .auth($0) }
                consumed = used
                if event != nil { authLines -= 1 }
            } else {
                let (result, used) = buffered.withUnsafeBytes { parser.parse($0) }
                event = result.map { .command($0) }
                consumed = used
                if case .command(.auth)? = result { authLines = 2 }
            }
            require(consumed >= 0 && consumed <= count, "consumed \(consumed) of \(count)")
            buffered.removeFirst(consumed)
            guard let event else { break }
            check(event)
            events.append(event)
        }
        require(buffered.count < CommandParser.maximumAuthLineLength, "\(buffered.count) octets left buffered")
    }
    return events
}

/// check - the invariants of one result.
private func check(_ event: Event) {
    switch event {
    case .command(.refusedChunk(_, let size)) where (size ?? 0) < 0:
        fatalError("a refused BDAT's chunk size is negative: \(size!)")
    case .command(.error(let reply)), .auth(.error(let reply)), .command(.refusedChunk(let reply, _)):
        require([500, 501, 502, 555].contains(reply.code), "reply code \(reply.code)")
        guard let status = reply.enhanced else { fatalError("no enhanced code in \(reply)") }
        require(status.statusClass == 5 && reply.text.hasPrefix("\(status) "), "reply text \(reply.text)")
        require(isCleanText(reply.text), "control octet in reply \(reply.text)")
    case .command(.command(let command)):
        switch command {
        case .helo(let text), .ehlo(let text), .vrfy(let text):
            require(!text.isEmpty && isCleanText(text), "text \(text)")
        case .auth(let mechanism, let response):
            require(isCleanText(mechanism) && isCleanText(response ?? ""), "AUTH \(mechanism)")
        case .mail(_, let parameters):
            require(isCleanText(parameters.auth ?? "") && isCleanText(parameters.envelopeID ?? ""), "\(parameters)")
        case .rcpt(_, let parameters):
            require(isCleanText(parameters.originalRecipient?.address ?? ""), "\(parameters)")
        case .bdat(let size, _):
            require(size >= 0, "BDAT size \(size)")
        case .data, .rset, .noop, .quit, .help, .starttls:
            break
        }
    case .auth(.response(let text)):
        require(isCleanText(text), "AUTH response \(text)")
    case .auth(.cancel):
        break
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func commandParserFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let whole = run(input, [size])
    for chunking in Chunking.allCases where chunking != .whole {
        let split = run(input, pieces(size, chunking, seed: seed(input)))
        require(split == whole, "\(chunking) chunking differs: \(split) vs \(whole)")
    }
    return 0
}
