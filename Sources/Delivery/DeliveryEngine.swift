// DeliveryEngine.swift - the worker shards together: start, progress, drain and stop
//
// One worker shard per spool shard, each on its own thread with its own loop. The
// engine itself only starts them, asks them for their counts and stops them: the
// delivery path never goes through it.

import Dispatch
import EventCore
import Scheduler
public import Spool
import Synchronization

/// Why the engine could not start.
public struct EngineError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The delivery engine: worker shards over one spool. Its methods are for one controlling
/// thread (the command's main thread); the shards run on their own.
public final class DeliveryEngine: Sendable {
    public let spool: Spool
    public let configuration: EngineConfiguration
    private let shards: [WorkerShard]
    private let log: DeliveryLog?
    /// The delivery log (nil without `logPath`): the listeners write their `received` records to it.
    public var deliveryLog: DeliveryLog? { log }
    /// Open connections per site, over every shard.
    public let siteConnections = SiteConnections()
    /// The status taken as the engine stopped (its loops are gone then).
    private let finalStatus = Mutex<ShardStatus?>(nil)

    /// start - open the delivery log, start one worker shard per spool shard and hand each
    /// its pending recipients.
    public init(spool: Spool, configuration: EngineConfiguration) throws(EngineError) {
        var configuration = configuration
        /* One set of site limits for every shard: a site's domains live in several shards. */
        configuration.scheduler.sharedSites = configuration.scheduler.sharedSites ?? SharedSites()
        self.spool = spool
        self.configuration = configuration
        do {
            log = try configuration.logPath.map { path throws(DeliveryLogError) in try DeliveryLog(path: path, maxBytes: configuration.logMaxBytes) }
        } catch {
            throw EngineError("delivery log: \(error)")
        }
        var shards: [WorkerShard] = []
        for index in spool.shards.indices {
            do {
                shards.append(try WorkerShard(index: index, spool: spool, configuration: configuration, log: log,
                                              siteConnections: siteConnections))
            } catch {
                for shard in shards { shard.shutdown() }
                throw EngineError("worker shard \(index): \(error)")
            }
        }
        self.shards = shards
        for shard in shards { shard.start() }
    }

    /// status - every shard's counts, summed (waits for each shard's loop).
    public func status() -> ShardStatus {
        if let final = finalStatus.withLock({ $0 }) { return final }
        let group = DispatchGroup()
        let results = Mutex<[ShardStatus]>([])
        for shard in shards {
            group.enter()
            shard.status { status in
                results.withLock { $0.append(status) }
                group.leave()
            }
        }
        group.wait()
        var total = ShardStatus()
        for status in results.withLock({ $0 }) {
            total.ready += status.ready
            total.waiting += status.waiting
            total.inFlight += status.inFlight
            total.resolving += status.resolving
            for (domain, counts) in status.byDomain {
                var sum = total.byDomain[domain, default: DomainCounters()]
                sum.delivered += counts.delivered
                sum.deferred += counts.deferred
                sum.bounced += counts.bounced
                sum.expired += counts.expired
                total.byDomain[domain] = sum
            }
        }
        return total
    }

    /// reload - new routes and shaping for every shard (what SIGHUP does); the spool, the
    /// log and the shard count stay as they are.
    public func reload(_ configuration: EngineConfiguration) {
        var configuration = configuration
        configuration.scheduler.sharedSites = self.configuration.scheduler.sharedSites
        for shard in shards { shard.reload(configuration) }
    }

    /// administer - an operator's action on every shard (a domain, site or campaign may have
    /// recipients in any of them); `completion` runs once, on some shard's thread, with the
    /// recipients a bounce took in all, or the first error.
    public func administer(_ action: AdminAction, _ completion: @escaping @Sendable (Result<Int, SpoolError>) -> Void) {
        let tally = Mutex<(left: Int, count: Int, error: SpoolError?)>((shards.count, 0, nil))
        for shard in shards {
            shard.administer(action) { result in
                let done = tally.withLock { tally -> (Result<Int, SpoolError>)? in
                    switch result {
                    case .success(let count): tally.count += count
                    case .failure(let error): tally.error = tally.error ?? error
                    }
                    tally.left -= 1
                    guard tally.left == 0 else { return nil }
                    return tally.error.map { .failure($0) } ?? .success(tally.count)
                }
                if let done { completion(done) }
            }
        }
    }

    /// isDrained - nothing is ready, in flight or being routed: what is left waits for a
    /// later time (deferred) or an operator (suspended).
    public static func isDrained(_ status: ShardStatus) -> Bool {
        status.ready == 0 && status.inFlight == 0 && status.resolving == 0
    }

    /// stop - graceful (idempotent): no new transactions, the ones in flight finish and are recorded,
    /// idle connections say QUIT; then the shards' loops close and the log is flushed.
    /// The spool stays open (the caller closes it).
    public func stop() {
        guard finalStatus.withLock({ $0 }) == nil else { return }
        let group = DispatchGroup()
        for shard in shards {
            group.enter()
            shard.stop { group.leave() }
        }
        group.wait()
        let final = status()
        finalStatus.withLock { $0 = final }
        /* Give the QUITs a moment to leave before the loops close the sockets. */
        usleep(50_000)
        for shard in shards { shard.shutdown() }
        log?.close()
    }
}

#if canImport(Glibc)
import Glibc
#endif
