// EnhancedStatus.swift - RFC 3463 enhanced mail system status codes ("5.1.1")

/// An enhanced status code: class.subject.detail, e.g. 5.1.1 "bad destination mailbox".
///
/// A value; safe to send between threads. The class is 2 (success), 4
/// (persistent transient failure) or 5 (permanent failure); subject and detail
/// are 0...999 as RFC 3463 allows.
public struct EnhancedStatus: Hashable, Sendable, CustomStringConvertible {
    public let statusClass: UInt8       /* 2, 4 or 5 */
    public let subject: UInt16          /* 0...999 */
    public let detail: UInt16           /* 0...999 */

    /// A code from its three parts; nil when one is out of range.
    public init?(_ statusClass: UInt8, _ subject: UInt16, _ detail: UInt16) {
        guard statusClass == 2 || statusClass == 4 || statusClass == 5, subject <= 999, detail <= 999 else {
            return nil
        }
        self.statusClass = statusClass
        self.subject = subject
        self.detail = detail
    }

    /// Parse "5.1.1" from text.
    public init?(_ text: String) {
        var text = text
        guard let (status, length) = text.withUTF8({ EnhancedStatus.parse(UnsafeRawBufferPointer($0)) }),
              length == text.utf8.count else { return nil }
        self = status
    }

    /// parse - an enhanced code at the start of `bytes`, and how many bytes it took.
    ///
    /// RFC 3463: class is one digit (2, 4, 5); subject and detail are one to
    /// three digits. A fourth digit, or a missing dot, means no code. Whether
    /// the code is followed by a space or the end is the caller's check.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> (EnhancedStatus, Int)? {
        var index = 0
        /// number - up to `maximum` digits at `index`; nil when none, or when more follow.
        func number(maximum: Int) -> Int? {
            let start = index
            var value = 0
            while index < bytes.count, bytes[index] &- 0x30 < 10 {
                guard index - start < maximum else { return nil }
                value = value * 10 + Int(bytes[index] &- 0x30)
                index += 1
            }
            return index > start ? value : nil
        }
        /// dot - consume one "."
        func dot() -> Bool {
            guard index < bytes.count, bytes[index] == UInt8(ascii: ".") else { return false }
            index += 1
            return true
        }
        guard let statusClass = number(maximum: 1), dot(),
              let subject = number(maximum: 3), dot(),
              let detail = number(maximum: 3),
              let status = EnhancedStatus(UInt8(statusClass), UInt16(subject), UInt16(detail))
        else { return nil }
        return (status, index)
    }

    public var description: String { "\(statusClass).\(subject).\(detail)" }

    /// True for 4.x.x: try again later.
    public var isTransient: Bool { statusClass == 4 }

    /// True for 5.x.x: do not try again.
    public var isPermanent: Bool { statusClass == 5 }
}
