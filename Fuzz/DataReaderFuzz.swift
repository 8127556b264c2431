// DataReaderFuzz.swift - libFuzzer harness for DataReader (Sources/SMTP/DataReader.swift)
//
// The first input octet picks the policy (reject or normalize bare line
// endings) and the size limit; the rest is what follows the 354 reply.
// Every chunking must consume the same octets and give the same body, end
// and failure; a read that does not find the end consumes all it was given;
// under `normalize` an accepted body holds CR and LF only as CRLF.

import Bytes
import SMTP

/// Outcome - everything a DATA read reports.
private struct Outcome: Equatable {
    var consumed = 0
    var finished = false
    var body: [UInt8] = []
    var failure: DataError?
    var messageSize = 0
    var longLineCount = 0
}

/// run - read `stream` in `lengths` pieces until the end of data.
private func run(_ stream: UnsafeRawBufferPointer, _ lengths: [Int], policy: EncoderPolicy.BareLineEndings, limit: Int) -> Outcome {
    var reader = DataReader(bareLineEndings: policy, maximumMessageSize: limit)
    var body = ByteBuffer()
    var outcome = Outcome()
    var offset = 0
    for length in lengths where !outcome.finished {
        let piece = UnsafeRawBufferPointer(rebasing: stream[offset..<(offset + length)])
        offset += length
        let (consumed, finished) = reader.read(piece, into: &body)
        require(consumed >= 0 && consumed <= length, "consumed \(consumed) of \(length)")
        require(finished || consumed == length, "kept \(length - consumed) octets without finishing")
        require(finished == reader.isFinished, "finished \(finished) but isFinished \(reader.isFinished)")
        outcome.consumed += consumed
        outcome.finished = finished
    }
    outcome.body = body.readableByteArray
    outcome.failure = reader.failure
    outcome.messageSize = reader.messageSize
    outcome.longLineCount = reader.longLineCount
    require(reader.bytesRead == outcome.consumed, "bytesRead \(reader.bytesRead) vs consumed \(outcome.consumed)")
    if reader.failure == nil {
        require(outcome.body.count == reader.messageSize, "body \(outcome.body.count) vs size \(reader.messageSize)")
        require(outcome.body.count <= limit, "body \(outcome.body.count) over limit \(limit)")
    }
    if policy == .normalize && reader.failure == nil {
        for (index, byte) in outcome.body.enumerated() {
            if byte == 0x0D { require(index + 1 < outcome.body.count && outcome.body[index + 1] == 0x0A, "bare CR at \(index)") }
            if byte == 0x0A { require(index > 0 && outcome.body[index - 1] == 0x0D, "bare LF at \(index)") }
        }
    }
    return outcome
}

@_cdecl("LLVMFuzzerTestOneInput")
public func dataReaderFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let policy: EncoderPolicy.BareLineEndings = input[0] & 1 == 0 ? .reject : .normalize
    let limit = input[0] & 2 == 0 ? Int.max : 64
    let stream = UnsafeRawBufferPointer(rebasing: input[1...])
    let whole = run(stream, [stream.count], policy: policy, limit: limit)
    for chunking in Chunking.allCases where chunking != .whole {
        let split = run(stream, pieces(stream.count, chunking, seed: seed(input)), policy: policy, limit: limit)
        require(split == whole, "\(chunking) chunking differs: \(split) vs \(whole)")
    }
    return 0
}
