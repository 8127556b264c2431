// TestSupport.swift - what several SMTP test files share: a seeded generator, the
// reference normalisation of a body, and the golden-transcript check

import Testing

#if canImport(Glibc)
import Glibc
#endif


/// normalized - the reference: every CRLF, lone CR and lone LF becomes CRLF; a final CRLF
/// is added when missing; an empty body stays empty.
func normalized(_ body: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var index = 0
    while index < body.count {
        let byte = body[index]
        if byte == 13 || byte == 10 {
            out += [13, 10]
            index += byte == 13 && index + 1 < body.count && body[index + 1] == 10 ? 2 : 1
        } else {
            out.append(byte)
            index += 1
        }
    }
    if let last = out.last, last != 10 { out += [13, 10] }
    return out
}

/// checkTranscript - play fixture `name` with `run` and compare with its .ref file.
///
/// With CARRIER_UPDATE_FIXTURES set, a missing .ref is written instead (to be
/// read and checked by hand before it is committed).
func checkTranscript(_ name: String, run: (String) throws -> String) throws {
    let script = try #require(readFile("\(fixtureDirectory)/\(name).in"))
    let produced = try run(script)
    let referencePath = "\(fixtureDirectory)/\(name).ref"
    guard let expected = readFile(referencePath) else {
        if getenv("CARRIER_UPDATE_FIXTURES") != nil {
            writeFile(referencePath, produced)
            return
        }
        Issue.record("missing \(name).ref; produced:\n\(produced)")
        return
    }
    #expect(produced == expected, "transcript \(name) differs")
}
