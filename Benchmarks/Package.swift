// swift-tools-version:6.1
//
// Carrier's micro-benchmarks, run with `make bench` (swift package benchmark).
// A separate package so the main build and CI never compile the benchmark
// harness; it depends on the root package by path.
import PackageDescription

let package = Package(
    name: "CarrierBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Carrier", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // SQLite, found through pkg-config: SpoolBench's reference store.
        .systemLibrary(
            name: "CSQLite",
            path: "SpoolBench/CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .executableTarget(
            name: "EventCoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "Carrier", package: "Carrier"),
                .product(name: "EventCore", package: "Carrier"),
            ],
            path: "Benchmarks/EventCoreBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "SMTPBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "Bytes", package: "Carrier"),
                .product(name: "SMTP", package: "Carrier"),
            ],
            path: "Benchmarks/SMTPBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // Reply and command parsing: throughput and allocations per reply or command.
        .executableTarget(
            name: "ParserBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "SMTP", package: "Carrier"),
            ],
            path: "Benchmarks/ParserBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // Durable queue throughput and acknowledgement latency under concurrent producers:
        // a plain executable (not a package-benchmark target), run by hand.
        .executableTarget(
            name: "SpoolBench",
            dependencies: ["CSQLite", .product(name: "Spool", package: "Carrier")],
            path: "SpoolBench",
            exclude: ["CSQLite"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The scheduler at scale: 100,000 domains, 10,000,000 pending recipients, one core.
        .systemLibrary(name: "CMalloc", path: "SchedulerBench/CMalloc"),
        .executableTarget(
            name: "SchedulerBench",
            dependencies: ["CMalloc", .product(name: "Scheduler", package: "Carrier")],
            path: "SchedulerBench",
            exclude: ["CMalloc"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The delivery engine end to end against the in-process sink: transactional latency
        // while a bulk campaign drains through a rate-limited site.
        .executableTarget(
            name: "EngineBench",
            dependencies: [
                .product(name: "Delivery", package: "Carrier"),
                .product(name: "Sink", package: "Carrier"),
                .product(name: "Spool", package: "Carrier"),
                .product(name: "Scheduler", package: "Carrier"),
                .product(name: "EventCore", package: "Carrier"),
            ],
            path: "EngineBench",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
