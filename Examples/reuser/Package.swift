// swift-tools-version:6.0
// A reuser of reflectd's products, outside the library's sources: depends on this repository by path and
// on its library products only. scripts/reuser-check.sh builds it and tries it over loopback.
import PackageDescription

// The repository is two folders up; a path dependency's identity is its folder's name, which a
// clone may have chosen freely, so both are computed here.
let root = Context.packageDirectory.split(separator: "/").dropLast(2)
let rootPath = "/" + root.joined(separator: "/")
let identity = String(root.last ?? "reflectd").lowercased()

let package = Package(
    name: "reuser",
    dependencies: [
        .package(path: rootPath),
        // For Logger, which the upgrade takes (the root depends on it too: one version resolved).
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "reuser",
            dependencies: ["Reactor", "ClientAdmission", "ServerKit", "ZeroDropUpgrade", "NonBlockingLog"]
                .map { .product(name: $0, package: identity) } + [.product(name: "Logging", package: "swift-log")]
        ),
    ]
)
