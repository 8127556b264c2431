// BlastFiles.swift - reading the message template and writing the reports, with plain POSIX calls
//
// The load generator has no other use for Foundation, so two small helpers
// do the file work: read a whole file, write a whole file (to a temporary
// name, then rename, so a half-written report never appears).

#if canImport(Glibc)
import Glibc
#endif

/// Whole-file reads and writes for the blast command.
public enum BlastFiles {
    /// read - the bytes of the file at `path`.
    public static func read(_ path: String) throws(BlastError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw .system("cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// write - replace the file at `path` with `text`.
    public static func write(_ text: String, to path: String) throws(BlastError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw .system("cannot write \(path): \(reason)")
            }
            offset += count
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw .system("cannot write \(path): \(reason)")
        }
    }
}
