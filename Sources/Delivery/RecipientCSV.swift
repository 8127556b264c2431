// RecipientCSV.swift - a campaign's recipient list: RFC 4180 CSV, streamed row by row
//
// A campaign's list can hold millions of rows, so the reader never holds more
// than one read chunk (64 KiB by default) and the record being assembled. The
// first row names the columns; the `email` column (any case) is the recipient
// and every other column becomes a merge variable (column name, value), in
// column order. Columns with an empty name (a trailing comma in the header, as
// spreadsheets write) are ignored.
//
// RFC 4180 with the usual tolerances: LF or CRLF (or a lone CR) ends a record,
// quoted fields may hold commas, doubled quotes and line breaks, a UTF-8 byte
// order mark is skipped, the last record needs no line ending, and blank lines
// are skipped. A quote inside an unquoted field, or text after a closing quote,
// is kept as text rather than refused.
//
// Errors carry the file name and the line the record starts on. A row's own
// problem (wrong field count, bad address, invalid UTF-8, overlong record) is
// thrown by `next()` for that row, and the reader is then positioned at the
// next row: a caller skips bad rows by catching and calling `next()` again, or
// stops at the first one. `isRowError` tells the two kinds apart: any other
// error (I/O, an unterminated quote, which swallows the rest of the file)
// ends the reader, and `next()` returns nil after it.

#if canImport(Glibc)
import Glibc
#endif
public import SMTP

/// One recipient of a campaign list.
///
/// A value; safe to send between threads.
public struct RecipientRow: Sendable {
    public var line: Int                            /* line the row starts on, the header being line 1 */
    public var email: String                        /* the address, validated, as MailAddress prints it */
    public var variables: [(String, String)]        /* (column name, value) of every other named column */
}

/// Why a recipient list or one of its rows was refused.
///
/// A value; safe to send between threads. `file` is the path (or name) the
/// reader was opened with; `line` counts from 1, the header being line 1.
public enum RecipientCSVError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file could not be opened or read.
    case io(path: String, errno: Int32)
    /// The file holds no header row (it is empty or blank).
    case emptyFile(file: String)
    /// No header column is named `email`.
    case missingEmailColumn(file: String, columns: [String])
    /// Two header columns have the same name (case-insensitive).
    case duplicateColumn(file: String, name: String)
    /// A row has a different number of fields than the header.
    case wrongFieldCount(file: String, line: Int, expected: Int, found: Int)
    /// A quoted field opened on `line` is still open at the end of the file.
    case unterminatedQuote(file: String, line: Int)
    /// The row's email field is not a deliverable mailbox.
    case invalidAddress(file: String, line: Int, address: String, reason: AddressError)
    /// A field of the row is not UTF-8.
    case invalidUTF8(file: String, line: Int)
    /// The row is longer than the reader's limit.
    case recordTooLong(file: String, line: Int, limit: Int)

    /// True for the problems of one row: the reader can go on with the next row.
    public var isRowError: Bool {
        switch self {
        case .wrongFieldCount, .invalidAddress, .invalidUTF8, .recordTooLong: return true
        case .io, .emptyFile, .missingEmailColumn, .duplicateColumn, .unterminatedQuote: return false
        }
    }

    public var description: String {
        switch self {
        case .io(let path, let code):
            return "\(path): \(String(cString: strerror(code)))"
        case .emptyFile(let file):
            return "\(file): the file is empty (a header row naming an email column is required)"
        case .missingEmailColumn(let file, let columns):
            return "\(file) line 1: no \"email\" column in the header (columns: \(columns.joined(separator: ", ")))"
        case .duplicateColumn(let file, let name):
            return "\(file) line 1: the column \"\(name)\" appears twice in the header"
        case .wrongFieldCount(let file, let line, let expected, let found):
            return "\(file) line \(line): \(found) field\(found == 1 ? "" : "s"), the header has \(expected)"
        case .unterminatedQuote(let file, let line):
            return "\(file) line \(line): a quoted field is never closed"
        case .invalidAddress(let file, let line, let address, let reason):
            return "\(file) line \(line): \"\(address)\" is not a valid address (\(reason))"
        case .invalidUTF8(let file, let line):
            return "\(file) line \(line): the row is not valid UTF-8"
        case .recordTooLong(let file, let line, let limit):
            return "\(file) line \(line): the row is longer than \(limit) bytes"
        }
    }
}

/// Reads a recipient list from a file, one row per `next()`.
///
/// Owned by one thread at a time; not copyable, because it owns its file
/// descriptor (closed when the reader goes away, unless it was handed in).
public struct RecipientCSVReader: ~Copyable {
    /// The header's column names, as written (spaces trimmed).
    public private(set) var columns: [String]
    private let file: String                        /* path or name, for errors */
    private let fd: Int32
    private let ownsDescriptor: Bool
    private var emailColumn: Int                    /* index of the email column in `columns` */
    private var buffer: [UInt8]                     /* the current chunk */
    private var position = 0                        /* next unread byte of `buffer` */
    private var filled = 0                          /* bytes of `buffer` holding data */
    private var atEnd = false                       /* read returned 0, or failed */
    private var finished = false                    /* no more rows: end of file or a fatal error */
    private var scanner: CSVScanner

    /// Open `path` and read its header row.
    public init(path: String, chunkSize: Int = 64 * 1024, maximumRecordBytes: Int = 1 << 20) throws(RecipientCSVError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw .io(path: path, errno: errno) }
        try self.init(fd: fd, owns: true, name: path, chunkSize: chunkSize, maximumRecordBytes: maximumRecordBytes)
    }

    /// Read from an open descriptor (a pipe works too); `name` stands for it in errors.
    /// The caller keeps ownership of the descriptor and closes it after the reader is gone.
    public init(fileDescriptor: Int32, name: String, chunkSize: Int = 64 * 1024, maximumRecordBytes: Int = 1 << 20)
        throws(RecipientCSVError)
    {
        try self.init(fd: fileDescriptor, owns: false, name: name, chunkSize: chunkSize, maximumRecordBytes: maximumRecordBytes)
    }

    private init(fd: Int32, owns: Bool, name: String, chunkSize: Int, maximumRecordBytes: Int) throws(RecipientCSVError) {
        self.fd = fd
        ownsDescriptor = owns
        file = name
        buffer = [UInt8](repeating: 0, count: max(chunkSize, 4))
        scanner = CSVScanner(maximumRecordBytes: maximumRecordBytes)
        columns = []
        emailColumn = 0

        /* The header row, after an optional byte order mark. Errors from here on close an
           owned descriptor through deinit: every stored property is set. */
        try skipByteOrderMark()
        repeat {
            guard try nextRecord() else { throw .emptyFile(file: name) }
        } while scanner.isBlank
        if scanner.overlong { throw .recordTooLong(file: name, line: scanner.recordLine, limit: maximumRecordBytes) }
        guard let fields = scanner.fields() else { throw .invalidUTF8(file: name, line: scanner.recordLine) }
        let header = fields.map(RawMessage.trimmingSpaces)

        /* The email column, exactly once; no other name twice (a variable would be ambiguous). */
        var seen = Set<String>()
        for name in header where !name.isEmpty {
            guard seen.insert(name.lowercased()).inserted else { throw .duplicateColumn(file: file, name: name) }
        }
        guard let email = header.firstIndex(where: { $0.lowercased() == "email" }) else {
            throw .missingEmailColumn(file: file, columns: header)
        }
        columns = header
        emailColumn = email
    }

    deinit {
        if ownsDescriptor { close(fd) }
    }

    /// next - the next recipient, nil at the end of the list.
    ///
    /// A row error (`isRowError`) is thrown for that row only: call `next()`
    /// again to go on with the row after it. After any other error the reader
    /// is finished and returns nil.
    public mutating func next() throws(RecipientCSVError) -> RecipientRow? {
        while !finished {
            let found: Bool
            do throws(RecipientCSVError) {
                found = try nextRecord()
            } catch {
                finished = true
                throw error
            }
            guard found else {
                finished = true
                return nil
            }
            if scanner.isBlank { continue }
            return try row()
        }
        return nil
    }

    /// row - the scanner's complete record as a recipient, or its row error.
    private func row() throws(RecipientCSVError) -> RecipientRow {
        let line = scanner.recordLine
        if scanner.overlong { throw .recordTooLong(file: file, line: line, limit: scanner.maximumRecordBytes) }
        guard scanner.fieldCount == columns.count else {
            throw .wrongFieldCount(file: file, line: line, expected: columns.count, found: scanner.fieldCount)
        }
        guard let fields = scanner.fields() else { throw .invalidUTF8(file: file, line: line) }

        let written = RawMessage.trimmingSpaces(fields[emailColumn])
        let address: MailAddress
        do throws(AddressError) {
            address = try MailAddress(parsing: written)
        } catch {
            throw .invalidAddress(file: file, line: line, address: written, reason: error)
        }
        var variables: [(String, String)] = []
        variables.reserveCapacity(columns.count - 1)
        for (index, name) in columns.enumerated() where index != emailColumn && !name.isEmpty {
            variables.append((name, fields[index]))
        }
        return RecipientRow(line: line, email: address.description, variables: variables)
    }

    /// nextRecord - scan until the scanner holds a complete record; false at the end of the file.
    private mutating func nextRecord() throws(RecipientCSVError) -> Bool {
        scanner.startRecord()
        while true {
            if position < filled {
                let (consumed, complete) = buffer.withUnsafeBufferPointer { bytes in
                    scanner.scan(UnsafeBufferPointer(rebasing: bytes[position..<filled]))
                }
                position += consumed
                if complete { return true }
                continue
            }
            if atEnd {
                if scanner.inQuotes { throw .unterminatedQuote(file: file, line: scanner.quoteLine) }
                return scanner.finish()
            }
            try fill()
        }
    }

    /// fill - read the next chunk into `buffer` (whatever was in it has been scanned).
    private mutating func fill() throws(RecipientCSVError) {
        let count = buffer.count
        let got = buffer.withUnsafeMutableBytes { bytes in
            var got: Int
            repeat { got = read(fd, bytes.baseAddress, count) } while got < 0 && errno == EINTR
            return got
        }
        if got < 0 {
            atEnd = true
            throw .io(path: file, errno: errno)
        }
        position = 0
        filled = got
        if got == 0 { atEnd = true }
    }

    /// skipByteOrderMark - drop EF BB BF at the very start of the file.
    private mutating func skipByteOrderMark() throws(RecipientCSVError) {
        /* Reads may come back short (a pipe); gather three bytes or the end of the file first. */
        while filled < 3 && !atEnd {
            let count = buffer.count - filled
            let start = filled
            let got = buffer.withUnsafeMutableBytes { bytes in
                var got: Int
                repeat { got = read(fd, bytes.baseAddress! + start, count) } while got < 0 && errno == EINTR
                return got
            }
            if got < 0 { throw .io(path: file, errno: errno) }
            if got == 0 { atEnd = true }
            filled += got
        }
        if filled >= 3, buffer[0] == 0xEF, buffer[1] == 0xBB, buffer[2] == 0xBF { position = 3 }
    }
}

/// The RFC 4180 state machine: consumes bytes in any split and assembles one record at a time.
///
/// A value owned by one reader. Field bytes go into `bytes`, each field's end
/// into `ends`; a record longer than the limit keeps being scanned to its end
/// but its bytes are dropped (`overlong`), so the next record starts in sync.
private struct CSVScanner {
    let maximumRecordBytes: Int
    private var bytes: [UInt8] = []                 /* the record's fields, concatenated */
    private var ends: [Int] = []                    /* end offset of each finished field in `bytes` */
    private(set) var inQuotes = false               /* inside a quoted field */
    private var afterQuote = false                  /* a quote inside a quoted field was just read */
    private var fieldQuoted = false                 /* the current field opened with a quote */
    private var fieldStarted = false                /* the current field has a byte or a quote */
    private var skipLF = false                      /* the last record ended with CR: an LF next belongs to it */
    private var line = 1                            /* physical line of the next byte */
    private(set) var recordLine = 1                 /* line the current record starts on */
    private(set) var quoteLine = 1                  /* line the open quote is on */
    private(set) var overlong = false               /* the record passed the limit */

    init(maximumRecordBytes: Int) {
        self.maximumRecordBytes = maximumRecordBytes
    }

    /// The number of fields of the complete record.
    var fieldCount: Int { ends.count }

    /// True when the complete record is a blank line.
    var isBlank: Bool { ends.count == 1 && ends[0] == 0 && !fieldQuoted && !overlong }

    /// startRecord - forget the last record.
    mutating func startRecord() {
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        inQuotes = false
        afterQuote = false
        fieldQuoted = false
        fieldStarted = false
        overlong = false
        recordLine = line
    }

    /// fields - the complete record's fields as strings, or nil when one is not UTF-8.
    func fields() -> [String]? {
        var fields: [String] = []
        fields.reserveCapacity(ends.count)
        var start = 0
        for end in ends {
            guard let field = String(validating: bytes[start..<end], as: UTF8.self) else { return nil }
            fields.append(field)
            start = end
        }
        return fields
    }

    /// scan - consume bytes up to the end of the record; how many were used and whether the record is complete.
    mutating func scan(_ input: UnsafeBufferPointer<UInt8>) -> (Int, Bool) {
        var index = 0
        while index < input.count {
            let byte = input[index]
            if skipLF {
                skipLF = false
                if byte == 0x0A {
                    index += 1
                    continue
                }
            }

            /* Inside quotes everything up to the next quote is field text. */
            if inQuotes {
                let start = index
                while index < input.count, input[index] != UInt8(ascii: "\"") {
                    if input[index] == 0x0A { line += 1 }
                    index += 1
                }
                append(UnsafeBufferPointer(rebasing: input[start..<index]))
                if index < input.count {
                    inQuotes = false
                    afterQuote = true
                    index += 1
                }
                continue
            }
            if afterQuote {
                afterQuote = false
                if byte == UInt8(ascii: "\"") {
                    append(byte)
                    inQuotes = true
                    index += 1
                    continue
                }
            }

            switch byte {
            case UInt8(ascii: ","):
                endField()
                index += 1
            case 0x0A, 0x0D:
                endField()
                line += 1
                skipLF = byte == 0x0D
                return (index + 1, true)
            case UInt8(ascii: "\"") where !fieldStarted:
                inQuotes = true
                fieldQuoted = true
                fieldStarted = true
                quoteLine = line
                index += 1
            default:
                /* A run of plain text: up to the next separator, line end or quote. */
                let start = index
                while index < input.count {
                    let next = input[index]
                    if next == UInt8(ascii: ",") || next == 0x0A || next == 0x0D || (next == UInt8(ascii: "\"") && index > start) { break }
                    index += 1
                }
                fieldStarted = true
                append(UnsafeBufferPointer(rebasing: input[start..<index]))
            }
        }
        return (index, false)
    }

    /// finish - at the end of the file: complete a record that had no line ending; false when there was none.
    mutating func finish() -> Bool {
        guard fieldStarted || !ends.isEmpty || !bytes.isEmpty else { return false }
        endField()
        return true
    }

    /// endField - close the current field.
    private mutating func endField() {
        ends.append(bytes.count)
        fieldStarted = false
        afterQuote = false
    }

    /// append - field text, unless the record is over the limit.
    private mutating func append(_ run: UnsafeBufferPointer<UInt8>) {
        guard !overlong else { return }
        if bytes.count + run.count > maximumRecordBytes {
            overlong = true
            bytes.removeAll(keepingCapacity: true)
            return
        }
        bytes.append(contentsOf: run)
    }

    /// append - one byte of field text.
    private mutating func append(_ byte: UInt8) {
        withUnsafePointer(to: byte) { append(UnsafeBufferPointer(start: $0, count: 1)) }
    }
}
