#!/usr/bin/env bash
# Every benchmark, each figure beside the peer's from the same run (Tahoe-LAFS 1.20 on the same local grid, Python
# zfec, the local disk): the mount (benches/mount.py: 1 GiB sequential write and read, tahoe-mount get, fio random
# reads, ls -l, small files), immutable put/get (benches/immutable.py), check and repair (benches/check.py), the
# grid service directory bootstrap, raw share transfer, directories, a deep walk and the erasure codec (cargo bench).
# Needs root for the mount's cold-cache figures (drop_caches) and about 12 GiB free; takes about half an hour.
# TAHOE_MOUNT_BENCH_QUICK=1 runs the small sizes CI uses.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
TAHOE_MOUNT_PYTHON=$(mount-tests/venv.sh | tail -n 1)
export TAHOE_MOUNT_PYTHON
mount-tests/deps.sh
quick=()
if [ -n "${TAHOE_MOUNT_BENCH_QUICK:-}" ]; then
  quick=(--quick)
fi
for bench in erasure gbs directories gsd deep_walk; do
  echo "== cargo bench --bench $bench"
  cargo bench --quiet --bench "$bench"
done
bin="${CARGO_TARGET_DIR:-target}/release/tahoe-mount"
echo "== immutable files: tahoe-mount put/get beside tahoe put/get"
"$TAHOE_MOUNT_PYTHON" benches/immutable.py "${quick[@]}" --bin "$bin"
echo "== check, renew and repair beside tahoe deep-check"
"$TAHOE_MOUNT_PYTHON" benches/check.py "${quick[@]}" --bin "$bin"
echo "== the mount beside Tahoe 1.20 and the local disk"
"$TAHOE_MOUNT_PYTHON" benches/mount.py "${quick[@]}" --bin "$bin"
