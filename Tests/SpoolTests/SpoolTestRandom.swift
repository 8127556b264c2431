// SpoolTestRandom.swift - a seeded generator and segment-file helpers for the crash,
// corruption, disk-full and model tests

#if canImport(Glibc)
import Glibc
#endif
@testable import Spool
import CarrierTesting

/// The seeded generator of the spool tests (CarrierTesting's SplitMix64).
typealias SeededRandom = SplitMix64

/// One record found in a segment file.
struct SegmentRecord {
    var offset: Int
    var size: Int
    var type: UInt8
    /// The message id of a message, recipients or outcome record.
    var message: MessageID?
    /// Recipient indexes of a recipients record.
    var recipients: [UInt32]
    var end: Int { offset + size }
}

/// segmentRecords - every record of an undamaged segment file, in order.
func segmentRecords(_ path: String) throws -> [SegmentRecord] {
    let bytes = try readWholeFile(path)
    return try bytes.withUnsafeBytes { file -> [SegmentRecord] in
        var out: [SegmentRecord] = []
        var offset = SegmentHeader.size
        while case .record(let record) = scanFrame(file, at: offset) {
            var reader = RecordReader(record.body)
            let type = try reader.u8()
            var id: MessageID? = nil
            var indexes: [UInt32] = []
            if type != RecordType.admin.rawValue { id = try reader.id() }
            if type == RecordType.recipients.rawValue {
                let raw = Array(UnsafeRawBufferPointer(rebasing: file[record.offset..<(record.offset + record.size)]))
                indexes = try decodeRecipients(raw).map(\.index)
            }
            out.append(SegmentRecord(offset: offset, size: record.size, type: type, message: id, recipients: indexes))
            offset += record.size
        }
        let zeroTail = UnsafeRawBufferPointer(rebasing: file[offset...]).allSatisfy { $0 == 0 } // a preallocated segment
        guard zeroTail else { throw SpoolError(.invalid("segment \(path) does not end cleanly at \(offset)")) }
        return out
    }
}

/// segmentFiles - the segment file names of a shard folder, sorted.
func segmentFiles(_ shardFolder: String) -> [String] {
    guard let dir = opendir(shardFolder) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name.hasSuffix(".seg") { names.append(name) }
    }
    return names.sorted()
}

/// fileSize - the size of a file, or -1 when it does not exist.
func fileSize(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : -1
}

/// shell - run a command line; its exit status.
@discardableResult
func shell(_ command: String) -> Int32 {
    let status = system(command)
    return status == -1 ? -1 : (status >> 8) & 0xff
}
