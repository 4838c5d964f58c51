// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "reflectd",
    products: [
        .library(name: "Reactor", targets: ["Reactor"]),
        .library(name: "ClientAdmission", targets: ["ClientAdmission"]),
        .library(name: "NonBlockingLog", targets: ["NonBlockingLog"]),
        .library(name: "ServerKit", targets: ["ServerKit"]),
        .library(name: "ZeroDropUpgrade", targets: ["ZeroDropUpgrade"]),
        .executable(name: "reflectd", targets: ["reflectd"]),
        .executable(name: "reflect", targets: ["reflect"]),
        .executable(name: "reflect-bench", targets: ["reflect-bench"]),
        .executable(name: "chat", targets: ["chat"]),
        .executable(name: "resp-server", targets: ["resp-server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.5.0"),
    ],
    targets: [
        // C shims for what Glibc does not import into Swift (epoll, accept4, eventfd, timerfd, signalfd).
        .systemLibrary(name: "CEpoll", path: "Sources/CEpoll"),
        // The exit-line scan in C, for an AVX2 version chosen at run time (no epoll: Echo imports it).
        .systemLibrary(name: "CScan", path: "Sources/CScan"),
        // The reusable reactor: knows nothing about echo.
        .target(
            name: "Reactor",
            dependencies: [
                "CEpoll",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Who a client is and whether it may stay, for any handler: PROXY v1/v2 headers, the
        // sources trusted to send them, and the per-client connection limit.
        .target(name: "ClientAdmission", dependencies: ["Reactor"]),
        // Logging that never blocks its caller: a swift-log LogHandler over a bounded queue drained
        // by one writer thread.
        .target(name: "NonBlockingLog", dependencies: ["CEpoll", .product(name: "Logging", package: "swift-log")]),
        // What a server process needs around its reactors: the fd limit, systemd socket activation
        // and sd_notify, health checks, the signal policy, unbuffered stdout.
        .target(
            name: "ServerKit",
            dependencies: ["Reactor", .product(name: "SystemPackage", package: "swift-system"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // The zero-drop binary upgrade, generic over the handler: the spawn, the hand-over protocol
        // and the connection record; a handler supplies a codec for its own state.
        .target(
            name: "ZeroDropUpgrade",
            dependencies: ["Reactor", .product(name: "Logging", package: "swift-log")]
        ),
        // The echo protocol: the exit-line detector and the echo handler. Knows nothing about epoll.
        .target(
            name: "Echo",
            dependencies: ["Reactor", "CScan", .product(name: "Logging", package: "swift-log")]
        ),
        // What the executables share besides the Reactor: the package version (one place) and
        // command-line checks.
        .target(
            name: "ToolSupport",
            dependencies: ["ClientAdmission",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // The server.
        .executableTarget(
            name: "reflectd",
            dependencies: [
                "Reactor", "Echo", "ToolSupport", "NonBlockingLog", "ClientAdmission", "ServerKit", "ZeroDropUpgrade",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The interactive client: stdin and the socket on one reactor.
        .executableTarget(
            name: "reflect",
            dependencies: ["Reactor", "ServerKit", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The load generator.
        .executableTarget(
            name: "reflect-bench",
            dependencies: [
                "Reactor", "ServerKit", "ToolSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // Example: a line-based chat server on the public Reactor API only.
        .executableTarget(
            name: "chat",
            dependencies: ["Reactor", "ServerKit", "ToolSupport", "NonBlockingLog",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Examples/chat"
        ),
        // Example: a Redis-protocol server. The protocol (parser, keyspace, commands) knows nothing
        // about the Reactor, so the tests and the fuzzer use it alone.
        .target(name: "RESP", path: "Examples/resp/RESP"),
        .executableTarget(
            name: "resp-server",
            dependencies: ["RESP", "Reactor", "ClientAdmission", "ServerKit", "ToolSupport", "NonBlockingLog", "ZeroDropUpgrade",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Examples/resp/Server"
        ),
        // What the test targets share: the one loopback client socket (deadlines on everything),
        // the one in-process reactor runner and the one process runner.
        .target(name: "TestSupport", dependencies: ["Reactor"], path: "Tests/TestSupport"),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor", "CEpoll", "TestSupport"]),
        .testTarget(
            name: "ReflectdTests",
            dependencies: ["Echo", "ClientAdmission", "Reactor", "CEpoll", "TestSupport", "NonBlockingLog",
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(name: "ClientAdmissionTests", dependencies: ["ClientAdmission", "Reactor"]),
        .testTarget(name: "ZeroDropUpgradeTests", dependencies: ["ZeroDropUpgrade"]),
        .testTarget(name: "ToolsTests", dependencies: ["CEpoll", "TestSupport"]),
        .testTarget(name: "ChatTests", dependencies: ["CEpoll", "TestSupport"]),
        .testTarget(name: "RespTests", dependencies: ["RESP", "CEpoll", "TestSupport"]),
    ]
)
