// SinkDomainRule.swift - per-domain behaviour: refuse a share of recipients, or cap their rate
//
// `--domain-rule 'slow.test=451:0.3'` refuses 30% of the recipients at
// slow.test with 451 4.3.0; `--domain-rule 'ratelimited.test=rate:200/s'`
// accepts at most 200 recipients a second there and answers the rest with
// 421 4.7.0 before closing the connection, as a provider's rate limit does.
// Domains match without regard to ASCII case and exactly (no subdomains).

public import SMTP

/// One `--domain-rule`: what the sink does to recipients at one domain.
///
/// A value; safe to send between threads.
public struct SinkDomainRule: Hashable, Sendable, CustomStringConvertible {
    /// What the rule does.
    public enum Action: Hashable, Sendable {
        /// Refuse this share of the domain's recipients with this reply code.
        case refuse(code: Int, rate: Double)
        /// Accept at most `count` recipients per `seconds`; above it answer 421 4.7.0 and close.
        case rateLimit(count: Int, seconds: Int)
    }

    /// The domain, lowercased.
    public let domain: String
    public let action: Action

    public init(domain: String, action: Action) {
        self.domain = domain.lowercased()
        self.action = action
    }

    /// Parse `DOMAIN=CODE:RATE` (`slow.test=451:0.3`) or `DOMAIN=rate:N/s` (also `/m`, `/h`).
    public init(parsing text: String) throws(SinkConfigurationError) {
        /// bad - the error for this rule, saying what was expected.
        func bad(_ why: String) -> SinkConfigurationError {
            .invalidOption("--domain-rule", text, "\(why); expected DOMAIN=CODE:RATE (slow.test=451:0.3) or DOMAIN=rate:N/s (ratelimited.test=rate:200/s)")
        }
        guard let equals = text.firstIndex(of: "=") else { throw bad("no '='") }
        let domain = String(text[..<equals])
        let spec = text[text.index(after: equals)...]
        guard !domain.isEmpty, !domain.contains(where: { $0 == " " || $0 == "@" || $0 == ":" }) else {
            throw bad("'\(domain)' is not a domain")
        }
        guard let colon = spec.firstIndex(of: ":") else { throw bad("no ':' between the code (or 'rate') and its value") }
        let head = spec[..<colon]
        let tail = spec[spec.index(after: colon)...]
        if head.lowercased() == "rate" {
            let parts = tail.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let count = Int(parts[0]), count > 0 else {
                throw bad("'\(tail)' is not a positive count per unit")
            }
            let seconds: Int
            switch parts[1].lowercased() {
            case "s", "sec", "second": seconds = 1
            case "m", "min", "minute": seconds = 60
            case "h", "hour": seconds = 3600
            default: throw bad("unit '\(parts[1])' is not s, m or h")
            }
            self.init(domain: domain, action: .rateLimit(count: count, seconds: seconds))
            return
        }
        guard let code = Int(head), (400...599).contains(code) else { throw bad("'\(head)' is not a 4xx or 5xx reply code") }
        guard let rate = Double(tail), rate >= 0, rate <= 1 else { throw bad("rate '\(tail)' is not between 0 and 1") }
        self.init(domain: domain, action: .refuse(code: code, rate: rate))
    }

    public var description: String {
        switch action {
        case .refuse(let code, let rate): return "\(domain)=\(code):\(rate)"
        case .rateLimit(let count, let seconds): return "\(domain)=rate:\(count)/\(seconds == 1 ? "s" : seconds == 60 ? "m" : "h")"
        }
    }

    /// matches - true when `domain` (as a recipient wrote it) is this rule's, ignoring ASCII case.
    func matches(_ other: String) -> Bool {
        var left = domain.utf8.makeIterator()
        var right = other.utf8.makeIterator()
        while true {
            switch (left.next(), right.next()) {
            case (nil, nil): return true
            case (let a?, let b?) where a == asciiLowercase(b): continue
            default: return false
            }
        }
    }

    /// enhancedStatus - the RFC 3463 code that goes with a reply code the rule gives.
    ///
    /// 421 → 4.3.2, 450 → 4.2.0, 451 → 4.3.0, 452 → 4.5.3, 550 → 5.1.1,
    /// 551 → 5.1.6, 552 → 5.2.2, 553 → 5.1.3, 554 → 5.7.1; any other 4xx is
    /// 4.0.0 and any other 5xx 5.0.0.
    public static func enhancedStatus(for code: Int) -> EnhancedStatus {
        switch code {
        case 421: return EnhancedStatus(4, 3, 2)!
        case 450: return EnhancedStatus(4, 2, 0)!
        case 451: return EnhancedStatus(4, 3, 0)!
        case 452: return EnhancedStatus(4, 5, 3)!
        case 550: return EnhancedStatus(5, 1, 1)!
        case 551: return EnhancedStatus(5, 1, 6)!
        case 552: return EnhancedStatus(5, 2, 2)!
        case 553: return EnhancedStatus(5, 1, 3)!
        case 554: return EnhancedStatus(5, 7, 1)!
        default: return EnhancedStatus(code < 500 ? 4 : 5, 0, 0)!
        }
    }
}

/// asciiLowercase - `byte` with A-Z folded to a-z.
@inline(__always)
func asciiLowercase(_ byte: UInt8) -> UInt8 {
    byte &- 0x41 < 26 ? byte | 0x20 : byte
}
