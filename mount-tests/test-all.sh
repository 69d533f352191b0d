#!/usr/bin/env bash
# Runs every test of tahoe-mount, as CI does: formatting, lints, unit, property and interop tests (against the
# reference implementation, tahoe-lafs 1.20.0, and Python zfec, installed into a cached venv; the storage tests
# start real tahoe-lafs storage nodes on 127.0.0.1 and stop them), the mount tests (real FUSE, real tools, on a
# real grid), other projects' POSIX suites on the mount (pjdfstest, xfstests' fsx and fsstress, as root), and a quick
# run of the benchmarks so they cannot rot. Needs the Rust toolchain; installs everything else it needs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
TAHOE_MOUNT_PYTHON=$(mount-tests/venv.sh | tail -n 1)
export TAHOE_MOUNT_PYTHON
mount-tests/deps.sh
echo "== reference implementation: $("$TAHOE_MOUNT_PYTHON" -c 'import allmydata, zfec; print("tahoe-lafs", allmydata.__version__, "/ zfec", zfec.__version__)')"
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --quiet
echo "== benchmarks, quick mode (figures are for humans, not asserted)"
TAHOE_MOUNT_BENCH_QUICK=1 cargo bench --quiet --bench erasure
TAHOE_MOUNT_BENCH_QUICK=1 cargo bench --quiet --bench gbs
TAHOE_MOUNT_BENCH_QUICK=1 cargo bench --quiet --bench directories
TAHOE_MOUNT_BENCH_QUICK=1 cargo bench --quiet --bench gsd
TAHOE_MOUNT_BENCH_QUICK=1 cargo bench --quiet --bench deep_walk
# cargo bench has built the release binary; this starts a grid of its own and stops it.
"$TAHOE_MOUNT_PYTHON" benches/immutable.py --quick --bin "${CARGO_TARGET_DIR:-target}/release/tahoe-mount"
"$TAHOE_MOUNT_PYTHON" benches/check.py --quick --bin "${CARGO_TARGET_DIR:-target}/release/tahoe-mount"
echo "== the mount: real FUSE on a real tahoe-lafs grid (cp -a, tar, rsync, restic, kill -9, servers stopped, fsx)"
"$TAHOE_MOUNT_PYTHON" mount-tests/test_mount.py --quick --bin "${CARGO_TARGET_DIR:-target}/release/tahoe-mount"
"$TAHOE_MOUNT_PYTHON" benches/mount.py --quick --bin "${CARGO_TARGET_DIR:-target}/release/tahoe-mount"
echo "== peer suites on the mount: pjdfstest (every group, as root), fsx (100 000 ops, with and without mmap),"
echo "   fsstress (-p 4 -n 2000, then a remount that must read every file back), built from ../shared/peer-suites"
"$TAHOE_MOUNT_PYTHON" mount-tests/peer_suites.py all --bin "${CARGO_TARGET_DIR:-target}/release/tahoe-mount"
echo "== all tests passed"
