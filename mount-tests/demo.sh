#!/usr/bin/env bash
# The main job on a fresh machine, as far as tahoe-mount goes today: build in release mode, bring up a local grid of
# three real tahoe-lafs 1.20 storage nodes (no introducer), ask every server how it is over Tahoe's HTTP storage
# protocol, put a file on the grid and get it back, then run the benchmarks: immutable put/get (ours beside
# `tahoe put`/`tahoe get`, on a 10-node grid of its own), raw share transfer (ours beside Tahoe's own client) and
# the erasure codec (ours beside Python zfec). Later milestones move this to: a grid service directory, and a mount.
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
echo "== tahoe-mount put / get of a 20 MB file (2-of-3, happy 3: the demo grid has three servers)"
demo_file=mount-tests/work/demo/demo.bin
head -c 20000000 /dev/urandom > "$demo_file"
cap=$(target/release/tahoe-mount put --servers-file mount-tests/work/demo/servers.yaml \
  --config-dir mount-tests/work/demo/tahoe-mount --shares-needed 2 --shares-happy 3 --shares-total 3 "$demo_file")
echo "$cap"
target/release/tahoe-mount get --servers-file mount-tests/work/demo/servers.yaml "$cap" "$demo_file.back"
cmp "$demo_file" "$demo_file.back" && echo "identical"
echo "== immutable files: tahoe-mount beside tahoe put / tahoe get (256 MiB)"
"$TAHOE_MOUNT_PYTHON" benches/immutable.py --bin target/release/tahoe-mount
echo "== storage protocol throughput"
cargo bench --quiet --bench gbs
echo "== erasure codec"
cargo bench --quiet --bench erasure
