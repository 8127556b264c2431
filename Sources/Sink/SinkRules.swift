// SinkRules.swift - what the sink answers to each recipient and each message
//
// The order for a recipient: the domain's rate limits (421 4.7.0 and close
// when over), then the domain's refusal rules (one fraction, rules stacked in
// command-line order, as `SinkFaults` describes), then the global tempfail
// and permfail rates. For a message at end of data: the global rates, keyed
// by `SinkFaults.messageKey`. Every reply is made once, at start, so a
// refusal costs a hash and no allocation.

public import SMTP

/// The sink's recipient and message decisions, with their replies.
///
/// A value built once from a configuration; safe to send between threads.
/// `recipientReply` and `messageReply` are what a test calls to predict the
/// sink exactly (rate limits aside: they depend on time).
public struct SinkRules: Sendable {
    /// The refusal rules and rate limits of one domain.
    struct DomainEntry: Sendable {
        let rule: SinkDomainRule                        /* for matching the domain */
        var refusals: [(rate: Double, reply: Reply)] = [] /* stacked in order */
        var limits: [Int] = []                          /* indexes into the rate limiter */
        let rateLimitReply: Reply
    }

    public let faults: SinkFaults
    let domains: [DomainEntry]
    let limits: [(count: Int, seconds: Int)]            /* every rate limit, in order */
    let recipientTempfail = Reply(code: 451, enhanced: EnhancedStatus(4, 3, 0),
                                  text: "4.3.0 Temporary failure, try again later (carrier sink fault injection)")
    let recipientPermfail = Reply(code: 550, enhanced: EnhancedStatus(5, 1, 1),
                                  text: "5.1.1 Recipient address rejected (carrier sink fault injection)")
    let messageTempfail = Reply(code: 451, enhanced: EnhancedStatus(4, 3, 0),
                                text: "4.3.0 Temporary failure, try again later (carrier sink fault injection)")
    let messagePermfail = Reply(code: 554, enhanced: EnhancedStatus(5, 6, 0),
                                text: "5.6.0 Message content rejected (carrier sink fault injection)")

    /// The rules of `faults` and `domainRules`.
    public init(faults: SinkFaults, domainRules: [SinkDomainRule]) {
        self.faults = faults
        var domains: [DomainEntry] = []
        var limits: [(count: Int, seconds: Int)] = []
        for rule in domainRules {
            let index = domains.firstIndex { $0.rule.domain == rule.domain } ?? {
                domains.append(DomainEntry(rule: rule, rateLimitReply: Reply(
                    code: 421, enhanced: EnhancedStatus(4, 7, 0),
                    text: "4.7.0 \(rule.domain) rate limit exceeded, closing connection")))
                return domains.count - 1
            }()
            switch rule.action {
            case .refuse(let code, let rate):
                let status = SinkDomainRule.enhancedStatus(for: code)
                domains[index].refusals.append((rate, Reply(
                    code: code, enhanced: status, text: "\(status) Refused for \(rule.domain) (carrier sink domain rule)")))
            case .rateLimit(let count, let seconds):
                domains[index].limits.append(limits.count)
                limits.append((count, seconds))
            }
        }
        self.domains = domains
        self.limits = limits
    }

    /// True when no recipient can be refused (the RCPT hook just counts).
    var acceptsEveryRecipient: Bool { domains.isEmpty && !faults.refusesSome }

    /// recipientReply - the refusal for `address` from the domain refusal rules and the rates; nil to accept.
    ///
    /// Rate limits are not applied here (see `recipientReply(_:limiter:)`).
    public func recipientReply(_ address: MailAddress) -> Reply? {
        recipientReply(address, limiter: nil)
    }

    /// recipientReply - the full decision: rate limits first when `limiter` is given, then the rest.
    func recipientReply(_ address: MailAddress, limiter: SinkRateLimiter?) -> Reply? {
        guard !acceptsEveryRecipient else { return nil }
        var text: String?                       /* the key, made once and only when needed */
        if let entry = domains.first(where: { $0.rule.matches(address.domain) }) {
            if let limiter {
                for index in entry.limits where !limiter.take(index) { return entry.rateLimitReply }
            }
            if !entry.refusals.isEmpty {
                let key = address.description
                text = key
                let fraction = SinkFaults.fraction(seed: faults.seed, decision: .domain, key: key)
                var bound = 0.0
                for (rate, reply) in entry.refusals {
                    bound += rate
                    if fraction < bound { return reply }
                }
            }
        }
        guard faults.refusesSome else { return nil }
        switch faults.recipientOutcome(text ?? address.description) {
        case .accept: return nil
        case .tempfail: return recipientTempfail
        case .permfail: return recipientPermfail
        }
    }

    /// messageReply - the refusal at end of data for the message with `key` (`SinkFaults.messageKey`); nil to accept.
    public func messageReply(key: String) -> Reply? {
        switch faults.messageOutcome(key: key) {
        case .accept: return nil
        case .tempfail: return messageTempfail
        case .permfail: return messagePermfail
        }
    }
}
