#!/bin/sh
# Regenerates the Swift sources of this package from the uniffi crate, with the in-workspace
# uniffi-bindgen (so generator and runtime versions match). Run it after changing the Rust API
# or its doc comments; `cargo xtask test` fails while the committed sources are stale.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$root"
cargo build -p tether-uniffi -p tether-uniffi-bindgen
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
target/debug/uniffi-bindgen generate --library target/debug/libtether_uniffi.so \
    --language swift --out-dir "$out" --no-format
cp "$out/Tether.swift" "$here/Sources/Tether/Tether.swift"
cp "$out/TetherFFI.h" "$here/Sources/TetherFFI/TetherFFI.h"
cp "$out/TetherFFI.modulemap" "$here/Sources/TetherFFI/module.modulemap"
echo "Swift sources regenerated in $here/Sources"
