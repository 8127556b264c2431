// DeliveryLogTests.swift - the delivery log: JSON text and escaping, writing from threads, rotation, flush and close

#if canImport(Glibc)
import CarrierTesting
import Glibc
#endif
import Testing
@testable import Delivery

/// record - a small record whose message id is `id`.
private func record(_ id: Int, text: String? = nil) -> DeliveryLogRecord {
    DeliveryLogRecord(time: 1_700_000_000_000 + Int64(id), event: .delivered, messageID: "m\(id)", recipient: "r\(id)@example.com",
                      campaign: "c", site: "example.com", host: "mx.example.com", code: 250, text: text, attempt: 1)
}

/// lines - the lines of a file (without their line endings); nil when it does not exist.
private func lines(_ path: String) -> [String]? {
    guard let bytes = readFile(path) else { return nil }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
}

/// messageNumber - the number in `"message_id":"mN"` of a line.
private func messageNumber(_ line: String) -> Int? {
    guard let start = line.firstRange(of: "\"message_id\":\"m") else { return nil }
    return Int(line[start.upperBound...].prefix { $0.isNumber })
}

@Suite("Delivery log")
struct DeliveryLogTests {
    @Test func formatsEveryField() {
        let full = DeliveryLogRecord(time: 1_700_000_000_123, event: .deferred, messageID: "0001", recipient: "bob@example.com",
                                     campaign: "spring", site: "example.com", host: "mx1.example.com", code: 451,
                                     enhancedCode: "4.7.1", text: "try later", attempt: 3, latencyMilliseconds: 12.5,
                                     nextAttempt: 1_700_000_600_000)
        #expect(DeliveryLog.format(full) == #"{"time":1700000000123,"event":"deferred","message_id":"0001","recipient":"bob@example.com","#
            + #""campaign":"spring","site":"example.com","host":"mx1.example.com","code":451,"enhanced_code":"4.7.1","#
            + #""text":"try later","attempt":3,"latency_ms":12.5,"next_attempt":1700000600000}"#)
    }

    @Test func omitsNilFields() {
        let minimal = DeliveryLogRecord(time: 5, event: .received, messageID: "m", recipient: "r@x.io")
        #expect(DeliveryLog.format(minimal)
            == #"{"time":5,"event":"received","message_id":"m","recipient":"r@x.io","campaign":"","site":"","attempt":0}"#)
    }

    @Test(arguments: [
        ("plain", #""plain""#),
        ("quote \" backslash \\", #""quote \" backslash \\""#),
        ("line\nbreak\r\ttab", #""line\u000abreak\u000d\u0009tab""#),
        ("\u{0}\u{1}\u{1F}\u{7F}", #""\u0000\u0001\u001f"# + "\u{7F}\""),
        ("Zoë 日本 🙂", "\"Zoë 日本 🙂\""),
        ("</script>", #""</script>""#),
    ])
    func escapesStrings(_ value: String, _ expected: String) {
        var out: [UInt8] = []
        DeliveryLog.quoted(value, &out)
        #expect(String(decoding: out, as: UTF8.self) == expected)
    }

    @Test func everyEventName() {
        let names = DeliveryLogRecord.Event.allCases.map { event in
            DeliveryLog.format(DeliveryLogRecord(time: 0, event: event, messageID: "", recipient: ""))
        }
        #expect(names.map { $0.contains("\"event\":\"") } == [true, true, true, true, true])
        #expect(DeliveryLogRecord.Event.allCases.map(\.rawValue) == ["received", "delivered", "deferred", "bounced", "expired"])
    }

    @Test(arguments: [(12.5, "12.5"), (3, "3"), (0.1234, "0.123"), (0.0004, "0"), (1.05, "1.05"), (-2.5, "-2.5"), (1000.001, "1000.001")])
    func latencyDecimals(_ value: Double, _ expected: String) {
        #expect(DeliveryLog.decimal(value) == expected)
    }

    @Test func nonFiniteLatencyIsLeftOut() {
        var value = record(1)
        value.latencyMilliseconds = .nan
        #expect(!DeliveryLog.format(value).contains("latency_ms"))
        value.latencyMilliseconds = .infinity
        #expect(!DeliveryLog.format(value).contains("latency_ms"))
    }

    @Test func flushWritesEverythingAppended() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let log = try DeliveryLog(path: folder.file("delivery.log"))
        let records = (0..<10).map { record($0, text: "line \"\($0)\"\nnext") }
        for value in records { log.append(value) }
        log.flush()
        #expect(lines(folder.file("delivery.log")) == records.map(DeliveryLog.format))
        log.close()
        #expect(log.lastError == nil)
        #expect(log.droppedLines == 0)
    }

    @Test func writesWithoutAFlush() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let log = try DeliveryLog(path: folder.file("delivery.log"))
        defer { log.close() }
        log.append(record(1))
        /* The writer's own timer writes the line; wait for it (generously) without flushing. */
        var found: [String]? = nil
        for _ in 0..<500 where (found ?? []).isEmpty {
            found = lines(folder.file("delivery.log"))
            if (found ?? []).isEmpty { usleep(10_000) }
        }
        #expect(found == [DeliveryLog.format(record(1))])
    }

    @Test func appendsFromManyThreadsKeepLinesWhole() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let log = try DeliveryLog(path: folder.file("delivery.log"))
        let threads = 4, perThread = 5000
        var handles: [pthread_t] = []
        final class Job: @unchecked Sendable {
            /* @unchecked: immutable after init. */
            let log: DeliveryLog, first: Int, count: Int
            init(log: DeliveryLog, first: Int, count: Int) { self.log = log; self.first = first; self.count = count }
        }
        for index in 0..<threads {
            let job = Unmanaged.passRetained(Job(log: log, first: index * perThread, count: perThread)).toOpaque()
            var handle = pthread_t()
            let created = pthread_create(&handle, nil, { context in
                let job = Unmanaged<Job>.fromOpaque(context!).takeRetainedValue()
                for id in job.first..<(job.first + job.count) { job.log.append(record(id, text: String(repeating: "x", count: id % 50))) }
                return nil
            }, job)
            #expect(created == 0)
            handles.append(handle)
        }
        for handle in handles { pthread_join(handle, nil) }
        log.close()

        let written = lines(folder.file("delivery.log")) ?? []
        #expect(written.count == threads * perThread)
        #expect(Set(written.compactMap(messageNumber)) == Set(0..<(threads * perThread)))
        #expect(written.allSatisfy { $0.hasPrefix("{\"time\":") && $0.hasSuffix("}") })
    }

    /// Rotation: files are named .1 ... .keep, none passes maxBytes, lines are whole and in order, and
    /// with enough files kept none is lost.
    @Test(arguments: [3, 100])
    func rotatesBySize(keep: Int) throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let path = folder.file("delivery.log")
        let maxBytes = 1000
        let log = try DeliveryLog(path: path, maxBytes: maxBytes, keep: keep)
        let total = 200
        for id in 0..<total {
            log.append(record(id, text: String(repeating: "y", count: id % 40)))
            if id % 17 == 0 { log.flush() }
        }
        log.close()

        /* Names: the live file and .1 up to .keep, no gaps, nothing beyond. */
        var files = [path]
        var index = 1
        while fileExists(path + ".\(index)") {
            files.append(path + ".\(index)")
            index += 1
        }
        #expect(!fileExists(path + ".\(keep + 1)"))
        if keep == 3 { #expect(files.count == 4) }

        /* Whole lines, each file within maxBytes, oldest file first. */
        var all: [Int] = []
        for file in files.reversed() {
            let bytes = readFile(file) ?? []
            #expect(bytes.count <= maxBytes, "\(file) has \(bytes.count) bytes")
            #expect(bytes.last == 0x0A, "\(file) ends mid-line")
            let fileLines = lines(file) ?? []
            #expect(fileLines.allSatisfy { $0.hasPrefix("{\"time\":") && $0.hasSuffix("}") })
            all += fileLines.compactMap(messageNumber)
        }
        /* What is kept is the newest run of records, in order; with keep 100, all of them. */
        #expect(all == Array((total - all.count)..<total))
        if keep == 100 { #expect(all.count == total) }
    }

    @Test func aLineLongerThanMaxBytesGetsAFileOfItsOwn() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let path = folder.file("delivery.log")
        let log = try DeliveryLog(path: path, maxBytes: 300, keep: 5)
        log.append(record(1))
        log.append(record(2, text: String(repeating: "z", count: 500)))
        log.append(record(3))
        log.close()
        #expect(lines(path + ".2")?.compactMap(messageNumber) == [1])
        #expect(lines(path + ".1")?.compactMap(messageNumber) == [2])
        #expect(lines(path)?.compactMap(messageNumber) == [3])
    }

    @Test func anExistingFileCountsTowardsMaxBytes() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let path = folder.file("delivery.log")
        writeFile(path, Array((String(repeating: "o", count: 899) + "\n").utf8))
        let log = try DeliveryLog(path: path, maxBytes: 1000, keep: 2)
        log.append(record(1))
        log.close()
        #expect(readFile(path + ".1")?.count == 900)
        #expect(lines(path)?.compactMap(messageNumber) == [1])
    }

    @Test func keepZeroDiscardsTheOldFile() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let path = folder.file("delivery.log")
        let log = try DeliveryLog(path: path, maxBytes: 250, keep: 0)
        for id in 0..<5 { log.append(record(id)) }
        log.close()
        #expect(!fileExists(path + ".1"))
        #expect(lines(path)?.compactMap(messageNumber) == [4])
    }

    @Test func closeDropsLaterAppendsAndIsIdempotent() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let path = folder.file("delivery.log")
        let log = try DeliveryLog(path: path)
        log.append(record(1))
        log.close()
        log.append(record(2))
        log.flush()
        log.close()
        #expect(lines(path)?.compactMap(messageNumber) == [1])
        #expect(log.droppedLines == 1)
    }

    @Test func releasingTheLogWritesWhatIsBuffered() throws {
        let folder = TemporaryFolder("log")
        defer { folder.remove() }
        let path = folder.file("delivery.log")
        do {
            let log = try DeliveryLog(path: path)
            log.append(record(7))
        }
        /* A queued timer may hold the log a little longer; its deinit writes the line either way. */
        var found: [Int] = []
        for _ in 0..<500 where found.isEmpty {
            found = lines(path)?.compactMap(messageNumber) ?? []
            if found.isEmpty { usleep(10_000) }
        }
        #expect(found == [7])
    }

    @Test func openErrorsAreTyped() {
        do throws(DeliveryLogError) {
            _ = try DeliveryLog(path: "/nonexistent/folder/delivery.log")
            Issue.record("opened a log in a missing folder")
        } catch {
            #expect(error == DeliveryLogError(path: "/nonexistent/folder/delivery.log", errno: ENOENT, operation: "open"))
            #expect(error.description == "/nonexistent/folder/delivery.log: open: No such file or directory")
        }
    }
}
