#!/usr/bin/env bash
# The main job on a fresh machine, as far as tahoe-mount goes today: build in release mode and run the erasure
# benchmark, our zfec-compatible SIMD codec beside Python zfec (what Tahoe-LAFS uses) measured in the same run.
# Later milestones move this to: bring up a local grid with a grid service directory, and mount it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
TAHOE_MOUNT_PYTHON=$(mount-tests/venv.sh | tail -n 1)
export TAHOE_MOUNT_PYTHON
cargo build --release --quiet
cargo bench --quiet --bench erasure
