// SessionPairTests.swift - a ClientSession talking to a ServerSession, in memory
//
// The two state machines were written from the RFCs independently of each
// other; here they must agree. Bytes move between them with no sockets, in
// random-sized pieces; STARTTLS is simulated by calling tlsEstablished on
// both sides. Every body the client sends must arrive at the server exactly
// as normalised, whatever pipelining, chunking and AUTH mechanism is used.

import Bytes
import CarrierTesting
import SMTP
import Testing

/// What one conversation produced.
private struct Conversation {
    var delivered: [ReceivedMessage] = []
    var results: [TransactionResult] = []
    var clientFailure: ClientSessionError?
    var authenticatedUser: String?
}

/// converse - run a client and a server against each other until both are quiet.
private func converse(client configuration: ClientConfiguration, server serverConfiguration: ServerConfiguration,
              users: [String: String] = [:], messages: [OutboundMessage], seed: UInt64 = 1) -> Conversation {
    var random = SplitMix64(seed: seed)
    let crypto = TestCrypto(randomValues: [Array("0123456789abcdef".utf8), Array("fedcba9876543210".utf8)])
    let store = users.isEmpty ? nil : StaticCredentialStore(passwords: users, iterations: 4096, crypto: crypto)
    var client = ClientSession(configuration: configuration, crypto: crypto)
    var server = ServerSession(configuration: serverConfiguration, credentials: store, crypto: crypto)
    var toServer: [UInt8] = [], toClient: [UInt8] = []
    var clientActions: [ClientAction] = [], serverActions: [ServerAction] = []
    var conversation = Conversation()
    var clientUpgrading = false, serverUpgrading = false, serverWaiting = false, clientClosed = false
    var queued = messages

    server.start(into: &serverActions)
    client.start(into: &clientActions)
    for _ in 0..<10_000 {
        /* Perform what each side asked for. */
        let serverDid = serverActions
        serverActions.removeAll()
        for action in serverDid {
            switch action {
            case .send(let buffer): toClient += buffer.readableByteArray
            case .startTLS: serverUpgrading = true
            case .deliver(let message):
                conversation.delivered.append(message)
                serverWaiting = true
            case .authenticated(let user): conversation.authenticatedUser = user
            case .verifyPassword(let user, let password):
                server.passwordChecked(store?.verify(username: user, password: password) == true, into: &serverActions)
            case .armTimer, .cancelTimer, .close: break
            }
        }
        let clientDid = clientActions
        clientActions.removeAll()
        for action in clientDid {
            switch action {
            case .send(let buffers): toServer += buffers.flatMap { $0.readableByteArray }
            case .startTLS: clientUpgrading = true
            case .ready:
                if !queued.isEmpty { client.send(queued.removeFirst(), into: &clientActions) } else { client.quit(into: &clientActions) }
            case .completed(let result): conversation.results.append(result)
            case .failed(let error): conversation.clientFailure = error
            case .close: clientClosed = true
            case .armTimer, .cancelTimer: break
            }
        }
        if serverWaiting {
            serverWaiting = false
            server.messageAccepted(Reply(code: 250, enhanced: EnhancedStatus(2, 0, 0), text: "2.0.0 Ok: queued"), into: &serverActions)
            continue
        }
        if clientUpgrading && serverUpgrading && toServer.isEmpty && toClient.isEmpty {
            clientUpgrading = false
            serverUpgrading = false
            server.tlsEstablished(into: &serverActions)
            client.tlsEstablished(into: &clientActions)
            continue
        }
        /* Move a random-sized piece each way. */
        var moved = false
        if !toServer.isEmpty && !serverUpgrading {
            let piece = min(toServer.count, 1 + Int.random(in: 0..<600, using: &random))
            let consumed = toServer.withUnsafeBytes { server.receive(UnsafeRawBufferPointer(rebasing: $0[..<piece]), into: &serverActions) }
            toServer.removeFirst(consumed)
            moved = consumed > 0 || !serverActions.isEmpty
            if serverUpgrading { toServer.removeAll() }
        }
        if !toClient.isEmpty && !clientUpgrading {
            let piece = min(toClient.count, 1 + Int.random(in: 0..<600, using: &random))
            let consumed = toClient.withUnsafeBytes { client.receive(UnsafeRawBufferPointer(rebasing: $0[..<piece]), into: &clientActions) }
            toClient.removeFirst(consumed)
            moved = moved || consumed > 0 || !clientActions.isEmpty
            if clientUpgrading { toClient.removeAll() }
        }
        if !moved && serverActions.isEmpty && clientActions.isEmpty && (clientClosed || server.isClosed) { break }
        if !moved && serverActions.isEmpty && clientActions.isEmpty && toServer.isEmpty && toClient.isEmpty
            && !(clientUpgrading && serverUpgrading) { break }
    }
    return conversation
}

/// randomBody - lines of random text, dots, blank lines, UTF-8 and mixed line endings.
private func randomBody(_ random: inout SplitMix64) -> [UInt8] {
    var body: [UInt8] = []
    for _ in 0..<(1 + Int.random(in: 0..<40, using: &random)) {
        switch Int.random(in: 0..<6, using: &random) {
        case 0: body += Array(".".utf8)
        case 1: body += Array("..dots".utf8)
        case 2: body += Array("Grüße".utf8)
        default: break
        }
        for _ in 0..<Int.random(in: 0..<120, using: &random) { body.append(UInt8(0x20 + Int.random(in: 0..<0x5F, using: &random))) }
        switch Int.random(in: 0..<4, using: &random) {
        case 0: body += [0x0A]
        case 1: body += [0x0D]
        default: body += [0x0D, 0x0A]
        }
    }
    return body
}

@Suite("Client and server sessions together")
struct SessionPairTests {
    /// Random bodies through every combination of pipelining and chunking arrive exactly.
    @Test(arguments: [(true, true), (true, false), (false, true), (false, false)])
    func bodiesArriveExactly(pipelining: Bool, chunking: Bool) throws {
        var random = SplitMix64(seed: pipelining ? (chunking ? 11 : 12) : (chunking ? 13 : 14))
        for round in 0..<50 {
            var clientConfiguration = ClientConfiguration(heloName: "client.test")
            clientConfiguration.chunking = chunking
            var serverConfiguration = ServerConfiguration(hostname: "mx.test")
            serverConfiguration.pipelining = pipelining
            var messages: [OutboundMessage] = []
            var bodies: [[UInt8]] = []
            for index in 0..<(1 + Int.random(in: 0..<3, using: &random)) {
                let body = randomBody(&random)
                bodies.append(body)
                let payload = try body.withUnsafeBytes { try MessagePayload(encoding: $0, policy: EncoderPolicy(bareLineEndings: .normalize)) }
                messages.append(OutboundMessage(sender: try ReversePath(parsing: "s\(index)@example.test"),
                                                recipients: [try MailAddress(parsing: "r\(index)@mx.test")], payload: payload))
            }
            let conversation = converse(client: clientConfiguration, server: serverConfiguration, messages: messages, seed: UInt64(round))
            #expect(conversation.clientFailure == nil, "round \(round): \(String(describing: conversation.clientFailure))")
            #expect(conversation.delivered.count == bodies.count, "round \(round)")
            for (message, body) in zip(conversation.delivered, bodies) {
                #expect(message.body.readableByteArray == normalized(body), "round \(round)")
            }
            #expect(conversation.results.flatMap(\.recipients).allSatisfy { $0.disposition == .delivered })
        }
    }

    /// Each SASL mechanism of the client authenticates against the server's, over STARTTLS.
    @Test(arguments: [SASLMechanism.scramSHA256, .cramMD5, .plain, .login])
    func mechanismsInteroperate(mechanism: SASLMechanism) throws {
        var clientConfiguration = ClientConfiguration(heloName: "client.test")
        clientConfiguration.credentials = .password("alice", "correct horse")
        clientConfiguration.mechanisms = [mechanism]
        clientConfiguration.tls = .required
        var serverConfiguration = ServerConfiguration(hostname: "mx.test")
        serverConfiguration.startTLSAvailable = true
        serverConfiguration.requireTLS = true
        serverConfiguration.requireAuthentication = true
        serverConfiguration.authMechanisms = SASLServerMechanism.allCases
        let payload = try Array("Hello\r\n".utf8).withUnsafeBytes { try MessagePayload(encoding: $0) }
        let message = OutboundMessage(sender: try ReversePath(parsing: "alice@example.test"),
                                      recipients: [try MailAddress(parsing: "bob@mx.test")], payload: payload)
        let conversation = converse(client: clientConfiguration, server: serverConfiguration,
                                    users: ["alice": "correct horse"], messages: [message])
        #expect(conversation.clientFailure == nil)
        #expect(conversation.authenticatedUser == "alice")
        #expect(conversation.delivered.first?.authenticatedUser == "alice")
        #expect(conversation.delivered.first?.isTLS == true)
    }

    /// A wrong password fails AUTH on both sides, with the typed error the engine defers on.
    @Test(arguments: [SASLMechanism.scramSHA256, .cramMD5, .plain, .login])
    func wrongPasswordIsAuthenticationFailed(mechanism: SASLMechanism) throws {
        var clientConfiguration = ClientConfiguration(heloName: "client.test")
        clientConfiguration.credentials = .password("alice", "wrong")
        clientConfiguration.mechanisms = [mechanism]
        clientConfiguration.allowPlaintextAuthentication = true
        var serverConfiguration = ServerConfiguration(hostname: "mx.test")
        serverConfiguration.authMechanisms = SASLServerMechanism.allCases
        serverConfiguration.allowPlaintextAuthentication = true
        let conversation = converse(client: clientConfiguration, server: serverConfiguration,
                                    users: ["alice": "correct horse"], messages: [])
        guard case .authenticationFailed(let reply) = conversation.clientFailure else {
            Issue.record("expected authenticationFailed, got \(String(describing: conversation.clientFailure))")
            return
        }
        #expect(reply.code == 535)
        #expect(conversation.clientFailure?.isTemporary == true)
    }
}
