// ServeOverrides.swift - the flags of `carrier serve` laid over carrier.toml, at start and
// again on every SIGHUP
//
// "Flags given on the command line override the file": a reload reads the file again,
// so the flags are kept as they were given and `apply` lays them over whatever the file
// says, the same function at start and at each reload, so the two cannot drift apart.

import EventCore
import Delivery
import Injection

/// The settings `carrier serve` was given as flags, as given.
///
/// A value; safe to send between threads. Nil or empty means "not given: the file's value".
public struct ServeOverrides: Sendable {
    public var spoolDirectory: String?              /* --spool */
    public var routes: [String] = []                /* --route, each DOMAIN=HOST:PORT[,...]; replace the file's */
    public var shapingFile: String?                 /* --shaping: read again at each apply */
    public var logPath: String?                     /* --log */
    public var dnsServers: [String] = []            /* --dns */
    public var noDNS = false                        /* --no-dns */
    public var mxPort: UInt16?                      /* --mx-port */
    public var hostname: String?                    /* --hostname (the listener's too, with --smtp-listen) */
    public var smtpListen: [String] = []            /* --smtp-listen, each ADDRESS:PORT */
    public var httpListen: [String] = []            /* --http-listen, each ADDRESS:PORT */
    public var httpTokens: [String] = []            /* --http-token, added to the file's */

    public init() {}

    /// apply - lay the flags over `settings` (read from the file, or the defaults); throws
    /// for a flag that does not parse, a shaping file that cannot be read, or a listener
    /// left unusable.
    public func apply(to settings: inout CarrierSettings) throws(ConfigurationError) {
        if let spoolDirectory { settings.spool.directory = spoolDirectory }
        if !routes.isEmpty {
            var parsed: [Route] = []
            for text in routes {
                do { parsed.append(try Route.parse(text)) } catch { throw ConfigurationError(file: "--route", line: 0, "\(error)") }
            }
            settings.engine.routes = RouteTable(parsed)
        }
        if let shapingFile {
            guard let text = readTextFile(shapingFile) else { throw ConfigurationError(file: shapingFile, line: 0, "cannot read the shaping file") }
            settings.engine.scheduler = try ShapingFile.parse(text, file: shapingFile)
            settings.shapingFile = shapingFile
        }
        if let logPath { settings.engine.logPath = logPath }
        if !dnsServers.isEmpty { settings.engine.dns = DNSConfiguration(servers: dnsServers) }
        if noDNS { settings.engine.dns = nil }
        if let mxPort { settings.engine.mxPort = mxPort }
        if let hostname { settings.engine.hostname = hostname }

        /* The listeners start once and are not restarted by a reload, but are checked alike. */
        if !smtpListen.isEmpty {
            var listener = settings.submission ?? SubmissionConfiguration()
            listener.listen = try addresses(smtpListen, flag: "--smtp-listen", example: "127.0.0.1:2525")
            if let hostname { listener.hostname = hostname }
            if let problem = listener.problem() { throw ConfigurationError(file: "--smtp-listen", line: 0, problem) }
            settings.submission = listener
        }
        if !httpListen.isEmpty || !httpTokens.isEmpty {
            var listener = settings.http ?? HTTPInjectionConfiguration()
            if !httpListen.isEmpty { listener.listen = try addresses(httpListen, flag: "--http-listen", example: "127.0.0.1:8025") }
            listener.tokens += httpTokens
            if let problem = listener.problem() { throw ConfigurationError(file: "--http-listen", line: 0, problem) }
            settings.http = listener
        }
    }

    /// addresses - the ADDRESS:PORT texts of a listener flag.
    private func addresses(_ texts: [String], flag: String, example: String) throws(ConfigurationError) -> [SocketAddress] {
        var result: [SocketAddress] = []
        for text in texts {
            guard let address = SocketAddress(text) else { throw ConfigurationError(file: flag, line: 0, "\(text): expected ADDRESS:PORT, such as \(example)") }
            result.append(address)
        }
        return result
    }
}
