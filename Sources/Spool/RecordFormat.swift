// RecordFormat.swift - the on-disk layout of spool segments and records
//
// Queue/README.md is the reference for this layout; change the two together and
// bump `SegmentHeader.version` for any change an older reader would misread.
//
// A segment starts with a 32-octet header. Records follow back to back, each an
// 8-octet frame (length, CRC-32C of the body) and a body (a type octet and the
// payload). All integers are little-endian; strings are UTF-8 with a length prefix.

/// The types of record a segment holds (the first octet of a record body).
enum RecordType: UInt8 {
    /// A message: id, times, class, sender, campaign, tenant, hints and the body.
    case message = 1
    /// Recipients of one message in this shard: index, address and merge variables each.
    case recipients = 2
    /// What happened to one recipient: delivered, bounced, expired, deferred or cancelled.
    case outcome = 3
    /// An administrative action: suspend or resume a domain, site or campaign.
    case admin = 4
}

/// The fixed header at the start of every segment file.
struct SegmentHeader: Equatable {
    static let magic: [UInt8] = Array("CARRIERQ".utf8)
    static let version: UInt16 = 1
    static let size = 32

    var shard: UInt32
    var segment: UInt32
    var created: Int64

    /// encode - the 32 header octets.
    func encode() -> [UInt8] {
        var out = RecordWriter(capacity: Self.size)
        out.bytes.append(contentsOf: Self.magic)
        out.u16(Self.version)
        out.u16(UInt16(Self.size))
        out.u32(shard)
        out.u64(UInt64(segment))
        out.i64(created)
        return out.bytes
    }

    /// decode - the header at the start of `bytes`, or why it is not one.
    static func decode(_ bytes: UnsafeRawBufferPointer) -> Result<SegmentHeader, SpoolError> {
        guard bytes.count >= size else { return .failure(SpoolError(.badHeader("segment shorter than its header"))) }
        guard Array(bytes[0..<8]) == magic else { return .failure(SpoolError(.badHeader("bad magic"))) }
        var reader = RecordReader(UnsafeRawBufferPointer(rebasing: bytes[8..<size]))
        let version = (try? reader.u16()) ?? 0
        guard version == Self.version else { return .failure(SpoolError(.badHeader("format version \(version), this build reads \(Self.version)"))) }
        _ = try? reader.u16()
        let shard = (try? reader.u32()) ?? 0
        let segment = UInt32(truncatingIfNeeded: (try? reader.u64()) ?? 0)
        let created = (try? reader.i64()) ?? 0
        return .success(SegmentHeader(shard: shard, segment: segment, created: created))
    }
}

/// RecordWriter - appends little-endian fields and framed records to a byte array.
struct RecordWriter {
    var bytes: [UInt8]
    private var recordStart = -1

    init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }
    mutating func id(_ value: MessageID) { u64(value.high); u64(value.low) }

    /// string16 - a UTF-8 string of at most 65,535 octets (longer ones are cut, at a
    /// boundary the caller has already validated: addresses and names are short).
    mutating func string16(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            let count = min(utf8.count, Int(UInt16.max))
            u16(UInt16(count))
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[..<count]))
        }
    }

    /// blob32 - octets with a 32-bit length.
    mutating func blob32(_ value: UnsafeRawBufferPointer) {
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string32(_ value: String) {
        var value = value
        value.withUTF8 { blob32(UnsafeRawBufferPointer($0)) }
    }

    /// begin - start a record of `type`; returns its offset in `bytes`.
    @discardableResult
    mutating func begin(_ type: RecordType) -> Int {
        precondition(recordStart < 0, "record not ended")
        recordStart = bytes.count
        bytes.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0])
        bytes.append(type.rawValue)
        return recordStart
    }

    /// end - fill in the frame of the record begun last: body length and CRC-32C.
    mutating func end() {
        precondition(recordStart >= 0, "no record begun")
        let start = recordStart
        recordStart = -1
        let length = UInt32(bytes.count - start - 8)
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + 8)...])) }
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: length.littleEndian, toByteOffset: start, as: UInt32.self)
            raw.storeBytes(of: crc.littleEndian, toByteOffset: start + 4, as: UInt32.self)
        }
    }
}

/// Why a field could not be read: the record is shorter than its fields claim.
struct ShortRecord: Error {}

/// RecordReader - reads little-endian fields from a record body.
struct RecordReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var isAtEnd: Bool { position >= bytes.count }

    private mutating func take(_ count: Int) throws(ShortRecord) -> UnsafeRawBufferPointer {
        guard count >= 0, bytes.count - position >= count else { throw ShortRecord() }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }

    mutating func u8() throws(ShortRecord) -> UInt8 { try take(1)[0] }
    mutating func u16() throws(ShortRecord) -> UInt16 { UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self)) }
    mutating func u32() throws(ShortRecord) -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
    mutating func u64() throws(ShortRecord) -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
    mutating func i64() throws(ShortRecord) -> Int64 { Int64(bitPattern: try u64()) }
    mutating func id() throws(ShortRecord) -> MessageID { MessageID(high: try u64(), low: try u64()) }
    mutating func string16() throws(ShortRecord) -> String {
        String(decoding: try take(Int(try u16())), as: UTF8.self)
    }
    mutating func string32() throws(ShortRecord) -> String {
        String(decoding: try take(Int(try u32())), as: UTF8.self)
    }
    mutating func blob32() throws(ShortRecord) -> UnsafeRawBufferPointer { try take(Int(try u32())) }
    /// bytes16 - the octets of a string16, not decoded.
    mutating func bytes16() throws(ShortRecord) -> UnsafeRawBufferPointer { try take(Int(try u16())) }
    /// skip16 - pass over a string16 without decoding it.
    mutating func skip16() throws(ShortRecord) { _ = try take(Int(try u16())) }
    mutating func skip32() throws(ShortRecord) { _ = try take(Int(try u32())) }
}

/// The frame of one record as found in a segment.
struct FramedRecord {
    /// Offset of the frame in the segment file.
    var offset: Int
    /// The body: type octet and payload.
    var body: UnsafeRawBufferPointer
    var size: Int { 8 + body.count }
}

/// What scanning a segment found at a position.
enum FrameScan {
    case record(FramedRecord)
    /// Clean end of the segment.
    case end
    /// The last record is cut short or its checksum fails and nothing follows it: a torn write.
    case torn
    /// A checksum or framing failure with more data after it.
    case corrupt(String)
}

/// Largest record body accepted when reading (a frame claiming more is damage).
let maximumRecordBody = 1 << 30

/// scanFrame - the record at `offset` of a segment's bytes. `verify: false` skips the
/// checksum, for bytes this process has just framed itself.
func scanFrame(_ file: UnsafeRawBufferPointer, at offset: Int, verify: Bool = true) -> FrameScan {
    let remaining = file.count - offset
    if remaining == 0 { return .end }
    if remaining < 9 { return .torn }
    let length = Int(UInt32(littleEndian: file.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    let crc = UInt32(littleEndian: file.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
    if length == 0 || length > maximumRecordBody {
        /* An all-zero tail is what a crash leaves after a preallocated or partly written page. */
        let rest = UnsafeRawBufferPointer(rebasing: file[offset...])
        return rest.allSatisfy({ $0 == 0 }) ? .torn : .corrupt("implausible record length \(length) at offset \(offset)")
    }
    if length > remaining - 8 { return .torn }
    let body = UnsafeRawBufferPointer(rebasing: file[(offset + 8)..<(offset + 8 + length)])
    if verify && CRC32C.checksum(body) != crc {
        /* Nothing but zeros after it (a preallocated tail, or the end of the file): the
           record was being written when the process stopped. */
        let after = UnsafeRawBufferPointer(rebasing: file[(offset + 8 + length)...])
        return after.allSatisfy({ $0 == 0 }) ? .torn : .corrupt("checksum mismatch in the record at offset \(offset)")
    }
    return .record(FramedRecord(offset: offset, body: body))
}
