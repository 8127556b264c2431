// main.swift - SpoolCrashChild: the process SpoolCrashTests kills with SIGKILL
//
// Opens the spool in `--dir` (fsync for messages and outcomes, small segments, 32 KiB by
// default, so they rotate, go dead while older ones live, and compaction runs) and loops until killed: enqueue a message, then record
// outcomes for recipients enqueued earlier (in this run or a previous one), and now
// and then compact. Every acknowledgement is printed (and flushed) only after the
// call that made it durable returned, so the test knows what must survive:
//
//     OPEN <pending>                       the spool opened (after recovery)
//     ENQ <id> <address>,<address>,...     enqueue returned: these recipients are durable
//     TRY <id>/<index> <kind> <next>       about to record an outcome (it may or may not land)
//     OUT <id>/<index> <kind> <next>       record returned: the outcome is durable
//     CMP                                  a compaction finished
//
// <kind> is delivered, bounced or deferred; <next> is the deferred nextAttempt (0 otherwise).

#if canImport(Glibc)
import Glibc
#endif
import Spool
import CarrierTesting


/// emit - one line to stdout with a single write(2): unbuffered, so it is out (in the
/// output file) the moment this returns, as an fflush'ed stdio line would be.
func emit(_ line: String) {
    var line = line + "\n"
    line.withUTF8 { utf8 in
        var done = 0
        while done < utf8.count {
            let n = write(1, utf8.baseAddress! + done, utf8.count - done)
            if n < 0 { if errno == EINTR { continue }; exit(4) }
            done += n
        }
    }
}

func fail(_ why: String) -> Never {
    emit("FAIL \(why)")
    exit(3)
}

var directory = ""
var seed: UInt64 = 1
var segmentSize = 32 << 10
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--dir": directory = arguments.next() ?? ""
    case "--seed": seed = UInt64(arguments.next() ?? "") ?? 1
    case "--segment-size": segmentSize = Int(arguments.next() ?? "") ?? segmentSize
    default: fail("unknown argument \(argument)")
    }
}
guard !directory.isEmpty else { fail("usage: SpoolCrashChild --dir DIR [--seed N] [--segment-size OCTETS]") }

let configuration = SpoolConfiguration(directory: directory, shards: 2, segmentSize: segmentSize,
                                       durability: .fsync, outcomeDurability: .fsync)
let spool: Spool
do {
    spool = try Spool(configuration)
} catch {
    fail("open: \(error)")
}

var random = SplitMix64(seed: seed)
let domains = ["alpha.test", "beta.test", "gamma.test", "delta.test", "epsilon.test"]

/* Recipients that may get an outcome: pending ones from earlier runs, then this run's. */
var candidates: [(key: RecipientKey, domain: String)] = spool.shards
    .flatMap { $0.pendingRecipients() }
    .map { ($0.key, $0.domain) }
    .sorted { $0.key < $1.key }
emit("OPEN \(candidates.count)")

var sequence = 0
while true {
    sequence += 1
    let count = Int.random(in: 1...3, using: &random)
    var addresses: [String] = []
    for n in 0..<count {
        addresses.append("u\(seed)x\(sequence)r\(n)@\(domains.randomElement(using: &random)!)")
    }
    let size = Int.random(in: 500...4000, using: &random)
    let body = Array("Subject: crash \(sequence)\r\n\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "a") + UInt8(sequence % 26), count: size)
    let message = NewMessage(sender: "crash@example.org", body: body, recipients: addresses.map { NewRecipient($0) })
    let id: MessageID
    do {
        id = try spool.enqueue(message)
    } catch {
        fail("enqueue: \(error)")
    }
    emit("ENQ \(id) \(addresses.joined(separator: ","))")
    for (index, address) in addresses.enumerated() {
        candidates.append((RecipientKey(message: id, index: UInt32(index)), String(address.split(separator: "@").last!)))
    }

    /* Keep the pending set bounded, so most of the spool goes dead and compaction has to
       move live records (and deferred states) forward, not just delete whole segments. */
    let outcomes = candidates.count > 150 ? 4 : Int.random(in: 0...3, using: &random)
    for _ in 0..<outcomes where !candidates.isEmpty {
        let position = Int.random(in: 0..<candidates.count, using: &random)
        let (key, domain) = candidates[position]
        let roll = Int.random(in: 0..<100, using: &random)
        let kind: String
        let outcome: Outcome
        var next: Int64 = 0
        if roll < 35 {
            kind = "delivered"; outcome = .delivered(reply: "250 2.0.0 ok")
        } else if roll < 50 {
            kind = "bounced"; outcome = .bounced(reply: "550 5.1.1 no such user")
        } else {
            next = 1_000_000 + Int64.random(in: 0..<1_000_000_000, using: &random)
            kind = "deferred"; outcome = .deferred(nextAttempt: next, reply: "451 4.7.1 later")
        }
        emit("TRY \(key) \(kind) \(next)")
        do {
            try spool.shard(for: domain).record(outcome, for: key)
        } catch {
            fail("record \(key): \(error)")
        }
        emit("OUT \(key) \(kind) \(next)")
        if kind != "deferred" { candidates.remove(at: position) }
    }

    if Int.random(in: 0..<20, using: &random) == 0 {
        for shard in spool.shards { shard.compact() }
        emit("CMP")
    }
}
