// CarrierFileTests.swift - carrier.toml: what it sets, and errors that name the line and key

import Carrier
import Delivery
import Spool
import Testing

@Suite("carrier.toml")
struct CarrierFileTests {
    @Test func readsEverySection() throws {
        let settings = try CarrierFile.parse("""
        [spool]
        directory = "/var/spool/carrier"
        shards = 4
        segment_size = "32MiB"
        durability = "interval:50ms"

        [delivery]
        hostname = "mta1.example.com"
        mx_port = 2525
        dns_servers = ["127.0.0.1:5353"]
        idle_timeout = "10s"
        bounce_notices_bulk = true

        [log]
        path = "delivery.log"
        max_size = "1GiB"

        [[route]]
        domain = "partner.example"
        hosts = ["192.0.2.10:587", "[2001:db8::1]:587"]
        tls = "required"
        username = "relay"
        password = "secret"
        sources = ["192.0.2.5"]

        [[route]]
        domain = "*"
        hosts = ["127.0.0.1"]
        """)
        #expect(settings.spool.directory == "/var/spool/carrier")
        #expect(settings.spool.shards == 4)
        #expect(settings.spool.segmentSize == 32 << 20)
        #expect(settings.spool.durability == .interval(milliseconds: 50))
        #expect(settings.engine.hostname == "mta1.example.com")
        #expect(settings.engine.mxPort == 2525)
        #expect(settings.engine.dns?.servers == ["127.0.0.1:5353"])
        #expect(settings.engine.idleTimeoutMilliseconds == 10_000)
        #expect(settings.engine.bounceNoticesForBulk)
        #expect(settings.engine.logPath == "delivery.log")
        #expect(settings.engine.logMaxBytes == 1 << 30)
        let partner = try #require(settings.engine.routes.route(for: "Partner.Example"))
        #expect(partner.hops == [NextHop(host: "192.0.2.10", port: 587), NextHop(host: "2001:db8::1", port: 587)])
        #expect(partner.tls == .required)
        #expect(partner.credentials?.username == "relay")
        #expect(partner.sources.map(\.description) == ["192.0.2.5"])
        #expect(settings.engine.routes.route(for: "other.test")?.hops == [NextHop(host: "127.0.0.1", port: 25)])
    }

    @Test(arguments: [
        ("[spool]\nshards = 0", "carrier.toml:2: expected a positive integer, not 0"),
        ("[delivery]\nhostnme = \"x\"", "carrier.toml:2: unknown key hostnme in [delivery]"),
        ("[spooler]\ndirectory = \"x\"", "carrier.toml:2: unknown table [spooler]"),
        ("[spool]\ndurability = \"sometimes\"", "carrier.toml:2: durability must be \"fsync\", \"interval:100ms\" or \"none\", not \"sometimes\""),
        ("[[route]]\ndomain = \"a.test\"", "carrier.toml:2: route a.test needs hosts = [\"HOST:PORT\", ...]"),
        ("[[route]]\ndomain = \"a.test\"\nhosts = [\"h:99999\"]", "carrier.toml:3: route 'h:99999': the port must be a number from 1 to 65535"),
        ("[[route]]\ndomain = \"a.test\"\nhosts = [\"h:25\"]\ntls = \"maybe\"", "carrier.toml:4: tls must be one of none, opportunistic, required, implicit"),
        ("[[route]]\ndomain = \"a.test\"\nhosts = [\"h:25\"]\nusername = \"u\"", "carrier.toml:4: route a.test: username and password (or password_file) go together"),
        ("[log]\nmax_size = \"12 parsecs\"", "carrier.toml:2: expected a size such as \"512KiB\", \"64MiB\" or \"1GiB\", not \"12 parsecs\""),
        ("[smtp_listener]\nlisten = [\"127.0.0.1:2525\"]\nmax_message_size = \"2GiB\"",
         "carrier.toml: [smtp_listener]: max_message_size must be at most 1073676288 octets (what the spool stores)"),
        ("[[route]]\ndomain = \"a.test\"\nhosts = [\"h:25\"]\nclient_certificate = \"/nonexistent/c.pem\"\nclient_key = \"/nonexistent/k.pem\"",
         "carrier.toml:4: route a.test: client_certificate /nonexistent/c.pem / client_key /nonexistent/k.pem: "),
    ])
    func errorsNameTheLineAndKey(text: String, message: String) {
        #expect(throws: ConfigurationError.self) { try CarrierFile.parse(text) }
        do {
            _ = try CarrierFile.parse(text)
        } catch {
            /* A message ending in ": " is a prefix: OpenSSL's own words follow. */
            if message.hasSuffix(": ") {
                #expect(error.description.hasPrefix(message), "\(error.description)")
            } else {
                #expect(error.description == message)
            }
        }
    }

    @Test func commandLineRoutes() throws {
        let route = try Route.parse("*=127.0.0.1:2525,[::1]:2526")
        #expect(route.domain == "*")
        #expect(route.hops == [NextHop(host: "127.0.0.1", port: 2525), NextHop(host: "::1", port: 2526)])
        #expect(throws: RouteError.self) { try Route.parse("example.com") }
        #expect(throws: RouteError.self) { try Route.parse("=127.0.0.1:25") }
        #expect(throws: RouteError.self) { try Route.parse("a.test=127.0.0.1:0") }
    }
}
