// swift-tools-version:5.9
//
// Tether for Swift: the uniffi-generated `Tether` module over the `TetherFFI` C module, linked
// against the native library `libtether_uniffi` built by Cargo. Not compiled in this
// repository's CI (no Swift toolchain there): see README.md for how to build it on macOS or
// Linux, and for packaging the library as an XCFramework for iOS.
import PackageDescription

let package = Package(
    name: "Tether",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Tether", targets: ["Tether"]),
    ],
    targets: [
        // The C declarations of the native library (generated header and module map).
        .systemLibrary(name: "TetherFFI", path: "Sources/TetherFFI"),
        // The generated Swift API. Link search path: `swift build -Xlinker -L<cargo target dir>/debug`.
        .target(
            name: "Tether",
            dependencies: ["TetherFFI"],
            path: "Sources/Tether",
            linkerSettings: [.linkedLibrary("tether_uniffi")]
        ),
    ]
)
