// SQLiteReference.swift - the reference store: SQLite in WAL mode, synchronous=FULL, group commit
//
// What a careful engineer would build with SQLite for the same job, batched
// the way a group-commit queue batches: producers hand their message to one
// writer thread through a mutex+condition queue and block; the writer takes
// everything queued, writes it in one transaction and acknowledges that whole
// batch after COMMIT returns. With journal_mode=WAL and synchronous=FULL,
// SQLite fsyncs the WAL at every COMMIT, so an acknowledged message is on
// disk. Automatic checkpoints stay at SQLite's default (every 1,000 WAL
// pages), run by the writer inside a COMMIT, as they would in production.

import CSQLite
import Foundation

/// runSQLiteReference - the concurrent-producer workload against a fresh database in `directory`.
func runSQLiteReference(directory: String, producers: Int, messages: Int, callbacks: Bool = false, loops: Int = 2) throws -> ProducerResult {
    let store = try SQLiteGroupCommitStore(path: directory + "/reference.sqlite")
    let source = MessageSource(producers: producers)
    let result: ProducerResult
    if callbacks {
        result = runLoopProducers(name: "SQLite WAL synchronous=FULL, group commit; producers on \(loops) loop threads", producers: producers, messages: messages, loops: loops) { producer, index, done in
            store.submit(source.message(producer: producer, index: index)) { failure in
                if let failure { fatalError("SQLite reference: \(failure)") }
                done()
            }
        }
    } else {
        result = runProducers(name: "SQLite WAL synchronous=FULL, group commit; blocked threads",
                              producers: producers, messages: messages) { producer, index in
            do {
                try store.submit(source.message(producer: producer, index: index))
            } catch {
                fatalError("SQLite reference: \(error)")
            }
        }
    }
    let statistics = try store.close()

    /* The rows must all be there, or the numbers mean nothing. */
    guard statistics.messageRows == messages && statistics.recipientRows == messages else {
        throw SQLiteError(code: SQLITE_CORRUPT, message:
            "expected \(messages) rows, found \(statistics.messageRows) messages and \(statistics.recipientRows) recipients")
    }
    let meanBatch = Double(messages) / Double(statistics.commits)
    printNote("sqlite \(String(cString: sqlite3_libversion())): \(statistics.commits) commits, "
              + "mean batch \(String(format: "%.1f", meanBatch)), largest batch \(statistics.largestBatch), "
              + "\(messages) rows verified")
    return result
}

/// SQLiteError - a failed SQLite call: its result code and the connection's message.
struct SQLiteError: Error, CustomStringConvertible {
    let code: Int32
    let message: String

    var description: String { "SQLite error \(code): \(message)" }
}

/// SQLiteGroupCommitStore - one SQLite database written by one thread, a batch per transaction.
///
/// Producers call `submit` from any thread; it returns once the transaction holding the
/// message has committed. The writer thread owns the connection and its prepared
/// statements from `init` until `close` has joined it.
///
/// `@unchecked Sendable`: `queue` and `stopping` are only touched with `condition` locked;
/// `database`, the statements and the statistics only by the writer thread, and by `init`
/// and `close` while no writer thread runs.
final class SQLiteGroupCommitStore: @unchecked Sendable {
    /// Statistics - what `close` found: batching achieved and rows on disk.
    struct Statistics {
        let commits: Int        // transactions committed
        let largestBatch: Int   // most messages in one transaction
        let messageRows: Int    // SELECT count(*) FROM messages
        let recipientRows: Int  // SELECT count(*) FROM recipients
    }

    /// Pending - a queued message and the producer waiting for it.
    private struct Pending {
        let message: BenchMessage
        let acknowledgement: Acknowledgement?
        /// For `submit(_:completion:)`: called on the writer thread instead of a wake-up.
        var completion: (@Sendable (SQLiteError?) -> Void)? = nil
    }

    private let condition = NSCondition()  // guards queue and stopping; wakes the writer
    private var queue: [Pending] = []      // submitted, not yet taken by the writer
    private var stopping = false           // close was called; the writer drains and exits
    private var writer: pthread_t?         // the writer thread, until close joins it

    private var database: OpaquePointer?
    private var begin: OpaquePointer?
    private var commit: OpaquePointer?
    private var insertMessage: OpaquePointer?
    private var insertRecipient: OpaquePointer?
    private var commits = 0
    private var largestBatch = 0

    /// init - create the database at `path` (WAL, synchronous=FULL), its tables and statements, and start the writer.
    init(path: String) throws {
        var connection: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &connection, flags, nil) == SQLITE_OK, let connection else {
            let message = connection.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(connection)
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "\(path): \(message)")
        }
        database = connection

        /* Durability first: refuse to measure anything but WAL with a synced commit. */
        do {
            guard try queryText("PRAGMA journal_mode=WAL") == "wal" else {
                throw SQLiteError(code: SQLITE_ERROR, message: "journal_mode=WAL refused")
            }
            try execute("PRAGMA synchronous=FULL")
            guard try queryText("PRAGMA synchronous") == "2" else {
                throw SQLiteError(code: SQLITE_ERROR, message: "synchronous=FULL refused")
            }
            try execute("CREATE TABLE messages(id INTEGER PRIMARY KEY, sender TEXT, body BLOB)")
            try execute("CREATE TABLE recipients(message INTEGER, address TEXT, state INTEGER)")
            begin = try prepare("BEGIN")
            commit = try prepare("COMMIT")
            insertMessage = try prepare("INSERT INTO messages(sender, body) VALUES (?1, ?2)")
            insertRecipient = try prepare("INSERT INTO recipients(message, address, state) VALUES (?1, ?2, 0)")
        } catch {
            closeDatabase()
            throw error
        }
        writer = spawnThread { self.runWriter() }
    }

    /// submit - queue `message` and block the calling thread until it is committed.
    func submit(_ message: BenchMessage) throws {
        let acknowledgement = Acknowledgement()
        condition.lock()
        precondition(!stopping, "submit after close")
        queue.append(Pending(message: message, acknowledgement: acknowledgement))
        condition.signal()
        condition.unlock()
        if let failure = acknowledgement.wait() { throw failure }
    }

    /// submit - queue `message`; `completion` runs on the writer thread once it is committed
    /// (the way an event-loop injector would be told).
    func submit(_ message: BenchMessage, completion: @escaping @Sendable (SQLiteError?) -> Void) {
        condition.lock()
        precondition(!stopping, "submit after close")
        queue.append(Pending(message: message, acknowledgement: nil, completion: completion))
        condition.signal()
        condition.unlock()
    }

    /// close - let the writer drain the queue, join it, count the rows and close the database.
    func close() throws -> Statistics {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        if let writer { pthread_join(writer, nil) }
        writer = nil
        defer { closeDatabase() }
        return Statistics(commits: commits, largestBatch: largestBatch,
                          messageRows: Int(try queryText("SELECT count(*) FROM messages")) ?? -1,
                          recipientRows: Int(try queryText("SELECT count(*) FROM recipients")) ?? -1)
    }

    /// runWriter - the writer thread: take a batch, write it in one transaction, acknowledge it; repeat.
    private func runWriter() {
        var batch: [Pending] = []
        while takeBatch(into: &batch) {
            var failure: SQLiteError?
            do {
                try write(batch)
            } catch {
                failure = error as? SQLiteError ?? SQLiteError(code: SQLITE_ERROR, message: "\(error)")
                sqlite3_exec(database, "ROLLBACK", nil, nil, nil)
            }
            for pending in batch {
                pending.acknowledgement?.signal(failure)
                pending.completion?(failure)
            }
            batch.removeAll(keepingCapacity: true)
        }
    }

    /// takeBatch - wait for work and swap everything queued into `batch`; false once stopped and drained.
    private func takeBatch(into batch: inout [Pending]) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && !stopping { condition.wait() }
        swap(&queue, &batch)
        return !batch.isEmpty
    }

    /// write - BEGIN; a message row and a recipient row per message; COMMIT (which fsyncs the WAL).
    private func write(_ batch: [Pending]) throws {
        try step(begin)
        for pending in batch {
            let message = pending.message
            try message.body.withUnsafeBytes { body in
                /* SQLITE_STATIC (nil): the body outlives this step; bindings are cleared after it. */
                try check(sqlite3_bind_text(insertMessage, 1, message.sender, -1, transient))
                try check(sqlite3_bind_blob(insertMessage, 2, body.baseAddress, Int32(body.count), nil))
                try step(insertMessage)
            }
            try check(sqlite3_bind_int64(insertRecipient, 1, sqlite3_last_insert_rowid(database)))
            try check(sqlite3_bind_text(insertRecipient, 2, message.recipient, -1, transient))
            try step(insertRecipient)
        }
        try step(commit)
        commits += 1
        largestBatch = max(largestBatch, batch.count)
    }

    /// step - run a prepared statement that returns no rows, then reset it for the next use.
    private func step(_ statement: OpaquePointer?) throws {
        let status = sqlite3_step(statement)
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
        guard status == SQLITE_DONE else { throw failure(status) }
    }

    /// check - turn a result code other than SQLITE_OK into an error.
    private func check(_ status: Int32) throws {
        guard status == SQLITE_OK else { throw failure(status) }
    }

    /// failure - the error for `status`, with the connection's message.
    private func failure(_ status: Int32) -> SQLiteError {
        SQLiteError(code: status, message: String(cString: sqlite3_errmsg(database)))
    }

    /// execute - run SQL that returns nothing useful (DDL, pragmas).
    private func execute(_ sql: String) throws {
        try check(sqlite3_exec(database, sql, nil, nil, nil))
    }

    /// queryText - the first column of the first row of `sql`, as text.
    private func queryText(_ sql: String) throws -> String {
        let statement = try prepare(sql)
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW, let text = sqlite3_column_text(statement, 0) else {
            throw failure(sqlite3_errcode(database))
        }
        return String(cString: text)
    }

    /// prepare - compile `sql` into a statement the caller finalizes.
    private func prepare(_ sql: String) throws -> OpaquePointer? {
        var statement: OpaquePointer?
        try check(sqlite3_prepare_v2(database, sql, -1, &statement, nil))
        return statement
    }

    /// closeDatabase - finalize the statements and close the connection (idempotent).
    private func closeDatabase() {
        for statement in [begin, commit, insertMessage, insertRecipient] { sqlite3_finalize(statement) }
        (begin, commit, insertMessage, insertRecipient) = (nil, nil, nil, nil)
        sqlite3_close(database)
        database = nil
    }
}

/// Acknowledgement - one submitted message's outcome, handed from the writer to its producer.
///
/// `@unchecked Sendable`: `failure` is written by the writer before `signal` and read by the
/// producer after `wait` returns; the semaphore orders the two.
private final class Acknowledgement: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private var failure: SQLiteError?

    /// wait - block until the writer signals; nil when the message is committed.
    func wait() -> SQLiteError? {
        semaphore.wait()
        return failure
    }

    /// signal - report the batch's outcome (nil: committed) and wake the producer.
    func signal(_ failure: SQLiteError?) {
        self.failure = failure
        semaphore.signal()
    }
}

/// transient - SQLITE_TRANSIENT, which Swift cannot import: SQLite copies the bound value.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
