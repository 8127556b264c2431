// swift-tools-version:6.1
//
// Carrier: a high-throughput, multi-threaded bulk SMTP delivery engine for Linux.
// The module table and the rules for what may import what are in ARCHITECTURE.md;
// dependencies point down that table.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Carrier",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "carrier", targets: ["carrier"]),
        .library(name: "Bytes", targets: ["Bytes"]),
        .library(name: "EventCore", targets: ["EventCore"]),
        .library(name: "SMTP", targets: ["SMTP"]),
        .library(name: "SMTPStreams", targets: ["SMTPStreams"]),
        .library(name: "Spool", targets: ["Spool"]),
        .library(name: "Scheduler", targets: ["Scheduler"]),
        .library(name: "Sink", targets: ["Sink"]),
        .library(name: "Blast", targets: ["Blast"]),
        .library(name: "Delivery", targets: ["Delivery"]),
        .library(name: "Injection", targets: ["Injection"]),
        .library(name: "Carrier", targets: ["Carrier"]),
        .library(name: "CarrierTesting", targets: ["CarrierTesting"]),
    ],
    dependencies: [
        // Argument parsing for the thin `carrier` front end (builds in ~30 s; saves a hand parser).
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // HdrHistogram for the load generator's latency percentiles (small; pulls swift-numerics).
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // The spool's due-time heap (HeapModule only: one small module, a few seconds to build).
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        // The HTTP injection API's server: no dependencies of its own, ~15 s to build (Hummingbird
        // or Vapor would bring SwiftNIO: minutes per CI build); HTTP/1.1 parsing we need not write.
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.1"),
    ],
    targets: [
        // System libraries, found through pkg-config; `make` installs the apt providers.
        .systemLibrary(name: "CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CCares", pkgConfig: "libcares", providers: [.apt(["libc-ares-dev"])]),
        // C shims for OpenSSL macros Swift cannot import; every symbol is prefixed `carrier_`.
        .target(name: "CCarrierShims", dependencies: ["COpenSSL"]),

        // Contiguous byte buffers with stable addresses, shared by every layer that moves bytes.
        .target(name: "Bytes", swiftSettings: strict),
        .target(
            name: "EventCore",
            dependencies: ["Bytes", "CLibUV", "COpenSSL", "CCares", "CCarrierShims"],
            swiftSettings: strict
        ),
        // The SMTP protocol without I/O: parsers, session state machines, AUTH, encoder, addresses.
        .target(name: "SMTP", dependencies: ["Bytes"], swiftSettings: strict),
        // SMTP sessions driven over EventCore streams: what the engine, the sink, the load
        // generator and the listener share (TLS upgrades, timers, OpenSSL for SASL).
        .target(name: "SMTPStreams", dependencies: ["EventCore", "SMTP"], swiftSettings: strict),
        // CRC-32C with the CPU's crc32 instruction, for the spool's record checksums.
        .target(name: "CCRC32C"),
        // The persistent, sharded on-disk queue (POSIX file I/O on its own threads; no event core).
        .target(
            name: "Spool",
            dependencies: ["CCRC32C", .product(name: "HeapModule", package: "swift-collections")],
            swiftSettings: strict
        ),
        // Per-destination shaping, backoff, suspension and priorities: pure logic, injected clock.
        .target(
            name: "Scheduler",
            dependencies: [
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        // The test receiver (`carrier sink`) and the load generator (`carrier blast`).
        .target(name: "Sink", dependencies: ["EventCore", "SMTP", "SMTPStreams"], swiftSettings: strict),
        .target(
            name: "Blast",
            dependencies: ["EventCore", "SMTP", "SMTPStreams", .product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: strict
        ),
        // The delivery engine: worker shards, routing, connection pools, the delivery log.
        .target(
            name: "Delivery",
            dependencies: ["EventCore", "SMTP", "SMTPStreams", "Spool", "Scheduler"],
            swiftSettings: strict
        ),
        // Injection: the SMTP submission listener and the HTTP API, both acknowledging only durable mail.
        .target(
            name: "Injection",
            dependencies: ["EventCore", "SMTP", "SMTPStreams", "Spool", "Delivery",
                           .product(name: "FlyingFox", package: "FlyingFox")],
            swiftSettings: strict
        ),
        .target(
            name: "Carrier",
            dependencies: ["EventCore", "SMTP", "Scheduler", "Spool", "Delivery", "Sink", "Injection"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "carrier",
            dependencies: [
                "Carrier", "Delivery", "Sink", "Blast", "Spool", "Scheduler", "Injection",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "CarrierTesting",
            dependencies: ["EventCore", "SMTP"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "EventCoreTests",
            dependencies: ["EventCore", "CarrierTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SinkTests",
            dependencies: ["Sink", "SMTPStreams", "CarrierTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "BlastTests",
            dependencies: ["Blast", "Sink", "SMTPStreams", "CarrierTesting"],
            exclude: ["Peers"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SMTPStreamsTests",
            dependencies: ["SMTPStreams", "CarrierTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ConfigurationTests",
            dependencies: ["Carrier", "Scheduler", "Spool"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SpoolTests",
            dependencies: ["Spool", "CarrierTesting"],
            swiftSettings: strict
        ),
        // The process SpoolCrashTests starts and SIGKILLs: enqueues and records outcomes,
        // printing each acknowledgement. Built by `swift build --build-tests`; found next to the test bundle.
        .executableTarget(
            name: "SpoolCrashChild",
            dependencies: ["Spool", "CarrierTesting"],
            path: "Tests/SpoolCrashChild",
            swiftSettings: strict
        ),
        .testTarget(
            name: "SMTPTests",
            dependencies: ["SMTP", "EventCore", "CarrierTesting"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "DeliveryTests",
            dependencies: ["Delivery", "Carrier", "Sink", "Spool", "Scheduler", "SMTPStreams", "CarrierTesting"],
            exclude: ["Peers"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "InjectionTests",
            dependencies: ["Injection", "Carrier", "Delivery", "Sink", "Spool", "SMTPStreams", "CarrierTesting"],
            exclude: ["Peers"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SchedulerTests",
            dependencies: ["Scheduler", "CarrierTesting"],
            swiftSettings: strict
        ),
    ]
)
