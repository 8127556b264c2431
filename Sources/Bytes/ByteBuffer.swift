// ByteBuffer.swift - contiguous bytes with a stable address, for vectored writes
//
// A write to a socket is asynchronous: libuv keeps pointers into the buffers
// until the write callback runs. Swift arrays cannot promise that their
// storage stays put outside a `withUnsafe...` scope, so the write path uses
// this type instead: a reference-counted allocation plus reader and writer
// indices. A pending write keeps a reference to the storage; a mutation while
// someone else holds it copies first (copy-on-write), so the bytes libuv reads
// never change under it. Sharing one buffer between many writes (a newsletter
// body sent on a thousand connections) costs a reference count, not a copy.

#if canImport(Glibc)
import Glibc
#endif

/// A growable, copy-on-write byte buffer with reader and writer indices.
///
/// Readable bytes are `[readerIndex, writerIndex)`. Appending writes at the
/// writer index; consuming moves the reader index. A value type: copies share
/// storage until one of them is mutated. Sendable: shared storage is never
/// mutated (mutation first makes the storage unique).
public struct ByteBuffer: Sendable {
    final class Storage: @unchecked Sendable {
        let bytes: UnsafeMutableRawPointer      /* the allocation */
        let capacity: Int                       /* its size */

        init(capacity: Int) {
            self.capacity = capacity
            bytes = .allocate(byteCount: Swift.max(capacity, 1), alignment: 16)
        }

        deinit { bytes.deallocate() }

        /// Shared by every empty buffer, so `ByteBuffer()` allocates nothing;
        /// the first append moves to storage of its own (it is never unique).
        static let empty = Storage(capacity: 0)
    }

    private(set) var storage: Storage
    /// Index of the first readable byte.
    public private(set) var readerIndex: Int
    /// Index one past the last readable byte.
    public private(set) var writerIndex: Int

    /// An empty buffer with room for `capacity` bytes before it grows.
    public init(capacity: Int = 0) {
        storage = capacity > 0 ? Storage(capacity: capacity) : Storage.empty
        readerIndex = 0
        writerIndex = 0
    }

    /// A buffer holding a copy of `bytes`.
    public init(bytes: some Collection<UInt8>) {
        self.init(capacity: bytes.count)
        append(contentsOf: bytes)
    }

    /// A buffer holding the UTF-8 encoding of `string`.
    public init(string: String) {
        self.init(capacity: string.utf8.count)
        append(string)
    }

    /// A buffer holding a copy of raw memory.
    public init(copying bytes: UnsafeRawBufferPointer) {
        self.init(capacity: bytes.count)
        append(contentsOf: bytes)
    }

    /// Number of bytes that can be read.
    public var readableBytes: Int { writerIndex - readerIndex }

    /// True when nothing is readable.
    public var isEmpty: Bool { writerIndex == readerIndex }

    /// Total allocated size.
    public var capacity: Int { storage.capacity }

    /// Room left after the writer index without growing.
    public var writableBytes: Int { storage.capacity - writerIndex }

    /// Start of the readable bytes; valid while this buffer (or a copy) is alive and unmutated.
    package var readPointer: UnsafeMutableRawPointer { storage.bytes + readerIndex }

    /// Start of the writable tail; valid until the next mutation.
    package var writePointer: UnsafeMutableRawPointer { storage.bytes + writerIndex }

    /// withUnsafeReadableBytes - borrow the readable bytes.
    @inlinable
    public func withUnsafeReadableBytes<R, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(readableView)
    }

    @usableFromInline
    package var readableView: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.bytes + readerIndex, count: readableBytes)
    }

    /// prefix - the first `maxLength` readable bytes, sharing this buffer's storage (no copy).
    public func prefix(_ maxLength: Int) -> ByteBuffer {
        var slice = self
        slice.writerIndex = readerIndex + Swift.min(Swift.max(maxLength, 0), readableBytes)
        return slice
    }

    /// The readable bytes copied into an array (for tests and diagnostics; not the hot path).
    public var readableByteArray: [UInt8] { Array(readableView) }

    /// reserveWritable - ensure `count` writable bytes, compacting, growing or unsharing as needed.
    public mutating func reserveWritable(_ count: Int) {
        let unique = isKnownUniquelyReferenced(&storage)
        if unique && writableBytes >= count { return }
        let live = readableBytes
        if unique && storage.capacity - live >= count {
            /* Enough room in total: move the readable bytes to the front instead of reallocating. */
            storage.bytes.copyMemory(from: storage.bytes + readerIndex, byteCount: live)
            readerIndex = 0
            writerIndex = live
            return
        }
        var newCapacity = Swift.max(storage.capacity, 64)
        while newCapacity < live + count { newCapacity *= 2 }
        let fresh = Storage(capacity: newCapacity)
        fresh.bytes.copyMemory(from: storage.bytes + readerIndex, byteCount: live)
        storage = fresh
        readerIndex = 0
        writerIndex = live
    }

    /// isUniquelyReferenced - true when no other buffer (or pending write) shares the storage.
    package mutating func isUniquelyReferenced() -> Bool {
        isKnownUniquelyReferenced(&storage)
    }

    /// append - copy raw bytes to the end.
    public mutating func append(contentsOf bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        reserveWritable(bytes.count)
        (storage.bytes + writerIndex).copyMemory(from: base, byteCount: bytes.count)
        writerIndex += bytes.count
    }

    /// append - copy a collection of bytes to the end (contiguous collections use one memcpy).
    public mutating func append(contentsOf bytes: some Collection<UInt8>) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { append(contentsOf: UnsafeRawBufferPointer($0)) }
        if done != nil { return }
        reserveWritable(bytes.count)
        var index = writerIndex
        for byte in bytes {
            storage.bytes.storeBytes(of: byte, toByteOffset: index, as: UInt8.self)
            index += 1
        }
        writerIndex = index
    }

    /// append - the UTF-8 bytes of `string`.
    public mutating func append(_ string: String) {
        var string = string
        string.withUTF8 { append(contentsOf: UnsafeRawBufferPointer($0)) }
    }

    /// append - the readable bytes of another buffer.
    public mutating func append(_ other: ByteBuffer) {
        append(contentsOf: other.readableView)
    }

    /// append - one byte.
    public mutating func append(_ byte: UInt8) {
        reserveWritable(1)
        storage.bytes.storeBytes(of: byte, toByteOffset: writerIndex, as: UInt8.self)
        writerIndex += 1
    }

    /// withUnsafeMutableWritableBytes - let `body` write into the free tail; it returns how many it wrote.
    public mutating func withUnsafeMutableWritableBytes<E: Error>(
        minimumCapacity: Int,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int
    ) throws(E) {
        reserveWritable(minimumCapacity)
        let tail = UnsafeMutableRawBufferPointer(start: storage.bytes + writerIndex, count: writableBytes)
        let written = try body(tail)
        precondition(written >= 0 && written <= tail.count, "wrote outside the writable bytes")
        writerIndex += written
    }

    /// commitWritten - `count` bytes were written straight into the writable tail
    /// (by a socket read into storage this buffer owns alone).
    package mutating func commitWritten(_ count: Int) {
        precondition(count >= 0 && count <= writableBytes, "committed more than the writable bytes")
        writerIndex += count
    }

    /// moveReaderIndex - consume `count` readable bytes.
    public mutating func moveReaderIndex(forwardBy count: Int) {
        precondition(count >= 0 && count <= readableBytes, "consumed more than is readable")
        readerIndex += count
        if readerIndex == writerIndex {
            readerIndex = 0
            writerIndex = 0
        }
    }

    /// clear - drop every readable byte, keeping the storage.
    public mutating func clear() {
        readerIndex = 0
        writerIndex = 0
    }

    /// discardReadBytes - move the readable bytes to the front, reclaiming consumed space.
    public mutating func discardReadBytes() {
        guard readerIndex > 0 else { return }
        if !isKnownUniquelyReferenced(&storage) {
            reserveWritable(0)
            return
        }
        let live = readableBytes
        storage.bytes.copyMemory(from: storage.bytes + readerIndex, byteCount: live)
        readerIndex = 0
        writerIndex = live
    }
}

extension ByteBuffer: Equatable {
    public static func == (lhs: ByteBuffer, rhs: ByteBuffer) -> Bool {
        lhs.readableBytes == rhs.readableBytes
            && (lhs.readableBytes == 0 || memcmp(lhs.readPointer, rhs.readPointer, lhs.readableBytes) == 0)
    }
}

extension ByteBuffer: CustomStringConvertible {
    /// The readable bytes as UTF-8 text (invalid sequences replaced), for logs and tests.
    public var description: String { String(decoding: readableView, as: UTF8.self) }
}
