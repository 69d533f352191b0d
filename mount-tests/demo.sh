#!/usr/bin/env bash
# The main job on a fresh machine: build in release mode, bring up a local grid of three real tahoe-lafs 1.20
# storage nodes (no introducer), give it a grid service directory (GSD) with every server announced and enrolled,
# ask every server how it is through the invitation alone, put a file on the grid and get it back, then MOUNT the
# grid (FUSE) through the invitation, copy a tree in, show it (ls, .grid/, status, df), unmount (waiting for the
# uploads), mount again and check it. The benchmarks are a script of their own: benches/all.sh.
# The grid and the mount stay up afterwards for experiments (mount-tests/work/demo/mnt); stop them with:
#   target/release/tahoe-mount unmount mount-tests/work/demo/mnt --data-dir mount-tests/work/demo/data
#   mount-tests/grid.py stop mount-tests/work/demo
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
TAHOE_MOUNT_PYTHON=$(mount-tests/venv.sh | tail -n 1)
export TAHOE_MOUNT_PYTHON
mount-tests/deps.sh
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
echo "== the mount: tahoe-mount @invitation.json $demo/mnt (2-of-3, happy 3)"
mnt=$demo/mnt
mkdir -p "$mnt"
mount_args=(--grid-max-age 0 --config-dir "$demo/tahoe-mount" --data-dir "$demo/data"
  --shares-needed 2 --shares-happy 3 --shares-total 3)
"$bin" unmount "$mnt" --data-dir "$demo/data" 2>/dev/null || true
"$bin" "@$demo/invitation.json" "$mnt" "${mount_args[@]}"
echo "-- /.grid: one announcement per enrolled server"
ls -l "$mnt/.grid"
rm -rf "$demo/tree" && "$TAHOE_MOUNT_PYTHON" mount-tests/maketree.py "$demo/tree" --files 200 --big-size 20000000
rm -rf "$mnt/tree"
echo "-- rsync -a of that tree into the mount"
time rsync -a "$demo/tree/" "$mnt/tree/"
ls -l "$mnt/tree" | head -n 8 || true
echo "-- tahoe-mount status: what is still on its way to the grid"
"$bin" status "$mnt" --data-dir "$demo/data" | head -n 8 || true
df -h "$mnt"
echo "-- unmount: waits for every upload"
"$bin" unmount "$mnt" --data-dir "$demo/data"
"$bin" "@$demo/invitation.json" "$mnt" "${mount_args[@]}"
echo "-- mounted again: diff -r and rsync -n -c -a against the original"
diff -r "$demo/tree" "$mnt/tree" && rsync -n -c -a --itemize-changes "$demo/tree/" "$mnt/tree/" && echo "identical"
echo "-- the mount stays up: $mnt (benchmarks: benches/all.sh)"
