// MessageTemplate.swift - a campaign message with merge fields, parsed once, rendered per recipient
//
// A newsletter is one body and a million recipients, each with a few merge
// variables ({{first_name}}, {{unsubscribe_url}}). Parsing the message for
// every recipient would cost more than sending it, so the template is cut
// once into literal runs and field references, each reference carrying how
// its value must be escaped where it stands; rendering is then a loop over
// those segments appending bytes.
//
// Where a field stands decides its escaping:
//   - header fields (top level and MIME part headers): CR and LF in a value
//     become a space, so a value cannot start a header line of its own;
//   - the body of a text/html part: `& < > " '` become entities;
//   - any other body (text/plain, message/*, unknown types): the value as is.
// Bodies with Content-Transfer-Encoding base64 or quoted-printable are left
// as they are, unsubstituted: a field there is encoded text, and a value
// written into it would need encoding of its own (and, for base64, the
// reference is not even visible). Their `{{names}}` are not in `fields`.
// Preambles and epilogues of multiparts are not substituted either.
//
// MIME structure comes from the Content-Type boundary parameter, nested
// multiparts included (to a depth of 32). Line endings are kept as written
// (LF or CRLF); the two headers the renderer adds use the message's own
// convention, and the SMTP encoder normalises everything on the way out.
// Values go in as UTF-8, unencoded (no RFC 2047 in headers), and the merged
// lines are not refolded: the encoder's long-line policy applies to them.

#if canImport(Glibc)
import Glibc
#endif

/// A raw RFC 5322 message with `{{field}}` merge references, precomputed for fast rendering.
///
/// A value; safe to send between threads and to render from several at once.
/// Invariant: `segments` reproduce the message (minus any X-Carrier-Id field)
/// when every field is replaced by its value, and every reference's escaping
/// is fixed by where it stands.
public struct MessageTemplate: Sendable {
    /// How a value is written where its reference stands.
    enum Escaping: Sendable {
        case header                         /* CR and LF become a space */
        case text                           /* as is */
        case html                           /* & < > " ' as entities */
    }

    /// One piece of the rendered message.
    enum Segment: Sendable {
        case literal(Range<Int>)            /* bytes of `literals` */
        case field(Int, Escaping)           /* index into `names` */
        case queueID                        /* the render's queue id, header-escaped */
        case messageIDDomain                /* the render's Message-ID domain, header-escaped */
    }

    /// The merge field names the template substitutes.
    public let fields: Set<String>
    private let names: [String]             /* field index -> name */
    private let indexOfName: [String: Int]  /* name -> field index */
    private let literals: [UInt8]           /* every literal run, concatenated */
    private let segments: [Segment]         /* the message in order */

    /// True when at least one merge field is substituted: each recipient gets its own copy.
    public var isPersonalised: Bool { !fields.isEmpty }

    /// init - cut a raw message (headers, blank line, body; LF or CRLF) into segments.
    ///
    /// With `mergeFields` false the message is literal: no `{{field}}` is
    /// substituted (mail submitted over SMTP); only the added headers are.
    public init(_ message: [UInt8], mergeFields: Bool = true) {
        var builder = TemplateBuilder()
        builder.mergeFields = mergeFields
        message.withUnsafeBufferPointer { builder.build($0) }
        names = builder.names
        indexOfName = builder.indexOfName
        fields = Set(builder.names)
        literals = builder.literals
        segments = builder.segments
    }

    /// render - append the message for one recipient to `out`.
    ///
    /// `variables` are (name, value) pairs; names match field names exactly
    /// (case-sensitive) and the first pair of a name wins. A field with no
    /// variable renders empty. `queueID` goes into `X-Carrier-Id` and, when
    /// the template has no Message-ID, into `<queueID@messageIDDomain>`.
    public func render(_ variables: [(String, String)], queueID: String, messageIDDomain: String, into out: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: max(names.count, 1)) { slots in
            /* Which variable each field takes, once per render rather than once per reference. */
            slots.initialize(repeating: -1)
            if !names.isEmpty {
                for index in variables.indices {
                    if let field = indexOfName[variables[index].0], slots[field] < 0 { slots[field] = index }
                }
            }

            out.reserveCapacity(out.count + literals.count + 256)
            literals.withUnsafeBufferPointer { literals in
                for segment in segments {
                    switch segment {
                    case .literal(let range):
                        out.append(contentsOf: UnsafeBufferPointer(rebasing: literals[range]))
                    case .field(let field, let escaping):
                        let variable = slots[field]
                        if variable >= 0 { MessageTemplate.append(variables[variable].1, escaping, to: &out) }
                    case .queueID:
                        MessageTemplate.append(queueID, .header, to: &out)
                    case .messageIDDomain:
                        MessageTemplate.append(messageIDDomain, .header, to: &out)
                    }
                }
            }
            slots.deinitialize()
        }
    }

    /// render - the message for one recipient as a new array.
    public func render(_ variables: [(String, String)], queueID: String, messageIDDomain: String) -> [UInt8] {
        var out: [UInt8] = []
        render(variables, queueID: queueID, messageIDDomain: messageIDDomain, into: &out)
        return out
    }

    /// append - one value, escaped for where it stands.
    private static func append(_ value: String, _ escaping: Escaping, to out: inout [UInt8]) {
        switch escaping {
        case .text:
            out.append(contentsOf: value.utf8)
        case .header:
            for byte in value.utf8 { out.append(byte == 0x0D || byte == 0x0A ? 0x20 : byte) }
        case .html:
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "&"): out.append(contentsOf: "&amp;".utf8)
                case UInt8(ascii: "<"): out.append(contentsOf: "&lt;".utf8)
                case UInt8(ascii: ">"): out.append(contentsOf: "&gt;".utf8)
                case UInt8(ascii: "\""): out.append(contentsOf: "&quot;".utf8)
                case UInt8(ascii: "'"): out.append(contentsOf: "&#39;".utf8)
                default: out.append(byte)
                }
            }
        }
    }
}

/// Cuts a message into a template's segments; used once, by `MessageTemplate.init`.
private struct TemplateBuilder {
    var names: [String] = []                        /* field index -> name */
    var indexOfName: [String: Int] = [:]            /* name -> field index */
    var literals: [UInt8] = []                      /* literal runs, concatenated */
    var segments: [MessageTemplate.Segment] = []    /* the message in order */
    var mergeFields = true                          /* false: every run is literal */

    /// Deepest multipart nesting followed; anything deeper is kept literal.
    static let maximumDepth = 32

    /// build - the whole message: added headers, the header block, the body by MIME structure.
    mutating func build(_ message: UnsafeBufferPointer<UInt8>) {
        let block = RawMessage.parseHeaders(message, 0..<message.count)
        let lineEnd: [UInt8] = firstLineEndIsCRLF(message) ? [0x0D, 0x0A] : [0x0A]

        /* Trace fields at the top stay at the top (RFC 5321 §4.4): Received, Return-Path. */
        let trace = block.fields.prefix { $0.name == "received" || $0.name == "return-path" }
        for field in trace { scan(message, field.range, .header) }

        /* Then the headers the engine owns: Message-ID unless the sender set one, X-Carrier-Id always. */
        if !block.fields.contains(where: { $0.name == "message-id" }) {
            literal(Array("Message-ID: <".utf8))
            segments.append(.queueID)
            literal([UInt8(ascii: "@")])
            segments.append(.messageIDDomain)
            literal([UInt8(ascii: ">")] + lineEnd)
        }
        literal(Array("X-Carrier-Id: ".utf8))
        segments.append(.queueID)
        literal(lineEnd)

        /* The sender's headers, minus any X-Carrier-Id (it could claim another message's id). */
        for field in block.fields.dropFirst(trace.count) where field.name != "x-carrier-id" {
            scan(message, field.range, .header)
        }
        literal(message, block.separator)
        addBody(message, block.body, block.fields, depth: 0)
    }

    /// addBody - the body of the message or of a part, by its Content-Type and Content-Transfer-Encoding.
    private mutating func addBody(_ message: UnsafeBufferPointer<UInt8>, _ body: Range<Int>, _ headers: [RawMessage.Field], depth: Int) {
        let type = headers.last(where: { $0.name == "content-type" }).map { mediaType(headerValue(message, $0)) }
        let encoding = headers.last(where: { $0.name == "content-transfer-encoding" })
            .map { headerValue(message, $0).lowercased() } ?? ""

        /* Encoded bodies stay as they are (see the file comment). */
        if encoding == "base64" || encoding == "quoted-printable" {
            literal(message, body)
            return
        }
        if let type, type.type.hasPrefix("multipart/"), let boundary = type.boundary, depth < TemplateBuilder.maximumDepth {
            addMultipart(message, body, boundary: boundary, depth: depth)
            return
        }
        scan(message, body, type?.type == "text/html" ? .html : .text)
    }

    /// addMultipart - preamble, delimiter lines and epilogue literal; each part's headers and body by its own type.
    private mutating func addMultipart(_ message: UnsafeBufferPointer<UInt8>, _ body: Range<Int>, boundary: String, depth: Int) {
        let delimiters = findDelimiters(message, body, boundary: Array(("--" + boundary).utf8))
        guard let first = delimiters.first else {
            /* Declared multipart without a single delimiter line: it reads as plain text. */
            scan(message, body, .text)
            return
        }
        literal(message, body.lowerBound..<first.line.lowerBound)
        for (index, delimiter) in delimiters.enumerated() {
            literal(message, delimiter.line)
            if delimiter.isClose {
                literal(message, delimiter.line.upperBound..<body.upperBound)
                return
            }
            let end = index + 1 < delimiters.count ? delimiters[index + 1].line.lowerBound : body.upperBound
            let part = RawMessage.parseHeaders(message, delimiter.line.upperBound..<end)
            for field in part.fields { scan(message, field.range, .header) }
            literal(message, part.separator)
            addBody(message, part.body, part.fields, depth: depth + 1)
        }
    }

    /// scan - a run of the message in which `{{name}}` references are substituted with `escaping`.
    ///
    /// A reference is `{{`, optional spaces or tabs, a name of `[A-Za-z0-9_.-]+`,
    /// optional spaces or tabs, `}}`. Anything else starting with `{{` is text.
    private mutating func scan(_ message: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ escaping: MessageTemplate.Escaping) {
        guard mergeFields else { return literal(message, range) }
        var runStart = range.lowerBound
        var index = range.lowerBound
        while index + 1 < range.upperBound {
            guard message[index] == UInt8(ascii: "{"), message[index + 1] == UInt8(ascii: "{") else {
                index += 1
                continue
            }
            guard let (name, end) = reference(message, at: index, limit: range.upperBound) else {
                index += 1
                continue
            }
            literal(message, runStart..<index)
            segments.append(.field(fieldIndex(name), escaping))
            index = end
            runStart = end
        }
        literal(message, runStart..<range.upperBound)
    }

    /// reference - the name of a reference starting at `start` and the index just past its `}}`, or nil.
    private func reference(_ message: UnsafeBufferPointer<UInt8>, at start: Int, limit: Int) -> (String, Int)? {
        var index = start + 2
        while index < limit, message[index] == 0x20 || message[index] == 0x09 { index += 1 }
        let nameStart = index
        while index < limit, isNameByte(message[index]) { index += 1 }
        guard index > nameStart else { return nil }
        let nameEnd = index
        while index < limit, message[index] == 0x20 || message[index] == 0x09 { index += 1 }
        guard index + 1 < limit, message[index] == UInt8(ascii: "}"), message[index + 1] == UInt8(ascii: "}") else { return nil }
        return (String(decoding: UnsafeBufferPointer(rebasing: message[nameStart..<nameEnd]), as: UTF8.self), index + 2)
    }

    /// fieldIndex - the index of a field name, added on first use.
    private mutating func fieldIndex(_ name: String) -> Int {
        if let index = indexOfName[name] { return index }
        names.append(name)
        indexOfName[name] = names.count - 1
        return names.count - 1
    }

    /// literal - append bytes of the message to the literal run (merging with the previous literal segment).
    private mutating func literal(_ message: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) {
        guard !range.isEmpty else { return }
        literal(UnsafeBufferPointer(rebasing: message[range]))
    }

    /// literal - append bytes to the literal run (merging with the previous literal segment).
    private mutating func literal(_ bytes: some Collection<UInt8>) {
        guard !bytes.isEmpty else { return }
        let start = literals.count
        literals.append(contentsOf: bytes)
        if case .literal(let previous) = segments.last, previous.upperBound == start {
            segments[segments.count - 1] = .literal(previous.lowerBound..<literals.count)
        } else {
            segments.append(.literal(start..<literals.count))
        }
    }
}

/// isNameByte - true for the octets of a merge field name, `[A-Za-z0-9_.-]`.
private func isNameByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
         UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
        return true
    default:
        return false
    }
}

// MARK: header blocks and MIME parameters

/// Reading the structure of a raw message: header fields, the blank line, line ends.
///
/// A namespace of pure functions over a buffer the caller holds.
enum RawMessage {
    /// One header field: its lowercased name and its lines, continuations and line ending included.
    struct Field {
        var name: String                    /* lowercased; "" for a line without a colon */
        var range: Range<Int>               /* the whole field, through its last line ending */
        var valueStart: Int                 /* just past the colon */
    }

    /// A header block: its fields, the blank line after it, and the body after that.
    struct Block {
        var fields: [Field]
        var separator: Range<Int>           /* the blank line; empty when there is none */
        var body: Range<Int>                /* empty when there is no blank line */
    }

    /// parseHeaders - the fields of the header block starting at `range.lowerBound`, up to the first blank line.
    ///
    /// A line starting with a space or tab continues the field before it. With no
    /// blank line, every line is a header line and the body is empty.
    static func parseHeaders(_ message: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Block {
        var fields: [Field] = []
        var position = range.lowerBound
        while position < range.upperBound {
            let end = lineEnd(message, from: position, limit: range.upperBound)
            let first = message[position]
            if first == 0x0A || (first == 0x0D && position + 1 < range.upperBound && message[position + 1] == 0x0A) {
                return Block(fields: fields, separator: position..<end, body: end..<range.upperBound)
            }
            if (first == 0x20 || first == 0x09), !fields.isEmpty {
                fields[fields.count - 1].range = fields[fields.count - 1].range.lowerBound..<end
            } else {
                var colon = position
                while colon < end, message[colon] != UInt8(ascii: ":"), message[colon] != 0x0A { colon += 1 }
                let hasColon = colon < end && message[colon] == UInt8(ascii: ":")
                let name = hasColon ? String(decoding: UnsafeBufferPointer(rebasing: message[position..<colon]), as: UTF8.self) : ""
                fields.append(Field(name: trimmingSpaces(name).lowercased(), range: position..<end,
                                    valueStart: hasColon ? colon + 1 : position))
            }
            position = end
        }
        return Block(fields: fields, separator: range.upperBound..<range.upperBound, body: range.upperBound..<range.upperBound)
    }

    /// headersEnd - the index just past a message's header lines (where its blank line starts), or its length.
    static func headersEnd(_ message: UnsafeBufferPointer<UInt8>) -> Int {
        parseHeaders(message, 0..<message.count).separator.lowerBound
    }

    /// lineEnd - the index just past the LF ending the line at `start`, or `limit`.
    static func lineEnd(_ message: UnsafeBufferPointer<UInt8>, from start: Int, limit: Int) -> Int {
        guard start < limit, let base = message.baseAddress else { return limit }
        guard let found = memchr(base + start, 0x0A, limit - start) else { return limit }
        return UnsafePointer<UInt8>(found.assumingMemoryBound(to: UInt8.self)) - base + 1
    }

    /// trimmingSpaces - `text` without leading and trailing spaces and tabs.
    static func trimmingSpaces(_ text: String) -> String {
        var bytes = Substring(text).utf8[...]
        while let first = bytes.first, first == 0x20 || first == 0x09 { bytes = bytes.dropFirst() }
        while let last = bytes.last, last == 0x20 || last == 0x09 { bytes = bytes.dropLast() }
        return String(Substring(bytes))
    }
}

/// firstLineEndIsCRLF - true when the message's first LF follows a CR, or it has no LF at all.
private func firstLineEndIsCRLF(_ message: UnsafeBufferPointer<UInt8>) -> Bool {
    let end = RawMessage.lineEnd(message, from: 0, limit: message.count)
    guard end > 0, message[end - 1] == 0x0A else { return true }
    return end >= 2 && message[end - 2] == 0x0D
}

/// headerValue - a field's value unfolded (line breaks removed) and trimmed.
private func headerValue(_ message: UnsafeBufferPointer<UInt8>, _ field: RawMessage.Field) -> String {
    var bytes: [UInt8] = []
    for index in field.valueStart..<field.range.upperBound where message[index] != 0x0D && message[index] != 0x0A {
        bytes.append(message[index])
    }
    return RawMessage.trimmingSpaces(String(decoding: bytes, as: UTF8.self))
}

/// A line `--boundary` or `--boundary--` inside a multipart body.
private struct Delimiter {
    var line: Range<Int>                    /* the delimiter line, its line ending included */
    var isClose: Bool                       /* `--boundary--`: the last one */
}

/// findDelimiters - the delimiter lines of a multipart body, up to and including the close delimiter.
///
/// RFC 2046 §5.1.1: a delimiter starts a line and may be followed by spaces
/// (transport padding) before the line ending; the close delimiter adds `--`.
private func findDelimiters(_ message: UnsafeBufferPointer<UInt8>, _ body: Range<Int>, boundary: [UInt8]) -> [Delimiter] {
    var found: [Delimiter] = []
    var position = body.lowerBound
    while position < body.upperBound {
        let end = RawMessage.lineEnd(message, from: position, limit: body.upperBound)
        if end - position >= boundary.count,
           boundary.indices.allSatisfy({ message[position + $0] == boundary[$0] }) {
            var rest = position + boundary.count
            let isClose = rest + 1 < end && message[rest] == UInt8(ascii: "-") && message[rest + 1] == UInt8(ascii: "-")
            if isClose { rest += 2 }
            while rest < end, message[rest] == 0x20 || message[rest] == 0x09 || message[rest] == 0x0D { rest += 1 }
            if rest == end || message[rest] == 0x0A {
                found.append(Delimiter(line: position..<end, isClose: isClose))
                if isClose { return found }
            }
        }
        position = end
    }
    return found
}

/// mediaType - the lowercased `type/subtype` of a Content-Type value and its boundary parameter.
private func mediaType(_ value: String) -> (type: String, boundary: String?) {
    let bytes = Array(value.utf8)
    var index = 0
    while index < bytes.count, bytes[index] != UInt8(ascii: ";") { index += 1 }
    let type = RawMessage.trimmingSpaces(String(decoding: bytes[..<index], as: UTF8.self)).lowercased()

    /* Parameters: `; name=token` or `; name="quoted string"`, in any order. */
    var boundary: String?
    while index < bytes.count {
        index += 1
        let nameStart = index
        while index < bytes.count, bytes[index] != UInt8(ascii: "="), bytes[index] != UInt8(ascii: ";") { index += 1 }
        let name = RawMessage.trimmingSpaces(String(decoding: bytes[nameStart..<index], as: UTF8.self)).lowercased()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "=") else { continue }
        index += 1
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
        var parameter: [UInt8] = []
        if index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
            index += 1
            while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                if bytes[index] == UInt8(ascii: "\\"), index + 1 < bytes.count { index += 1 }
                parameter.append(bytes[index])
                index += 1
            }
            while index < bytes.count, bytes[index] != UInt8(ascii: ";") { index += 1 }
        } else {
            while index < bytes.count, bytes[index] != UInt8(ascii: ";") {
                parameter.append(bytes[index])
                index += 1
            }
            while let last = parameter.last, last == 0x20 || last == 0x09 { parameter.removeLast() }
        }
        if name == "boundary", !parameter.isEmpty { boundary = String(decoding: parameter, as: UTF8.self) }
    }
    return (type, boundary)
}
