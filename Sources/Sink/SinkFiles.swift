// SinkFiles.swift - the few file operations the sink needs, on plain descriptors
//
// The record file, the Maildir and the statistics file are written with
// open/write/rename directly: no Foundation, and every failure becomes a
// `SinkError` that names the path and the system's reason.

public import EventCore

#if canImport(Glibc)
import Glibc
#endif

/// Why the sink could not start or could not write one of its files.
public enum SinkError: Error, Sendable, CustomStringConvertible {
    /// The configuration was refused by `SinkConfiguration.validate()`.
    case configuration(SinkConfigurationError)
    /// A listening socket could not be opened.
    case listen(SocketAddress, IOError)
    /// A loop thread could not be started.
    case thread(IOError)
    /// The certificate could not be made or loaded.
    case tls(TLSError)
    /// A file or directory operation failed: the path and the system's reason.
    case file(String, String)

    public var description: String {
        switch self {
        case .configuration(let error): return "\(error)"
        case .listen(let address, let error): return "cannot listen on \(address): \(error.message)"
        case .thread(let error): return "cannot start a loop thread: \(error)"
        case .tls(let error): return "TLS: \(error)"
        case .file(let path, let reason): return "\(path): \(reason)"
        }
    }
}

/// systemReason - the text of the current errno.
func systemReason() -> String {
    String(cString: strerror(errno))
}

/// openForAppend - open (creating) a file to append to.
func openForAppend(_ path: String) throws(SinkError) -> Int32 {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    if fd < 0 { throw .file(path, systemReason()) }
    return fd
}

/// writeAll - write every byte to `fd`, retrying short writes and EINTR; false on failure.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var done = 0
    while done < bytes.count {
        let written = write(fd, bytes.baseAddress! + done, bytes.count - done)
        if written < 0 {
            if errno == EINTR { continue }
            return false
        }
        done += written
    }
    return true
}

/// writeWholeFile - create or replace `path` with `bytes`.
func writeWholeFile(_ path: String, _ bytes: [UInt8]) throws(SinkError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if fd < 0 { throw .file(path, systemReason()) }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { writeAll(fd, $0) }
    if !written { throw .file(path, systemReason()) }
}

/// makeDirectory - create `path` unless it exists as a directory already.
func makeDirectory(_ path: String) throws(SinkError) {
    if mkdir(path, 0o755) == 0 || errno == EEXIST {
        var info = stat()
        if stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR { return }
        throw .file(path, "exists and is not a directory")
    }
    throw .file(path, systemReason())
}

/// writeStandardError - `text` to descriptor 2, unbuffered.
func writeStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = writeAll(2, UnsafeRawBufferPointer($0)) }
}
