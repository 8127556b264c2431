// TemporaryFolder.swift - a fresh folder under /tmp for one test, and executables built beside the tests

#if canImport(Glibc)
import Glibc
#endif

/// A fresh folder under /tmp (`/tmp/carrier-<label>-XXXXXX`), removed by `remove()`.
///
/// A value; the folder belongs to the test that made it.
public struct TemporaryFolder: Sendable {
    public let path: String

    public init(_ label: String = "test") {
        var template = Array("/tmp/carrier-\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
    }

    /// file - the path of `name` inside the folder.
    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() {
        _ = system("rm -rf '\(path)'")
    }
}

/// builtExecutable - the executable `name` in the build products folder the running test
/// bundle comes from (or a level or two above it), or nil.
public func builtExecutable(_ name: String) -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    let exe = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = exe.lastIndex(of: "/") else { return nil }
    let folder = String(exe[..<slash])
    return executablePath([folder + "/" + name, folder + "/../" + name, folder + "/../../" + name])
}
