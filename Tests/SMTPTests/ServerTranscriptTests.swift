// ServerTranscriptTests.swift - golden transcripts for the server session
//
// Each Fixtures/server-*.in file scripts one conversation with a
// ServerSession: its configuration, what the client sends (C: lines, each
// ending CRLF, consecutive ones in one read; R: lines raw, without CRLF) and
// driver events (tls, accept <reply>, reject <reply>, timeout). The .ref is
// the exact output: every byte the server writes (S: lines) and every other
// action (A: lines), including how a read was only partly consumed. The
// harness plays the driver: input left unconsumed while a message is being
// stored is offered again after the decision; after STARTTLS it is dropped.

import Bytes
import CarrierTesting
import SMTP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A policy that refuses recipients at one domain, for transcripts.
private final class ScriptPolicy: ServerPolicy {
    let refusedDomain: String?
    init(refusedDomain: String?) { self.refusedDomain = refusedDomain }
    func recipient(_ recipient: MailAddress, parameters: RecipientParameters, session: ServerSessionView) -> Reply? {
        guard recipient.domain == refusedDomain else { return nil }
        return Reply(code: 550, enhanced: EnhancedStatus(5, 1, 1), text: "5.1.1 <\(recipient)>: Recipient address rejected: User unknown")
    }
}

/// describe - one server action as transcript lines.
private func describe(_ action: ServerAction) -> [String] {
    switch action {
    case .send(let buffer): return render(buffer.readableByteArray, prefix: "S: ")
    case .startTLS: return ["A: starttls"]
    case .armTimer(let milliseconds): return ["A: timer \(milliseconds)"]
    case .cancelTimer: return ["A: timer off"]
    case .authenticated(let user): return ["A: authenticated \(user)"]
    case .verifyPassword(let user, _): return ["A: verify password of \(user)"]
    case .close: return ["A: close"]
    case .deliver(let message):
        var lines = ["A: deliver from \(message.sender) to \(message.recipients.map { $0.address.path }.joined(separator: ","))"
                     + (message.authenticatedUser.map { " auth \($0)" } ?? "") + (message.isTLS ? " tls" : "")]
        lines += render(message.body.readableByteArray, prefix: "A: body ")
        return lines
    }
}

/// reply - "250 2.0.0 text" as a Reply.
private func parseReply(_ text: Substring) -> Reply {
    let code = Int(text.prefix(3))!
    let rest = String(text.dropFirst(4))
    return Reply(code: code, enhanced: EnhancedStatus(String(rest.split(separator: " ").first ?? "")), text: rest)
}

/// runServerScript - play a .in script against a ServerSession; the transcript it produces.
func runServerScript(_ script: String) throws -> String {
    var configuration = ServerConfiguration(hostname: "mx.test")
    configuration.commandTimeout = 1_000
    configuration.dataTimeout = 500
    var users: [String: String] = [:]
    var refusedDomain: String?
    var session: ServerSession?
    var actions: [ServerAction] = []
    var output: [String] = []
    var pending: [UInt8] = []
    var waitingForDecision = false
    let crypto = TestCrypto(randomValues: [Array("0123456789abcdef".utf8)])

    /// verifyAsked - what a driver does for a verifyPassword action: check the users and
    /// answer (the answer's actions follow). True when there was one.
    func verifyAsked(_ session: inout ServerSession) -> Bool {
        var asked: (String, String)?
        for action in actions { if case .verifyPassword(let user, let password) = action { asked = (user, password) } }
        guard let (user, password) = asked else { return false }
        var answer: [ServerAction] = []
        session.passwordChecked(users[user] == password, into: &answer)
        actions += answer
        return true
    }

    func flush(_ session: inout ServerSession) {
        _ = verifyAsked(&session)
        for action in actions { output += describe(action) }
        actions.removeAll()
        while !pending.isEmpty && !waitingForDecision && !session.isClosed {
            let count = pending.count
            let consumed = pending.withUnsafeBytes { session.receive($0, into: &actions) }
            /* Checked and answered: the session reads on through the rest. */
            let verified = verifyAsked(&session)
            for action in actions { output += describe(action) }
            let upgraded = actions.contains { if case .startTLS = $0 { return true } else { return false } }
            waitingForDecision = actions.contains { if case .deliver = $0 { return true } else { return false } }
            actions.removeAll()
            pending.removeFirst(consumed)
            if upgraded && !pending.isEmpty {
                output.append("A: discarded \(pending.count) bytes")
                pending.removeAll()
            }
            if verified { continue }
            if consumed < count && !upgraded && !waitingForDecision { break }
            if consumed == 0 { break }
        }
        if waitingForDecision && !pending.isEmpty { output.append("A: kept \(pending.count) bytes") }
    }

    for line in script.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("#") || line.isEmpty { continue }
        if line.hasPrefix("C: ") || line == "C:" {
            pending += unescape(line.dropFirst(min(3, line.count))) + [0x0D, 0x0A]
            continue
        }
        if line.hasPrefix("R: ") {
            pending += unescape(line.dropFirst(3))
            continue
        }
        if session != nil { flush(&session!) }
        let words = line.split(separator: " ")
        switch words.first ?? "" {
        case "config":
            let settings = options(line)
            if let list = settings["auth"] {
                configuration.authMechanisms = list.split(separator: ",").compactMap { SASLServerMechanism(rawValue: String($0)) }
            }
            if let list = settings["users"] {
                for pair in list.split(separator: ",") {
                    let parts = pair.split(separator: ":", maxSplits: 1).map(String.init)
                    users[parts[0]] = parts[1]
                }
            }
            configuration.startTLSAvailable = settings["starttls"] != nil
            configuration.requireTLS = settings["requireTLS"] != nil
            configuration.requireAuthentication = settings["requireAuth"] != nil
            configuration.allowPlaintextAuthentication = settings["plaintextAuth"] != nil
            if settings["bareLF"] == "normalize" { configuration.bareLineEndings = .normalize }
            if let value = settings["maxRecipients"] { configuration.maximumRecipients = Int(value)! }
            if let value = settings["maxSize"] { configuration.maximumMessageSize = Int(value)! }
            if let value = settings["maxErrors"] { configuration.maximumErrors = Int(value)! }
            if settings["noPipelining"] != nil { configuration.pipelining = false }
            refusedDomain = settings["refuse"]
        case "start":
            let store = users.isEmpty ? nil : StaticCredentialStore(passwords: users, iterations: 4096, crypto: crypto)
            session = ServerSession(configuration: configuration, policy: ScriptPolicy(refusedDomain: refusedDomain),
                                    credentials: store, crypto: crypto)
            session!.start(implicitTLS: words.contains("implicitTLS"), into: &actions)
        case "tls":
            session!.tlsEstablished(into: &actions)
        case "accept":
            waitingForDecision = false
            session!.messageAccepted(parseReply(line.dropFirst(7)), into: &actions)
        case "reject":
            waitingForDecision = false
            session!.messageRejected(parseReply(line.dropFirst(7)), into: &actions)
        case "timeout":
            session!.timeoutFired(into: &actions)
        default:
            Issue.record("unknown script line: \(line)")
        }
        if session != nil { flush(&session!) }
    }
    if session != nil { flush(&session!) }
    return output.joined(separator: "\n") + "\n"
}

@Suite("Server transcripts")
struct ServerTranscriptTests {
    @Test(arguments: fixtureNames(prefix: "server-"))
    func transcript(name: String) throws {
        try checkTranscript(name, run: runServerScript)
    }

    @Test func thereAreEnoughTranscripts() {
        #expect(fixtureNames(prefix: "server-").count >= 16)
        #expect(fixtureNames(prefix: "client-").count + fixtureNames(prefix: "server-").count >= 40)
    }
}
