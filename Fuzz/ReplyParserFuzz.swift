// ReplyParserFuzz.swift - libFuzzer harness for ReplyParser (Sources/SMTP/ReplyParser.swift)
//
// The first input octet picks the limits (small ones, so short inputs reach
// them); the rest is the server's byte stream. Every chunking must give the
// same replies and fail, or not, at the same reply; `consumed` must stay
// within the input, and every reply must carry a code of 200...599.

import SMTP

/// Outcome - the replies parsed, and whether the stream was refused after them.
private struct Outcome: Equatable {
    var replies: [Reply] = []
    var failed = false
}

/// run - parse `stream` read in `lengths` pieces.
private func run(_ stream: UnsafeRawBufferPointer, _ lengths: [Int], lineLimit: Int, replyLimit: Int) -> Outcome {
    var parser = ReplyParser(maximumLineLength: lineLimit, maximumReplyLength: replyLimit)
    var outcome = Outcome()
    var buffered: [UInt8] = []
    var offset = 0
    for length in lengths {
        buffered += stream[offset..<(offset + length)]
        offset += length
        do {
            while true {
                let count = buffered.count
                let (reply, consumed) = try buffered.withUnsafeBytes { try parser.parse($0) }
                require(consumed >= 0 && consumed <= count, "consumed \(consumed) of \(count)")
                buffered.removeFirst(consumed)
                guard let reply else { break }
                require((200...599).contains(reply.code), "reply code \(reply.code)")
                outcome.replies.append(reply)
            }
        } catch {
            outcome.failed = true
            return outcome
        }
    }
    return outcome
}

@_cdecl("LLVMFuzzerTestOneInput")
public func replyParserFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let lineLimit = [8, 64, 512, 4096][Int(input[0] & 3)]
    let replyLimit = lineLimit * (input[0] & 4 == 0 ? 4 : 16)
    let stream = UnsafeRawBufferPointer(rebasing: input[1...])
    let whole = run(stream, [stream.count], lineLimit: lineLimit, replyLimit: replyLimit)
    for chunking in Chunking.allCases where chunking != .whole {
        let split = run(stream, pieces(stream.count, chunking, seed: seed(input)), lineLimit: lineLimit, replyLimit: replyLimit)
        require(split == whole, "\(chunking) chunking differs: \(split) vs \(whole)")
    }
    return 0
}
