// DeliveryTestSupport.swift - temporary folders and small file helpers for the delivery tests

#if canImport(Glibc)
import Glibc
#endif

/// writeFile - create or replace `path` with `bytes`.
func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    precondition(fd >= 0, "open \(path) failed")
    var done = 0
    while done < bytes.count {
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
        precondition(written > 0, "write \(path) failed")
        done += written
    }
    close(fd)
}

/// readFile - the whole content of `path`, or nil when it does not exist.
func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let got = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 65536) }
        if got <= 0 { break }
        bytes.append(contentsOf: chunk[..<got])
    }
    return bytes
}

/// fileExists - true when `path` names something.
func fileExists(_ path: String) -> Bool {
    access(path, F_OK) == 0
}
