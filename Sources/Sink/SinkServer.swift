// SinkServer.swift - start and stop a sink: loop threads, listeners, the once-a-second ticker
//
// `carrier sink` and every test that needs a receiving MTA start one of
// these in-process. Thread 0 binds the listen addresses first, so that a
// port 0 is resolved once and every other thread binds the same real port
// (SO_REUSEPORT then spreads the connections over the threads). A ticker
// thread flushes the record file and prints the live counter line once a
// second. Stopping shuts every loop down (open connections are closed), then
// flushes and closes the record.
//
// With more than one thread the listeners set SO_REUSEPORT, and so would a
// second sink of the same user on the same address: the kernel lets it bind
// without an error and splits the connections between the two. Give each
// sink its own port (or port 0).

public import EventCore
import SMTP
import SMTPStreams
import Synchronization

/// A running sink: an SMTP receiver that accepts (or, as told, refuses) everything.
///
/// Owns one loop thread per `SinkConfiguration.threads`, each with a
/// listener on every address, and a ticker thread when the configuration
/// records or prints live figures. Safe from any thread; `stop()` is
/// idempotent and must not be called from one of the sink's own threads.
public final class SinkServer: Sendable {
    /// The addresses listened on, with the real ports (when port 0 was asked for).
    public let addresses: [SocketAddress]
    /// Loop threads serving connections.
    public let threadCount: Int
    /// The certificate in use when it was made at start or given in memory (`--tls-self-signed`); nil otherwise.
    public let certificate: TLSCertificate?
    let shared: SinkShared
    private let threads: [LoopThread]
    private let counters: [SinkCounters]        /* one block per thread, same order */
    private let ticker: LoopThread?
    private let started: UInt64                 /* monotonic ns */
    private let stoppedAt = Mutex<UInt64?>(nil) /* monotonic ns of stop(), once stopped */

    private init(addresses: [SocketAddress], certificate: TLSCertificate?, shared: SinkShared,
                 threads: [LoopThread], counters: [SinkCounters], ticker: LoopThread?, started: UInt64) {
        self.addresses = addresses
        threadCount = threads.count
        self.certificate = certificate
        self.shared = shared
        self.threads = threads
        self.counters = counters
        self.ticker = ticker
        self.started = started
    }

    /// start - check the configuration, open the files, start the threads and listen.
    public static func start(_ configuration: SinkConfiguration) throws(SinkError) -> SinkServer {
        do { try configuration.validate() } catch { throw .configuration(error) }
        SystemLimits.raiseOpenFileLimit()

        /* TLS: one server context for every thread. */
        var certificate: TLSCertificate?
        var context: TLSContext?
        if let identity = configuration.tls {
            do {
                switch identity {
                case .files(let chain, let key):
                    context = try TLSContext.server(TLSServerConfiguration(identity: .files(certificateChain: chain, privateKey: key)))
                case .selfSigned:
                    let made = try TLSCertificate.makeSelfSigned(
                        commonName: configuration.hostname,
                        dnsNames: configuration.hostname == "localhost" ? ["localhost"] : [configuration.hostname, "localhost"],
                        ipAddresses: ["127.0.0.1", "::1"])
                    certificate = made
                    context = try TLSContext.server(TLSServerConfiguration(identity: .pem(made)))
                case .pem(let given):
                    certificate = given
                    context = try TLSContext.server(TLSServerConfiguration(identity: .pem(given)))
                }
            } catch {
                throw .tls(error)
            }
        }

        /* Outputs: fail before listening, not at the first message. */
        if let maildir = configuration.maildirPath { try SinkMaildir.prepare(maildir) }
        let recorder = try configuration.recordPath.map { path throws(SinkError) in try SinkRecorder(path: path) }
        let shared = SinkShared(configuration: configuration, tls: context, recorder: recorder)

        /* Threads: the first binds (resolving port 0), the others join on the same ports. */
        var threads: [LoopThread] = []
        var counters: [SinkCounters] = []
        var addresses = configuration.listen
        do throws(SinkError) {
            for index in 0..<configuration.threads {
                let thread: LoopThread
                do { thread = try LoopThread.start(name: "sink-\(index)") } catch { throw .thread(error) }
                threads.append(thread)
                let block = SinkCounters()
                counters.append(block)
                let wanted = addresses
                let bound = Handoff<Result<[SocketAddress], SinkError>>()
                thread.execute { loop in
                    let worker = SinkWorker(index: index, loop: loop, shared: shared, counters: block)
                    do throws(SinkError) {
                        bound.put(.success(try worker.listen(on: wanted)))
                    } catch {
                        bound.put(.failure(error))
                    }
                }
                addresses = try bound.take().get()
            }
            if configuration.liveStatistics || recorder != nil {
                do { threads.append(try LoopThread.start(name: "sink-ticker")) } catch { throw .thread(error) }
            }
        } catch {
            threads.forEach { $0.stop() }
            threads.forEach { $0.join() }
            recorder?.close()
            throw error
        }
        let ticker = threads.count > configuration.threads ? threads.removeLast() : nil
        let server = SinkServer(addresses: addresses, certificate: certificate, shared: shared, threads: threads,
                                counters: counters, ticker: ticker, started: MonotonicClock.nanoseconds())
        ticker?.execute { loop in server.tick(on: loop) }
        return server
    }

    /// What the sink has done so far (summed over its threads; frozen once stopped).
    public var statistics: SinkStatistics {
        let end = stoppedAt.withLock { $0 } ?? MonotonicClock.nanoseconds()
        return SinkStatistics.sum(counters, connectionsCurrent: shared.openConnections.load(ordering: .relaxed),
                                  elapsedSeconds: Double(end - started) / 1e9)
    }

    /// stop - close every listener and connection, stop the threads, flush and close the record.
    public func stop() {
        let first = stoppedAt.withLock { stopped -> Bool in
            guard stopped == nil else { return false }
            stopped = MonotonicClock.nanoseconds()
            return true
        }
        guard first else { return }
        threads.forEach { $0.stop() }
        threads.forEach { $0.join() }
        ticker?.stopAndJoin()
        shared.recorder?.close()
    }

    /// tick - on the ticker's loop: once a second, flush the record and print the live line.
    private func tick(on loop: Loop) {
        var previous = statistics
        LoopTimer(loop: loop).schedule(after: 1_000, repeatEvery: 1_000) { [self] _ in
            shared.recorder?.flush()
            guard shared.configuration.liveStatistics else { return }
            let now = statistics
            let seconds = now.elapsedSeconds - previous.elapsedSeconds
            let rate = seconds > 0 ? Double(now.messagesAccepted - previous.messagesAccepted) / seconds : 0
            writeStandardError(now.liveLine(messagesPerSecond: rate))
            previous = now
        }
    }
}
