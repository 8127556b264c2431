// ClientTranscriptTests.swift - golden transcripts for the client session
//
// Each Fixtures/client-*.in file scripts one conversation: the session's
// configuration, the messages it is given, and what the server sends (S:
// lines; consecutive ones arrive as one read) interleaved with driver
// events (tls, timeout, close, send N, quit). The matching .ref file is the
// exact output: every byte the client writes (C: lines) and every other
// action (A: lines), in order. Run with CARRIER_UPDATE_FIXTURES=1 to write
// missing .ref files; a new .ref is read and checked by hand before it is
// committed.

import Bytes
import CarrierTesting
import SMTP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The folder holding the fixtures, found from this source file.
let fixtureDirectory: String = {
    let file = #filePath
    return String(file[..<file.lastIndex(of: "/")!]) + "/Fixtures"
}()

/// fixtureNames - the .in files with the given prefix, without extension.
func fixtureNames(prefix: String) -> [String] {
    guard let directory = opendir(fixtureDirectory) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name.hasPrefix(prefix) && name.hasSuffix(".in") { names.append(String(name.dropLast(3))) }
    }
    return names.sorted()
}

/// readFile - a whole file as text, nil when missing.
func readFile(_ path: String) -> String? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// writeFile - replace a file with `text`.
func writeFile(_ path: String, _ text: String) {
    guard let file = fopen(path, "wb") else { return }
    defer { fclose(file) }
    _ = Array(text.utf8).withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
}

/// render - wire bytes as transcript lines with a prefix; CR LF ends a line, anything odd is escaped.
func render(_ bytes: [UInt8], prefix: String) -> [String] {
    var lines: [String] = []
    var line = ""
    var index = 0
    while index < bytes.count {
        let byte = bytes[index]
        if byte == 0x0D && index + 1 < bytes.count && bytes[index + 1] == 0x0A {
            lines.append(prefix + line)
            line = ""
            index += 2
            continue
        }
        if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
            line.append(Character(Unicode.Scalar(byte)))
        } else {
            let digits = Array("0123456789ABCDEF")
            line += "\\x" + String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 15)])
        }
        index += 1
    }
    if !line.isEmpty { lines.append(prefix + line + "\\") }
    return lines
}

/// unescape - a transcript line back to bytes ("\xNN" escapes).
func unescape(_ text: Substring) -> [UInt8] {
    var bytes: [UInt8] = []
    let utf8 = Array(text.utf8)
    var index = 0
    while index < utf8.count {
        if utf8[index] == UInt8(ascii: "\\"), index + 3 < utf8.count, utf8[index + 1] == UInt8(ascii: "x"),
           let value = UInt8(String(decoding: utf8[(index + 2)...(index + 3)], as: UTF8.self), radix: 16) {
            bytes.append(value)
            index += 4
        } else {
            bytes.append(utf8[index])
            index += 1
        }
    }
    return bytes
}

/// options - "key=value" words of a directive line.
func options(_ line: Substring) -> [String: String] {
    var result: [String: String] = [:]
    for word in line.split(separator: " ").dropFirst() {
        let parts = word.split(separator: "=", maxSplits: 1)
        result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
    }
    return result
}

/// payload - a test body (lines separated by "|") encoded both ways.
func payload(_ body: String) -> MessagePayload {
    let text = body.split(separator: "|", omittingEmptySubsequences: false).joined(separator: "\r\n") + "\r\n"
    var normalized = ByteBuffer()
    normalized.append(text)
    var stuffed = ByteBuffer()
    for line in text.split(separator: "\r\n", omittingEmptySubsequences: false).dropLast() {
        if line.hasPrefix(".") { stuffed.append(".") }
        stuffed.append(String(line) + "\r\n")
    }
    stuffed.append(".\r\n")
    return MessagePayload(normalized: normalized, dotStuffed: stuffed, has8BitData: text.utf8.contains { $0 >= 0x80 })
}

/// describe - one client action as transcript lines.
func describe(_ action: ClientAction) -> [String] {
    switch action {
    case .send(let buffers):
        return render(buffers.flatMap { $0.readableByteArray }, prefix: "C: ")
    case .startTLS: return ["A: starttls"]
    case .armTimer(let timer, let milliseconds): return ["A: timer \(timer.rawValue) \(milliseconds)"]
    case .cancelTimer: return ["A: timer off"]
    case .ready: return ["A: ready"]
    case .completed(let result):
        return result.recipients.map { "A: recipient \($0.index) \($0.disposition) \($0.reply)\(result.notSent ? " (not sent)" : "")" }
    case .failed(let error): return ["A: failed \(error)"]
    case .close: return ["A: close"]
    }
}

/// runClientScript - play a .in script against a ClientSession; the transcript it produces.
func runClientScript(_ script: String) throws -> String {
    var configuration = ClientConfiguration(heloName: "client.test")
    configuration.timeouts = .uniform(1_000)
    var messages: [OutboundMessage] = []
    var implicitTLS = false
    var body: [String] = []
    var session: ClientSession?
    var actions: [ClientAction] = []
    var output: [String] = []
    var pending: [UInt8] = []
    var crypto = TestCrypto()

    func flush(_ session: inout ClientSession) {
        for action in actions { output += describe(action) }
        actions.removeAll()
        guard !pending.isEmpty else { return }
        let consumed = pending.withUnsafeBytes { session.receive($0, into: &actions) }
        for action in actions { output += describe(action) }
        let startedTLS = actions.contains { if case .startTLS = $0 { return true } else { return false } }
        actions.removeAll()
        if consumed < pending.count && startedTLS {
            /* What EventCore does on upgrade: plaintext after the 220 is dropped. */
            output.append("A: discarded \(pending.count - consumed) bytes")
            pending.removeAll()
        } else {
            pending.removeFirst(consumed)
        }
    }

    for line in script.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("#") || line.isEmpty { continue }
        if line.hasPrefix("S: ") || line == "S:" {
            pending += unescape(line.dropFirst(min(3, line.count))) + [0x0D, 0x0A]
            continue
        }
        if line.hasPrefix("R: ") {
            /* Raw server bytes without an added CRLF. */
            pending += unescape(line.dropFirst(3))
            continue
        }
        if session != nil { flush(&session!) }
        let words = line.split(separator: " ")
        switch words.first ?? "" {
        case "config":
            let settings = options(line)
            if let name = settings["helo"] { configuration.heloName = name }
            switch settings["tls"] {
            case "never": configuration.tls = .never
            case "required": configuration.tls = .required
            default: configuration.tls = .opportunistic
            }
            if settings["pipelining"] == "off" { configuration.pipelining = false }
            if settings["chunking"] == "off" { configuration.chunking = false }
            if let auth = settings["auth"] {
                let parts = auth.split(separator: ":", maxSplits: 1).map(String.init)
                configuration.credentials = .password(parts[0], parts[1])
            }
            if let token = settings["oauth"] {
                let parts = token.split(separator: ":", maxSplits: 1).map(String.init)
                configuration.credentials = SMTPCredentials(username: parts[0], secret: .oauth2Token(parts[1]))
            }
            if let list = settings["mechanisms"] {
                configuration.mechanisms = list.split(separator: ",").compactMap { SASLMechanism(rawValue: String($0)) }
            }
            if settings["plaintextAuth"] == "on" { configuration.allowPlaintextAuthentication = true }
            if let nonce = settings["nonce"] { crypto = TestCrypto(randomValues: [Base64.decode(nonce)!]) }
            implicitTLS = settings["implicitTLS"] != nil
        case "body":
            body.append(String(line.dropFirst(5)))
        case "message":
            let settings = options(line)
            let sender = try ReversePath(parsing: String(settings["from"]!.dropFirst().dropLast()))
            let recipients = try settings["to"]!.split(separator: ",").map { try MailAddress(parsing: String($0.dropFirst().dropLast())) }
            var message = OutboundMessage(sender: sender, recipients: recipients, payload: payload(body.joined(separator: "|")))
            body.removeAll()
            if let ret = settings["ret"] { message.dsnReturn = ret }
            if let envid = settings["envid"] { message.envelopeID = envid }
            if let notify = settings["notify"] {
                for index in recipients.indices {
                    message.recipientDSN[index] = RecipientDSN(notify: notify == "NEVER" ? [] : notify.split(separator: ",").map(String.init),
                                                               originalRecipient: recipients[index].description)
                }
            }
            if let submitter = settings["submitter"] { message.authenticatedSubmitter = try MailAddress(parsing: submitter) }
            messages.append(message)
        case "start":
            session = ClientSession(configuration: configuration, crypto: crypto)
            session!.start(implicitTLS: implicitTLS, into: &actions)
            flush(&session!)
        case "send":
            session!.send(messages[Int(words[1])!], into: &actions)
        case "tls":
            session!.tlsEstablished(into: &actions)
        case "timeout":
            session!.timeoutFired(into: &actions)
        case "close":
            session!.connectionClosed(into: &actions)
        case "quit":
            session!.quit(into: &actions)
        default:
            Issue.record("unknown script line: \(line)")
        }
        if session != nil { flush(&session!) }
    }
    if session != nil { flush(&session!) }
    return output.joined(separator: "\n") + "\n"
}

@Suite("Client transcripts")
struct ClientTranscriptTests {
    @Test(arguments: fixtureNames(prefix: "client-"))
    func transcript(name: String) throws {
        try checkTranscript(name, run: runClientScript)
    }

    @Test func thereAreEnoughTranscripts() {
        #expect(fixtureNames(prefix: "client-").count >= 24)
    }
}
