// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "reflectd",
    products: [
        .library(name: "Reactor", targets: ["Reactor"]),
        .executable(name: "reflectd", targets: ["reflectd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
    ],
    targets: [
        // C shims for what Glibc does not import into Swift (epoll, accept4, eventfd, timerfd, signalfd).
        .systemLibrary(name: "CEpoll", path: "Sources/CEpoll"),
        // The reusable reactor: knows nothing about echo.
        .target(
            name: "Reactor",
            dependencies: [
                "CEpoll",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The echo protocol: the exit-line detector and the echo handler. Knows nothing about epoll.
        .target(name: "Echo", dependencies: ["Reactor"]),
        .executableTarget(
            name: "reflectd",
            dependencies: [
                "Reactor", "Echo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor", "CEpoll"]),
        .testTarget(name: "ReflectdTests", dependencies: ["Echo", "Reactor", "CEpoll"]),
    ]
)
