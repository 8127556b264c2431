// SinkRunner.swift - `carrier sink` as a process: start, announce, wait for a signal, report
//
// SIGINT and SIGTERM are blocked before any thread exists, so every thread
// inherits the mask and the signal waits for `sigwait` here instead of
// killing the process: the loops are then stopped in order, the record is
// flushed and the statistics are written.

#if canImport(Glibc)
import Glibc
#endif

/// Runs a sink until SIGINT or SIGTERM, for the command line.
public enum SinkRunner {
    /// runUntilSignalled - start the sink, print where it listens, serve until a signal, then report.
    ///
    /// Standard output gets one line once the sink listens ("carrier sink
    /// listening on 127.0.0.1:2525 (2 threads)"), so a script can wait for it;
    /// standard error gets the live line (when configured) and the summary.
    public static func runUntilSignalled(_ configuration: SinkConfiguration) throws(SinkError) {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let server = try SinkServer.start(configuration)
        let listening = server.addresses.map(\.description).joined(separator: ", ")
        /* Straight to descriptor 1: a pipe to a waiting script gets the line now, not at exit. */
        var announcement = "carrier sink listening on \(listening) (\(server.threadCount) thread\(server.threadCount == 1 ? "" : "s"))\n"
        announcement.withUTF8 { _ = writeAll(1, UnsafeRawBufferPointer($0)) }

        var received: Int32 = 0
        while sigwait(&signals, &received) != 0 {}
        server.stop()
        let statistics = server.statistics
        writeStandardError(statistics.summary)
        if let path = configuration.statisticsPath {
            try writeWholeFile(path, Array(statistics.json.utf8))
        }
    }
}
