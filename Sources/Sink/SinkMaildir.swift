// SinkMaildir.swift - the --maildir store: each accepted message as one file in DIR/new
//
// Maildir's delivery rule: write the file under DIR/tmp, then rename it into
// DIR/new, so a reader never sees a half-written message. Names follow the
// usual time.MusecPpidQn.host pattern; the thread number and a per-thread
// counter make them unique without coordination. The file holds a
// Return-Path and one Delivered-To line per recipient, then the message
// exactly as received (dots unstuffed, CRLF line ends).
//
// The files are not fsynced and are written on the loop thread that received
// the message: the Maildir is for looking at what arrived, not a durable
// queue, and a sink told to store mail is not the one being benchmarked.

import SMTP

#if canImport(Glibc)
import Glibc
#endif

/// Writes messages into a Maildir for one loop thread.
///
/// Confined to its loop thread (it keeps a delivery counter).
final class SinkMaildir {
    private let directory: String
    private let uniquePrefix: String        /* "P<pid>Q<thread>_" */
    private let host: String                /* hostname with '/' and ':' escaped */
    private var deliveries = 0

    /// A writer for thread `thread`; the directories exist (see `prepare`).
    init(directory: String, thread: Int, hostname: String) {
        self.directory = directory
        uniquePrefix = "P\(getpid())Q\(thread)_"
        host = hostname.replacingOccurrences("/", with: "\\057").replacingOccurrences(":", with: "\\072")
    }

    /// prepare - create DIR, DIR/tmp, DIR/new and DIR/cur as needed.
    static func prepare(_ directory: String) throws(SinkError) {
        try makeDirectory(directory)
        for sub in ["tmp", "new", "cur"] { try makeDirectory(directory + "/" + sub) }
    }

    /// store - write `message` to tmp/, then rename it into new/.
    func store(_ message: ReceivedMessage) throws(SinkError) {
        var now = timeval()
        gettimeofday(&now, nil)
        deliveries += 1
        let name = "\(now.tv_sec).M\(now.tv_usec)\(uniquePrefix)\(deliveries).\(host)"
        let temporary = directory + "/tmp/" + name
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw .file(temporary, systemReason()) }
        var envelope = "Return-Path: \(message.sender)\r\n"
        for (address, _) in message.recipients { envelope += "Delivered-To: \(address)\r\n" }
        var written = envelope.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
        if written { written = message.body.withUnsafeReadableBytes { writeAll(fd, $0) } }
        let reason = written ? nil : systemReason()
        close(fd)
        if let reason {
            unlink(temporary)
            throw .file(temporary, reason)
        }
        let final = directory + "/new/" + name
        if rename(temporary, final) != 0 {
            let reason = systemReason()
            unlink(temporary)
            throw .file(final, reason)
        }
    }
}

extension String {
    /// replacingOccurrences - every `target` replaced by `replacement` (no Foundation).
    fileprivate func replacingOccurrences(_ target: Character, with replacement: String) -> String {
        guard contains(target) else { return self }
        var result = ""
        for character in self {
            if character == target { result += replacement } else { result.append(character) }
        }
        return result
    }
}
