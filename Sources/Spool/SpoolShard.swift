// SpoolShard.swift - one shard: its segment files, its group-commit writer thread and
// its index
//
// Appends from any thread are queued under the shard's monitor; the writer thread
// takes everything queued, writes it with one write(2), makes it durable with one
// fdatasync(2) (group commit), applies it to the index and only then completes
// each append. Disk I/O therefore never runs on the caller's thread (an event loop),
// and the index only ever shows durable records. Compaction runs on the same
// thread between batches, so nothing it moves can race an outcome.

#if canImport(Glibc)
import Glibc
#endif
import HeapModule
import Synchronization

/// A decoded recipients record, by recipient index.
struct CachedRecipients: Sendable {
    var message: MessageID
    var byIndex: [UInt32: NewRecipient]

    /// The entries of the framed recipients record `raw`, of `message`.
    init(_ raw: [UInt8], message: MessageID) throws(SpoolError) {
        self.message = message
        byIndex = [:]
        for decoded in try decodeRecipients(raw) { byIndex[decoded.index] = NewRecipient(decoded.address, variables: decoded.variables) }
    }
}

/// The recipients records decoded last (a campaign's records hold 4,096 recipients and
/// the engine asks for them a transaction at a time; a transactional message's record is
/// put here as it is committed), oldest out first. Thread-safe.
final class RecordCache: Sendable {
    private struct Entries {
        var bySlot: [UInt64: CachedRecipients] = [:]
        var order: [UInt64] = []            /* insertion order, oldest first (a ring from `next`) */
        var next = 0
    }
    private let entries = Mutex(Entries())
    private let capacity = 512

    func get(_ slot: UInt64) -> CachedRecipients? {
        entries.withLock { $0.bySlot[slot] }
    }

    func put(_ slot: UInt64, _ record: CachedRecipients) {
        entries.withLock { list in
            if list.bySlot.updateValue(record, forKey: slot) != nil { return }
            if list.order.count < capacity {
                list.order.append(slot)
            } else {
                list.bySlot[list.order[list.next]] = nil
                list.order[list.next] = slot
                list.next = (list.next + 1) % capacity
            }
        }
    }

    func clear() { entries.withLock { $0 = Entries() } }
}

/// Messages committed last by this process, decoded, so the engine can deliver a message
/// just received without reading it back (the listener's transactional path). Small
/// messages only; oldest out first. Thread-safe.
final class FreshMessages: Sendable {
    private struct Entries {
        var byID: [MessageID: StoredMessage] = [:]
        var order: [MessageID] = []         /* insertion order; the oldest kept is at `head` */
        var head = 0
        var bytes = 0                       /* body octets kept */
    }
    private let entries = Mutex(Entries())
    /// At most this many messages, and this many body octets in all.
    private let capacity = 1024
    private let byteLimit = 32 << 20
    /// Larger bodies are not kept (a campaign's body is read once anyway).
    static let largestBody = 1 << 20

    func get(_ id: MessageID) -> StoredMessage? {
        entries.withLock { $0.byID[id] }
    }

    func put(_ message: StoredMessage) {
        guard message.body.count <= FreshMessages.largestBody else { return }
        entries.withLock { list in
            guard list.byID.updateValue(message, forKey: message.id) == nil else { return }
            list.order.append(message.id)
            list.bytes += message.body.count
            while (list.byID.count > capacity || list.bytes > byteLimit) && list.head < list.order.count {
                let oldest = list.order[list.head]
                list.head += 1
                if let gone = list.byID.removeValue(forKey: oldest) { list.bytes -= gone.body.count }
            }
            if list.head >= capacity {
                list.order.removeFirst(list.head)
                list.head = 0
            }
        }
    }
}

/// An append waiting for the writer.
struct PendingAppend {
    var bytes: [UInt8]
    var durability: Durability
    /// A request to compact once everything queued before it is written.
    var isCompaction = false
    var completion: @Sendable (Result<Void, SpoolError>) -> Void
}

/// One shard of the spool: thread-safe (its own monitor guards the index and the queue
/// of appends; the writer thread owns the segment file descriptor).
public final class SpoolShard: @unchecked Sendable {
    /* @unchecked: every mutable field is guarded by `monitor`, except the writer-thread
       fields marked as such. */
    public let index: Int
    let directory: String
    let configuration: SpoolConfiguration
    private let monitor = Monitor()
    var state = ShardState()
    private var queue: [PendingAppend] = []
    private var closing = false
    private var closed = false
    private var readers: [UInt32: Int32] = [:]
    /// Set when a sync of the segment failed other than for space: the kernel may have
    /// dropped pages written before it (and a later sync would report success), so what is
    /// on disk is unknown until a restart replays it. Every append fails from then on.
    private var broken: SpoolError?
    /// Tests only: how many of the next syncs of this shard's segment fail with EIO.
    let syncFaults = Atomic<Int>(0)
    /// Descriptors of deleted segments, closed a second after their deletion rather than at
    /// once, so a reader that looked one up just before it does not pread a reused number
    /// (readers also check the record they get is the one they asked for).
    private var retiredReaders: [(fd: Int32, since: Int64)] = []   /* closed once no read can still use them */
    private var writer: WorkerThread?
    private var lockDescriptor: Int32 = -1
    /// The recovery report of the last open.
    public private(set) var recovery: RecoveryReport

    // Writer-thread state (only the writer touches these after open).
    private var descriptor: Int32 = -1
    private var currentSegment: UInt32 = 0
    /// Where the next record goes: the end of the data, not of the file, which may run on
    /// in zeros (a preallocated segment).
    private var currentSize = 0
    /// Size of the current segment's file, zero tail included.
    private var fileSize = 0
    /// The thread zero-filling the next segment, and what it made (writer-thread state).
    private var preparer: WorkerThread?
    private let prepared = PreparedSegment()

    /// Who hears of recipients as they become durable (see `subscribe`); called on the writer thread.
    private var subscriber: (@Sendable ([PendingRecipient]) -> Void)?
    /// Recently decoded recipients records, for `recipients(_:)`: (segment << 32 | offset) -> by index.
    private let recordCache = RecordCache()
    private let freshMessages = FreshMessages()

    private var dirtySince: Int64? = nil
    /// Since when compaction has been wanted (monotonic ms, and `appended` then); nil when
    /// not. Written under the monitor, read on the writer thread.
    private var compactionWantedSince: (time: Int64, appended: Int)? = nil
    private var compactionWanted: Bool { compactionWantedSince != nil }
    /// Octets this writer has appended since the shard opened (writer thread only).
    private var appended = 0
    /// How long, or how many octets written, compaction waits for an idle writer before it
    /// takes one step between commits anyway: a shard that never idles must still keep
    /// its disk use bounded, whatever its write rate.
    static let compactionPatience: Int64 = 100
    private var compactionPatienceOctets: Int { configuration.segmentSize / 2 }

    init(index: Int, configuration: SpoolConfiguration) throws(SpoolError) {
        self.index = index
        self.configuration = configuration
        directory = configuration.directory + "/" + SpoolShard.folderName(index)
        recovery = RecoveryReport(shard: index)
        if !configuration.readOnly {
            try makeDirectory(directory)
            try takeLock()
        }
        try recover()
        if !configuration.readOnly {
            try openCurrentSegment()
            writer = WorkerThread(name: "spool-\(index)") { [self] in writerLoop() }
        }
    }

    deinit {
        for (_, fd) in readers { Glibc.close(fd) }
        for (fd, _) in retiredReaders { Glibc.close(fd) }
        if descriptor >= 0 { Glibc.close(descriptor) }
        if lockDescriptor >= 0 { Glibc.close(lockDescriptor) }
    }

    static func folderName(_ index: Int) -> String {
        index < 10 ? "shard-0\(index)" : "shard-\(index)"
    }

    static func segmentName(_ number: UInt32) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits + ".seg"
    }

    func segmentPath(_ number: UInt32) -> String { directory + "/" + SpoolShard.segmentName(number) }

    // MARK: lock

    /// takeLock - flock the shard's lock file and write our pid into it.
    private func takeLock() throws(SpoolError) {
        let path = directory + "/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system("open", path: path) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buffer, 31, 0)
            Glibc.close(fd)
            guard code == EWOULDBLOCK else { throw .system("flock", path: path, errno: code) }
            let text = String(decoding: buffer.prefix(max(0, n)), as: UTF8.self).split(separator: "\n").first ?? ""
            throw SpoolError(.locked(pid: Int32(text) ?? 0), path: directory)
        }
        let pid = Array("\(getpid())\n".utf8)
        ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
        lockDescriptor = fd
    }

    // MARK: recovery

    /// segmentNumbers - the segment files in the shard folder, in order.
    private func segmentNumbers() throws(SpoolError) -> [UInt32] {
        guard let dir = opendir(directory) else {
            if errno == ENOENT && configuration.readOnly { return [] }
            throw .system("opendir", path: directory)
        }
        defer { closedir(dir) }
        var numbers: [UInt32] = []
        var leftovers: [UInt32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".seg.tmp"), let number = UInt32(name.dropLast(8)) { leftovers.append(number) }
            if name.hasSuffix(".seg.prep") && !configuration.readOnly { unlink(directory + "/" + name) } // a zero-filled spare; made again
            guard name.hasSuffix(".seg"), let number = UInt32(name.dropLast(4)) else { continue }
            numbers.append(number)
        }
        if !configuration.readOnly {
            /* A quarantine interrupted between its two renames: the damaged segment is already
               in corrupt/, so its readable prefix takes its place; if the segment is still
               here, the quarantine starts over when replay meets the damage again. */
            for number in leftovers {
                let temporary = segmentPath(number) + ".tmp"
                if numbers.contains(number) {
                    unlink(temporary)
                } else if rename(temporary, segmentPath(number)) == 0 {
                    numbers.append(number)
                    recovery.quarantined.append("\(SpoolShard.folderName(index))/\(SpoolShard.segmentName(number)): readable prefix restored after an interrupted quarantine")
                }
            }
        }
        return numbers.sorted()
    }

    /// recover - replay every segment into the index (see Queue/README.md for the rules).
    private func recover() throws(SpoolError) {
        state.replaying = true
        let numbers = try segmentNumbers()
        for (position, number) in numbers.enumerated() {
            try replay(segment: number, isLast: position == numbers.count - 1)
        }
        let lost = state.finishReplay()
        recovery.affectedMessages = Array(Set(recovery.affectedMessages + lost)).sorted()
        recovery.segments = state.segments.count
        recovery.pending = state.pending.count
        /* Not `numbers.last`: replay deletes a last segment cut inside its header. */
        currentSegment = state.segments.keys.max() ?? 0
    }

    private func replay(segment number: UInt32, isLast: Bool) throws(SpoolError) {
        let path = segmentPath(number)
        let bytes = try readWholeFile(path)
        try typed { try bytes.withUnsafeBytes { (file: UnsafeRawBufferPointer) throws in
            if isLast && (file.count < SegmentHeader.size || file[..<SegmentHeader.size].allSatisfy({ $0 == 0 })) {
                /* A crash while the segment was being created, before its header was synced
                   (or, for a reader, the writer creating it right now; a spare that was
                   renamed into place is all zeros): nothing in it was acknowledged. */
                if !configuration.readOnly {
                    unlink(path)
                    recovery.truncatedBytes += file.count
                }
                return
            }
            guard case .success(let header) = SegmentHeader.decode(file) else {
                if case .failure(let why) = SegmentHeader.decode(file) { throw SpoolError(why.reason, path: path) }
                return
            }
            _ = header
            state.segments[number] = SegmentInfo(bytes: file.count)
            var offset = SegmentHeader.size
            scanning: while true {
                switch scanFrame(file, at: offset) {
                case .record(let record):
                    do {
                        try state.apply(record.body, segment: number, offset: UInt32(offset))
                    } catch {
                        try quarantine(number, file: file, at: offset, why: "undecodable record at offset \(offset)")
                        break scanning
                    }
                    recovery.records += 1
                    offset += record.size
                case .end:
                    break scanning
                case .torn where !isLast:
                    /* Only the last segment can be torn by a crash: a sealed one cut short is damage. */
                    try quarantine(number, file: file, at: offset, why: "record cut short at offset \(offset) in a sealed segment")
                    break scanning
                case .torn:
                    let zeroTail = UnsafeRawBufferPointer(rebasing: file[offset...]).allSatisfy { $0 == 0 }
                    if zeroTail {
                        /* The preallocated rest of the segment being written: nothing was cut. */
                    } else if !configuration.readOnly {
                        guard truncate(path, off_t(offset)) == 0 else { throw SpoolError.system("truncate", path: path) }
                        recovery.truncatedBytes += file.count - offset
                    }
                    state.segments[number]?.bytes = offset
                    break scanning
                case .corrupt(let why):
                    try quarantine(number, file: file, at: offset, why: why)
                    break scanning
                }
            }
        } }
    }

    /// quarantine - move a damaged segment to `corrupt/`, put its readable prefix back in
    /// its place (so every position already replayed stays valid), and note the message
    /// ids that can still be found in the damaged part.
    private func quarantine(_ number: UInt32, file: UnsafeRawBufferPointer, at offset: Int, why: String) throws(SpoolError) {
        recovery.quarantined.append("\(SpoolShard.folderName(index))/\(SpoolShard.segmentName(number)): \(why)")
        var affected: Set<MessageID> = []
        /* The damaged record's own id (unless the damage hit it, it is where the frame says). */
        if offset + 9 + 16 <= file.count && file[offset + 8] != RecordType.admin.rawValue {
            var reader = RecordReader(UnsafeRawBufferPointer(rebasing: file[(offset + 9)..<(offset + 25)]))
            if let id = try? reader.id() { affected.insert(id) }
        }
        var probe = offset + 1
        while probe + 9 + 16 <= file.count {
            if file[probe] == 0, UnsafeRawBufferPointer(rebasing: file[probe...]).allSatisfy({ $0 == 0 }) { break }
            if case .record(let record) = scanFrame(file, at: probe) {
                var reader = RecordReader(record.body)
                if (try? reader.u8()) != RecordType.admin.rawValue, let id = try? reader.id() { affected.insert(id) }
                probe += record.size
            } else {
                probe += 1
            }
        }
        recovery.affectedMessages.append(contentsOf: affected)
        state.segments[number]?.bytes = offset
        guard !configuration.readOnly else { return }
        let corrupt = configuration.directory + "/corrupt"
        try makeDirectory(corrupt)
        let path = segmentPath(number)
        let target = corrupt + "/" + SpoolShard.folderName(index) + "-" + SpoolShard.segmentName(number)
        let temporary = path + ".tmp"
        try writeWholeFile(temporary, UnsafeRawBufferPointer(rebasing: file[..<offset]))
        guard rename(path, target) == 0 else { throw .system("rename", path: path) }
        guard rename(temporary, path) == 0 else { throw .system("rename", path: temporary) }
        try syncDirectory(directory)
    }

    // MARK: segments

    /// openCurrentSegment - continue the last segment, or start the first one.
    private func openCurrentSegment() throws(SpoolError) {
        if currentSegment == 0 {
            try startSegment(1)
            return
        }
        let path = segmentPath(currentSegment)
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system("open", path: path) }
        descriptor = fd
        fileSize = Int(lseek(fd, 0, SEEK_END))
        /* Where replay found the data to end (whatever way it ended: clean, a zero tail, a
           torn record cut off, or a quarantine that put the readable prefix back). */
        currentSize = state.segments[currentSegment]?.bytes ?? fileSize
        if currentSize >= configuration.segmentSize { try startSegment(currentSegment + 1) }
    }

    /// startSegment - create segment `number`: header, then the suspensions in force
    /// (so older segments can go without losing them); made durable with the folder entry.
    private func startSegment(_ number: UInt32) throws(SpoolError) {
        let path = segmentPath(number)
        /* A zero-filled spare made ahead of time becomes the segment: overwriting blocks that
           already exist lets each fdatasync skip the file-size update. */
        if let thread = preparer {
            thread.join()
            preparer = nil
        }
        var size = 0
        if prepared.take(number) {
            if rename(path + ".prep", path) == 0 {
                size = configuration.segmentSize
            } else {
                unlink(path + ".prep")
            }
        }
        let fd = open(path, O_WRONLY | O_CREAT | (size == 0 ? O_TRUNC : 0) | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system("open", path: path) }
        var out = RecordWriter(capacity: 256)
        out.bytes = SegmentHeader(shard: UInt32(index), segment: number, created: nowMilliseconds()).encode()
        let suspensions = monitor.withLock { state.suspensions }
        out.begin(.admin); out.u8(0); out.end()
        for suspension in suspensions {
            out.begin(.admin); out.u8(1); out.u8(suspension.scope.rawValue); out.string16(suspension.name); out.i64(suspension.until); out.end()
        }
        let written = out.bytes.withUnsafeBytes { writeAll(fd, $0, at: 0) }
        guard written == 0 else {
            Glibc.close(fd)
            unlink(path)
            throw .system("write", path: path, errno: written)
        }
        if configuration.durability != .none || configuration.outcomeDurability != .none {
            guard fdatasync(fd) == 0 else { let code = errno; Glibc.close(fd); unlink(path); throw .system("fdatasync", path: path, errno: code) }
            try syncDirectory(directory)
        }
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = fd
        currentSegment = number
        currentSize = out.bytes.count
        fileSize = max(size, currentSize)
        monitor.withLock {
            state.segments[number] = SegmentInfo(bytes: currentSize)
            state.suspensions = suspensions
        }
    }

    // MARK: appending

    /// append - queue records for the writer; `completion` runs on the writer thread once
    /// they are durable (per `durability`) and applied, or failed.
    func append(_ bytes: [UInt8], durability: Durability, completion: @escaping @Sendable (Result<Void, SpoolError>) -> Void) {
        append(PendingAppend(bytes: bytes, durability: durability, completion: completion))
    }

    func append(_ item: PendingAppend) {
        monitor.lock()
        guard !closing, writer != nil else {
            monitor.unlock()
            item.completion(.failure(SpoolError(configuration.readOnly ? .invalid("the spool is open read-only") : .closed, path: directory)))
            return
        }
        if let broken {
            monitor.unlock()
            item.completion(.failure(broken))
            return
        }
        queue.append(item)
        if queue.count == 1 { monitor.broadcast() }
        monitor.unlock()
    }

    /// appendAndWait - `append`, blocking the calling thread (never an event loop's) until done.
    func appendAndWait(_ bytes: [UInt8], durability: Durability) throws(SpoolError) {
        let waiter = Waiter<Result<Void, SpoolError>>()
        append(bytes, durability: durability) { waiter.set($0) }
        try waiter.wait().get()
    }

    /// withState - run `body` on the index under the shard's lock.
    func withState<T>(_ body: (inout ShardState) throws -> T) rethrows -> T {
        monitor.lock()
        defer { monitor.unlock() }
        return try body(&state)
    }

    private func writerLoop() {
        while true {
            monitor.lock()
            while queue.isEmpty && !closing {
                if let since = dirtySince {
                    let interval = intervalMilliseconds
                    let wait = Int(since + Int64(interval) - monotonicMilliseconds())
                    if wait <= 0 { break }
                    monitor.wait(milliseconds: wait)
                } else if compactionWanted {
                    break
                } else {
                    monitor.wait()
                }
            }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            let stop = closing && batch.isEmpty
            let compaction = compactionWantedSince
            monitor.unlock()

            let compactions = batch.filter(\.isCompaction)
            if !batch.isEmpty { commit(compactions.isEmpty ? batch : batch.filter { !$0.isCompaction }) }
            if !compactions.isEmpty {
                compactNow()
                for item in compactions { item.completion(.success(())) }
            }
            if let since = dirtySince, monotonicMilliseconds() - since >= Int64(intervalMilliseconds) || stop {
                if syncData() != 0 { syncFailed(.system("fdatasync", path: segmentPath(currentSegment))) }
                dirtySince = nil
            }
            if stop { break }
            if let since = compaction {
                if batch.isEmpty {
                    monitor.withLock { compactionWantedSince = nil }
                    compactNow()
                } else if monotonicMilliseconds() - since.time >= SpoolShard.compactionPatience
                            || appended - since.appended >= compactionPatienceOctets {
                    /* Busy for a while: one step now, the next one a patience later. */
                    let more = compactStep()
                    monitor.withLock { compactionWantedSince = more ? (monotonicMilliseconds(), appended) : nil }
                }
            }
        }
    }

    /// wantCompaction - note that compaction has work (on the writer thread or under the monitor).
    private func wantCompaction() {
        if compactionWantedSince == nil { compactionWantedSince = (monotonicMilliseconds(), appended) }
    }

    /// syncData - fdatasync the current segment (writer thread); a test may make it fail.
    private func syncData() -> Int32 {
        if syncFaults.load(ordering: .relaxed) > 0 {
            syncFaults.subtract(1, ordering: .relaxed)
            errno = EIO
            return -1
        }
        return fdatasync(descriptor)
    }

    /// syncFailed - a sync failed: unless for want of space (which a later write reports
    /// again, and which freeing space cures), the shard takes no more appends. After a
    /// failed fdatasync the kernel may have marked the pages it could not write clean, so a
    /// later sync succeeds without them; carrying on would acknowledge on top of lost data.
    private func syncFailed(_ error: SpoolError) {
        guard case .io = error.reason else { return }
        monitor.withLock { broken = broken ?? error }
    }

    /// The shortest interval among the interval modes in use.
    private var intervalMilliseconds: Int {
        var result = 1000
        if case .interval(let ms) = configuration.durability { result = min(result, ms) }
        if case .interval(let ms) = configuration.outcomeDurability { result = min(result, ms) }
        return max(1, result)
    }

    /// commit - write a batch in as few write(2) calls as segment boundaries allow, make it
    /// durable, apply it and complete every append in it.
    private func commit(_ batch: [PendingAppend]) {
        guard !batch.isEmpty else { return }
        if let broken = monitor.withLock({ self.broken }) {
            for item in batch { item.completion(.failure(broken)) }
            return
        }
        if earlyRotationDue {
            /* Only a speed-up: if the move fails, the batch goes into the growing segment,
               whose own write and sync then report any real trouble. */
            try? rotate()
        }
        var start = 0
        var size = 0
        for (position, item) in batch.enumerated() {
            if currentSize + size > SegmentHeader.size + 64 && currentSize + size + item.bytes.count > configuration.segmentSize {
                if position > start { commitChunk(batch[start..<position]) }
                start = position
                size = 0
                do {
                    try rotate()
                } catch {
                    for item in batch[start...] { item.completion(.failure(error)) }
                    return
                }
            }
            size += item.bytes.count
        }
        commitChunk(batch[start...])
    }

    private func rotate() throws(SpoolError) {
        if fileSize > currentSize {
            /* A sealed segment ends at its last record: only the newest may have a zero tail. */
            guard ftruncate(descriptor, off_t(currentSize)) == 0 else { throw .system("ftruncate", path: segmentPath(currentSegment)) }
            fileSize = currentSize
        }
        /* Always synced, whatever the modes: a sealed segment must not come back after a
           crash with its zero tail (replay would take it for damage). */
        guard syncData() == 0 else {
            let error = SpoolError.system("fdatasync", path: segmentPath(currentSegment))
            syncFailed(error)
            throw error
        }
        dirtySince = nil
        try startSegment(currentSegment + 1)
        monitor.withLock { wantCompaction() }
    }

    private func commitChunk(_ chunk: ArraySlice<PendingAppend>) {
        let base = currentSize
        var buffer: [UInt8]
        if chunk.count == 1 {
            buffer = chunk.first!.bytes
        } else {
            buffer = []
            buffer.reserveCapacity(chunk.reduce(0) { $0 + $1.bytes.count })
            for item in chunk { buffer.append(contentsOf: item.bytes) }
        }
        var failure: SpoolError? = nil
        let written = buffer.withUnsafeBytes { writeAll(descriptor, $0, at: base) }
        if written != 0 {
            failure = .system("write", path: segmentPath(currentSegment), errno: written)
        } else if chunk.contains(where: { $0.durability == .fsync }) {
            if syncData() != 0 {
                failure = .system("fdatasync", path: segmentPath(currentSegment))
                syncFailed(failure!)
            } else {
                dirtySince = nil
            }
        } else if chunk.contains(where: { $0.durability != .none }) && dirtySince == nil {
            dirtySince = monotonicMilliseconds()
        }
        if let failure {
            /* Nothing of a failed batch stays: cut the file back to where the batch began. */
            _ = ftruncate(descriptor, off_t(base))
            fileSize = base
            for item in chunk { item.completion(.failure(failure)) }
            return
        }
        currentSize = base + buffer.count
        appended += buffer.count
        fileSize = max(fileSize, currentSize)
        prepareNextIfDue()
        let segment = currentSegment
        monitor.withLock {
            state.segments[segment, default: SegmentInfo(bytes: 0)].bytes = currentSize
            buffer.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count, case .record(let record) = scanFrame(raw, at: offset, verify: false) {
                    try? state.apply(record.body, segment: segment, offset: UInt32(base + offset))
                    offset += record.size
                }
            }
            /* Outcomes left an older segment with nothing live: delete it soon, not only
               at the next rotation (a delivered campaign must not hold its disk space). */
            if state.emptiedSegment {
                state.emptiedSegment = false
                wantCompaction()
            }
        }
        let (fresh, withholding, subscriber) = monitor.withLock { () -> ([PendingRecipient], Bool, (@Sendable ([PendingRecipient]) -> Void)?) in
            defer { state.fresh.removeAll() }
            return (state.fresh, !state.withheld.isEmpty, self.subscriber)
        }
        if let subscriber, !fresh.isEmpty || withholding {
            /* Someone delivers as mail arrives: keep what they will ask for first in memory
               (also for a message withheld until its other parts are durable). */
            keepFresh(buffer, base: base, segment: segment)
            if !fresh.isEmpty { subscriber(fresh) }
        }
        for item in chunk { item.completion(.success(())) }
    }

    /// keepFresh - decode the small messages and their recipients records just committed
    /// (at `base` of `segment`) into the caches the engine reads first.
    private func keepFresh(_ buffer: [UInt8], base: Int, segment: UInt32) {
        buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count, case .record(let record) = scanFrame(raw, at: offset, verify: false) {
                defer { offset += record.size }
                guard record.size <= FreshMessages.largestBody + 4096, let type = record.body.first else { continue }
                if type == RecordType.message.rawValue {
                    if let message = decodeMessage(record.body) { freshMessages.put(message) }
                } else if type == RecordType.recipients.rawValue {
                    let framed = Array(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + record.size)]))
                    var reader = RecordReader(UnsafeRawBufferPointer(rebasing: record.body[1...]))
                    guard let id = try? reader.id(), let cached = try? CachedRecipients(framed, message: id) else { continue }
                    recordCache.put(UInt64(segment) << 32 | UInt64(base + offset), cached)
                }
            }
        }
    }

    /// cachedMessage - a message committed lately by this process, without reading the disk; nil when not kept.
    public func cachedMessage(_ id: MessageID) -> StoredMessage? { freshMessages.get(id) }

    // MARK: preallocation

    /// Whether segments are made ahead and zero-filled: only when something is synced.
    private var preallocates: Bool {
        configuration.durability != .none || configuration.outcomeDurability != .none
    }

    /// prepareNextIfDue - once the current segment is half full, zero-fill the next one on a
    /// helper thread (a spare `NNNNNNNN.seg.prep`, synced), so rotation is a rename. (Not
    /// earlier: a small spool should not carry a 64 MiB spare per shard.) A segment that
    /// grows as it is written (a new spool's first, or one a failed spare left) gets its
    /// spare once it holds `earlySpareAfter` octets, and is left for it as soon as it is
    /// ready (`earlyRotationDue`): every sync into a growing file also journals its size.
    private func prepareNextIfDue() {
        guard preallocates, preparer == nil,
              currentSize > configuration.segmentSize / 2 || (isGrowing && currentSize >= SpoolShard.earlySpareAfter) else { return }
        let number = currentSegment + 1
        guard !prepared.has(number) else { return }
        let path = segmentPath(number) + ".prep"
        let size = configuration.segmentSize
        let prepared = self.prepared
        preparer = WorkerThread(name: "spool-prep") {
            prepared.set(number, ok: zeroFill(path, size: size))
        }
    }

    /// How much a growing segment holds before a spare is made for it.
    static let earlySpareAfter = 1 << 20

    /// Whether the current segment has no zero-filled tail: each write extends the file.
    private var isGrowing: Bool { fileSize <= currentSize }

    /// Whether to leave a growing segment now: its spare is ready.
    private var earlyRotationDue: Bool {
        preallocates && isGrowing && currentSize >= SpoolShard.earlySpareAfter && prepared.isReady(currentSegment + 1)
    }

    // MARK: compaction

    /// requestCompaction - ask the writer to compact when it is next idle.
    func requestCompaction() {
        monitor.withLock {
            wantCompaction()
            monitor.broadcast()
        }
    }

    /// compactNow - delete dead segments; then, while the shard uses more than twice its
    /// live data, rewrite the oldest segments' live records forward and delete them.
    /// Runs on the writer thread.
    private func compactNow() {
        var rounds = 0
        while rounds < 64 && compactStep() { rounds += 1 }
    }

    /// compactStep - delete dead segments, then rewrite at most one segment forward if the
    /// shard uses more than twice its live data. Returns whether more may be needed.
    /// Runs on the writer thread.
    private func compactStep() -> Bool {
        deleteDeadSegments()
        let (candidate, total, live) = monitor.withLock { () -> (UInt32?, Int, Int) in
            let total = state.segments.values.reduce(0) { $0 + $1.bytes }
            let live = state.segments.keys.reduce(0) { $0 + state.estimatedLiveBytes($1) }
            let oldest = state.segments.keys.filter { $0 != currentSegment }.min()
            return (oldest, total, live)
        }
        guard let candidate, total > 2 * live + configuration.segmentSize else { return false }
        guard rewriteForward(candidate) else { return false }
        deleteDeadSegments()
        return true
    }

    private func deleteDeadSegments() {
        /* A reader may have taken a descriptor just before it was retired and be about to
           pread: closing it at once could let the number be reused by another file under
           that read. A second is far longer than any read between lookup and pread. */
        let now = monotonicMilliseconds()
        let retired = monitor.withLock { () -> [Int32] in
            let old = retiredReaders.filter { now - $0.since >= 1_000 }.map(\.fd)
            retiredReaders.removeAll { now - $0.since >= 1_000 }
            return old
        }
        for fd in retired { Glibc.close(fd) }
        let rounds = monitor.withLock { state.deletable(current: currentSegment) }
        /* Round by round, each made durable before the next: a later round holds the
           outcomes that kept an earlier one's recipients from replaying, and a crash must not
           leave the earlier segment without them. A failed directory sync stops here; the
           later rounds stay known and are tried again at the next compaction. */
        for round in rounds {
            monitor.withLock {
                for number in round {
                    state.segments[number] = nil
                    if let fd = readers.removeValue(forKey: number) { retiredReaders.append((fd, now)) }
                }
            }
            for number in round { unlink(segmentPath(number)) }
            do { try syncDirectory(directory) } catch { return }
        }
    }

    /// rewriteForward - append copies of everything still live in segment `number`: message
    /// records, the pending recipients' records and their latest deferred state.
    private func rewriteForward(_ number: UInt32) -> Bool {
        struct Moving { var messages: [MessageID] = []; var recipients: [MessageID: [UInt32]] = [:]; var states: [(RecipientKey, PendingEntry)] = [] }
        let moving = monitor.withLock { () -> Moving in
            var moving = Moving()
            for (id, entry) in state.messages where entry.segment == number { moving.messages.append(id) }
            for (key, entry) in state.pending {
                if entry.segment == number { moving.recipients[key.message, default: []].append(key.index) }
                /* A moved recipient's deferred state moves with it, written after its copy: replay
                   drops a state met before the recipient's record, so one left behind in an older
                   segment would be lost on the next open (attempts and next attempt reset). */
                if entry.stateSegment == number || (entry.segment == number && entry.stateSegment != 0) {
                    moving.states.append((key, entry))
                }
            }
            return moving
        }
        var out = RecordWriter(capacity: 1 << 16)
        do {
            for id in moving.messages {
                /* A campaign writer's close may have dropped it since the snapshot. */
                guard let (segment, offset) = monitor.withLock({ state.messages[id].map { ($0.segment, $0.offset) } }) else { continue }
                let raw = try readRecord(segment: segment, offset: offset)
                out.bytes.append(contentsOf: raw)
            }
            for (id, indexes) in moving.recipients {
                let wanted = Set(indexes)
                var byOffset: [UInt32: Bool] = [:]
                let offsets = monitor.withLock { indexes.compactMap { state.pending[RecipientKey(message: id, index: $0)]?.offset } }
                for offset in offsets where byOffset[offset] == nil {
                    byOffset[offset] = true
                    let raw = try readRecord(segment: number, offset: offset)
                    let recipients = try decodeRecipients(raw)
                    let kept = recipients.filter { wanted.contains($0.index) }
                    encodeRecipients(&out, id: id, kept)
                }
            }
            for (key, entry) in moving.states {
                encodeOutcome(&out, key: key, kind: 4, attempts: entry.attempts, nextAttempt: entry.nextAttempt, reply: "")
            }
        } catch {
            return false
        }
        guard !out.bytes.isEmpty else { return true }
        let done = Waiter<Result<Void, SpoolError>>()
        /* The copies are synced before the originals are unlinked, whatever the modes say:
           otherwise a power loss could take long-acknowledged recipients with them. */
        commit([PendingAppend(bytes: out.bytes, durability: preallocates ? .fsync : .none, completion: { done.set($0) })])
        return (try? done.wait().get()) != nil
    }

    // MARK: the delivery engine's feed

    /// subscribe - every pending recipient now, and from here on each recipient that becomes
    /// pending, as soon as its record is durable: `handler` runs on the shard's writer thread
    /// with each commit's new recipients (it must only hand them on); the recipients of a
    /// message stored in several shards come once all its parts are durable, from the
    /// writer thread of the shard that finished last. From then on the
    /// subscriber owns retry timing: `due` no longer hands out anything.
    public func subscribe(_ handler: @escaping @Sendable ([PendingRecipient]) -> Void) -> [PendingRecipient] {
        monitor.withLock {
            subscriber = handler
            state.subscribed = true
            state.heap = Heap()
            if state.withheld.isEmpty { return state.pending.map { state.describe($0.key, $0.value) } }
            return state.pending.compactMap { state.withheld[$0.key.message] == nil ? state.describe($0.key, $0.value) : nil }
        }
    }

    /// withhold - keep the recipients that later appends add for `id` from the subscriber
    /// and from `due` until `releaseWithheld(id, feed:)` (a message with parts in several
    /// shards is handed out only once every part is durable).
    func withhold(_ id: MessageID) {
        monitor.withLock { state.withheld[id] = [] }
    }

    /// releaseWithheld - hand the withheld message's pending recipients to the subscriber
    /// (on the calling thread) or to `due`; with `feed` false only forget them (the message
    /// failed in another shard and its stored part is being cancelled).
    func releaseWithheld(_ id: MessageID, feed: Bool) {
        let (released, subscriber) = monitor.withLock { (state.releaseWithheld(id, feed: feed), self.subscriber) }
        if !released.isEmpty, let subscriber { subscriber(released) }
    }

    /// unsubscribe - stop telling the subscriber about new recipients (`due` stays off: the
    /// index no longer keeps due times once subscribed).
    public func unsubscribe() {
        monitor.withLock { subscriber = nil }
    }

    /// recipients - the addresses and variables of pending recipients, in the order asked.
    /// A blocking `pread` (for the engine's reader thread, never an event loop); each
    /// recipients record is decoded once and kept while its neighbours are asked for.
    public func recipients(_ keys: [RecipientKey]) throws(SpoolError) -> [NewRecipient] {
        do {
            return try lookUpRecipients(keys)
        } catch {
            /* Compaction may have moved a record between the lookup and the read. */
            recordCache.clear()
            return try lookUpRecipients(keys)
        }
    }

    /// recipientsIfPending - like `recipients(_:)`, but one answer per key: nil for a key
    /// that is no longer pending (or cannot be read), instead of failing the whole list.
    /// Keys that are not pending are skipped without a read, so a list with a few of them
    /// costs no more than one without.
    public func recipientsIfPending(_ keys: [RecipientKey]) -> [NewRecipient?] {
        if let all = try? lookUpRecipients(keys) { return all }
        let pending = monitor.withLock { keys.map { state.pending[$0] != nil } }
        return zip(keys, pending).map { key, isPending in
            guard isPending else { return nil }
            return (try? recipients([key]))?.first
        }
    }

    /// cachedRecipients - the same as `recipients(_:)` when every record they are in was
    /// decoded recently; nil otherwise. Never touches the disk, so an event loop may call it
    /// and go to the reader thread only on a miss.
    public func cachedRecipients(_ keys: [RecipientKey]) -> [NewRecipient]? {
        let places = monitor.withLock { keys.map { key in state.pending[key].map { ($0.segment, $0.offset) } } }
        var out: [NewRecipient] = []
        out.reserveCapacity(keys.count)
        for (key, place) in zip(keys, places) {
            guard let (segment, offset) = place,
                  let cached = recordCache.get(UInt64(segment) << 32 | UInt64(offset)), cached.message == key.message,
                  let found = cached.byIndex[key.index] else { return nil }
            out.append(found)
        }
        return out
    }

    private func lookUpRecipients(_ keys: [RecipientKey]) throws(SpoolError) -> [NewRecipient] {
        let places = monitor.withLock { keys.map { key in state.pending[key].map { ($0.segment, $0.offset) } } }
        var out: [NewRecipient] = []
        out.reserveCapacity(keys.count)
        for (key, place) in zip(keys, places) {
            guard let (segment, offset) = place else {
                throw SpoolError(.invalid("recipient \(key) is not pending in shard \(index)"))
            }
            let slot = UInt64(segment) << 32 | UInt64(offset)
            let record: CachedRecipients
            if let cached = recordCache.get(slot), cached.message == key.message {
                record = cached
            } else {
                let raw = try readRecord(segment: segment, offset: offset)
                guard raw.count >= 8 + 1 + 16, raw.withUnsafeBytes({ bytes in
                    var reader = RecordReader(UnsafeRawBufferPointer(rebasing: bytes[9...]))
                    return (try? reader.id()) == key.message
                }) else {
                    throw SpoolError(.invalid("recipient \(key): the record read is not its recipients record"), path: segmentPath(segment))
                }
                record = try CachedRecipients(raw, message: key.message)
                recordCache.put(slot, record)
            }
            guard let found = record.byIndex[key.index] else {
                throw SpoolError(.invalid("recipient \(key) is missing from its record"), path: segmentPath(segment))
            }
            out.append(found)
        }
        return out
    }

    // MARK: reading records back

    /// readRecord - the framed record at `offset` of `segment`, checked.
    func readRecord(segment: UInt32, offset: UInt32) throws(SpoolError) -> [UInt8] {
        let path = segmentPath(segment)
        let fd = try typed { try monitor.withLock { () throws -> Int32 in
            if let fd = readers[segment] { return fd }
            /* Compaction may be deleting it: a descriptor opened now would never be closed
               (and keep the deleted file's blocks). The caller looks again. */
            guard state.segments[segment] != nil else { throw SpoolError(.invalid("segment \(segment) is gone"), path: path) }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SpoolError.system("open", path: path) }
            readers[segment] = fd
            return fd
        } }
        var frame = [UInt8](repeating: 0, count: 8)
        guard pread(fd, &frame, 8, off_t(offset)) == 8 else { throw .system("pread", path: path) }
        let length = Int(UInt32(frame[0]) | UInt32(frame[1]) << 8 | UInt32(frame[2]) << 16 | UInt32(frame[3]) << 24)
        guard length <= maximumRecordBody else { throw SpoolError(.invalid("damaged record at \(offset)"), path: path) }
        var record = [UInt8](repeating: 0, count: 8 + length)
        let n = record.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, 8 + length, off_t(offset)) }
        guard n == 8 + length else { throw .system("pread", path: path) }
        guard case .record = record.withUnsafeBytes({ scanFrame($0, at: 0) }) else {
            throw SpoolError(.invalid("checksum mismatch in the record at \(offset)"), path: path)
        }
        return record
    }

    // MARK: closing

    /// close - finish queued appends, sync, stop the writer and release the lock.
    func close() {
        let thread = monitor.withLock { () -> WorkerThread? in
            guard !closed else { return nil }
            closed = true
            closing = true
            monitor.broadcast()
            return writer
        }
        thread?.join()
        if thread != nil {
            /* The writer has stopped: its spare-segment helper may still be zero-filling. */
            preparer?.join()
            preparer = nil
        }
        if lockDescriptor >= 0 {
            flock(lockDescriptor, LOCK_UN)
            Glibc.close(lockDescriptor)
            lockDescriptor = -1
        }
    }
}

// MARK: - record encoding helpers shared by the shard and the spool

struct DecodedRecipient {
    var index: UInt32
    var address: String
    var variables: [(String, String)]
}

func encodeRecipients(_ out: inout RecordWriter, id: MessageID, _ recipients: [DecodedRecipient]) {
    out.begin(.recipients)
    out.id(id)
    out.u32(UInt32(recipients.count))
    for recipient in recipients {
        out.u32(recipient.index)
        out.string16(recipient.address)
        out.u16(UInt16(min(recipient.variables.count, Int(UInt16.max))))
        for (name, value) in recipient.variables.prefix(Int(UInt16.max)) { out.string16(name); out.string32(value) }
    }
    out.end()
}

/// decodeRecipients - the entries of a framed recipients record.
func decodeRecipients(_ raw: [UInt8]) throws(SpoolError) -> [DecodedRecipient] {
    do {
        return try raw.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) throws -> [DecodedRecipient] in
            var reader = RecordReader(UnsafeRawBufferPointer(rebasing: bytes[8...]))
            guard try reader.u8() == RecordType.recipients.rawValue else { throw ShortRecord() }
            _ = try reader.id()
            let count = try reader.u32()
            var out: [DecodedRecipient] = []
            out.reserveCapacity(Int(min(count, 65536)))
            for _ in 0..<count {
                let index = try reader.u32()
                let address = try reader.string16()
                var variables: [(String, String)] = []
                for _ in 0..<(try reader.u16()) { variables.append((try reader.string16(), try reader.string32())) }
                out.append(DecodedRecipient(index: index, address: address, variables: variables))
            }
            return out
        }
    } catch {
        throw SpoolError(.invalid("undecodable recipients record"))
    }
}

func encodeOutcome(_ out: inout RecordWriter, key: RecipientKey, kind: UInt8, attempts: UInt32, nextAttempt: Int64, reply: String) {
    out.begin(.outcome)
    out.id(key.message)
    out.u32(key.index)
    out.u8(kind)
    out.u32(attempts)
    out.i64(nextAttempt)
    out.string16(reply)
    out.end()
}

func encodeMessage(_ out: inout RecordWriter, id: MessageID, created: Int64, sender: String, body: [UInt8], metadata: MessageMetadata) {
    out.begin(.message)
    out.id(id)
    out.i64(created)
    out.i64(metadata.expires)
    out.u8(metadata.priority.rawValue)
    out.string16(sender)
    out.string16(metadata.campaign)
    out.string16(metadata.tenant)
    metadata.hints.withUnsafeBytes { out.blob32($0) }
    body.withUnsafeBytes { out.blob32($0) }
    out.end()
}

// MARK: - files

/// typed - run a closure that throws only SpoolError through a rethrowing API.
func typed<T>(_ body: () throws -> T) throws(SpoolError) -> T {
    do {
        return try body()
    } catch let error as SpoolError {
        throw error
    } catch {
        throw SpoolError(.invalid("\(error)"))
    }
}

/// writeAll - write every octet at `offset` (or at the file position when nil), retrying
/// short writes and EINTR; 0 or the errno.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int? = nil) -> Int32 {
    var done = 0
    while done < bytes.count {
        let n = offset.map { pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t($0 + done)) }
            ?? write(fd, bytes.baseAddress! + done, bytes.count - done)
        if n < 0 {
            if errno == EINTR { continue }
            return errno
        }
        done += n
    }
    return 0
}

/// zeroFill - create `path` as `size` zero octets, synced; false (and no file) on failure.
func zeroFill(_ path: String, size: Int) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return false }
    let zeros = [UInt8](repeating: 0, count: 1 << 20)
    var done = 0
    var ok = true
    while ok && done < size {
        let count = min(zeros.count, size - done)
        ok = zeros.withUnsafeBytes { writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[..<count])) } == 0
        done += count
        /* Sync as it goes: one 64 MiB flush at the end would hold the disk (and every group
           commit waiting on it) for the whole write-back. */
        if ok && done % (4 << 20) == 0 { ok = fdatasync(fd) == 0 }
    }
    ok = ok && fdatasync(fd) == 0
    Glibc.close(fd)
    if !ok { unlink(path) }
    return ok
}

/// The spare segment a preparer thread made: its number and whether it worked.
final class PreparedSegment: @unchecked Sendable {
    /* @unchecked: the fields are only touched under `lock`. */
    private let lock = Monitor()
    private var number: UInt32 = 0
    private var ok = false

    func set(_ number: UInt32, ok: Bool) { lock.withLock { self.number = number; self.ok = ok } }
    func has(_ number: UInt32) -> Bool { lock.withLock { self.number == number } }
    /// isReady - whether a good spare for `number` is made.
    func isReady(_ number: UInt32) -> Bool { lock.withLock { self.number == number && ok } }
    /// take - whether a good spare for `number` is ready; forgets it either way.
    func take(_ number: UInt32) -> Bool {
        lock.withLock {
            defer { self.number = 0; ok = false }
            return self.number == number && ok
        }
    }
}

/// makeDirectory - `path` and any missing parents; each one made is made durable by syncing
/// the directory it was made in (a spool's first acknowledged message must not vanish with
/// the folder that holds it).
func makeDirectory(_ path: String) throws(SpoolError) {
    var prefix = ""
    var parent = path.hasPrefix("/") ? "/" : "."
    for part in path.split(separator: "/", omittingEmptySubsequences: false) {
        prefix += prefix.isEmpty && path.hasPrefix("/") ? "/\(part)" : (prefix.isEmpty ? String(part) : "/\(part)")
        if prefix.isEmpty || prefix == "/" { continue }
        if mkdir(prefix, 0o755) == 0 {
            try syncDirectory(parent)
        } else if errno != EEXIST {
            throw .system("mkdir", path: prefix)
        }
        parent = prefix
    }
}

func syncDirectory(_ path: String) throws(SpoolError) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw .system("open", path: path) }
    defer { Glibc.close(fd) }
    guard fsync(fd) == 0 else { throw .system("fsync", path: path) }
}

func readWholeFile(_ path: String) throws(SpoolError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .system("open", path: path) }
    defer { Glibc.close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw .system("fstat", path: path) }
    let size = Int(info.st_size)
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
        if n < 0 { if errno == EINTR { continue }; throw .system("pread", path: path) }
        if n == 0 { break }
        done += n
    }
    if done < size { bytes.removeLast(size - done) }
    return bytes
}

func writeWholeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) throws(SpoolError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .system("open", path: path) }
    defer { Glibc.close(fd) }
    let code = writeAll(fd, bytes)
    guard code == 0 else { throw .system("write", path: path, errno: code) }
    guard fsync(fd) == 0 else { throw .system("fsync", path: path) }
}
