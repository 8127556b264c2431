// Shaping.swift - per-destination limits and where they come from
//
// Limits are looked up from the most specific setting to the least: the domain, then the
// site (the resolved MX host set or a configured route, named by the delivery layer), then
// the longest matching MX-name suffix, then the defaults. Each field is resolved on its
// own, so a domain entry that sets only a rate keeps the site's concurrency.

/// Limits for one destination; nil fields fall through to the next, less specific, entry.
public struct Limits: Sendable, Equatable {
    /// Most transactions in flight at once (the concurrency ceiling slow start grows to).
    public var maxConnections: Int?
    /// Concurrency a site starts at, and returns to after a pause.
    public var initialConnections: Int?
    /// Most messages the delivery layer sends over one connection.
    public var maxMessagesPerConnection: Int?
    /// Most recipients handed out in one transaction.
    public var maxRecipientsPerTransaction: Int?
    /// Messages (transactions) per unit of time, and how many may go back to back.
    public var messageRate: Rate?
    public var messageBurst: Int?
    /// New connections per unit of time, and burst.
    public var connectionRate: Rate?
    public var connectionBurst: Int?

    public init(maxConnections: Int? = nil, initialConnections: Int? = nil, maxMessagesPerConnection: Int? = nil,
                maxRecipientsPerTransaction: Int? = nil, messageRate: Rate? = nil, messageBurst: Int? = nil,
                connectionRate: Rate? = nil, connectionBurst: Int? = nil) {
        self.maxConnections = maxConnections
        self.initialConnections = initialConnections
        self.maxMessagesPerConnection = maxMessagesPerConnection
        self.maxRecipientsPerTransaction = maxRecipientsPerTransaction
        self.messageRate = messageRate
        self.messageBurst = messageBurst
        self.connectionRate = connectionRate
        self.connectionBurst = connectionBurst
    }

    /// over - these limits, with unset fields taken from `fallback`.
    public func over(_ fallback: Limits) -> Limits {
        Limits(maxConnections: maxConnections ?? fallback.maxConnections,
               initialConnections: initialConnections ?? fallback.initialConnections,
               maxMessagesPerConnection: maxMessagesPerConnection ?? fallback.maxMessagesPerConnection,
               maxRecipientsPerTransaction: maxRecipientsPerTransaction ?? fallback.maxRecipientsPerTransaction,
               messageRate: messageRate ?? fallback.messageRate,
               messageBurst: messageBurst ?? fallback.messageBurst,
               connectionRate: connectionRate ?? fallback.connectionRate,
               connectionBurst: connectionBurst ?? fallback.connectionBurst)
    }

    /// Carrier's defaults when nothing more specific is set: Postfix's destination
    /// concurrency (start at 5, at most 20), 100 messages per connection, 100 recipients
    /// per transaction (RFC 5321's minimum a server must accept), no rate limit.
    public static let defaults = Limits(maxConnections: 20, initialConnections: 5, maxMessagesPerConnection: 100,
                                        maxRecipientsPerTransaction: 100)
}

/// Where limits come from: defaults, MX-name suffixes, sites and domains.
public struct Shaping: Sendable, Equatable {
    public var defaults: Limits
    /// By MX host-name suffix, e.g. ".google.com" (lowercase; the longest match wins).
    public var mxSuffixes: [String: Limits]
    /// By site name, as the delivery layer names sites.
    public var sites: [String: Limits]
    /// By recipient domain (lowercase).
    public var domains: [String: Limits]
    /// Bulk campaigns' shares by campaign name: in a domain's round-robin among its bulk
    /// campaigns, one of weight 3 takes three transactions per turn where one of the
    /// default weight 1 takes one.
    public var campaignWeights: [String: Int]

    public init(defaults: Limits = .defaults, mxSuffixes: [String: Limits] = [:], sites: [String: Limits] = [:],
                domains: [String: Limits] = [:], campaignWeights: [String: Int] = [:]) {
        self.defaults = defaults.over(.defaults)
        self.mxSuffixes = mxSuffixes
        self.sites = sites
        self.domains = domains
        self.campaignWeights = campaignWeights
    }

    /// suffixMatch - the longest configured suffix that one of `mxHosts` ends with.
    public func suffixMatch(_ mxHosts: [String]) -> String? {
        var best: String?
        for host in mxHosts.map({ $0.lowercased() }) {
            for suffix in mxSuffixes.keys where host.hasSuffix(suffix) || host == suffix.drop(while: { $0 == "." }) {
                if best.map({ suffix.count > $0.count }) ?? true { best = suffix }
            }
        }
        return best
    }

    /// siteLimits - limits of a site whose MX hosts are `mxHosts`.
    public func siteLimits(site: String, mxHosts: [String]) -> Limits {
        var limits = sites[site] ?? Limits()
        if let suffix = suffixMatch(mxHosts) { limits = limits.over(mxSuffixes[suffix]!) }
        return limits.over(defaults)
    }

    /// domainLimits - limits of `domain` at a site with `siteLimits`.
    public func domainLimits(domain: String, siteLimits: Limits) -> Limits {
        (domains[domain.lowercased()] ?? Limits()).over(siteLimits)
    }
}
