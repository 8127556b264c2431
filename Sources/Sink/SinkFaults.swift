// SinkFaults.swift - fault injection decisions that do not depend on thread scheduling
//
// A test that sends a thousand recipients to a sink with a 10% tempfail rate
// wants to know beforehand exactly which of them get 451, so that the counts
// at both ends can be compared exactly. The sink therefore never draws from a
// random generator: every decision is a pure function of the seed, of what is
// being decided, and of a key the client controls (the recipient address, the
// message's X-Carrier-Id) or the sink numbers in order (connections, data
// phases). A test computes the same function to predict the outcome.
//
// The function, precisely (`SinkFaults.fraction`):
//
//     bytes = seed as 8 bytes little-endian
//           + the decision's name in UTF-8 ("rcpt", "data", "greeting", "disconnect", "domain")
//           + one 0x00 byte
//           + the key in UTF-8
//     h     = 64-bit FNV-1a of bytes (offset basis 0xcbf29ce484222325, prime 0x100000001b3)
//     h     = SplitMix64 finaliser of h:
//               h ^= h >> 30; h &*= 0xbf58476d1ce4e5b9
//               h ^= h >> 27; h &*= 0x94d049bb133111eb
//               h ^= h >> 31
//     fraction = Double(h >> 11) / 2^53, in [0, 1)
//
// A decision with rate r fires when fraction < r. Two rates drawn for the
// same decision (tempfail and permfail) share one fraction and are stacked:
// tempfail when fraction < t, permfail when t <= fraction < t + p. So the two
// outcomes never overlap and their rates add up.
//
// `--tempfail-rate` and `--permfail-rate` act at two points, RCPT and end of
// data, and each point refuses with half the rate. A message to one recipient
// is then refused with probability 1 - (1 - r/2)^2, just under r (9.75% for
// r = 0.1): the rate reads as "this share of messages fails", as a tester
// expects, while both refusal points are exercised.

/// What a fault decision is about; its raw value is hashed into the decision.
public enum SinkFaultDecision: String, Sendable, CaseIterable {
    /// A recipient (RCPT TO), keyed by the address text; tempfail and permfail rates.
    case recipient = "rcpt"
    /// An end of data (DATA's final dot or BDAT LAST), keyed by `SinkFaults.messageKey`.
    case message = "data"
    /// A connection's greeting, keyed by the connection number in decimal ("1", "2", ...).
    case greeting
    /// A data phase (mid-DATA disconnect), keyed by the data phase number in decimal.
    case disconnect
    /// A recipient at a domain with `--domain-rule DOMAIN=CODE:RATE` rules, keyed by the address text.
    case domain
}

/// What a fault decision says about a recipient or a message.
public enum SinkFaultOutcome: Hashable, Sendable {
    /// No fault: the normal 250.
    case accept
    /// A transient refusal (451 4.3.0).
    case tempfail
    /// A permanent refusal (550 5.1.1 for a recipient, 554 5.6.0 for a message).
    case permfail
}

/// The sink's fault rates and the deterministic function behind each decision.
///
/// A value; safe to send between threads. Rates are fractions in [0, 1];
/// `tempfailRate + permfailRate` must not exceed 1.
public struct SinkFaults: Hashable, Sendable {
    /// Mixed into every decision; the same seed gives the same decisions (`--seed`, default 1).
    public var seed: UInt64 = 1
    /// Share of messages refused with 451 4.3.0: half of it at RCPT, half at end of data.
    public var tempfailRate = 0.0
    /// Share of messages refused permanently: half at RCPT (550 5.1.1), half at end of data (554 5.6.0).
    public var permfailRate = 0.0
    /// Share of connections greeted with 421 4.3.2 and closed.
    public var greeting421Rate = 0.0
    /// Share of data phases cut off by closing the connection before the final reply.
    public var disconnectRate = 0.0

    public init(seed: UInt64 = 1) {
        self.seed = seed
    }

    /// True when recipients or messages can be refused (the per-RCPT and per-message work is needed).
    public var refusesSome: Bool { tempfailRate > 0 || permfailRate > 0 }

    // MARK: The decision function

    /// fraction - the decision's position in [0, 1), from the seed, the decision and the key (see the file header).
    public static func fraction(seed: UInt64, decision: SinkFaultDecision, key: String) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        /// mix - one byte into the FNV-1a state.
        @inline(__always) func mix(_ byte: UInt8) {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        for shift in stride(from: 0, to: 64, by: 8) { mix(UInt8(truncatingIfNeeded: seed >> UInt64(shift))) }
        for byte in decision.rawValue.utf8 { mix(byte) }
        mix(0)
        for byte in key.utf8 { mix(byte) }
        /* FNV-1a's last bytes barely reach the high bits; SplitMix64's finaliser spreads them. */
        hash ^= hash >> 30
        hash &*= 0xbf58_476d_1ce4_e5b9
        hash ^= hash >> 27
        hash &*= 0x94d0_49bb_1331_11eb
        hash ^= hash >> 31
        return Double(hash >> 11) / 9_007_199_254_740_992.0
    }

    /// decides - true when the decision for `key` fires at `rate`.
    public static func decides(seed: UInt64, decision: SinkFaultDecision, key: String, rate: Double) -> Bool {
        rate > 0 && fraction(seed: seed, decision: decision, key: key) < rate
    }

    /// outcome - tempfail, permfail or accept for one fraction, with the two rates stacked.
    static func outcome(_ fraction: Double, tempfail: Double, permfail: Double) -> SinkFaultOutcome {
        if fraction < tempfail { return .tempfail }
        if fraction < tempfail + permfail { return .permfail }
        return .accept
    }

    // MARK: The sink's decisions

    /// recipientOutcome - what `--tempfail-rate`/`--permfail-rate` do to the recipient `address` (its text as in RCPT TO, without brackets).
    public func recipientOutcome(_ address: String) -> SinkFaultOutcome {
        guard refusesSome else { return .accept }
        return SinkFaults.outcome(SinkFaults.fraction(seed: seed, decision: .recipient, key: address),
                                  tempfail: tempfailRate / 2, permfail: permfailRate / 2)
    }

    /// messageOutcome - what the rates do to a message's end of data; `key` from `messageKey`.
    public func messageOutcome(key: String) -> SinkFaultOutcome {
        guard refusesSome else { return .accept }
        return SinkFaults.outcome(SinkFaults.fraction(seed: seed, decision: .message, key: key),
                                  tempfail: tempfailRate / 2, permfail: permfailRate / 2)
    }

    /// refusesGreeting - true when connection number `connection` (1-based) is greeted with 421.
    public func refusesGreeting(connection: UInt64) -> Bool {
        greeting421Rate > 0 && SinkFaults.decides(seed: seed, decision: .greeting, key: String(connection), rate: greeting421Rate)
    }

    /// disconnects - true when data phase number `dataPhase` (1-based, across the sink) is cut off.
    public func disconnects(dataPhase: UInt64) -> Bool {
        disconnectRate > 0 && SinkFaults.decides(seed: seed, decision: .disconnect, key: String(dataPhase), rate: disconnectRate)
    }

    /// messageKey - the key of a message's end-of-data decision.
    ///
    /// The X-Carrier-Id header's value when there is one, else the
    /// Message-ID header's value (angle brackets included), each unfolded and
    /// trimmed; without either, the envelope: the reverse path with its
    /// brackets ("<a@b.test>" or "<>") followed by " " and the address of each
    /// recipient in order. A client that wants a rate to apply per message
    /// gives each message its own X-Carrier-Id or Message-ID.
    public static func messageKey(carrierID: String?, messageID: String?, sender: String, recipients: [String]) -> String {
        if let carrierID { return carrierID }
        if let messageID { return messageID }
        var key = sender
        for recipient in recipients {
            key += " "
            key += recipient
        }
        return key
    }
}
