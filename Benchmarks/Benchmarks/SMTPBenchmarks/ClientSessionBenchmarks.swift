// ClientSessionBenchmarks.swift - one pipelined client transaction in steady state
//
// A ClientSession that finished its handshake (EHLO with PIPELINING) sends
// one message to two recipients and reads the server's replies, again and
// again on the same connection: send, feed "250 / 250 / 250 / 250 / 354"
// (RSET, which opens every transaction after the first, MAIL and two RCPT),
// feed the final "250", collect the result. No sockets: this is the state
// machine's own cost, and its malloc count per transaction.

import Benchmark
import Bytes
import SMTP

/// A SASLCrypto for a session that never authenticates.
private struct NoCrypto: SASLCrypto {
    func hmacMD5(key: [UInt8], message: [UInt8]) -> [UInt8] { [] }
    func sha256(_ message: [UInt8]) -> [UInt8] { [] }
    func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] { [] }
    func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] { [] }
    func randomBytes(_ count: Int) -> [UInt8] { [UInt8](repeating: 0, count: count) }
}

/// clientSessionBenchmarks - register the transaction benchmark.
func clientSessionBenchmarks() {
    let handshake = Array("220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 ENHANCEDSTATUSCODES\r\n".utf8)
    let firstEnvelopeReplies = Array("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n".utf8)
    let envelopeReplies = Array("250 2.0.0 Ok\r\n".utf8) + firstEnvelopeReplies
    let finalReply = Array("250 2.0.0 Ok: queued as 4Xk9qT1ZzBz9v\r\n".utf8)
    let body = Array("Subject: hello\r\n\r\nA short transactional message.\r\n".utf8)
    let payload = try! body.withUnsafeBytes { try MessagePayload(encoding: $0) }
    let message = OutboundMessage(sender: try! ReversePath(parsing: "sender@example.test"),
                                  recipients: [try! MailAddress(parsing: "a@dest.test"), try! MailAddress(parsing: "b@dest.test")],
                                  payload: payload)

    Benchmark("Client transaction, pipelined (2 recipients)",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo,
                                   maxDuration: .seconds(5), maxIterations: 1_000)) { benchmark in
        var session = ClientSession(configuration: ClientConfiguration(heloName: "client.test"), crypto: NoCrypto())
        var actions: [ClientAction] = []
        actions.reserveCapacity(32)
        session.start(into: &actions)
        _ = handshake.withUnsafeBytes { session.receive($0, into: &actions) }
        /* Warm-up transactions so buffers and arrays reach their steady size. */
        for round in 0..<3 {
            actions.removeAll(keepingCapacity: true)
            session.send(message, into: &actions)
            _ = (round == 0 ? firstEnvelopeReplies : envelopeReplies).withUnsafeBytes { session.receive($0, into: &actions) }
            _ = finalReply.withUnsafeBytes { session.receive($0, into: &actions) }
        }
        /* Measure only a session that really delivers: both recipients, every time. */
        let delivered = actions.contains {
            if case .completed(let result) = $0 { return result.recipients.allSatisfy { $0.disposition == .delivered } }
            return false
        }
        precondition(delivered && session.isUsable, "the benchmark session did not complete a transaction")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            actions.removeAll(keepingCapacity: true)
            session.send(message, into: &actions)
            _ = envelopeReplies.withUnsafeBytes { session.receive($0, into: &actions) }
            _ = finalReply.withUnsafeBytes { session.receive($0, into: &actions) }
            blackHole(actions.count)
        }
        benchmark.stopMeasurement()
    }
}
