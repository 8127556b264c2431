// ShapingFileTests.swift - the TOML subset and the shaping file read into the scheduler's settings

import Testing
import Carrier
import Scheduler

@Suite("TOML subset")
struct TOMLTests {
    @Test("Tables, arrays of tables, quoted and dotted keys, every value type, comments")
    func document() throws {
        let text = """
            # a comment
            top = 1_000 # trailing comment
            [a."b.c".d]
            s = "x\\"y\\\\z\\n\\u00e9" # "é"
            lit = 'C:\\path'
            f = 0.5
            t = true
            list = ["one", 2, false]
            dotted.key = "v"
            [[item]]
            n = 1
            [[item]]
            n = 2
            """
        let entries = try parseTOML(text)
        #expect(entries.map(\.key) == ["top", "s", "lit", "f", "t", "list", "key", "n", "n"])
        #expect(entries[0] == TOMLEntry(table: [], key: "top", value: .integer(1000), line: 2))
        #expect(entries[1].table == ["a", "b.c", "d"])
        #expect(entries[1].value == .string("x\"y\\z\né"))
        #expect(entries[2].value == .string("C:\\path"))
        #expect(entries[3].value == .float(0.5))
        #expect(entries[4].value == .boolean(true))
        #expect(entries[5].value == .array([.string("one"), .integer(2), .boolean(false)]))
        #expect(entries[6].table == ["a", "b.c", "d", "dotted"])
        #expect(entries[7].table == ["item", "0"])
        #expect(entries[8].table == ["item", "1"])
    }

    @Test("Errors name the line", arguments: [
        ("a = \"open", 1, "unterminated string"),
        ("[t]\n[t]", 2, "table [t] is defined twice"),
        ("x = 1\nx = 2", 2, "key x is set twice in []"),
        ("\n\nx = nope", 3, "not a value this file format reads: nope"),
        ("x = [1, 2", 1, "expected \",\" or \"]\" in the array (arrays must fit on one line)"),
        ("[t] extra", 1, "unexpected text after the table name"),
        ("= 3", 1, "expected a key"),
    ])
    func errors(text: String, line: Int, message: String) {
        #expect(throws: ConfigurationError(file: "f.toml", line: line, message)) { _ = try parseTOML(text, file: "f.toml") }
    }
}

@Suite("Shaping file")
struct ShapingFileTests {
    @Test("The shipped file parses, and its rules are the scheduler's built-in defaults")
    func shippedDefaults() throws {
        let configuration = try ShapingFile.defaults()
        #expect(configuration.rules == ResponseRule.defaults)
        #expect(configuration.shaping.defaults.maxConnections == 20)
        #expect(configuration.shaping.defaults.initialConnections == 5)
        #expect(configuration.shaping.defaults.maxRecipientsPerTransaction == 100)
        #expect(configuration.retry.retryInterval == 300_000)
        #expect(configuration.retry.maxRetryInterval == 14_400_000)
        #expect(configuration.retry.maxAge == 432_000_000)
        #expect(configuration.health.threshold == 5)
        #expect(configuration.domainBurst == 8)
        #expect(configuration.health.cooldown == 60_000)
        #expect(configuration.health.maxCooldown == 3_600_000)
        let yahoo = configuration.shaping.siteLimits(site: "mta5.am0.yahoodns.net", mxHosts: ["mta5.am0.yahoodns.net"])
        #expect(yahoo.maxConnections == 10)
        #expect(yahoo.maxMessagesPerConnection == 20)
        #expect(yahoo.messageRate == Rate(50, per: 1))
        #expect(yahoo.maxRecipientsPerTransaction == 100) // from [defaults]
        let gmail = configuration.shaping.siteLimits(site: "google", mxHosts: ["alt1.aspmx.l.google.com", "aspmx.l.google.com"])
        #expect(gmail.messageRate == Rate(100, per: 1))
        #expect(gmail.messageBurst == 50)
    }

    @Test("An operator's file is laid over the shipped one, field by field; its rules come first")
    func overlay() throws {
        let text = """
            [domain."Example.COM"]
            max_recipients_per_transaction = 10
            message_rate = "20000/h"
            [mx_suffix.".yahoodns.net"]
            max_connections = 3
            [scheduler]
            domain_burst = 1
            [campaign."spring sale"]
            weight = 3
            [retry]
            retry_interval = "250ms"
            [[rule]]
            name = "mine"
            contains = "slow down"
            action = "bounce"
            [[rule]]
            name = "regex"
            pattern = '4\\.7\\.[0-9]+ .*later'
            scope = "domain"
            action = "suspend"
            duration = "10m"
            """
        let configuration = try ShapingFile.parse(text)
        let yahoo = configuration.shaping.siteLimits(site: "y", mxHosts: ["mta6.am0.yahoodns.net"])
        #expect(yahoo.maxConnections == 3)
        #expect(yahoo.maxMessagesPerConnection == 20) // still the shipped value
        let domain = configuration.shaping.domainLimits(domain: "example.com", siteLimits: yahoo)
        #expect(domain.maxRecipientsPerTransaction == 10)
        #expect(domain.messageRate == Rate(20000, per: 3600))
        #expect(domain.maxConnections == 3)
        #expect(configuration.retry.retryInterval == 250)
        #expect(configuration.domainBurst == 1)
        #expect(configuration.shaping.campaignWeights == ["spring sale": 3])
        #expect(configuration.retry.maxAge == 432_000_000)
        #expect(configuration.rules.first == ResponseRule(name: "mine", contains: ["slow down"], scope: .site, action: .bounce))
        #expect(configuration.rules[1] == ResponseRule(name: "regex", contains: [], pattern: #"4\.7\.[0-9]+ .*later"#, scope: .domain, action: .suspend(duration: 600_000)))
        #expect(configuration.rules[1].matches("421 4.7.0 Try LATER"))
        #expect(configuration.rules.count == ResponseRule.defaults.count + 2)
    }

    @Test("Bad shaping files are refused with the line and what is wrong", arguments: [
        ("[defaults]\nmax_connections = 0", 2, "expected a positive integer, not 0"),
        ("[defaults]\nmessage_rate = \"fast\"", 2, "expected a rate such as \"300/s\" or \"20000/h\", not \"fast\""),
        ("[defaults]\nwarp = 9", 2, "unknown limit warp"),
        ("[retry]\nmax_age = \"5 days\"", 2, "expected a duration such as \"250ms\", \"30s\", \"5m\", \"4h\" or \"5d\", not \"5 days\""),
        ("[nonsense]\nx = 1", 2, "unknown table [nonsense]"),
        ("[[rule]]\nname = \"r\"\ncontains = \"x\"\naction = \"explode\"", 2, "rule r: action is suspend, scale_rate or bounce"),
        ("[[rule]]\nname = \"r\"\ncontains = \"x\"\naction = \"scale_rate\"\nfactor = 2.0\nduration = \"1m\"", 2, "2.0 is out of range"),
        ("[[rule]]\nname = \"r\"\npattern = \"4\\\\.7(\"\naction = \"bounce\"", 3, "rule r: pattern is not a valid regular expression"),
        ("[[rule]]\nname = \"r\"\naction = \"bounce\"", 2, "rule r: needs contains or pattern"),
        ("[rule.foo]\nname = \"r\"", 2, "unknown table [rule.foo]"),
        ("[retry]\nmax_age = \"99999999999999999d\"", 2, "duration \"99999999999999999d\" is too long"),
        ("[campaign.\"c\"]\nweight = 0", 2, "expected a positive integer, not 0"),
        ("[campaign.\"c\"]\nweight = 1001", 2, "a campaign's weight must be from 1 to 1000, not 1001"),
        ("[campaign.\"c\"]\nshare = 2", 2, "unknown key share in [campaign.\"c\"]: a campaign takes weight"),
        ("[domain.\"a.test\"]\nmax_connections = 3", 2,
         "max_connections is a limit of the site the domain's MX hosts make: set it under [site.\"...\"] or [mx_suffix.\"...\"]; a domain takes message_rate, message_burst and max_recipients_per_transaction"),
    ])
    func refused(text: String, line: Int, message: String) {
        #expect(throws: ConfigurationError(file: "shaping.toml", line: line, message)) { _ = try ShapingFile.parse(text) }
    }
}
