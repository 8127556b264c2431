// main.swift - SpoolBench: durable queues under concurrent producers, as a Markdown table
//
// Usage: SpoolBench [--dir DIR] [--messages N] [--producers P] [--only WORKLOAD]
//
// Each workload gets a fresh directory DIR/<workload> (deleted and recreated),
// runs N messages of 2,048 bytes from P producer threads through the harness in
// Harness.swift, and prints one table row. Notes (versions, batching, row
// checks) go to standard error, so standard output is the table alone.

import Foundation

/// Options - the command line, with its defaults.
struct Options {
    var directory = "/tmp/spoolbench"  // --dir: parent of each workload's directory
    var messages = 200_000             // --messages: total over all producers
    var producers = 64                 // --producers: concurrent producer threads
    var only: String?                  // --only: run just this workload's key (or "bulk")
    var recipients = 1_000_000         // --recipients: campaign size for the bulk rows

    /// parse - read `arguments` (without the program name); exits with usage on a mistake.
    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { usage("\(flag) needs a value") }
            switch flag {
            case "--dir": options.directory = value
            case "--messages": options.messages = positive(value, flag)
            case "--producers": options.producers = positive(value, flag)
            case "--only": options.only = value
            case "--recipients": options.recipients = positive(value, flag)
            default: usage("unknown option \(flag)")
            }
        }
        guard options.messages >= options.producers else { usage("--messages must be at least --producers") }
        return options
    }

    /// positive - `value` as an integer above zero, or usage.
    private static func positive(_ value: String, _ flag: String) -> Int {
        guard let number = Int(value), number > 0 else { usage("\(flag) needs a positive integer, not \(value)") }
        return number
    }
}

/// Workload - one store under the producer harness.
struct Workload {
    let key: String                                            // --only name and subdirectory
    let run: (_ directory: String, _ options: Options) throws -> ProducerResult
}

/// workloads - every workload, in table order.
///
/// Carrier's Spool workloads are added here, next to the SQLite reference, once this
/// target depends on the Carrier package's `Spool` product.
func workloads() -> [Workload] {
    [
        Workload(key: "sqlite") { directory, options in
            try runSQLiteReference(directory: directory, producers: options.producers, messages: options.messages)
        },
        Workload(key: "spool") { directory, options in
            try runSpoolIndividual(directory: directory, producers: options.producers, messages: options.messages)
        },
        Workload(key: "sqlite-loops") { directory, options in
            try runSQLiteReference(directory: directory, producers: options.producers, messages: options.messages, callbacks: true)
        },
        Workload(key: "spool-loops") { directory, options in
            try runSpoolIndividual(directory: directory, producers: options.producers, messages: options.messages, callbacks: true)
        },
    ]
}

/// freshDirectory - DIR/key, emptied: every run starts from no files.
func freshDirectory(_ options: Options, _ key: String) throws -> String {
    let path = options.directory + "/" + key
    if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// settle - start each workload on a quiet disk: write back what earlier ones left dirty
/// and, when allowed (root), drop the page cache, so no workload pays for another's writes.
func settle() {
    sync()
    if let handle = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") {
        handle.write(Data("3\n".utf8))
        try? handle.close()
    }
    sleep(1)
}

/// printNote - a line for the reader on standard error, outside the table.
func printNote(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// usage - explain the command line and exit with status 2.
func usage(_ problem: String) -> Never {
    let keys = workloads().map(\.key).joined(separator: "|")
    printNote("SpoolBench: \(problem)\nusage: SpoolBench [--dir DIR] [--messages N] [--producers P] [--only \(keys)]")
    exit(2)
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let selected = workloads().filter { options.only == nil || $0.key == options.only }
if selected.isEmpty && options.only != "bulk" { usage("no workload named \(options.only ?? "")") }

printNote("SpoolBench: \(options.messages) messages of \(BenchMessage.bodySize) bytes, "
          + "\(options.producers) producers, under \(options.directory)")
print(markdownHeader())
for workload in selected {
    do {
        settle()
        let directory = try freshDirectory(options, workload.key)
        let result = try workload.run(directory, options)
        try? FileManager.default.removeItem(atPath: directory)
        print(markdownRow(result))
        printNote("\(workload.key): \(result.messages) messages in \(String(format: "%.2f", result.wallSeconds)) s")
    } catch {
        printNote("SpoolBench: \(workload.key) failed: \(error)")
        exit(1)
    }
}


if options.only == nil || options.only == "bulk" {
    print("")
    print("| spool operation | amount | wall time | rate |")
    print("|---|---:|---:|---:|")
    do {
        settle()
        for line in try runSpoolBulk(directory: try freshDirectory(options, "bulk"), recipients: options.recipients) { print(line) }
    } catch {
        printNote("SpoolBench: bulk failed: \(error)")
        exit(1)
    }
}
