// FuzzSupport.swift - what every libFuzzer harness shares: chunkings of an input, invariant checks
//
// The parsers read from a stream, so a bug may show only when a line, a
// CRLF or a terminator is split between two reads. Each harness therefore
// parses one input several ways (whole, one octet at a time, in pieces of
// pseudo-random length drawn from the input itself) and traps when the
// results differ: libFuzzer records any trap as a crash with its input.

/// The ways a harness splits one input, as a connection's reads would.
enum Chunking: CaseIterable {
    case whole      /* one read */
    case octets     /* one octet per read */
    case random     /* 1...97 octets per read, from a generator seeded by the input */
}

/// pieces - the read lengths that cover `count` octets under `chunking`.
func pieces(_ count: Int, _ chunking: Chunking, seed: UInt64) -> [Int] {
    switch chunking {
    case .whole:
        return [count]
    case .octets:
        return Array(repeating: 1, count: count)
    case .random:
        var state = seed | 1
        var lengths: [Int] = []
        var left = count
        while left > 0 {
            /* xorshift64: cheap, deterministic for one input, so a crash reproduces. */
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            let length = min(left, Int(state % 97) + 1)
            lengths.append(length)
            left -= length
        }
        return lengths
    }
}

/// seed - an FNV-1a hash of the input, to seed the random chunking.
func seed(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
}

/// require - trap with `message` when an invariant does not hold.
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
}

/// isCleanText - no control octet (C0 or DEL) that could break a log line or a reply.
func isCleanText(_ text: String) -> Bool {
    !text.utf8.contains { $0 < 0x20 || $0 == 0x7F }
}
