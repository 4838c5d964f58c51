// swift-tools-version:5.9
//
// Baseline SwiftNIO echo server for reflectd's comparison benchmarks.
// Standalone package: build with
//   swift build -c release --package-path benchmarks/baselines/nio-echo
import PackageDescription

let package = Package(
    name: "nio-echo",
    platforms: [.macOS(.v10_15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "nio-echo",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
