// SMTPError.swift - what goes wrong in an SMTP conversation, as types

/// A violation of the SMTP protocol by the peer.
///
/// A session that meets one is not reusable: the two sides no longer agree on
/// where they are in the conversation.
public enum SMTPProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A reply line that does not start with three digits and a space, hyphen or line end.
    case malformedReply(String)
    /// One reply line longer than the parser tolerates.
    case replyLineTooLong(Int)
    /// One multi-line reply longer in total than the parser tolerates.
    case replyTooLong(Int)
    /// The lines of one multi-line reply carry different codes.
    case mismatchedReplyCodes(Int, Int)
    /// A reply arrived that no command was waiting for, or with a code the command cannot get.
    case unexpectedReply(Reply)
    /// The server asked for something this client never agreed to (e.g. a SASL security layer).
    case unsupported(String)

    public var description: String {
        switch self {
        case .malformedReply(let line): return "malformed reply line: \(line)"
        case .replyLineTooLong(let length): return "reply line of \(length) octets is too long"
        case .replyTooLong(let length): return "reply of \(length) octets is too long"
        case .mismatchedReplyCodes(let first, let other): return "multi-line reply mixes codes \(first) and \(other)"
        case .unexpectedReply(let reply): return "unexpected reply: \(reply)"
        case .unsupported(let what): return "unsupported: \(what)"
        }
    }
}
