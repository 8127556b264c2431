// DNSMessage.swift - a bounds-checked reader for the answer section of a DNS response
//
// c-ares 1.18 has no parser that returns MX records with their TTLs
// (ares_parse_mx_reply drops them), so the resolver reads the raw response
// itself (RFC 1035 section 4.1): the 12-byte header, the questions, which are
// skipped, then the answer records, of which only those of the requested type
// and class IN are kept. CNAME and other records in the answer are skipped:
// c-ares has already checked that the response answers our question.
//
// The reader does no I/O and touches no library, so it can be fuzzed alone.
// Every read is checked against the end of the message; anything that does not
// fit is `.malformedResponse`, never a trap. Compression pointers must point
// below where the current run of labels started (RFC 1035: "a prior
// occurrence"), so a chain of pointers always moves backwards and ends.

/// The record types the resolver asks for, with their RFC 1035/3596 codes.
enum DNSRecordType: UInt16 {
    case a = 1
    case mx = 15
    case aaaa = 28
}

/// Readers for the answers of a raw DNS response.
///
/// Pure functions without state; safe on any thread. The bytes are only
/// borrowed for the duration of a call.
enum DNSMessage {
    /// The class of every record we use: IN (the Internet).
    static let classIN: UInt16 = 1

    /// mxRecords - the MX answers in `message`, sorted by preference, for a query about `name`.
    static func mxRecords(in message: UnsafeRawBufferPointer, name: String) throws(DNSError) -> [MXRecord] {
        var records: [MXRecord] = []
        try forEachAnswer(in: message, type: .mx, name: name) { (reader, rdata, ttl) throws(DNSError) in
            /* MX rdata: a 16-bit preference, then the exchange's name, exactly filling rdata. */
            guard rdata.count >= 3 else { throw .malformedResponse(name) }
            let preference = try reader.uint16(at: rdata.lowerBound, name: name)
            let (host, end) = try reader.domainName(at: rdata.lowerBound + 2, name: name)
            guard end == rdata.upperBound else { throw .malformedResponse(name) }
            records.append(MXRecord(preference: preference, host: host, ttl: ttl))
        }
        /* Swift's sort is stable: records of equal preference keep the server's order. */
        records.sort { $0.preference < $1.preference }
        return records
    }

    /// addressRecords - the A or AAAA answers in `message`, in the server's order.
    static func addressRecords(
        in message: UnsafeRawBufferPointer, type: DNSRecordType, name: String
    ) throws(DNSError) -> [AddressRecord] {
        let size = type == .aaaa ? 16 : 4
        var records: [AddressRecord] = []
        try forEachAnswer(in: message, type: type, name: name) { (reader, rdata, ttl) throws(DNSError) in
            guard rdata.count == size,
                  let address = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: reader.bytes[rdata]))
            else { throw .malformedResponse(name) }
            records.append(AddressRecord(address: address, ttl: ttl))
        }
        return records
    }

    /// forEachAnswer - walk the header, questions and answers; hand each matching record's rdata to `body`.
    private static func forEachAnswer(
        in message: UnsafeRawBufferPointer,
        type: DNSRecordType,
        name: String,
        _ body: (DNSReader, Range<Int>, UInt32) throws(DNSError) -> Void
    ) throws(DNSError) {
        let reader = DNSReader(bytes: message)
        guard message.count >= 12 else { throw .malformedResponse(name) }
        let flags = try reader.uint16(at: 2, name: name)
        let questions = Int(try reader.uint16(at: 4, name: name))
        let answers = Int(try reader.uint16(at: 6, name: name))

        /* Only a response (QR set) answers anything; its RCODE says whether it is an answer. */
        guard flags & 0x8000 != 0 else { throw .malformedResponse(name) }
        switch flags & 0x000F {
        case 0: break
        case 2: throw .serverFailure(name)
        case 3: throw .nxdomain(name)
        case 5: throw .refused(name)
        default: throw .malformedResponse(name)
        }

        /* Questions: a name, then type and class. Each costs at least 5 bytes, so the loop is bounded. */
        var offset = 12
        for _ in 0..<questions {
            offset = try reader.skipName(at: offset, name: name) + 4
            guard offset <= message.count else { throw .malformedResponse(name) }
        }

        /* Answers: name, type, class, TTL, rdlength, rdata; keep those of our type in class IN. */
        var matched = 0
        for _ in 0..<answers {
            offset = try reader.skipName(at: offset, name: name)
            let recordType = try reader.uint16(at: offset, name: name)
            let recordClass = try reader.uint16(at: offset + 2, name: name)
            let rawTTL = try reader.uint32(at: offset + 4, name: name)
            let length = Int(try reader.uint16(at: offset + 8, name: name))
            let rdata = (offset + 10)..<(offset + 10 + length)
            guard rdata.upperBound <= message.count else { throw .malformedResponse(name) }
            offset = rdata.upperBound
            guard recordType == type.rawValue, recordClass == classIN else { continue }
            /* RFC 2181 section 8: a TTL with the top bit set is to be read as zero. */
            let ttl = rawTTL > UInt32(Int32.max) ? 0 : rawTTL
            try body(reader, rdata, ttl)
            matched += 1
        }

        /* NOERROR with nothing of our type (only a CNAME, say) is the NODATA answer. */
        if matched == 0 { throw .noData(name) }
    }
}

/// Bounds-checked big-endian reads and name decoding over borrowed message bytes.
///
/// Every method checks the range it reads and throws `.malformedResponse`
/// for the queried `name` when the message is too short or inconsistent.
struct DNSReader {
    let bytes: UnsafeRawBufferPointer   /* the whole message; compression offsets are from its start */

    /// The most a name may take on the wire, counting length bytes and the root (RFC 1035 section 2.3.4).
    static let maximumNameLength = 255

    /// uint16 - the big-endian 16-bit value at `offset`.
    func uint16(at offset: Int, name: String) throws(DNSError) -> UInt16 {
        guard offset >= 0, offset + 2 <= bytes.count else { throw .malformedResponse(name) }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    /// uint32 - the big-endian 32-bit value at `offset`.
    func uint32(at offset: Int, name: String) throws(DNSError) -> UInt32 {
        let high = try uint16(at: offset, name: name)
        let low = try uint16(at: offset + 2, name: name)
        return UInt32(high) << 16 | UInt32(low)
    }

    /// skipName - the offset just past the name at `offset`, without following pointers.
    func skipName(at offset: Int, name: String) throws(DNSError) -> Int {
        var position = offset
        var wireLength = 0
        while true {
            guard position >= 0, position < bytes.count else { throw .malformedResponse(name) }
            let length = Int(bytes[position])
            switch length & 0xC0 {
            case 0xC0:
                /* A pointer ends the name in place; it takes two bytes. */
                guard position + 2 <= bytes.count else { throw .malformedResponse(name) }
                return position + 2
            case 0x00:
                wireLength += length + 1
                guard wireLength <= Self.maximumNameLength else { throw .malformedResponse(name) }
                position += length + 1
                if length == 0 { return position }
            default:
                /* 0x40 and 0x80 are the obsolete extended label types; no server sends them. */
                throw .malformedResponse(name)
            }
        }
    }

    /// domainName - the name at `offset` as lowercase text without the trailing dot, and where it ends in place.
    ///
    /// The root name is the empty string (a null MX, RFC 7505). Labels must be
    /// printable ASCII without dots, which is what a host name can hold.
    func domainName(at offset: Int, name: String) throws(DNSError) -> (String, Int) {
        var text: [UInt8] = []
        var position = offset
        var segmentStart = offset      /* where the current run of labels began */
        var end: Int?                  /* where the name ends in place: after its first pointer or root */
        var wireLength = 0
        while true {
            guard position >= 0, position < bytes.count else { throw .malformedResponse(name) }
            let length = Int(bytes[position])
            switch length & 0xC0 {
            case 0xC0:
                guard position + 2 <= bytes.count else { throw .malformedResponse(name) }
                let target = (length & 0x3F) << 8 | Int(bytes[position + 1])
                /* Only backwards, below every run read so far: a pointer chain cannot loop. */
                guard target < segmentStart else { throw .malformedResponse(name) }
                if end == nil { end = position + 2 }
                position = target
                segmentStart = target
            case 0x00:
                wireLength += length + 1
                guard wireLength <= Self.maximumNameLength, position + 1 + length <= bytes.count else {
                    throw .malformedResponse(name)
                }
                if length == 0 {
                    return (String(decoding: text, as: UTF8.self), end ?? position + 1)
                }
                if !text.isEmpty { text.append(UInt8(ascii: ".")) }
                for byte in bytes[(position + 1)...(position + length)] {
                    guard byte > 0x20, byte < 0x7F, byte != UInt8(ascii: ".") else { throw .malformedResponse(name) }
                    /* Names compare without case; we hand out one spelling. */
                    text.append(byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte)
                }
                position += length + 1
            default:
                throw .malformedResponse(name)
            }
        }
    }
}
