// ChildProcess.swift - start a real peer (dnsmasq, smtp-sink, a Python server, Chromium) from a test
//
// Swift Testing runs test bodies on libdispatch worker threads, which block
// most signals, and a child inherits its parent's signal mask: a dnsmasq
// started naively ignores SIGTERM and the test hangs in waitpid. So children
// start with an empty mask and SIGTERM at its default action. Output goes to
// a file (or /dev/null) so a chatty peer cannot fill a pipe and stall.

#if canImport(Glibc)
public import Glibc
#endif

/// Why a child process could not be started or did not finish.
public struct ChildProcessError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A process a test started; stop it with `terminate()` or wait with `wait(seconds:)`.
///
/// Owned by the test that made it; not shared between threads.
public final class ChildProcess {
    /// The child's process id.
    public let pid: pid_t
    private var exitStatus: Int32?

    /// start - run `path` with `arguments` (no shell), its output appended to `outputPath`.
    public init(_ path: String, _ arguments: [String], outputPath: String = "/dev/null",
                environment: [String] = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/tmp"]) throws {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp = environment.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var signals = sigset_t()
        sigemptyset(&signals)
        posix_spawnattr_setsigmask(&attributes, &signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        posix_spawnattr_setsigdefault(&attributes, &signals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var pid = pid_t()
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard result == 0 else { throw ChildProcessError(description: "posix_spawn \(path): errno \(result)") }
        self.pid = pid
    }

    deinit { terminate() }

    /// True until the child has exited (and was reaped).
    public var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            exitStatus = status
            return false
        }
        return true
    }

    /// wait - the exit code once the child exits within `seconds`; nil if it is still running.
    public func wait(seconds: Double) -> Int32? {
        let deadline = Int(seconds * 100)
        for _ in 0..<max(deadline, 1) {
            if !isRunning { return exitCode }
            usleep(10_000)
        }
        return isRunning ? nil : exitCode
    }

    /// The exit code (or 128 + signal), once exited.
    public var exitCode: Int32? {
        guard let status = exitStatus else { return nil }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// terminate - SIGTERM, then SIGKILL after two seconds; reap the child.
    public func terminate() {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        if wait(seconds: 2) != nil { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        exitStatus = status
    }
}

/// executablePath - the first of `candidates` that exists and is executable.
public func executablePath(_ candidates: [String]) -> String? {
    candidates.first { access($0, X_OK) == 0 }
}

/// which - `name` found on this process's PATH (pyenv's python3 before the system's).
public func which(_ name: String) -> String? {
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
    return executablePath(path.split(separator: ":").map { "\($0)/\(name)" })
}

/// freeLoopbackPort - a TCP port on 127.0.0.1 nothing listens on right now.
public func freeLoopbackPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ChildProcessError(description: "socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard bound else { throw ChildProcessError(description: "bind 127.0.0.1:0: errno \(errno)") }
    return UInt16(bigEndian: address.sin_port)
}

/// connectLoopback - a blocking TCP socket connected to 127.0.0.1:`port` (the caller closes
/// it), or nil when nothing accepts there.
public func connectLoopback(port: UInt16) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected else {
        close(fd)
        return nil
    }
    return fd
}

/// waitForListener - until something accepts TCP connections on 127.0.0.1:`port`; false after `seconds`.
public func waitForListener(port: UInt16, seconds: Double = 10) -> Bool {
    for _ in 0..<Int(seconds * 20) {
        if let fd = connectLoopback(port: port) {
            close(fd)
            return true
        }
        usleep(50_000)
    }
    return false
}
