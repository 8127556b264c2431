// Reply.swift - an SMTP reply: a three-digit code, an optional enhanced code, text lines

/// One complete SMTP reply, single- or multi-line (RFC 5321 §4.2).
///
/// A value; safe to send between threads. `text` is the first line's text as
/// the server sent it (after "250 " or "250-", enhanced code included);
/// `additionalLines` hold the rest of a multi-line reply (EHLO keywords).
/// A single-line reply with a short text allocates nothing.
public struct Reply: Hashable, Sendable, CustomStringConvertible {
    public let code: Int                    /* 200...599 */
    public let enhanced: EnhancedStatus?    /* RFC 3463 code from the first line, if it starts with one */
    public let text: String                 /* first line, after the code and separator */
    public let additionalLines: [String]    /* lines 2...n of a multi-line reply */

    public init(code: Int, enhanced: EnhancedStatus? = nil, text: String = "", additionalLines: [String] = []) {
        self.code = code
        self.enhanced = enhanced
        self.text = text
        self.additionalLines = additionalLines
    }

    /// Every line's text, first line first.
    public var lines: [String] { [text] + additionalLines }

    /// 2yz: the command succeeded.
    public var isPositiveCompletion: Bool { code / 100 == 2 }
    /// 3yz: go on (354 after DATA, 334 during AUTH).
    public var isPositiveIntermediate: Bool { code / 100 == 3 }
    /// 4yz: failed for now; the same command may succeed later.
    public var isTransientNegative: Bool { code / 100 == 4 }
    /// 5yz: failed; do not repeat the command as is.
    public var isPermanentNegative: Bool { code / 100 == 5 }

    /// The reply as one log line: "550 5.1.1 User unknown".
    public var description: String {
        additionalLines.isEmpty ? "\(code) \(text)" : "\(code) \(lines.joined(separator: " / "))"
    }
}
