// HTTPInjectionServer.swift - the HTTP injection API: POST /api/inject/v1, POST /api/admin/v1,
// GET /api/health and GET /metrics
//
// HTTP/1.1 comes from FlyingFox (swhitty/FlyingFox): a small, maintained
// server with no dependencies of its own, which builds in about 15 seconds,
// where Hummingbird or Vapor would bring SwiftNIO and add minutes to every CI
// build. Its throughput is far above what this API needs (one request per
// message or per campaign): about 25,000 small requests a second over 20
// keep-alive connections on this 2-core machine, once TCP_NODELAY is set on
// its sockets (`NoDelayPool`; without it each keep-alive response waits 40 ms
// for a delayed ACK, since FlyingFox writes headers and body separately).
//
// FlyingFox has no limit of its own on connections or header size and keeps
// idle connections open: bind the API to loopback or an internal network, or put
// a proxy in front of it. A body is read whole before any answer, so a refused
// request leaves the connection in step; only one over the size limit is left
// unread (FlyingFox keeps the connection, and with it that body's rest).
//
// The API runs on Swift concurrency in its own threads, off the delivery
// path; `start` and `stop` block their caller and must be called from a plain
// thread, not from a task. A request is answered 200 only after the spool's group commit holding
// its message is durable; bad input gets a 4xx with a JSON error naming the
// field, and nothing of it is stored.
//
// `GET /metrics` takes the same bearer token as injection (Prometheus sends it with a
// scrape job's `authorization` setting) and answers the counters of the listeners, the
// engine and the spool in Prometheus' text format (MetricsExposition.swift). Gathering
// them waits for each engine shard's loop, so it runs on a Dispatch thread, not on
// the cooperative pool the requests share.

public import Delivery
import Dispatch
public import EventCore
import FlyingFox
import FlyingSocks
import Foundation
import SMTP
public import Spool
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The HTTP API's settings ([http_listener] in carrier.toml, or `--http-listen`).
///
/// A value; safe to send between threads.
public struct HTTPInjectionConfiguration: Sendable {
    /// Addresses to listen on.
    public var listen: [EventCore.SocketAddress] = []
    /// Bearer tokens accepted in `Authorization: Bearer TOKEN`; at least one is required.
    public var tokens: [String] = []
    /// Largest request body, in octets; larger ones get 413.
    public var maximumRequestSize = 64 << 20
    /// Seconds a request may take from its first byte to storing its message; later, it is
    /// refused (408 while reading the body, 503 before storing) and nothing is queued.
    public var requestTimeoutSeconds = 60.0

    public init() {}

    /// problem - a description of the first unusable setting, or nil.
    public func problem() -> String? {
        if listen.isEmpty { return "the HTTP listener needs at least one listen address" }
        if tokens.isEmpty { return "the HTTP listener needs at least one bearer token (tokens, token_file or --http-token)" }
        if tokens.contains(where: { $0.count < 16 }) { return "HTTP bearer tokens must be at least 16 characters" }
        if maximumRequestSize < 1024 { return "max_request_size must be at least 1KiB" }
        if requestTimeoutSeconds < 1 { return "request_timeout must be at least 1s" }
        return nil
    }
}

/// A running HTTP injection API.
///
/// Safe from any thread; `stop()` is idempotent. Requests run as tasks on
/// Swift's cooperative pool, never on a loop thread.
public final class HTTPInjectionServer: Sendable {
    /// The bound addresses (real ports when port 0 was asked for).
    public let addresses: [EventCore.SocketAddress]
    private let servers: [HTTPServer]
    private let tasks: [Task<Void, any Error>]
    private let counters: HTTPInjectionCounters
    private let stopped = Atomic<Bool>(false)

    private init(addresses: [EventCore.SocketAddress], servers: [HTTPServer], tasks: [Task<Void, any Error>],
                 counters: HTTPInjectionCounters) {
        self.addresses = addresses
        self.servers = servers
        self.tasks = tasks
        self.counters = counters
    }

    /// start - listen on every address; returns once each is listening. With `log`, every
    /// stored message writes a `received` record per recipient; with `engine`,
    /// `POST /api/admin/v1` acts on it. `GET /metrics` reports the spool, the engine (if
    /// any), this API and `submission` (the SMTP listener, if any).
    public static func start(_ configuration: HTTPInjectionConfiguration, spool: Spool, log: DeliveryLog? = nil,
                             engine: DeliveryEngine? = nil, submission: SubmissionServer? = nil) throws(InjectionError) -> HTTPInjectionServer {
        if let problem = configuration.problem() { throw InjectionError(problem) }
        let counters = HTTPInjectionCounters()
        let handler = InjectionHandler(configuration: configuration, spool: spool, log: log, engine: engine,
                                       submission: submission, counters: counters)
        var servers: [HTTPServer] = []
        var tasks: [Task<Void, any Error>] = []
        var bound: [EventCore.SocketAddress] = []
        for address in configuration.listen {
            let socketAddress: any FlyingSocks.SocketAddress
            do {
                socketAddress = address.ip.isIPv6
                    ? try sockaddr_in6.inet6(ip6: address.ip.description, port: address.port)
                    : try sockaddr_in.inet(ip4: address.ip.description, port: address.port)
            } catch {
                throw InjectionError("cannot listen on \(address): \(error)")
            }
            /* FlyingFox's timeout cancels a handler outright (and answers 500 even if the handler
               then stores the message): give it room beyond our own deadline, which refuses
               before storing. */
            let config = HTTPServer.Configuration(address: socketAddress, timeout: configuration.requestTimeoutSeconds + 30,
                                                  pool: NoDelayPool(base: HTTPServer.defaultPool()), logger: .disabled)
            let server = HTTPServer(config: config, handler: handler)
            let task = Task { try await server.run() }
            let listening = Handoff<Result<EventCore.SocketAddress, InjectionError>>()
            Task {
                do {
                    try await server.waitUntilListening(timeout: 5)
                    var port = address.port
                    if case .ip4(_, let real)? = await server.listeningAddress { port = real }
                    if case .ip6(_, let real)? = await server.listeningAddress { port = real }
                    listening.put(.success(EventCore.SocketAddress(ip: address.ip, port: port)))
                } catch {
                    /* A failed bind ends run() at once: report its error, not the wait's timeout. */
                    task.cancel()
                    var reason = "\(error)"
                    if case .failure(let failure) = await task.result { reason = "\(failure)" }
                    listening.put(.failure(InjectionError("cannot listen on \(address) for HTTP: \(reason)")))
                }
            }
            switch listening.take() {
            case .success(let address):
                bound.append(address)
                servers.append(server)
                tasks.append(task)
            case .failure(let error):
                HTTPInjectionServer(addresses: bound, servers: servers, tasks: tasks, counters: counters).stop()
                throw error
            }
        }
        return HTTPInjectionServer(addresses: bound, servers: servers, tasks: tasks, counters: counters)
    }

    /// What the API has stored and refused so far.
    public var statistics: HTTPInjectionStatistics { counters.statistics }

    /// stop - close the listeners and wait (up to five seconds) for requests in progress.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let done = DispatchSemaphore(value: 0)
        let servers = self.servers
        Task {
            for server in servers { await server.stop(timeout: 5) }
            done.signal()
        }
        done.wait()
        tasks.forEach { $0.cancel() }
    }
}

/// What the HTTP API has done: injection requests (one message each) and their recipients.
///
/// A value; safe to send between threads.
public struct HTTPInjectionStatistics: Sendable, Equatable {
    public var messagesAccepted = 0         /* stored and answered 200 */
    public var messagesRefused = 0          /* answered with an error, whatever the reason */
    public var recipientsAccepted = 0       /* of the accepted messages */
    public var recipientsRefused = 0        /* of refused messages whose body was parsed */

    public init() {}
}

/// The API's counters, added to by every request task. Thread-safe (atomics); a reader
/// may see one request's message counted before its recipients.
final class HTTPInjectionCounters: Sendable {
    private let messagesAccepted = Atomic<Int>(0)
    private let messagesRefused = Atomic<Int>(0)
    private let recipientsAccepted = Atomic<Int>(0)
    private let recipientsRefused = Atomic<Int>(0)

    /// count - one injection request answered: stored or not, with its recipients (0 if unknown).
    func count(accepted: Bool, recipients: Int) {
        if accepted {
            messagesAccepted.add(1, ordering: .relaxed)
            recipientsAccepted.add(recipients, ordering: .relaxed)
        } else {
            messagesRefused.add(1, ordering: .relaxed)
            recipientsRefused.add(recipients, ordering: .relaxed)
        }
    }

    var statistics: HTTPInjectionStatistics {
        var statistics = HTTPInjectionStatistics()
        statistics.messagesAccepted = messagesAccepted.load(ordering: .relaxed)
        statistics.messagesRefused = messagesRefused.load(ordering: .relaxed)
        statistics.recipientsAccepted = recipientsAccepted.load(ordering: .relaxed)
        statistics.recipientsRefused = recipientsRefused.load(ordering: .relaxed)
        return statistics
    }
}

/// Sets TCP_NODELAY on every socket the server waits on, then defers to the real pool.
///
/// Accepted sockets inherit the option from the listening socket on Linux; the
/// call on each wait costs one setsockopt and covers any that did not.
struct NoDelayPool: AsyncSocketPool {
    let base: any AsyncSocketPool

    func prepare() async throws { try await base.prepare() }
    func run() async throws { try await base.run() }

    func suspendSocket(_ socket: Socket, untilReadyFor events: Socket.Events) async throws {
        try? socket.setValue(true, for: BoolSocketOption(level: Int32(IPPROTO_TCP), name: TCP_NODELAY))
        try await base.suspendSocket(socket, untilReadyFor: events)
    }
}

/// Answers the API's requests.
///
/// Immutable; safe from any task.
struct InjectionHandler: HTTPHandler {
    let configuration: HTTPInjectionConfiguration
    let spool: Spool
    let log: DeliveryLog?
    /// The engine operators act on (nil with `--hold`).
    let engine: DeliveryEngine?
    /// The SMTP listener, for its counters in `GET /metrics` (nil: none runs).
    let submission: SubmissionServer?
    let counters: HTTPInjectionCounters
    /// When the API started (ms since the epoch): the start time `GET /metrics` reports.
    let started = nowMilliseconds()
    private let tokens: [[UInt8]]

    init(configuration: HTTPInjectionConfiguration, spool: Spool, log: DeliveryLog?, engine: DeliveryEngine?,
         submission: SubmissionServer?, counters: HTTPInjectionCounters) {
        self.configuration = configuration
        self.spool = spool
        self.log = log
        self.engine = engine
        self.submission = submission
        self.counters = counters
        tokens = configuration.tokens.map { Array($0.utf8) }
    }

    func handleRequest(_ request: HTTPRequest) async throws -> HTTPResponse {
        switch (request.method, request.path) {
        case (.GET, "/api/health"):
            return json(.ok, ["status": "ok", "shards": spool.shards.count])
        case (.POST, "/api/inject/v1"):
            return await inject(request)
        case (.POST, "/api/admin/v1"):
            return await administer(request)
        case (.GET, "/metrics"):
            return await metrics(request)
        case (_, "/api/inject/v1"), (_, "/api/health"), (_, "/api/admin/v1"), (_, "/metrics"):
            return json(.methodNotAllowed, ["error": "method \(request.method.rawValue) not allowed here"])
        default:
            return json(.notFound, ["error": "no such endpoint: \(request.path)"])
        }
    }

    /// readBody - the whole request body (even one to be refused: a bad token, bad JSON, so
    /// the connection stays in step), or the response that ends the request: too large
    /// (left unread), too slow, unreadable.
    private func readBody(_ request: HTTPRequest, started: Double) async -> Result<Data, RefusedRequest> {
        let length = request.headers[HTTPHeader("Content-Length")].flatMap(Int.init) ?? 0
        if length > configuration.maximumRequestSize { return .failure(RefusedRequest(response: tooLarge())) }
        var body = Data()
        body.reserveCapacity(length)
        do {
            for try await chunk in request.bodySequence {
                if body.count + chunk.count > configuration.maximumRequestSize { return .failure(RefusedRequest(response: tooLarge())) }
                body.append(chunk)
                if seconds() - started > configuration.requestTimeoutSeconds {
                    return .failure(RefusedRequest(response: closing(json(.requestTimeout, ["error": "the request body took longer than \(Int(configuration.requestTimeoutSeconds)) s"]))))
                }
            }
        } catch {
            return .failure(RefusedRequest(response: closing(json(.badRequest, ["error": "cannot read the request body: \(error)"]))))
        }
        return .success(body)
    }

    /// administer - an operator's action on the running engine:
    /// `{"action": "suspend"|"resume"|"bounce"|"retry", "domain"|"site"|"campaign": NAME,
    ///   "duration": SECONDS or "30m" (suspend; none: until resumed), "reason": TEXT (bounce)}`.
    private func administer(_ request: HTTPRequest) async -> HTTPResponse {
        let body: Data
        switch await readBody(request, started: seconds()) {
        case .success(let data): body = data
        case .failure(let refused): return refused.response
        }
        guard authorised(request.headers[HTTPHeader("Authorization")]) else { return unauthorised() }
        guard let engine else {
            return json(.serviceUnavailable, ["error": "no delivery engine runs here (carrier serve --hold): nothing to administer"])
        }
        let action: AdminAction
        switch AdminRequest.parse(body, now: nowMilliseconds()) {
        case .success(let parsed): action = parsed
        case .failure(let error): return json(.badRequest, ["error": error.message, "field": error.field])
        }
        let result: Result<Int, SpoolError> = await withCheckedContinuation { continuation in
            engine.administer(action) { continuation.resume(returning: $0) }
        }
        switch result {
        case .success(let count):
            if case .retry = action { return json(.ok, ["done": "\(action)", "retried": count]) }
            return json(.ok, ["done": "\(action)", "bounced": count])
        case .failure(let error):
            writeStandardError("carrier: HTTP API: administration failed: \(error)\n")
            return json(.internalServerError, ["error": "\(error)"])
        }
    }

    /// metrics - the counters in Prometheus' text format, for a holder of a token.
    private func metrics(_ request: HTTPRequest) async -> HTTPResponse {
        if case .failure(let refused) = await readBody(request, started: seconds()) { return refused.response }
        guard authorised(request.headers[HTTPHeader("Authorization")]) else { return unauthorised() }
        let figures: MetricsFigures = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: gatherFigures()) }
        }
        return HTTPResponse(statusCode: .ok, headers: [HTTPHeader("Content-Type"): MetricsExposition.contentType],
                            body: Data(MetricsExposition.text(figures).utf8))
    }

    /// gatherFigures - the counters now. Blocks until every engine shard has answered, and
    /// takes each spool shard's lock briefly (`gauges`, not the walk of `counts`).
    private func gatherFigures() -> MetricsFigures {
        var figures = MetricsFigures()
        figures.startedMilliseconds = started
        figures.nowMilliseconds = nowMilliseconds()
        figures.smtp = submission?.statistics
        figures.http = counters.statistics
        if let engine {
            figures.engine = engine.status()
            figures.deliveryConnections = engine.siteConnections.open
        }
        for shard in spool.shards { figures.spool.merge(shard.gauges()) }
        return figures
    }

    /// unauthorised - the 401 for a missing or wrong bearer token.
    private func unauthorised() -> HTTPResponse {
        var response = json(.unauthorized, ["error": "a valid bearer token is required (Authorization: Bearer TOKEN)"])
        response.headers[HTTPHeader("WWW-Authenticate")] = "Bearer realm=\"carrier\""
        return response
    }

    /// inject - store the request's message and count the answer.
    private func inject(_ request: HTTPRequest) async -> HTTPResponse {
        let (response, recipients) = await store(request)
        counters.count(accepted: response.statusCode == .ok, recipients: recipients)
        return response
    }

    /// store - check the token and the body, store the message, answer once it is durable;
    /// with the answer, the message's recipients (0 when the body was not parsed).
    private func store(_ request: HTTPRequest) async -> (HTTPResponse, recipients: Int) {
        let started = seconds()
        let body: Data
        switch await readBody(request, started: started) {
        case .success(let data): body = data
        case .failure(let refused): return (refused.response, 0)
        }
        guard authorised(request.headers[HTTPHeader("Authorization")]) else { return (unauthorised(), 0) }
        let parsed: InjectRequest
        do {
            parsed = try InjectRequest.parse(body, now: nowMilliseconds())
        } catch {
            return (json(.badRequest, ["error": error.description, "field": error.field]), 0)
        }
        let count = parsed.message.recipients.count
        /* Past our deadline (or cancelled by the server's): refuse now, before anything is stored. */
        if Task.isCancelled || seconds() - started > configuration.requestTimeoutSeconds {
            return (json(.serviceUnavailable, ["error": "the request took longer than \(Int(configuration.requestTimeoutSeconds)) s; nothing was queued"]), count)
        }
        let result: Result<MessageID, SpoolError> = await withCheckedContinuation { continuation in
            spool.enqueue(parsed.message) { continuation.resume(returning: $0) }
        }
        switch result {
        case .success(let id):
            if let log {
                let now = nowMilliseconds()
                let message = parsed.message
                let text = "\(message.body.count) octets from \(message.sender.isEmpty ? "<>" : message.sender) over HTTP"
                log.append(contentsOf: message.recipients.map {
                    DeliveryLogRecord(time: now, event: .received, messageID: id.description, recipient: $0.address,
                                      campaign: message.metadata.campaign, text: text)
                })
            }
            return (json(.ok, ["success_count": count, "fail_count": 0, "failed_recipients": [String](),
                               "errors": [String](), "id": id.description]), count)
        case .failure(let error):
            if error.reason == .diskFull {
                var response = json(.serviceUnavailable, ["error": "insufficient storage: nothing was queued; retry later"])
                response.headers[HTTPHeader("Retry-After")] = "60"
                return (response, count)
            }
            writeStandardError("carrier: HTTP API: cannot store a message: \(error)\n")
            return (json(.internalServerError, ["error": "the queue could not store the message; nothing was queued"]), count)
        }
    }

    /// authorised - true when `header` is `Bearer` and one of the tokens (compared in constant time).
    private func authorised(_ header: String?) -> Bool {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        let given = Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)
        var found = false
        for token in tokens where constantTimeEqual(token, given) { found = true }
        return found
    }

    /// tooLarge - 413 for a body over `maximumRequestSize`.
    private func tooLarge() -> HTTPResponse {
        closing(json(.payloadTooLarge, ["error": "the request body is larger than \(configuration.maximumRequestSize) octets"]))
    }

    /// closing - `response` with `Connection: close` (the client is told not to reuse the connection).
    private func closing(_ response: HTTPResponse) -> HTTPResponse {
        var response = response
        response.headers[HTTPHeader("Connection")] = "close"
        return response
    }

    private func json(_ status: HTTPStatusCode, _ object: [String: any Sendable]) -> HTTPResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return HTTPResponse(statusCode: status, headers: [HTTPHeader("Content-Type"): "application/json"], body: data + Data("\n".utf8))
    }
}

/// seconds - the monotonic clock in seconds, for request deadlines.
private func seconds() -> Double { Double(MonotonicClock.nanoseconds()) / 1e9 }

/// A request the handler ends before its work: the response to send.
struct RefusedRequest: Error {
    let response: HTTPResponse
}

/// The body of `POST /api/admin/v1`, checked.
enum AdminRequest {
    struct Problem: Error {
        let message: String
        let field: String
    }

    /// The longest suspension with an end, in seconds (ten years).
    static let longestSuspension: Int64 = 3_650 * 86_400

    /// parse - the action in `body`; `now` (ms since the epoch) dates a suspension's end.
    static func parse(_ body: Data, now: Int64) -> Result<AdminAction, Problem> {
        guard let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else {
            return .failure(Problem(message: "the body is not a JSON object", field: ""))
        }
        let scopes: [(String, AdminScope)] = [("domain", .domain), ("site", .site), ("campaign", .campaign)]
        let named = scopes.compactMap { key, scope in (object[key] as? String).map { (key, scope, $0) } }
        guard named.count == 1, let (key, scope, name) = named.first, !name.isEmpty else {
            return .failure(Problem(message: "name exactly one of domain, site or campaign", field: "domain"))
        }
        let target = scope == .domain ? name.lowercased() : name
        switch object["action"] as? String {
        case "suspend":
            var until: Int64?
            if let value = object["duration"] {
                guard let seconds = durationSeconds(value), seconds > 0 else {
                    return .failure(Problem(message: "duration is a number of seconds or a text such as \"90s\", \"30m\", \"4h\", \"2d\"", field: "duration"))
                }
                /* Longer is "until resumed" (no duration); a huge one overflowed and stopped the process. */
                guard seconds <= AdminRequest.longestSuspension else {
                    return .failure(Problem(message: "duration is at most \(AdminRequest.longestSuspension / 86_400) days; leave it out to suspend until resumed", field: "duration"))
                }
                until = now + seconds * 1000
            }
            return .success(.suspend(scope, target, until: until))
        case "resume":
            return .success(.resume(scope, target))
        case "bounce":
            guard scope != .site else { return .failure(Problem(message: "bounce takes a domain or a campaign", field: key)) }
            let reason = (object["reason"] as? String).map { String($0.prefix(200)) } ?? "bounced by an operator"
            let clean = String(reason.map { $0.isNewline ? " " : $0 })
            return .success(.bounce(scope, target, reason: "5.0.0 " + clean))
        case "retry":
            guard scope != .campaign else { return .failure(Problem(message: "retry takes a domain or a site", field: key)) }
            return .success(.retry(scope, target))
        default:
            return .failure(Problem(message: "action is suspend, resume, bounce or retry", field: "action"))
        }
    }

    /// durationSeconds - 1800, "1800", "90s", "30m", "4h" or "2d" in seconds.
    private static func durationSeconds(_ value: Any) -> Int64? {
        if let number = value as? Int { return Int64(number) }
        guard let text = value as? String, !text.isEmpty else { return nil }
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = units[text.last!], let count = Int64(text.dropLast()) { return count.multipliedReportingOverflow(by: unit).overflow ? nil : count * unit }
        return Int64(text)
    }
}

