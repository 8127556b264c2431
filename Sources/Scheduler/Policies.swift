// Policies.swift - retry timing, destination health and response rules
//
// Everything here is a pure function of its inputs and the injected time, so tests can
// state exact retry times for a seed.

/// When temporary failures are retried, and when a recipient gives up.
public struct RetryPolicy: Sendable, Equatable {
    /// First retry after this long (ms). Default 5 minutes.
    public var retryInterval: Int64
    /// Retries back off by doubling up to this (ms). Default 4 hours.
    public var maxRetryInterval: Int64
    /// A recipient still pending this long after it was queued expires (ms). Default 5 days.
    public var maxAge: Int64
    /// Each delay is stretched by a random factor in [1, 1 + jitter) so retries of a burst
    /// spread out. Default 0.2.
    public var jitter: Double
    /// Seed of the jitter: the same seed, recipient and attempt give the same delay.
    public var seed: UInt64

    public init(retryInterval: Int64 = 5 * 60_000, maxRetryInterval: Int64 = 4 * 3_600_000,
                maxAge: Int64 = 5 * 86_400_000, jitter: Double = 0.2, seed: UInt64 = 0) {
        self.retryInterval = max(1, retryInterval)
        self.maxRetryInterval = max(self.retryInterval, maxRetryInterval)
        self.maxAge = max(1, maxAge)
        self.jitter = max(0, jitter)
        self.seed = seed
    }

    /// delay - the wait before attempt `attempts + 1`, after `attempts` failed ones (≥ 1),
    /// for the recipient whose stable key is `key`.
    public func delay(afterAttempts attempts: Int, key: UInt64) -> Int64 {
        let doublings = min(max(0, attempts - 1), 40)
        var base = retryInterval
        for _ in 0..<doublings where base < maxRetryInterval { base = min(maxRetryInterval, base * 2) }
        let unit = Double(splitMix(seed ^ key &+ UInt64(attempts) &* 0x9E37_79B9_7F4A_7C15) >> 11) / Double(1 << 53)
        return base + Int64(Double(base) * jitter * unit)
    }
}

@inline(__always) func lowerASCII(_ byte: UInt8) -> UInt8 { byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte }

/// splitMix - a 64-bit mixing function (SplitMix64's finaliser).
func splitMix(_ value: UInt64) -> UInt64 {
    var z = value &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// Dead-destination handling (Postfix's destination feedback): after `threshold`
/// consecutive connection failures or 421 replies a site pauses, for `cooldown` doubling
/// up to `maxCooldown`; then one probe connection decides whether it recovers.
public struct HealthPolicy: Sendable, Equatable {
    public var threshold: Int
    public var cooldown: Int64
    public var maxCooldown: Int64

    public init(threshold: Int = 5, cooldown: Int64 = 60_000, maxCooldown: Int64 = 3_600_000) {
        self.threshold = max(1, threshold)
        self.cooldown = max(1, cooldown)
        self.maxCooldown = max(self.cooldown, maxCooldown)
    }
}

/// What a response rule applies to.
public enum RuleScope: Sendable, Equatable {
    case domain
    case site
    case campaign
}

/// What a matching response rule does.
public enum RuleAction: Sendable, Equatable {
    /// Deliver nothing more in the scope for `duration` ms (the recipient is deferred).
    case suspend(duration: Int64)
    /// Multiply the scope's message rate by `factor` (0 < factor ≤ 1) for `duration` ms.
    /// Only the site and domain scopes have a rate; for a campaign it acts on the site.
    case scaleRate(factor: Double, duration: Int64)
    /// Treat the temporary failure as permanent: bounce the recipient.
    case bounce
}

/// A response rule (PowerMTA's backoff mode, KumoMTA's traffic shaping automation): when a
/// reply matches, `action` applies to `scope`. Rules are tried in order; the first match wins.
public struct ResponseRule: Sendable, Equatable {
    public var name: String
    /// Matched against the reply: its code, enhanced code and text as one line, e.g.
    /// "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred". Case-insensitive.
    public var contains: [String]
    /// Only replies whose basic code starts with this digit ("4" or "5"; "" for any).
    public var codeClass: String
    /// A regular expression the reply must also match somewhere, case-insensitively (nil:
    /// fragments only). Fragments are checked first, so a cheap fragment keeps the regex
    /// off most replies.
    public var pattern: String?
    public var scope: RuleScope
    public var action: RuleAction

    public init(name: String, contains: [String], codeClass: String = "4", pattern: String? = nil,
                scope: RuleScope, action: RuleAction) {
        self.name = name
        self.contains = contains.map { $0.lowercased() }
        self.codeClass = codeClass
        self.pattern = pattern
        self.scope = scope
        self.action = action
    }

    /// compilePattern - the rule's regular expression, case-insensitive; nil without one.
    /// Throws for a pattern that is not a valid regular expression.
    public func compilePattern() throws -> Regex<AnyRegexOutput>? {
        guard let pattern else { return nil }
        return try Regex(pattern).ignoresCase()
    }

    /// matches - whether `reply` (code, enhanced code, text) triggers this rule: it is in
    /// the code class and contains every one of the `contains` fragments (ASCII letters
    /// compared without case; a plain octet search, since this runs for every 4xx).
    public func matches(_ reply: String) -> Bool {
        var text = reply
        guard text.withUTF8({ matches(utf8: $0) }) else { return false }
        guard let regex = try? compilePattern() else { return pattern == nil }
        return reply.contains(regex)
    }

    func matches(utf8 reply: UnsafeBufferPointer<UInt8>) -> Bool {
        if let digit = codeClass.utf8.first, reply.first != digit { return false }
        for fragment in contains {
            var fragment = fragment
            let found = fragment.withUTF8 { needle -> Bool in
                guard !needle.isEmpty else { return true }
                guard needle.count <= reply.count else { return false }
                let first = needle[0]
                var start = 0
                while start + needle.count <= reply.count {
                    if lowerASCII(reply[start]) == first {
                        var offset = 1
                        while offset < needle.count && lowerASCII(reply[start + offset]) == needle[offset] { offset += 1 }
                        if offset == needle.count { return true }
                    }
                    start += 1
                }
                return false
            }
            if !found { return false }
        }
        return true
    }

    /// Shipped defaults for well-known throttle replies; each is documented in the README.
    public static let defaults: [ResponseRule] = [
        /* Yahoo/AOL: "421 4.7.0 [TSS04] Messages from x.x.x.x temporarily deferred due to
           unexpected volume or user complaints". Their postmaster pages ask senders to
           slow down; pause the site for 30 minutes. */
        ResponseRule(name: "yahoo-tss04", contains: ["[tss04]"], scope: .site, action: .suspend(duration: 30 * 60_000)),
        /* Microsoft: "451 4.7.650 The mail server [x.x.x.x] has been temporarily rate limited
           due to IP reputation". Halve the rate for an hour. */
        ResponseRule(name: "microsoft-4.7.650", contains: ["4.7.650"], scope: .site, action: .scaleRate(factor: 0.5, duration: 3_600_000)),
        /* Gmail: "421 4.7.28 ... unusual rate of unsolicited mail" and "450 4.2.1 ... receiving
           mail at a rate that prevents additional messages" (per recipient). */
        ResponseRule(name: "gmail-4.7.28", contains: ["4.7.28"], scope: .site, action: .scaleRate(factor: 0.5, duration: 3_600_000)),
        ResponseRule(name: "gmail-4.2.1-rate", contains: ["4.2.1", "rate"], scope: .domain, action: .suspend(duration: 15 * 60_000)),
        /* Generic "too many connections / try again later" throttles (4.7.0 with rate words). */
        ResponseRule(name: "generic-rate-4.7.0", contains: ["4.7.0", "rate"], scope: .site, action: .scaleRate(factor: 0.5, duration: 30 * 60_000)),
    ]
}
