#!/usr/bin/env bash
# The main job on a fresh machine, as far as tahoe-mount goes today: build in release mode, bring up a local grid of
# three real tahoe-lafs 1.20 storage nodes (no introducer), ask every server how it is over Tahoe's HTTP storage
# protocol, then run the benchmarks: raw share transfer (ours beside Tahoe's own client) and the erasure codec
# (ours beside Python zfec). Later milestones move this to: a grid service directory, and a mount.
# The grid stays up afterwards for experiments; stop it with: mount-tests/grid.py stop mount-tests/work/demo
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
TAHOE_MOUNT_PYTHON=$(mount-tests/venv.sh | tail -n 1)
export TAHOE_MOUNT_PYTHON
cargo build --release --quiet
"$TAHOE_MOUNT_PYTHON" mount-tests/grid.py start mount-tests/work/demo 3
echo "== tahoe-mount servers --servers-file mount-tests/work/demo/servers.yaml"
target/release/tahoe-mount servers --servers-file mount-tests/work/demo/servers.yaml
echo "== storage protocol throughput"
cargo bench --quiet --bench gbs
echo "== erasure codec"
cargo bench --quiet --bench erasure
