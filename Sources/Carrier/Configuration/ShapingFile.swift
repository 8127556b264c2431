// ShapingFile.swift - the shaping file: per-destination limits, retry, health and
// response rules in TOML, read into the scheduler's configuration
//
// Carrier ships a default (`defaultShapingFile`, printed by `carrier shaping
// --print-defaults`); an operator's file is laid over it: each field it sets replaces the
// default's, its rules are tried before the shipped ones.

public import Scheduler

/// Reads shaping files.
public enum ShapingFile {
    /// parse - the scheduler configuration a shaping file describes, over `base` (the shipped
    /// defaults unless given).
    public static func parse(_ text: String, file: String = "shaping.toml",
                             over base: SchedulerConfiguration? = nil) throws(ConfigurationError) -> SchedulerConfiguration {
        var configuration: SchedulerConfiguration
        if let base { configuration = base } else { configuration = try defaults() }
        var shaping = configuration.shaping
        var retry = configuration.retry
        var health = configuration.health
        var rules: [Int: [String: (TOMLValue, Int)]] = [:]
        var domainBurst = configuration.domainBurst
        for entry in try parseTOML(text, file: file) {
            let error = { (message: String) in ConfigurationError(file: file, line: entry.line, message) }
            switch entry.table.first {
            case "defaults" where entry.table.count == 1:
                try set(&shaping.defaults, entry, error)
            case "mx_suffix" where entry.table.count == 2:
                try set(&shaping.mxSuffixes[entry.table[1].lowercased(), default: Limits()], entry, error)
            case "site" where entry.table.count == 2:
                try set(&shaping.sites[entry.table[1], default: Limits()], entry, error)
            case "domain" where entry.table.count == 2:
                /* A domain has its own rate and batch size; connections belong to its site (the
                   MX hosts it shares with other domains), so their limits are set there. */
                guard ["message_rate", "message_burst", "max_recipients_per_transaction"].contains(entry.key) else {
                    if ["max_connections", "initial_connections", "max_messages_per_connection", "connection_rate", "connection_burst"].contains(entry.key) {
                        throw error("\(entry.key) is a limit of the site the domain's MX hosts make: set it under [site.\"...\"] or [mx_suffix.\"...\"]; a domain takes message_rate, message_burst and max_recipients_per_transaction")
                    }
                    throw error("unknown limit \(entry.key)")
                }
                try set(&shaping.domains[entry.table[1].lowercased(), default: Limits()], entry, error)
            case "campaign" where entry.table.count == 2:
                guard entry.key == "weight" else { throw error("unknown key \(entry.key) in [campaign.\"\(entry.table[1])\"]: a campaign takes weight") }
                let weight = try positive(entry.value, error)
                guard weight <= 1_000 else { throw error("a campaign's weight must be from 1 to 1000, not \(weight)") }
                shaping.campaignWeights[entry.table[1]] = weight
            case "retry" where entry.table.count == 1:
                switch entry.key {
                case "retry_interval": retry.retryInterval = try duration(entry.value, error)
                case "max_retry_interval": retry.maxRetryInterval = try duration(entry.value, error)
                case "max_age": retry.maxAge = try duration(entry.value, error)
                case "jitter": retry.jitter = try fraction(entry.value, error, allowAboveOne: true)
                case "seed": retry.seed = UInt64(truncatingIfNeeded: try integer(entry.value, error))
                default: throw error("unknown key \(entry.key) in [retry]")
                }
            case "health" where entry.table.count == 1:
                switch entry.key {
                case "failures_before_pause": health.threshold = try positive(entry.value, error)
                case "cooldown": health.cooldown = try duration(entry.value, error)
                case "max_cooldown": health.maxCooldown = try duration(entry.value, error)
                default: throw error("unknown key \(entry.key) in [health]")
                }
            case "scheduler" where entry.table.count == 1:
                switch entry.key {
                case "domain_burst": domainBurst = try positive(entry.value, error)
                default: throw error("unknown key \(entry.key) in [scheduler]")
                }
            case "rule" where entry.table.count == 2 && Int(entry.table[1]) != nil:
                rules[Int(entry.table[1])!, default: [:]][entry.key] = (entry.value, entry.line)
            default:
                throw error("unknown table [\(entry.table.joined(separator: "."))]")
            }
        }
        var parsedRules: [ResponseRule] = []
        for index in rules.keys.sorted() { parsedRules.append(try rule(rules[index]!, file: file)) }
        configuration = SchedulerConfiguration(
            shaping: Shaping(defaults: shaping.defaults, mxSuffixes: shaping.mxSuffixes, sites: shaping.sites, domains: shaping.domains,
                             campaignWeights: shaping.campaignWeights),
            retry: RetryPolicy(retryInterval: retry.retryInterval, maxRetryInterval: max(retry.retryInterval, retry.maxRetryInterval),
                               maxAge: retry.maxAge, jitter: retry.jitter, seed: retry.seed),
            health: HealthPolicy(threshold: health.threshold, cooldown: health.cooldown, maxCooldown: max(health.cooldown, health.maxCooldown)),
            rules: parsedRules + configuration.rules,
            domainBurst: domainBurst)
        return configuration
    }

    /// defaults - the shipped shaping file, parsed over the built-in values.
    public static func defaults() throws(ConfigurationError) -> SchedulerConfiguration {
        try parse(defaultShapingFile, file: "(default shaping)", over: SchedulerConfiguration(rules: []))
    }

    private static func set(_ limits: inout Limits, _ entry: TOMLEntry, _ error: (String) -> ConfigurationError) throws(ConfigurationError) {
        switch entry.key {
        case "max_connections": limits.maxConnections = try positive(entry.value, error)
        case "initial_connections": limits.initialConnections = try positive(entry.value, error)
        case "max_messages_per_connection": limits.maxMessagesPerConnection = try positive(entry.value, error)
        case "max_recipients_per_transaction": limits.maxRecipientsPerTransaction = try positive(entry.value, error)
        case "message_rate": limits.messageRate = try rate(entry.value, error)
        case "message_burst": limits.messageBurst = try positive(entry.value, error)
        case "connection_rate": limits.connectionRate = try rate(entry.value, error)
        case "connection_burst": limits.connectionBurst = try positive(entry.value, error)
        default: throw error("unknown limit \(entry.key)")
        }
    }

    private static func rule(_ fields: [String: (TOMLValue, Int)], file: String) throws(ConfigurationError) -> ResponseRule {
        let line = fields.values.map(\.1).min() ?? 0
        let error = { (message: String) in ConfigurationError(file: file, line: line, message) }
        for key in fields.keys where !["name", "contains", "code_class", "pattern", "scope", "action", "duration", "factor"].contains(key) {
            throw error("unknown key \(key) in [[rule]]")
        }
        guard case .string(let name)? = fields["name"]?.0 else { throw error("a [[rule]] needs a name") }
        var fragments: [String] = []
        switch fields["contains"]?.0 {
        case .string(let text)?: fragments = [text]
        case .array(let items)?:
            for item in items {
                guard case .string(let text) = item else { throw error("rule \(name): contains takes strings") }
                fragments.append(text)
            }
        case nil: break
        default: throw error("rule \(name): contains is a string or an array of strings")
        }
        var pattern: String?
        if let value = fields["pattern"]?.0 {
            guard case .string(let text) = value else { throw error("rule \(name): pattern is a string (a regular expression)") }
            pattern = text
        }
        guard !fragments.isEmpty || pattern != nil else { throw error("rule \(name): needs contains or pattern") }
        var codeClass = "4"
        if let value = fields["code_class"]?.0 {
            guard case .string(let text) = value, ["", "4", "5"].contains(text) else { throw error("rule \(name): code_class is \"4\", \"5\" or \"\"") }
            codeClass = text
        }
        let scope: RuleScope
        switch fields["scope"]?.0 {
        case .string("domain")?: scope = .domain
        case .string("site")?, nil: scope = .site
        case .string("campaign")?: scope = .campaign
        default: throw error("rule \(name): scope is domain, site or campaign")
        }
        let action: RuleAction
        switch fields["action"]?.0 {
        case .string("suspend")?:
            guard let value = fields["duration"]?.0 else { throw error("rule \(name): suspend needs a duration") }
            action = .suspend(duration: try duration(value, error))
        case .string("scale_rate")?:
            guard let value = fields["duration"]?.0, let factor = fields["factor"]?.0 else { throw error("rule \(name): scale_rate needs a factor and a duration") }
            action = .scaleRate(factor: try fraction(factor, error, allowAboveOne: false), duration: try duration(value, error))
        case .string("bounce")?: action = .bounce
        default: throw error("rule \(name): action is suspend, scale_rate or bounce")
        }
        let rule = ResponseRule(name: name, contains: fragments, codeClass: codeClass, pattern: pattern, scope: scope, action: action)
        do {
            _ = try rule.compilePattern()
        } catch {
            throw ConfigurationError(file: file, line: fields["pattern"]?.1 ?? line, "rule \(name): pattern is not a valid regular expression")
        }
        return rule
    }

    private static func integer(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Int {
        guard case .integer(let number) = value else { throw error("expected an integer, not \(value)") }
        return number
    }

    private static func positive(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Int {
        let number = try integer(value, error)
        guard number > 0 else { throw error("expected a positive integer, not \(number)") }
        return number
    }

    private static func fraction(_ value: TOMLValue, _ error: (String) -> ConfigurationError, allowAboveOne: Bool) throws(ConfigurationError) -> Double {
        let number: Double
        switch value {
        case .float(let x): number = x
        case .integer(let n): number = Double(n)
        default: throw error("expected a number, not \(value)")
        }
        guard number >= 0, allowAboveOne || (number > 0 && number <= 1) else { throw error("\(number) is out of range") }
        return number
    }

    private static func rate(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Rate {
        guard case .string(let text) = value, let rate = Rate(text) else { throw error("expected a rate such as \"300/s\" or \"20000/h\", not \(value)") }
        return rate
    }

    /// duration - milliseconds from an integer (ms) or "250ms", "30s", "5m", "4h", "5d".
    static func duration(_ value: TOMLValue, _ error: (String) -> ConfigurationError) throws(ConfigurationError) -> Int64 {
        if case .integer(let ms) = value, ms > 0 { return Int64(ms) }
        guard case .string(let text) = value else { throw error("expected a duration such as \"5m\", not \(value)") }
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let number = Int64(text.dropLast(suffix.count)), number > 0 {
                let (milliseconds, overflow) = number.multipliedReportingOverflow(by: scale)
                guard !overflow else { throw error("duration \"\(text)\" is too long") }
                return milliseconds
            }
        }
        throw error("expected a duration such as \"250ms\", \"30s\", \"5m\", \"4h\" or \"5d\", not \"\(text)\"")
    }
}
