// SubmissionServer.swift - the SMTP submission listener: loop threads, limits, start and stop
//
// Applications hand mail over here. Each loop thread listens on every
// address (SO_REUSEPORT spreads connections) and drives its connections'
// ServerSessions. A finished message goes to the spool; its 250 is written
// only when the spool's group commit holding it is durable. The commit
// completes on a spool thread, which posts the result to the connection's
// loop through that thread's mailbox.
//
// Stopping closes the listeners first, then waits (up to `stop`'s grace) for
// the messages being stored to be answered, then stops the threads: a
// client whose message was durable gets its 250 whenever it can.

public import Delivery
public import EventCore
import SMTP
import SMTPStreams
public import Spool
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A running SMTP submission listener feeding a spool.
///
/// Owns its loop threads. Safe from any thread; `stop()` is idempotent and
/// must not be called from one of the listener's own threads.
public final class SubmissionServer: Sendable {
    /// The bound addresses (real ports when port 0 was asked for).
    public let addresses: [SocketAddress]
    let shared: SubmissionShared
    private let threads: [LoopThread]
    private let workers: [SubmissionWorkerBox]
    private let stopped = Atomic<Bool>(false)

    private init(addresses: [SocketAddress], shared: SubmissionShared, threads: [LoopThread], workers: [SubmissionWorkerBox]) {
        self.addresses = addresses
        self.shared = shared
        self.threads = threads
        self.workers = workers
    }

    /// start - check the configuration, make the TLS context, start the threads and listen.
    /// start - listen; with `log`, every stored message writes a `received` record per recipient.
    public static func start(_ configuration: SubmissionConfiguration, spool: Spool, log: DeliveryLog? = nil) throws(InjectionError) -> SubmissionServer {
        if let problem = configuration.problem() { throw InjectionError(problem) }
        SystemLimits.raiseOpenFileLimit()
        var tls: TLSContext?
        if let certificate = configuration.tlsCertificate, let key = configuration.tlsKey {
            do {
                tls = try TLSContext.server(TLSServerConfiguration(identity: .files(certificateChain: certificate, privateKey: key)))
            } catch {
                throw InjectionError("cannot load the listener's certificate \(certificate) and key \(key): \(error)")
            }
        }
        let shared = SubmissionShared(configuration: configuration, tls: tls, spool: spool, log: log)
        var threads: [LoopThread] = []
        var workers: [SubmissionWorkerBox] = []
        var addresses = configuration.listen
        do throws(InjectionError) {
            for index in 0..<configuration.threads {
                let thread: LoopThread
                do { thread = try LoopThread.start(name: "smtp-in-\(index)") } catch { throw InjectionError("cannot start a listener thread: \(error)") }
                threads.append(thread)
                let wanted = addresses
                let box = SubmissionWorkerBox()
                let bound = Handoff<Result<[SocketAddress], InjectionError>>()
                thread.execute { loop in
                    do throws(InjectionError) {
                        let worker = try SubmissionWorker(loop: loop, shared: shared)
                        box.worker = worker
                        bound.put(.success(try worker.listen(on: wanted)))
                    } catch {
                        bound.put(.failure(error))
                    }
                }
                workers.append(box)     /* before take(): the worker must not die off its thread */
                addresses = try bound.take().get()
            }
        } catch {
            threads.forEach { $0.stop() }
            threads.forEach { $0.join() }
            throw error
        }
        return SubmissionServer(addresses: addresses, shared: shared, threads: threads, workers: workers)
    }

    /// What the listener has done so far.
    public var statistics: SubmissionStatistics { shared.statistics }

    /// stop - close the listeners, refuse new transactions (421 4.3.2), give the messages
    /// being stored `graceMilliseconds` to be answered, then stop the threads.
    public func stop(graceMilliseconds: Int = 5_000) {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shared.stopping.store(true, ordering: .releasing)
        for (thread, box) in zip(threads, workers) {
            let closed = Handoff<Bool>()
            thread.execute { _ in
                box.worker?.closeListeners()
                closed.put(true)
            }
            _ = closed.take()
        }
        var waited = 0
        while shared.storing.load(ordering: .acquiring) > 0 && waited < graceMilliseconds {
            usleep(5_000)
            waited += 5
        }
        /* The last answers were written in the same loop turn that counted them; one more
           turn on each thread lets anything queued behind them go out before the close. */
        for thread in threads {
            let turned = Handoff<Bool>()
            thread.execute { _ in turned.put(true) }
            _ = turned.take()
        }
        threads.forEach { $0.stop() }
        threads.forEach { $0.join() }
    }
}

/// What a listener has done: connections and messages, summed over its threads.
///
/// A value; safe to send between threads.
public struct SubmissionStatistics: Sendable, Equatable {
    public var connections = 0              /* admitted */
    public var connectionsRefused = 0       /* over a connection limit (421 4.7.0) */
    public var connectionsOpen = 0          /* admitted and not yet closed, now */
    public var messagesAccepted = 0         /* stored and answered 250 */
    public var messagesRefused = 0          /* refused after their data: content or storage */
    public var recipientsAccepted = 0       /* of the accepted messages */
    public var recipientsRefused = 0        /* of the refused messages (not RCPTs refused on their own) */

    public init() {}
}

/// A listener failure at start: the message says what and where.
public struct InjectionError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Holds one thread's worker so `stop` can reach it on that thread.
///
/// @unchecked Sendable: `worker` is set and read on the worker's own loop thread only.
final class SubmissionWorkerBox: @unchecked Sendable {
    var worker: SubmissionWorker?
}
