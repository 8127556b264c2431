// ServeOverridesTests.swift - `carrier serve`'s flags over carrier.toml, at start and after a
// SIGHUP re-reads the file

#if canImport(Glibc)
import Glibc
#endif
import Delivery
import Testing
@testable import Carrier

@Suite("Serve overrides")
struct ServeOverridesTests {
    /// The file changes and is read again: its own changes apply, and every flag still wins.
    @Test func reloadLaysTheFlagsOverTheFileAgain() throws {
        var template = Array("/tmp/carrier-overrides-XXXXXX".utf8CString)
        let folder = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        defer { _ = system("rm -rf '\(folder)'") }
        func write(_ name: String, _ text: String) throws {
            let file = try #require(fopen(folder + "/" + name, "w"))
            fputs(text, file)
            fclose(file)
        }
        try write("file-shaping.toml", "[defaults]\nmax_connections = 7\n")
        try write("flag-shaping.toml", "[defaults]\nmax_connections = 3\n")
        func file(route: String, hostname: String, timeout: String) -> String {
            """
            [delivery]
            hostname = "\(hostname)"
            mx_port = 25
            dns_servers = ["127.0.0.1:53"]
            connect_timeout = "\(timeout)"
            shaping = "\(folder)/file-shaping.toml"
            [[route]]
            domain = "*"
            hosts = ["\(route)"]
            """
        }
        let config = folder + "/carrier.toml"
        try write("carrier.toml", file(route: "192.0.2.1:25", hostname: "file.example", timeout: "5s"))

        var overrides = ServeOverrides()
        overrides.routes = ["*=127.0.0.1:2525"]
        overrides.mxPort = 2526
        overrides.hostname = "flag.example"
        overrides.dnsServers = ["127.0.0.1:5300"]
        overrides.shapingFile = folder + "/flag-shaping.toml"
        overrides.logPath = folder + "/delivery.log"
        var settings = try CarrierFile.load(config)
        try overrides.apply(to: &settings)
        var options = ServeOptions(settings: settings, configurationFile: config)
        options.overrides = overrides

        try write("carrier.toml", file(route: "192.0.2.2:25", hostname: "changed.example", timeout: "7s"))
        for engine in [settings.engine, try ServeRunner.reloadedConfiguration(config, options)] {
            #expect(engine.routes.route(for: "any.test")?.hops == [NextHop(host: "127.0.0.1", port: 2525)])
            #expect(engine.mxPort == 2526)
            #expect(engine.hostname == "flag.example")
            #expect(engine.dns?.servers == ["127.0.0.1:5300"])
            #expect(engine.scheduler.shaping.defaults.maxConnections == 3)
            #expect(engine.logPath == folder + "/delivery.log")
        }
        #expect(try ServeRunner.reloadedConfiguration(config, options).connectTimeoutMilliseconds == 7_000,
                "what the file changed and no flag names applies")

        overrides.noDNS = true
        options.overrides = overrides
        #expect(try ServeRunner.reloadedConfiguration(config, options).dns == nil, "--no-dns stays after a reload")
    }
}
