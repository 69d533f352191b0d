#!/usr/bin/env bash
# Builds a release tarball of the tahoe-mount binary with its SHA-256 sum, into target/dist/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(uname -m)
cargo build --release --locked --quiet
dist=target/dist/tahoe-mount-$version-$arch-linux
rm -rf "$dist" && mkdir -p "$dist"
cp target/release/tahoe-mount README.md "$dist/"
tar -C target/dist -czf "$dist.tar.gz" "$(basename "$dist")"
(cd target/dist && sha256sum "$(basename "$dist").tar.gz" > "$(basename "$dist").tar.gz.sha256")
echo "$dist.tar.gz"
