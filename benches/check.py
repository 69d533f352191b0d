#!/usr/bin/env python3
"""Deep-check of a tree of small files: tahoe-mount beside Tahoe-LAFS 1.20's own client, in one run on one grid.

usage: check.py [--quick] [--files N] [--bin PATH] [--keep]

Starts a local grid of 10 storage nodes (mount-tests/grid.py, under mount-tests/work/bench-check) and a Tahoe
client node encoding 3-of-10, happy 7, as benches/immutable.py, and builds through the client node's web API a
tree of 1000 files (--quick: 100) of 100..4000 random bytes each (so every file is a CHK with 10 shares, not a
LIT), spread over 50 subdirectories (--quick: 10) of one root directory: the files are uploaded unlinked (PUT /uri,
8 at a time), each subdirectory is made with its children at once (POST /uri?t=mkdir-with-children), then the
root holding the subdirectories. Then, on that same tree:
  tahoe deep-check --add-lease ROOT   vs  tahoe-mount deep-check --add-lease --servers-file servers.yaml ROOT
  tahoe deep-check --verify ROOT      vs  tahoe-mount deep-check --verify --servers-file servers.yaml ROOT
and prints wall time, objects per second, client CPU seconds and client peak RSS, with the storage nodes' CPU
seconds during the same run, and the speed ratio (Tahoe's wall time / ours). Every run must exit 0 and report
every object healthy, and both clients must count the same objects (files + subdirectories + the root): Tahoe's
CLI prints "done: N objects checked, H healthy, U unhealthy" (and exits 0 even when U > 0), ours prints the same
line first (and exits non-zero unless everything is healthy). tahoe-mount checks 8 objects at once (its default
--concurrency); Tahoe's node walks the tree one object at a time (t=stream-deep-check). Tahoe's figures include
its CLI's start-up (about 1 s of Python imports).

"Client" for Tahoe is the client node process, which walks the tree and speaks the storage protocol (CPU from
/proc/PID/stat; peak RSS from VmHWM, reset before each run where the kernel allows, and including the node's
baseline, printed too), plus the `tahoe` CLI process, which reads the node's stream of results (its own rusage
from wait4). For tahoe-mount it is the tahoe-mount process (rusage from wait4). The measuring is
benches/immutable.py's, imported. The grid is stopped at the end, also on error. Run it with the venv's Python
(mount-tests/venv.sh); any other python3 makes/reuses that venv.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import random
import re
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
        sys.exit("check.py: the interpreter from venv.sh cannot import allmydata")
    out = subprocess.run(["bash", os.path.join(REPO, "mount-tests", "venv.sh")], stdout=subprocess.PIPE)
    if out.returncode != 0 or not out.stdout.strip():
        sys.exit(f"check.py: no tahoe-lafs here, and mount-tests/venv.sh failed (status {out.returncode})")
    python = out.stdout.decode().strip().splitlines()[-1]
    os.environ["TAHOE_MOUNT_BENCH_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])

sys.path.insert(0, HERE)
import immutable as im  # noqa: E402  (grid, measure and the /proc readings; its re-exec is a no-op here)
from immutable import BenchError, K, HAPPY, N  # noqa: E402

WORK = os.path.join(REPO, "mount-tests", "work", "bench-check")
im.WORK = WORK  # where im.measure keeps each run's stderr
UPLOAD_THREADS = 8
MIN_SIZE, MAX_SIZE = 100, 4000  # bytes; Tahoe stores up to 55 bytes in the cap itself (LIT)
DONE_RE = re.compile(rb"^done: (\d+) objects checked, (\d+) healthy, (\d+) unhealthy", re.M)


class WebAPI:
    """The Tahoe client node's web API, one connection per thread."""

    def __init__(self, node_url):
        self.host = node_url[len("http://"):].rstrip("/")

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.host, timeout=600)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status not in (200, 201):
            raise BenchError(f"{method} {path}: HTTP {resp.status}: {data[:500]!r}")
        return data.decode().strip()


def build_tree(web, files, dirs):
    """The tree through the web API; returns the root's dircap and the number of objects in it."""
    rng = random.Random(1)
    sizes = [rng.randint(MIN_SIZE, MAX_SIZE) for _ in range(files)]

    def put(i):
        cap = web.request("PUT", "/uri", os.urandom(sizes[i]))
        if not cap.startswith("URI:CHK:"):
            raise BenchError(f"PUT /uri printed {cap!r}, not a CHK cap")
        return cap

    def mkdir(children):
        cap = web.request("POST", "/uri?t=mkdir-with-children", json.dumps(children).encode())
        if not cap.startswith("URI:DIR2:"):
            raise BenchError(f"POST /uri?t=mkdir-with-children printed {cap!r}, not a dircap")
        return cap

    width = len(str(dirs - 1))
    with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        caps = list(pool.map(put, range(files)))
        by_dir = [{} for _ in range(dirs)]
        for i, cap in enumerate(caps):
            by_dir[i % dirs][f"file{i}"] = ["filenode", {"ro_uri": cap, "metadata": {}}]
        dircaps = list(pool.map(mkdir, by_dir))
    root = mkdir({f"dir{d:0{width}}": ["dirnode", {"rw_uri": cap, "metadata": {}}] for d, cap in enumerate(dircaps)})
    return root, files + dirs + 1, sum(sizes)


def has_deep_check(binary):
    if not os.access(binary, os.X_OK):
        return f"no executable {binary}"
    out = subprocess.run([binary, "deep-check", "--help"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if out.returncode != 0:
        return f"{binary} has no `deep-check` command"
    for flag in (b"--add-lease", b"--verify"):
        if flag not in out.stdout:
            return f"{binary} deep-check has no {flag.decode()}"
    return None


OPS = (("add-lease", "deep-check --add-lease"), ("verify", "deep-check --verify"))
COLUMNS = (("ours", "tahoe-mount"), ("tahoe", "tahoe CLI"))


def report(files, dirs, objects, nbytes, results):
    print()
    print(
        f"deep-check of {objects} objects ({files} CHK files of {MIN_SIZE}..{MAX_SIZE} bytes, {nbytes} in all, in "
        f"{dirs} subdirectories of one root), {K}-of-{N} happy {HAPPY}, {N} storage nodes on 127.0.0.1, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"  {'':<38}" + "".join(f"{title:>14}" for _, title in COLUMNS))
    rows = (
        ("wall s", "{:.2f}", lambda r: r.wall),
        ("objects/s", "{:.1f}", lambda r: objects / r.wall),
        ("client CPU s", "{:.2f}", lambda r: r.cpu),
        ("client peak RSS MiB", "{:.0f}", lambda r: r.rss_kib / 1024),
        ("storage nodes CPU s", "{:.2f}", lambda r: r.storage_cpu),
    )
    for op, _ in OPS:
        for label, form, value in rows:
            cells = [form.format(value(results[(who, op)])) for who, _ in COLUMNS]
            print(f"  {op + ' ' + label:<38}" + "".join(f"{c:>14}" for c in cells))
    print("  ratios, tahoe-mount beside Tahoe:")
    for op, title in OPS:
        ours, theirs = results[("ours", op)], results[("tahoe", op)]
        print(
            f"    {title:<24} speed (Tahoe wall / ours) {theirs.wall / ours.wall:.2f}, "
            f"client CPU (ours / Tahoe) {ours.cpu / theirs.cpu:.3f}"
        )
    print("  Tahoe's client in detail (node = the client node's `tahoe run`; front = the `tahoe` CLI):")
    for op, title in OPS:
        r = results[("tahoe", op)]
        note = "" if r.node_hwm_reset else " (VmHWM not reset: peak since the node started)"
        print(
            f"    {title}: node CPU {r.node_cpu:.2f} s, front CPU {r.proc_cpu:.2f} s; node peak RSS "
            f"{r.node_hwm_kib / 1024:.0f} MiB ({r.node_rss0_kib / 1024:.0f} MiB before the run){note}, "
            f"front peak RSS {r.proc_rss_kib / 1024:.0f} MiB"
        )


def bench(a):
    files = a.files or (100 if a.quick else 1000)
    dirs = max(1, min(files, 10 if a.quick else 50))
    missing = has_deep_check(a.bin)
    if missing:
        raise BenchError(missing)
    im.grid("stop", WORK, check=False)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    t0 = time.monotonic()
    im.grid("start", WORK, str(N), "--parent-pid", str(os.getpid()))
    im.grid("client", WORK, "--needed", str(K), "--happy", str(HAPPY), "--total", str(N))
    with open(os.path.join(WORK, "grid.json")) as f:
        storage_pids = [s["pid"] for s in json.load(f)["servers"]]
    client_dir = os.path.join(WORK, "client")
    with open(os.path.join(client_dir, "run.pid")) as f:
        node_pid = int(f.read().split()[0])
    with open(os.path.join(client_dir, "node.url")) as f:
        node_url = f.read().strip()
    print(f"grid of {N} storage nodes and a client node up in {time.monotonic() - t0:.1f} s", flush=True)

    t0 = time.monotonic()
    root, objects, nbytes = build_tree(WebAPI(node_url), files, dirs)
    print(
        f"tree of {files} files in {dirs} subdirectories ({objects} objects) built in {time.monotonic() - t0:.1f} s",
        flush=True,
    )

    tahoe = [os.path.join(os.path.dirname(sys.executable), "tahoe"), "-d", client_dir, "deep-check"]
    config = os.path.join(WORK, "tahoe-mount-config")
    os.makedirs(config)
    ours = [a.bin, "deep-check", "--servers-file", os.path.join(WORK, "servers.yaml"), "--config-dir", config]
    results = {}

    def run(who, op, cmd, pid):
        # im.measure's size only feeds its MB/s and CPU/MB, which mean nothing here; objects/s is ours.
        r = im.measure(cmd + ["--" + op, root], pid, storage_pids, 1)
        m = DONE_RE.search(r.stdout)
        if not m:
            raise BenchError(f"{who} deep-check --{op} printed no 'done: ...' line:\n{r.stdout.decode()[-2000:]}")
        checked, healthy, unhealthy = map(int, m.groups())
        if checked != objects or healthy != objects or unhealthy:
            raise BenchError(
                f"{who} deep-check --{op}: {m.group(0).decode()!r}, but the tree has {objects} objects, all healthy"
            )
        results[(who, op)] = r
        print(f"  {who} deep-check --{op}: {r.wall:.2f} s, {objects / r.wall:.1f} objects/s", flush=True)

    for op, _ in OPS:
        run("tahoe", op, tahoe, node_pid)
        run("ours", op, ours, None)
    report(files, dirs, objects, nbytes, results)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100 files in 10 directories instead of 1000 in 50 (for CI)")
    p.add_argument("--files", type=int, help="number of files (overrides --quick's)")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    p.add_argument("--bin", default=os.path.join(target, "release", "tahoe-mount"), help="tahoe-mount binary")
    p.add_argument("--keep", action="store_true", help="keep the grid directory (shares, logs) afterwards")
    a = p.parse_args()
    if a.files is not None and a.files < 1:
        p.error("--files must be at least 1")
    a.bin = os.path.abspath(a.bin)
    ok = False
    try:
        bench(a)
        ok = True
    except BenchError as e:
        print(f"check.py: {e}", file=sys.stderr)
    finally:
        stopped = im.grid("stop", WORK, check=False) if os.path.isdir(WORK) else None
        if stopped is not None and stopped.returncode != 0:
            print(f"check.py: grid.py stop failed: {stopped.stderr.decode()}", file=sys.stderr)
            ok = False
        if ok and not a.keep:
            shutil.rmtree(WORK, ignore_errors=True)
        elif os.path.isdir(WORK):
            print(f"grid directory kept: {WORK}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
