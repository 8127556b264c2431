// Tmpfs.swift - a small tmpfs for tests that need a disk that fills up

#if canImport(Glibc)
import Glibc
#endif

/// A tmpfs mounted in a test's folder, so that "no space left" is real and quick.
///
/// Mounting needs CAP_SYS_ADMIN (root); `mount` returns nil without it and the test skips.
/// Used from one test's thread.
public struct TestTmpfs {
    public let path: String

    /// mount - a tmpfs of `megabytes` at `path` (created), or nil when mounting is not allowed.
    public static func mount(at path: String, megabytes: Int, label: String) -> TestTmpfs? {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { return nil }
        guard system("mount -t tmpfs -o size=\(megabytes)m \(label) '\(path)' 2>/dev/null") == 0 else { return nil }
        return TestTmpfs(path: path)
    }

    /// unmount - take it away; records false when something still holds a file in it after 5 s.
    ///
    /// Another test's fork (system(), posix_spawn) holds copies of our descriptors until it
    /// execs, which under load takes a moment: retry before calling the mount stuck, and
    /// detach it lazily in the end.
    @discardableResult
    public func unmount() -> Bool {
        for _ in 0..<100 {
            if system("umount '\(path)' 2>/dev/null") == 0 { return true }
            usleep(50_000)
        }
        _ = system("umount -l '\(path)'")
        return false
    }
}
