// BlastSlot.swift - one connection slot of a worker: the connection it holds now and its history
//
// A slot outlives its connections: with --messages-per-connection, after a
// failure, or after QUIT it opens the next one, and it remembers what the
// worker needs across them (failures in a row, which destination is next).
// It is also the connection's delegate, because a `ClientConnection` holds
// its delegate weakly and reports which connection spoke, not which slot.

import EventCore
import SMTP
import SMTPStreams

/// One of a worker's connection slots.
///
/// Confined to the worker's loop thread; owned by the worker.
final class BlastSlot: ClientConnectionDelegate {
    unowned let worker: BlastWorker
    let number: Int                         /* run-wide slot number: picks the --source address */
    var connection: ClientConnection?       /* the current connection; nil between connections */
    var destination = 0                     /* index of the next destination to try (mod count) */
    var ready = false                       /* the current connection finished its handshake */
    var settled = false                     /* warming: got ready or failed once */
    var quitting = false                    /* QUIT was asked for */
    var abandoned = false                   /* closed by the worker while stopping: not an error, results ignored */
    var retired = false                     /* gave up after failures in a row */
    var window = 1                          /* messages in flight allowed on this connection */
    var handedOver = 0                      /* messages given to the current connection */
    var failuresInARow = 0                  /* handshake failures since the last ready connection */
    var connectStart: UInt64 = 0            /* when the current connection began, monotonic ns */
    var retry: LoopTimer?                   /* pending reconnect after a failure */
    private var carried: [(tag: Int, size: Int)] = []  /* messages in flight, oldest at carriedHead */
    private var carriedHead = 0

    init(worker: BlastWorker, number: Int) {
        self.worker = worker
        self.number = number
    }

    /// True when the slot holds no connection and waits for no reconnect.
    var isDormant: Bool { connection == nil && retry == nil }

    /// noteHandedOver - message `tag` of `size` octets was handed to the connection.
    func noteHandedOver(_ tag: Int, size: Int) {
        carried.append((tag, size))
    }

    /// takeSize - the size of the oldest message in flight, which just completed.
    func takeSize() -> Int {
        guard carriedHead < carried.count else { return 0 }
        let size = carried[carriedHead].size
        carriedHead += 1
        if carriedHead == carried.count {
            carried.removeAll(keepingCapacity: true)
            carriedHead = 0
        }
        return size
    }

    /// takeInFlight - the tags of every message in flight, oldest first; none is in flight afterwards.
    func takeInFlight() -> [Int] {
        defer {
            carried.removeAll(keepingCapacity: true)
            carriedHead = 0
        }
        return carried[carriedHead...].map(\.tag)
    }

    // MARK: ClientConnectionDelegate

    func clientConnection(_ connection: ClientConnection, finished stage: ClientConnectionStage, nanoseconds: UInt64) {
        worker.stage(self, stage, nanoseconds: nanoseconds)
    }

    func clientConnectionReady(_ connection: ClientConnection) {
        guard connection === self.connection else { return }
        worker.ready(self, connection)
    }

    func clientConnection(_ connection: ClientConnection, completed result: TransactionResult, tag: Int, nanoseconds: UInt64) {
        worker.completed(self, connection, result, tag: tag, nanoseconds: nanoseconds)
    }

    func clientConnectionClosed(_ connection: ClientConnection, error: ClientConnectionError?) {
        guard connection === self.connection else { return }
        carried.removeAll(keepingCapacity: true)
        carriedHead = 0
        worker.closed(self, error: error)
    }
}
