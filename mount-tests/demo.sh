#!/usr/bin/env bash
# The main job on a fresh machine, as far as tahoe-mount goes today: build in release mode, bring up a local grid of
# three real tahoe-lafs 1.20 storage nodes (no introducer), give it a grid service directory (GSD) with every
# server announced and enrolled, ask every server how it is through the invitation alone, put a file on the grid and
# get it back, then run the benchmarks: immutable put/get (ours beside `tahoe put`/`tahoe get`, on a 10-node grid of
# its own), GSD bootstrap, raw share transfer (ours beside Tahoe's own client) and the erasure codec (ours beside
# Python zfec). The mount comes next.
# The grid stays up afterwards for experiments; stop it with: mount-tests/grid.py stop mount-tests/work/demo
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
TAHOE_MOUNT_PYTHON=$(mount-tests/venv.sh | tail -n 1)
export TAHOE_MOUNT_PYTHON
cargo build --release --quiet
demo=mount-tests/work/demo
bin=target/release/tahoe-mount
"$TAHOE_MOUNT_PYTHON" mount-tests/grid.py start "$demo" 3
echo "== the grid service directory: the operator creates it on storage0, each server announces itself, the"
echo "   operator enrolls it; clients then need only the invitation"
nurl0=$("$TAHOE_MOUNT_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["servers"][0]["nurl"])' "$demo/grid.json")
if [ ! -f "$demo/gsd.json" ]; then
  "$bin" gsd create --state "$demo/gsd.json" --server "$nurl0" --config-dir "$demo/tahoe-mount"
fi
"$bin" gsd invite --state "$demo/gsd.json" > "$demo/invitation.json"
for node in "$demo"/storage*; do
  gsa=$("$bin" announce --node-dir "$node" --grid "@$demo/invitation.json" --config-dir "$demo/tahoe-mount")
  "$bin" gsd enroll --state "$demo/gsd.json" --config-dir "$demo/tahoe-mount" "$(basename "$node")" "$gsa"
done
"$bin" gsd list --state "$demo/gsd.json"
export TAHOE_MOUNT_CACHE_DIR="$demo/client-cache"
echo "== tahoe-mount servers --grid @$demo/invitation.json"
"$bin" servers --grid "@$demo/invitation.json"
echo "== tahoe-mount put / get of a 20 MB file through the grid (2-of-3, happy 3: the demo grid has three servers)"
demo_file=$demo/demo.bin
head -c 20000000 /dev/urandom > "$demo_file"
cap=$("$bin" put --grid "@$demo/invitation.json" --config-dir "$demo/tahoe-mount" \
  --shares-needed 2 --shares-happy 3 --shares-total 3 "$demo_file")
echo "$cap"
"$bin" get --grid "@$demo/invitation.json" "$cap" "$demo_file.back"
cmp "$demo_file" "$demo_file.back" && echo "identical"
echo "== immutable files: tahoe-mount beside tahoe put / tahoe get (256 MiB)"
"$TAHOE_MOUNT_PYTHON" benches/immutable.py --bin target/release/tahoe-mount
echo "== grid service directory bootstrap"
cargo bench --quiet --bench gsd
echo "== storage protocol throughput"
cargo bench --quiet --bench gbs
echo "== erasure codec"
cargo bench --quiet --bench erasure
