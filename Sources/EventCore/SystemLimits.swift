// SystemLimits.swift - process resource limits an MTA needs raised

#if canImport(Glibc)
import Glibc
#endif

/// Process-wide resource limits.
public enum SystemLimits {
    /// raiseOpenFileLimit - lift the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
    ///
    /// Every connection is a descriptor; the common soft default of 1024 is
    /// far below what a delivery engine or a load test keeps open.
    @discardableResult
    public static func raiseOpenFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return UInt64(limit.rlim_cur)
    }
}
