// RecipientCSVTests.swift - recipient lists: RFC 4180 forms, chunk splits, row errors and skipping, streaming

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import SMTP
import Testing
@testable import Delivery

/// What one `next()` call gave: a row (line, email, "name=value" variables) or an error.
private enum Item: Equatable {
    case row(Int, String, [String])
    case error(RecipientCSVError)
}

/// items - every row and error of a reader, going on after row errors (the skip policy).
private func items(_ reader: inout RecipientCSVReader) -> [Item] {
    var items: [Item] = []
    while true {
        do throws(RecipientCSVError) {
            guard let row = try reader.next() else { return items }
            items.append(.row(row.line, row.email, row.variables.map { $0.0 + "=" + $0.1 }))
        } catch {
            items.append(.error(error))
        }
    }
}

/// withCSV - `body` on a reader over `content`, read through a descriptor named "recipients.csv".
private func withCSV<T>(_ content: [UInt8], chunkSize: Int = 64 * 1024, maximumRecordBytes: Int = 1 << 20,
                        _ body: (inout RecipientCSVReader) -> T) throws(RecipientCSVError) -> T {
    let folder = TemporaryFolder("csv")
    defer { folder.remove() }
    writeFile(folder.file("list.csv"), content)
    let fd = open(folder.file("list.csv"), O_RDONLY)
    defer { close(fd) }
    var reader = try RecipientCSVReader(fileDescriptor: fd, name: "recipients.csv", chunkSize: chunkSize,
                                        maximumRecordBytes: maximumRecordBytes)
    return body(&reader)
}

/// readAll - every item of `text` read with the skip policy.
private func readAll(_ text: String, chunkSize: Int = 64 * 1024, maximumRecordBytes: Int = 1 << 20) throws(RecipientCSVError) -> [Item] {
    try withCSV(Array(text.utf8), chunkSize: chunkSize, maximumRecordBytes: maximumRecordBytes) { items(&$0) }
}

/// headerError - the error the reader's init throws for `text`, or nil.
private func headerError(_ text: String) -> RecipientCSVError? {
    do throws(RecipientCSVError) {
        _ = try readAll(text)
        return nil
    } catch {
        return error
    }
}

@Suite("Recipient CSV")
struct RecipientCSVTests {
    @Test func readsRowsWithVariablesInColumnOrder() throws {
        let columns = try withCSV(Array("email,first_name,last\n".utf8)) { $0.columns }
        #expect(columns == ["email", "first_name", "last"])
        #expect(try readAll("first_name,email,last\nBob,bob@example.com,Smith\nAlice,alice@example.org,\n") == [
            .row(2, "bob@example.com", ["first_name=Bob", "last=Smith"]),
            .row(3, "alice@example.org", ["first_name=Alice", "last="]),
        ])
    }

    @Test func quotedFieldsHoldCommasQuotesAndLineBreaks() throws {
        let text = "name,email,note\n\"Smith, Bob\",bob@example.com,\"He said \"\"hi\"\"\nand left\"\n"
            + "Carol,\"carol@example.com\",\"\"\n\"\",dan@example.com,\"a,\"\"b\"\"\r\nc\"\n"
        #expect(try readAll(text) == [
            .row(2, "bob@example.com", ["name=Smith, Bob", "note=He said \"hi\"\nand left"]),
            .row(4, "carol@example.com", ["name=Carol", "note="]),
            .row(5, "dan@example.com", ["name=", "note=a,\"b\"\r\nc"]),
        ])
    }

    @Test func byteOrderMarkCRLFBlankLinesAndNoFinalNewline() throws {
        #expect(try readAll("\u{FEFF}Email,n\r\n\r\na@x.io,1\r\n\r\n\r\nb@x.io,2") == [
            .row(3, "a@x.io", ["n=1"]),
            .row(6, "b@x.io", ["n=2"]),
        ])
        #expect(try readAll("\n\nemail,n\ra@x.io,1\rb@x.io,2\r") == [.row(4, "a@x.io", ["n=1"]), .row(5, "b@x.io", ["n=2"])])
        #expect(try readAll("email\n") == [])
        #expect(try readAll("email") == [])
    }

    @Test func quotesInsideUnquotedFieldsAndAfterClosingQuotesAreText() throws {
        #expect(try readAll("email,n\na@x.io,5\"9\na@x.io,\"ab\"cd\n") == [
            .row(2, "a@x.io", ["n=5\"9"]),
            .row(3, "a@x.io", ["n=abcd"]),
        ])
    }

    @Test func addressesAreTrimmedValidatedAndCanonical() throws {
        #expect(try readAll("email\n  a@Example.com \n\"\"\"abc\"\"@x.io\"\n") == [
            .row(2, "a@Example.com", []),
            .row(3, "abc@x.io", []),
        ])
    }

    @Test func columnsWithoutANameAreIgnored() throws {
        #expect(try readAll("email,name,\na@x.io,Bob,\n") == [.row(2, "a@x.io", ["name=Bob"])])
    }

    @Test func headerErrors() {
        #expect(headerError("") == .emptyFile(file: "recipients.csv"))
        #expect(headerError("\n\r\n") == .emptyFile(file: "recipients.csv"))
        #expect(headerError("name,mail\nx,y\n") == .missingEmailColumn(file: "recipients.csv", columns: ["name", "mail"]))
        #expect(headerError("name,mail\n")?.description == "recipients.csv line 1: no \"email\" column in the header (columns: name, mail)")
        #expect(headerError("email,name,Name\n") == .duplicateColumn(file: "recipients.csv", name: "Name"))
        #expect(headerError("EMAIL,email\n") == .duplicateColumn(file: "recipients.csv", name: "email"))
        #expect(headerError("email,\"open\n") == .unterminatedQuote(file: "recipients.csv", line: 1))
        #expect(headerError("email,a,,\n") == nil)
    }

    @Test func wrongFieldCountReadsWell() throws {
        let found = try readAll("email,a,b,c\nx@y.io,1,2,3\n\nx@y.io,1,2\n")
        #expect(found == [.row(2, "x@y.io", ["a=1", "b=2", "c=3"]),
                          .error(.wrongFieldCount(file: "recipients.csv", line: 4, expected: 4, found: 3))])
        guard case .error(let error) = found.last else { return }
        #expect(error.description == "recipients.csv line 4: 3 fields, the header has 4")
        #expect(error.isRowError)
    }

    /// Row errors are thrown for their row only: skipping goes on, failing stops at the first.
    @Test func skipOrFail() throws {
        var text = "email,n\n"
        text += "good1@x.io,1\n"            /* line 2 */
        text += "good2@x.io,2,extra\n"      /* line 3: wrong count */
        text += "not-an-address,3\n"        /* line 4: no "@" */
        text += "\"a\nb@x.io\",4\n"         /* lines 5-6: control character in the address */
        text += "good5@x.io,5\n"            /* line 7 */
        var bytes = Array(text.utf8)
        bytes += [0x67, 0x40, 0x78, 0x2E, 0x69, 0x6F, 0x2C, 0xFF, 0x0A]     /* line 8: "g@x.io,\xFF" */
        bytes += Array("good9@x.io,9".utf8)                                     /* line 9 */

        let skipped = try withCSV(bytes) { items(&$0) }
        #expect(skipped == [
            .row(2, "good1@x.io", ["n=1"]),
            .error(.wrongFieldCount(file: "recipients.csv", line: 3, expected: 2, found: 3)),
            .error(.invalidAddress(file: "recipients.csv", line: 4, address: "not-an-address", reason: .missingAt)),
            .error(.invalidAddress(file: "recipients.csv", line: 5, address: "a\nb@x.io", reason: .forbiddenCharacter(0x0A))),
            .row(7, "good5@x.io", ["n=5"]),
            .error(.invalidUTF8(file: "recipients.csv", line: 8)),
            .row(9, "good9@x.io", ["n=9"]),
        ])
        #expect(skipped.allSatisfy { if case .error(let error) = $0 { error.isRowError } else { true } })

        /* Failing: the caller stops at the first thrown error. */
        let failed = try withCSV(bytes) { reader -> (rows: Int, error: RecipientCSVError?) in
            var rows = 0
            do throws(RecipientCSVError) {
                while try reader.next() != nil { rows += 1 }
                return (rows, nil)
            } catch {
                return (rows, error)
            }
        }
        #expect(failed.rows == 1)
        #expect(failed.error == .wrongFieldCount(file: "recipients.csv", line: 3, expected: 2, found: 3))
    }

    @Test func unterminatedQuoteEndsTheReader() throws {
        let found = try readAll("email,n\na@x.io,1\nb@x.io,\"open\nmore\nc@x.io,3\n")
        #expect(found == [.row(2, "a@x.io", ["n=1"]), .error(.unterminatedQuote(file: "recipients.csv", line: 3))])
        guard case .error(let error) = found.last else { return }
        #expect(!error.isRowError)
        #expect(error.description == "recipients.csv line 3: a quoted field is never closed")
    }

    @Test func overlongRecordIsARowErrorAndTheReaderResynchronises() throws {
        let long = String(repeating: "x", count: 100)
        let found = try readAll("email,n\na@x.io,1\nb@x.io,\"\(long)\n,\(long)\"\nc@x.io,3\n", chunkSize: 8, maximumRecordBytes: 32)
        #expect(found == [
            .row(2, "a@x.io", ["n=1"]),
            .error(.recordTooLong(file: "recipients.csv", line: 3, limit: 32)),
            .row(5, "c@x.io", ["n=3"]),
        ])
    }

    /// Property: the same rows whatever the chunk size, so no state is lost at a split.
    @Test func chunkSplitsDoNotMatter() throws {
        let text = "\u{FEFF}email,\"na,me\",note\r\n\"a@x.io\",\"A \"\"q\"\"\",\"l1\r\nl2\"\r\n\r\nb@x.io,B,\r\nbad,C,x\r\n"
            + "c@x.io,\"\",\"\"\"\"\r\nd@x.io,D,\"x\"\"\ny\"\rz@x.io,Z,end"
        let reference = try readAll(text)
        #expect(reference.count == 6)
        for chunkSize in [4, 5, 6, 7, 8, 11, 13, 64] {
            #expect(try readAll(text, chunkSize: chunkSize) == reference, "chunk size \(chunkSize)")
        }
    }

    @Test func readsFromAPipe() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        let text = Array("\u{FEFF}email,n\na@x.io,1\nb@x.io,2\n".utf8)
        _ = text.withUnsafeBytes { write(ends[1], $0.baseAddress!, $0.count) }
        close(ends[1])
        defer { close(ends[0]) }
        var reader = try RecipientCSVReader(fileDescriptor: ends[0], name: "pipe", chunkSize: 4)
        #expect(items(&reader) == [.row(2, "a@x.io", ["n=1"]), .row(3, "b@x.io", ["n=2"])])
    }

    @Test func ioErrors() {
        do throws(RecipientCSVError) {
            _ = try RecipientCSVReader(path: "/nonexistent/recipients.csv")
            Issue.record("opened a missing file")
        } catch {
            #expect(error == .io(path: "/nonexistent/recipients.csv", errno: ENOENT))
            #expect(!error.isRowError)
            #expect(error.description == "/nonexistent/recipients.csv: No such file or directory")
        }
        do throws(RecipientCSVError) {
            _ = try RecipientCSVReader(path: "/tmp")
            Issue.record("read a directory")
        } catch {
            #expect(error == .io(path: "/tmp", errno: EISDIR))
        }
    }

    @Test func readsByPath() throws {
        let folder = TemporaryFolder("csv")
        defer { folder.remove() }
        writeFile(folder.file("r.csv"), Array("email,n\na@x.io,1\n".utf8))
        var reader = try RecipientCSVReader(path: folder.file("r.csv"))
        #expect(items(&reader) == [.row(2, "a@x.io", ["n=1"])])
    }

    /// A million rows stream: after the first row only one chunk has been read, and every row arrives.
    @Test func aMillionRowsStream() throws {
        let folder = TemporaryFolder("csv")
        defer { folder.remove() }
        let path = folder.file("big.csv")
        let rows = 1_000_000
        do {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            defer { close(fd) }
            var chunk = Array("email,n\n".utf8)
            for index in 0..<rows {
                chunk += Array("u\(index)@example.com,\(index)\n".utf8)
                if chunk.count > 1 << 20 || index == rows - 1 {
                    _ = chunk.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
                    chunk.removeAll(keepingCapacity: true)
                }
            }
        }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var reader = try RecipientCSVReader(fileDescriptor: fd, name: "big.csv", chunkSize: 64 * 1024)
        let first = try reader.next()
        #expect(first?.email == "u0@example.com")
        #expect(lseek(fd, 0, SEEK_CUR) <= 64 * 1024)

        var count = 1
        var last: RecipientRow?
        while let row = try reader.next() {
            count += 1
            last = row
        }
        #expect(count == rows)
        #expect(last?.line == rows + 1)
        #expect(last?.email == "u\(rows - 1)@example.com")
        #expect(last?.variables.first?.1 == "\(rows - 1)")
    }
}
