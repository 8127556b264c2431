// SinkWorker.swift - one loop thread of the sink: its listeners, counters and per-thread scratch
//
// Each thread listens on every address (SO_REUSEPORT spreads connections)
// and serves the connections it accepts from start to end, so nothing on a
// connection's path is shared with another thread except the few atomics in
// `SinkShared` (one add per connection) and, when --record is on, the
// record writer's lock (one per message).

import EventCore
import SMTP
import SMTPStreams

#if canImport(Glibc)
import Glibc
#endif

/// The sink's work on one loop thread.
///
/// Confined to its loop's thread. Lives while its listeners or any of its
/// connections do (each holds it).
final class SinkWorker {
    let index: Int                      /* thread number, 0-based */
    let loop: Loop
    let shared: SinkShared
    let counters: SinkCounters          /* this thread's block; the server reads it */
    private var listeners: [TCPListener] = []
    private var queueIDs: UInt64 = 0    /* messages given a queue id on this thread */
    private var line = JSONWriter()     /* the record line being built */
    private let maildir: SinkMaildir?
    private let tooMany = ByteBuffer(string: "421 4.7.0 Too many connections\r\n")

    init(index: Int, loop: Loop, shared: SinkShared, counters: SinkCounters) {
        self.index = index
        self.loop = loop
        self.shared = shared
        self.counters = counters
        maildir = shared.configuration.maildirPath.map {
            SinkMaildir(directory: $0, thread: index, hostname: shared.configuration.hostname)
        }
    }

    /// listen - open a listener on each address; returns the bound addresses (real ports for port 0).
    func listen(on addresses: [SocketAddress]) throws(SinkError) -> [SocketAddress] {
        var bound: [SocketAddress] = []
        for address in addresses {
            do {
                let listener = try TCPListener(loop: loop, address: address, reusePort: shared.configuration.threads > 1) {
                    [self] tcp in accept(tcp)
                }
                listeners.append(listener)
                bound.append(listener.localAddress)
            } catch {
                listeners.forEach { $0.close() }
                throw .listen(address, error)
            }
        }
        return bound
    }

    /// accept - start a session on a new connection, or refuse it when over --max-connections.
    private func accept(_ tcp: TCPConnection) {
        let open = shared.openConnections.add(1, ordering: .relaxed).newValue
        if let limit = shared.configuration.maximumConnections, open > limit {
            shared.openConnections.subtract(1, ordering: .relaxed)
            counters.add(.connectionsRefused)
            counters.reply(421)
            ConnectionRefusal.refuse(tcp, with: tooMany)
            return
        }
        let number = shared.connectionNumbers.add(1, ordering: .relaxed).newValue
        counters.add(.connections)
        let session = SinkSession(worker: self, number: number,
                                  remote: shared.recorder == nil ? nil : tcp.remoteAddress?.description)
        ServerConnection.start(tcp, configuration: shared.connection, policy: session,
                               credentials: shared.credentials, crypto: shared.crypto, delegate: session)
    }

    /// connectionClosed - a session ended.
    func connectionClosed() {
        shared.openConnections.subtract(1, ordering: .relaxed)
    }

    // MARK: Accepting a message

    /// acceptMessage - store, record and count an accepted message; returns the 250 to answer, or the refusal.
    func acceptMessage(_ message: ReceivedMessage, session: SinkSession, headers: SinkMessageHeaders?) -> Reply {
        if let maildir {
            do {
                try maildir.store(message)
            } catch {
                writeStandardError("carrier sink: \(error)\n")
                counters.add(.messagesRefused)
                counters.reply(451)
                return shared.storeFailure
            }
        }
        queueIDs += 1
        let queueID = (queueIDs << 10) | UInt64(index)
        counters.add(.messagesAccepted)
        counters.add(.messageRecipients, message.recipients.count)
        counters.add(.bytesAccepted, message.body.readableBytes)
        counters.reply(250)
        if let recorder = shared.recorder {
            record(message, session: session, headers: headers, queueID: queueID)
            recorder.append(line.bytes)
        }
        return Reply(code: 250, enhanced: nil, text: SinkWorker.acceptText(queueID))
    }

    /// acceptText - "2.0.0 Ok: queued as ID", the id in uppercase hexadecimal, built in one allocation.
    static func acceptText(_ queueID: UInt64) -> String {
        let prefix: StaticString = "2.0.0 Ok: queued as "
        let digits = max(1, (67 - queueID.leadingZeroBitCount) / 4)
        return String(unsafeUninitializedCapacity: prefix.utf8CodeUnitCount + digits) { buffer in
            let count = prefix.utf8CodeUnitCount
            _ = UnsafeMutableRawBufferPointer(buffer).initializeMemory(
                as: UInt8.self, from: UnsafeBufferPointer(start: prefix.utf8Start, count: count))
            var value = queueID
            for position in stride(from: count + digits - 1, through: count, by: -1) {
                let digit = UInt8(value & 0xF)
                buffer[position] = digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "A") + digit - 10
                value >>= 4
            }
            return count + digits
        }
    }

    /// record - build the JSON line for an accepted message in `line`.
    private func record(_ message: ReceivedMessage, session: SinkSession, headers: SinkMessageHeaders?, queueID: UInt64) {
        line.reset()
        line.beginObject()
        line.key("time"); line.timestamp()
        line.key("connection"); line.integer(Int(session.number))
        line.key("queue_id"); line.string(String(queueID, radix: 16, uppercase: true))
        line.key("remote"); line.string(session.remote)
        line.key("helo"); line.string(message.heloName)
        line.key("mail_from")
        switch message.sender {
        case .null: line.string("")
        case .mailbox(let address): line.string(address.description)
        }
        line.key("rcpt_to")
        line.beginArray()
        for (address, _) in message.recipients { line.string(address.description) }
        line.endArray()
        line.key("size"); line.integer(message.body.readableBytes)
        /* DSN parameters (RFC 3461), only when the client sent any: per recipient in rcpt_to order. */
        if let ret = message.mailParameters.dsnReturn { line.key("ret"); line.string(ret.rawValue) }
        if let envid = message.mailParameters.envelopeID { line.key("envid"); line.string(envid) }
        if message.recipients.contains(where: { $0.parameters.notify != nil }) {
            line.key("notify")
            line.beginArray()
            for (_, parameters) in message.recipients {
                guard let notify = parameters.notify else { line.null(); continue }
                let words = [(RecipientParameters.Notify.success, "SUCCESS"), (.failure, "FAILURE"), (.delay, "DELAY")]
                    .filter { notify.contains($0.0) }.map(\.1)
                line.string(words.isEmpty ? "NEVER" : words.joined(separator: ","))
            }
            line.endArray()
        }
        if message.recipients.contains(where: { $0.parameters.originalRecipient != nil }) {
            line.key("orcpt")
            line.beginArray()
            for (_, parameters) in message.recipients {
                line.string(parameters.originalRecipient.map { "\($0.addressType);\($0.address)" })
            }
            line.endArray()
        }
        line.key("message_id"); line.string(headers?.messageID)
        line.key("x_carrier_id"); line.string(headers?.carrierID)
        line.key("tls"); line.bool(message.isTLS)
        line.key("auth"); line.string(message.authenticatedUser)
        line.endObject()
        line.newline()
    }
}
