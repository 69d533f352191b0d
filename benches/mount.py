#!/usr/bin/env python3
"""The tahoe-mount FUSE mount beside Tahoe-LAFS 1.20's own client and the local disk, in one run on one grid.

usage: mount.py [--quick] [--size BYTES] [--entries N] [--files N] [--nodes N] [--bin PATH] [--keep] [--fake-mount]

Starts a local grid (mountlib.Grid: 10 tahoe-lafs 1.20 storage nodes, a grid service directory, encoding 3-of-10
happy 7 as benches/immutable.py), mounts it, starts a Tahoe client node on the same grid, and measures:

  operation                     ours (the mount)                   tahoe                         local disk
  seq write 1 GiB               dd bs=1M conv=fsync: until fsync   tahoe put FILE                dd conv=fsync
                                returns (uploaded, happy)
  seq read 1 GiB, cold          1 MiB reads (and SHA-256) after    tahoe get CAP (stdout)        1 MiB reads, cold
                                a fresh mount (new data dir)
  the same by tahoe-mount get   tahoe-mount get ROOT/big (stdout): what the mount's reads are held to (>= 85 %)
  fio randread 4 KiB, cold      fio psync, iodepth 1, T seconds    web API GET with Range,       fio
                                                                   one at a time, T seconds
  ls -l, N-entry dir, cold/warm ls -l after a fresh mount, twice   tahoe ls -l, twice            ls -l, twice
  create M small files (4 KiB)  to the last close(); and until     tahoe cp -r (until linked)    write + sync -f
                                `unmount` returns (all uploaded)
Sizes: 1 GiB, 10 000 entries, 1000 files, fio 30 s; --quick (CI): 64 MiB, 1000 entries, 200 files, fio 5 s.

Cold means: `sync; echo 3 > /proc/sys/vm/drop_caches` (page cache, dentries, inodes; needs root) before the
operation, and for the mount a new daemon on a data directory it never used (so neither its spool nor its cache
holds the data: it comes from the grid). The `tahoe` figures include its CLI's start-up (about 1 s of Python
imports), shown on its own row. Every read is checked against what was written (SHA-256; ls: entry counts).
--fake-mount stands a bind mount of a local directory in for the mount, to exercise the script without it.
Run it with the venv's Python (mount-tests/venv.sh); any other python3 makes/reuses that venv.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

try:
    import allmydata  # noqa: F401  (only to know we run in the tahoe venv)
except ImportError:
    if os.environ.get("TAHOE_MOUNT_BENCH_REEXEC"):
        sys.exit("mount.py: the interpreter from venv.sh cannot import allmydata")
    out = subprocess.run(["bash", os.path.join(REPO, "mount-tests", "venv.sh")], stdout=subprocess.PIPE)
    if out.returncode != 0 or not out.stdout.strip():
        sys.exit(f"mount.py: no tahoe-lafs here, and mount-tests/venv.sh failed (status {out.returncode})")
    python = out.stdout.decode().strip().splitlines()[-1]
    os.environ["TAHOE_MOUNT_BENCH_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])

sys.path.insert(0, os.path.join(REPO, "mount-tests"))
import mountlib as ml  # noqa: E402
from mountlib import MiB, TestError  # noqa: E402

WORK = os.path.join(REPO, "mount-tests", "work", "bench-mount")
SMALL = 4096  # bytes per small file: above the 55 bytes of a literal cap, so each one is a real upload


class Cell:
    def __init__(self, seconds=None, text=None):
        self.seconds = seconds
        self.text = text

    def __str__(self):
        return self.text if self.text is not None else f"{self.seconds:.2f} s"


def rate(seconds, size):
    return Cell(seconds, f"{seconds:.1f} s {size / seconds / 1e6:6.1f} MB/s")


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def cat_to_null(path):
    with open(path, "rb") as f:
        while f.read(4 * MiB):
            pass


def read_hash(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def dd_write(src, dst):
    ml.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"], timeout=7200)


def fio_randread(path, seconds, size):
    out = ml.run(["fio", "--name=randread", f"--filename={path}", "--rw=randread", "--bs=4k", f"--size={size}",
                  "--ioengine=psync", "--iodepth=1", "--numjobs=1", "--time_based", f"--runtime={seconds}",
                  "--invalidate=1", "--readonly", "--output-format=json"], timeout=seconds + 600).out
    job = json.loads(out[out.index("{"):])["jobs"][0]["read"]
    return Cell(job["iops"], f"{job['iops']:.0f} IOPS, {job['clat_ns']['mean'] / 1e3:.0f} µs mean")


def webapi_randread(node_url, cap, size, seconds, rng):
    """Random 4 KiB Range GETs of the file through the Tahoe client node's web API, one at a time."""
    host = node_url[len("http://"):].rstrip("/")
    conn = http.client.HTTPConnection(host, timeout=600)
    n, lat = 0, 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        off = rng.randrange(0, size // 4096) * 4096
        t0 = time.perf_counter()
        conn.request("GET", "/uri/" + cap, headers={"Range": f"bytes={off}-{off + 4095}"})
        r = conn.getresponse()
        body = r.read()
        lat += time.perf_counter() - t0
        if r.status != 206 or len(body) != 4096:
            raise TestError(f"web API Range GET: HTTP {r.status}, {len(body)} bytes")
        n += 1
    return Cell(n / seconds, f"{n / seconds:.0f} IOPS, {lat / n * 1e6:.0f} µs mean")


def make_entries(d, n):
    os.makedirs(d)
    for i in range(n):
        with open(os.path.join(d, f"entry-{i:05d}"), "wb") as f:
            f.write(b"%d\n" % i)  # tiny: a literal cap, so no upload per entry


def ls_l(path, want):
    t, out = timed(lambda: ml.run(["ls", "-l", path], timeout=3600).out)
    n = len([line for line in out.splitlines() if line.startswith("-")])
    if n != want:
        raise TestError(f"ls -l {path}: {n} entries, expected {want}")
    return t


def tahoe_ls(client, path, want):
    t, out = timed(lambda: client.tahoe("ls", "-l", path, timeout=3600).out)
    n = len([line for line in out.splitlines() if line.strip()])
    if n != want:
        raise TestError(f"tahoe ls -l {path}: {n} entries, expected {want}")
    return t


def webapi_list(node_url, dircap, name, want):
    """GET /uri/DIRCAP/NAME?t=json from the Tahoe client node: the listing without the CLI's start-up."""
    host = node_url[len("http://"):].rstrip("/")
    conn = http.client.HTTPConnection(host, timeout=600)
    t0 = time.perf_counter()
    conn.request("GET", f"/uri/{dircap}/{name}?t=json")
    r = conn.getresponse()
    body = r.read()
    t = time.perf_counter() - t0
    if r.status != 200:
        raise TestError(f"web API listing: HTTP {r.status}: {body[:300]!r}")
    n = len(json.loads(body)[1]["children"])
    if n != want:
        raise TestError(f"web API listing: {n} children, expected {want}")
    return t


def small_files(n, seed):
    rng = random.Random(seed)
    return [(f"small-{i:04d}", ml.random_bytes(rng, SMALL)) for i in range(n)]


def write_small(d, files):
    os.makedirs(d)
    for name, data in files:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def bench(a, rows, notes):
    size, entries, nfiles, fio_s = a.size, a.entries, a.files, a.fio_seconds
    local = os.path.join(WORK, "local")
    os.makedirs(local)
    grid = ml.Grid(os.path.join(WORK, "grid"), n=a.nodes, bin=a.bin, needed=a.needed, happy=a.happy, total=a.total)
    grid.start()
    client = grid.tahoe_client()
    src = os.path.join(WORK, "input")
    digest = ml.write_random_file(src, size)
    ml.log(f"input: {size / MiB:g} MiB of random bytes")
    mnt_base = os.path.join(WORK, "ours")
    data_n = [0]

    def fresh_data():
        data_n[0] += 1
        return os.path.join(mnt_base, f"data.{data_n[0]}")

    m = ml.Mount(grid, os.path.join(mnt_base, "mnt"), os.path.join(mnt_base, "config"), fresh_data(),
                 fake=a.fake_mount, options=a.options)
    try:
        m.mount()
        pids = lambda: grid.node_pids()  # noqa: E731
        # -- sequential write
        cat_to_null(src)  # the input in the page cache for every writer alike
        t, _ = timed(lambda: dd_write(src, os.path.join(m.path, "big")))
        ours_w = rate(t, size)
        cat_to_null(src)
        cpu0 = sum(ml.cpu_seconds(p) or 0 for p in pids())
        t, cap = timed(lambda: client.put(src))
        tahoe_w = rate(t, size)
        storage_cpu = sum(ml.cpu_seconds(p) or 0 for p in pids()) - cpu0
        cat_to_null(src)
        t, _ = timed(lambda: dd_write(src, os.path.join(local, "big")))
        rows.append((f"seq write {size / MiB:g} MiB (until on the grid / fsync)", ours_w, tahoe_w, rate(t, size)))
        ml.log(f"seq write: ours {ours_w}, tahoe {tahoe_w} (storage nodes {storage_cpu:.1f} CPU s)")
        # -- sequential read, cold
        m.remount(data_dir=fresh_data())
        ml.drop_caches()
        t, d = timed(lambda: read_hash(os.path.join(m.path, "big")))
        if d != digest:
            raise TestError("the mount reads big back different")
        ours_r = rate(t, size)
        ml.drop_caches()

        t, d = timed(lambda: hash_output([ml.TAHOE, "-d", client.dir, "get", cap], "tahoe get"))
        if d != digest:
            raise TestError("tahoe get reads it back different")
        tahoe_r = rate(t, size)
        ml.drop_caches()
        t_get, d = timed(lambda: our_get(a.bin, grid, m.config_dir, "big"))
        if d != digest:
            raise TestError("tahoe-mount get reads it back different")
        ml.drop_caches()
        t, d = timed(lambda: read_hash(os.path.join(local, "big")))
        rows.append((f"seq read {size / MiB:g} MiB, cold", ours_r, tahoe_r, rate(t, size)))
        rows.append(("  the same file by tahoe-mount get, cold", rate(t_get, size), Cell(text="-"), Cell(text="-")))
        notes.append(f"seq read through the mount: {100 * t_get / ours_r.seconds:.0f} % of tahoe-mount get's rate")
        ml.log(f"seq read: ours {ours_r}, tahoe-mount get {rate(t_get, size)}, tahoe {tahoe_r}")
        # -- random 4 KiB reads, cold
        m.remount(data_dir=fresh_data())
        ml.drop_caches()
        ours_f = fio_randread(os.path.join(m.path, "big"), fio_s, size)
        tahoe_f = webapi_randread(client.url, cap, size, fio_s, random.Random(a.seed))
        ml.drop_caches()
        local_f = fio_randread(os.path.join(local, "big"), fio_s, size)
        rows.append((f"fio randread 4 KiB, iodepth 1, {fio_s} s, cold", ours_f, tahoe_f, local_f))
        ml.log(f"randread: ours {ours_f}, tahoe web API {tahoe_f}, local {local_f}")
        # -- ls -l of a big directory
        t_make, _ = timed(lambda: make_entries(os.path.join(m.path, "dir"), entries))
        m.unmount()
        notes.append(f"{entries} entries made through the mount in {t_make:.1f} s, then unmount "
                     f"{m.unmount_seconds:.1f} s")
        m.data_dir = fresh_data()
        ml.drop_caches()
        m.mount()
        ours_cold = ls_l(os.path.join(m.path, "dir"), entries)
        ours_warm = ls_l(os.path.join(m.path, "dir"), entries)
        if a.fake_mount:
            tahoe_cold = tahoe_warm = None
        else:
            root = root_writecap(m.config_dir)
            client.tahoe("add-alias", "mnt", root)
            tahoe_cold = tahoe_ls(client, "mnt:dir", entries)
            tahoe_warm = tahoe_ls(client, "mnt:dir", entries)
            web = [webapi_list(client.url, root, "dir", entries) for _ in range(2)]
        make_entries(os.path.join(local, "dir"), entries)
        ml.drop_caches()
        local_cold = ls_l(os.path.join(local, "dir"), entries)
        local_warm = ls_l(os.path.join(local, "dir"), entries)
        cell = lambda t: Cell(t) if t is not None else Cell(text="-")  # noqa: E731
        rows.append((f"ls -l of {entries} entries, cold", Cell(ours_cold), cell(tahoe_cold), Cell(local_cold)))
        rows.append((f"ls -l of {entries} entries, warm", Cell(ours_warm), cell(tahoe_warm), Cell(local_warm)))
        if not a.fake_mount:
            rows.append((f"  same dir, Tahoe web API ?t=json, 1st / 2nd", Cell(text="-"),
                         Cell(text=f"{web[0]:.2f} s / {web[1]:.2f} s"), Cell(text="-")))
        ml.log(f"ls -l: ours {ours_cold:.2f} / {ours_warm:.2f} s, tahoe {cell(tahoe_cold)} / {cell(tahoe_warm)}")
        # -- many small files
        files = small_files(nfiles, a.seed)
        t_close, _ = timed(lambda: write_small(os.path.join(m.path, "small"), files))
        m.unmount()
        t_up = t_close + m.unmount_seconds
        local_small = os.path.join(WORK, "small-src")
        write_small(local_small, files)
        os.sync()
        client.tahoe("create-alias", "bench")
        t_tahoe, _ = timed(lambda: client.tahoe("cp", "-r", local_small, "bench:small", timeout=7200))

        def local_write():
            write_small(os.path.join(local, "small"), files)
            ml.run(["sync", "-f", os.path.join(local, "small")])

        t_local, _ = timed(local_write)
        rows.append((f"create {nfiles} files of {SMALL} B: to the last close", Cell(t_close), Cell(text="-"),
                     Cell(text="-")))
        rows.append((f"create {nfiles} files of {SMALL} B: until uploaded/synced", Cell(t_up), Cell(t_tahoe),
                     Cell(t_local)))
        ml.log(f"small files: ours close {t_close:.2f} s, uploaded {t_up:.2f} s; tahoe cp -r {t_tahoe:.2f} s")
        # check them from a fresh mount
        m.data_dir = fresh_data()
        ml.drop_caches()
        m.mount()
        for name, data in files:
            if ml.read_file(os.path.join(m.path, "small", name)) != data:
                raise TestError(f"small/{name} reads back different")
        m.unmount()
        t, _ = timed(lambda: client.tahoe("--version"))
        rows.append(("tahoe CLI start-up (tahoe --version)", Cell(text="-"), Cell(t), Cell(text="-")))
        notes.append(f"Tahoe put: storage nodes used {storage_cpu:.1f} CPU s")
    finally:
        m.cleanup()
        grid.stop()


def our_get(bin, grid, config_dir, name):
    """`tahoe-mount get` of ROOT/name to stdout (the root writecap given on stdin, the servers by servers.yaml),
    hashed as it arrives; returns the SHA-256."""
    cmd = [bin, "get", "--servers-file", os.path.join(grid.dir, "servers.yaml"), "--", f"-/{name}", "-"]
    return hash_output(cmd, "tahoe-mount get", stdin=root_writecap(config_dir).encode() + b"\n")


def hash_output(cmd, what, stdin=None):
    """The SHA-256 of what `cmd` writes to stdout, hashed as it arrives (never held whole)."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else None, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    if stdin is not None:
        p.stdin.write(stdin)
        p.stdin.close()
    h = hashlib.sha256()
    while True:
        b = p.stdout.read(MiB)
        if not b:
            break
        h.update(b)
    err = p.stderr.read()
    if p.wait() != 0:
        raise TestError(f"{what} exited {p.returncode}: {err.decode(errors='replace')[-500:]}")
    return h.hexdigest()


def root_writecap(config_dir):
    roots = os.path.join(config_dir, "roots")
    for f in sorted(os.listdir(roots)):
        with open(os.path.join(roots, f)) as fh:
            for w in fh.read().split():
                if w.startswith("URI:DIR2"):
                    return w
    raise TestError(f"no root writecap under {roots}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="64 MiB, 1000 entries, 200 files, fio 5 s (for CI)")
    p.add_argument("--size", type=int, help="bytes of the big file")
    p.add_argument("--entries", type=int, help="entries of the directory listed")
    p.add_argument("--files", type=int, help="small files created")
    p.add_argument("--fio-seconds", type=int)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--needed", type=int, default=3)
    p.add_argument("--happy", type=int, default=7)
    p.add_argument("--total", type=int, default=10)
    p.add_argument("-o", dest="options", action="append", default=[], help="mount option (repeatable)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin", default=ml.default_bin(), help="tahoe-mount binary")
    p.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    p.add_argument("--fake-mount", action="store_true", help="a bind-mounted local directory instead of the mount")
    a = p.parse_args()
    a.bin = os.path.abspath(a.bin)
    a.size = a.size or (64 * MiB if a.quick else 1024 * MiB)
    a.entries = a.entries or (1000 if a.quick else 10000)
    a.files = a.files or (200 if a.quick else 1000)
    a.fio_seconds = a.fio_seconds or (5 if a.quick else 30)
    if not a.fake_mount and not ml.has_mount_command(a.bin):
        print(f"mount.py: {a.bin} has no `mount` command (--fake-mount exercises the script without it)",
              file=sys.stderr)
        return 2
    missing = [tool for tool in ("fio",) if shutil.which(tool) is None]
    if missing:
        # Found before the grid starts, not after minutes of measuring.
        print(f"mount.py: {', '.join(missing)} not installed: run mount-tests/deps.sh", file=sys.stderr)
        return 2
    for mp in ml.mounts():
        if mp.startswith(WORK + "/"):
            ml.fusermount_u(mp)
    ml.Grid(os.path.join(WORK, "grid")).stop()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    # The input, the local copy, the mount's spool copy and two uploads' shares (ours and Tahoe's) at once.
    need = a.size * (3 + 2 * a.total / a.needed) + 512 * MiB
    free = shutil.disk_usage(WORK).free
    if free < need:
        print(f"mount.py: {free / 2**30:.1f} GiB free under {WORK}, about {need / 2**30:.1f} GiB needed for "
              f"--size {a.size} (shares {a.needed}-of-{a.total}); use a smaller --size", file=sys.stderr)
        return 1
    rows, notes = [], []
    ok = False
    t0 = time.monotonic()
    try:
        bench(a, rows, notes)
        ok = True
    except TestError as e:
        print(f"mount.py: {e}", file=sys.stderr)
    print()
    print(f"the mount beside Tahoe 1.20 and the local disk: {a.nodes} storage nodes on 127.0.0.1, "
          f"{a.needed}-of-{a.total} happy {a.happy}, {os.cpu_count()} CPUs; MB = 10^6 bytes"
          + (" (FAKE MOUNT: a bind mount)" if a.fake_mount else ""))
    w = max([len(r[0]) for r in rows] + [10])
    print(f"  {'':<{w}}  {'ours (mount)':>26}  {'tahoe':>26}  {'local disk':>26}")
    for label, *cells in rows:
        print(f"  {label:<{w}}  " + "  ".join(f"{str(c):>26}" for c in cells))
    for n in notes:
        print(f"  {n}")
    print(f"  total {time.monotonic() - t0:.0f} s")
    if ok and not a.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    elif os.path.isdir(WORK):
        print(f"work directory kept: {WORK}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
