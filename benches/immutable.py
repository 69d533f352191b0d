#!/usr/bin/env python3
"""Immutable upload and download: tahoe-mount beside Tahoe-LAFS 1.20's own client, in one run on one grid.

usage: immutable.py [--quick] [--size BYTES] [--bin PATH] [--keep] [--tahoe-only]

Starts a local grid of 10 storage nodes (mount-tests/grid.py, under mount-tests/work/bench-immutable) and a
Tahoe client node encoding 3-of-10, happy 7, then for one random file (256 MiB; --quick: 32 MiB, for CI):
  tahoe put FILE        vs  tahoe-mount put --servers-file servers.yaml FILE
  tahoe get CAP OUT     vs  tahoe-mount get --servers-file servers.yaml CAP OUT
  the same gets into /dev/null (get-null: the clients' own work, without the local file system's)
and prints wall time, MB/s (10^6 bytes of file per second), client CPU seconds per MB and client peak RSS, with
the storage nodes' CPU seconds during the same run (a run whose servers are busy is server-bound, and then says
little about either client). Every download is compared with the input (SHA-256). A third column drives the
same Tahoe client node through its web API with a lean HTTP client (PUT /uri, GET /uri/CAP in 1 MiB pieces), to
separate what the `tahoe` CLI costs (it reads downloads 4 KiB at a time) from what the node costs.

"Client" for Tahoe is the client node process, which does the encoding, hashing and storage protocol (CPU from
/proc/PID/stat; peak RSS from VmHWM, reset before each run where the kernel allows, and including the node's
baseline, printed too), plus the `tahoe` CLI process, which streams the file to or from the node (its own
rusage from wait4). For tahoe-mount it is the tahoe-mount process (rusage from wait4).
The grid is stopped at the end, also on error. --tahoe-only measures Tahoe alone (no tahoe-mount binary
needed); without it, a binary lacking `put`/`get` is an error. Run it with the venv's Python
(mount-tests/venv.sh); any other python3 makes/reuses that venv.
"""

import argparse
import hashlib
import json
import os
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
        sys.exit("immutable.py: the interpreter from venv.sh cannot import allmydata")
    out = subprocess.run(["bash", os.path.join(REPO, "mount-tests", "venv.sh")], stdout=subprocess.PIPE)
    if out.returncode != 0 or not out.stdout.strip():
        sys.exit(f"immutable.py: no tahoe-lafs here, and mount-tests/venv.sh failed (status {out.returncode})")
    python = out.stdout.decode().strip().splitlines()[-1]
    os.environ["TAHOE_MOUNT_BENCH_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])

GRID_PY = os.path.join(REPO, "mount-tests", "grid.py")
WORK = os.path.join(REPO, "mount-tests", "work", "bench-immutable")
CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT = 1800  # seconds for one put or get
K, HAPPY, N = 3, 7, 10
MiB = 1 << 20


class BenchError(Exception):
    pass


def grid(*args, check=True):
    out = subprocess.run([sys.executable, GRID_PY] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and out.returncode != 0:
        raise BenchError(f"grid.py {' '.join(args)} failed:\n{out.stdout.decode()}{out.stderr.decode()}")
    return out


def cpu_seconds(pid):
    """utime + stime of a live process, in seconds (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0, `echo 5 > clear_refs`). False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


class Run:
    """Figures of one put or get by one client."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def measure(cmd, node_pid, storage_pids, size):
    """Runs cmd (stdout captured, stderr to a file) and measures it, the client node node_pid (or None) and the
    storage nodes over the same interval."""
    storage_before = {p: cpu_seconds(p) for p in storage_pids}
    node_cpu0 = node_rss0 = None
    node_hwm_reset = False
    if node_pid is not None:
        node_hwm_reset = reset_peak_rss(node_pid)
        node_rss0 = status_kib(node_pid, "VmRSS")
        node_cpu0 = cpu_seconds(node_pid)
    err_path = os.path.join(WORK, "stderr.txt")
    with open(err_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        stdout = p.stdout.read()
        p.stdout.close()
        # wait4 gives this child's own rusage (CPU and peak RSS), not a running total over all children.
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                raise BenchError(f"{' '.join(cmd)}: no exit within {RUN_TIMEOUT} s")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        with open(err_path, "rb") as f:
            raise BenchError(f"{' '.join(cmd)} exited {p.returncode}:\n{f.read().decode(errors='replace')}")
    storage_cpu = 0.0
    for pid, before in storage_before.items():
        after = cpu_seconds(pid)
        if before is None or after is None:
            raise BenchError(f"storage node pid {pid} is gone")
        storage_cpu += after - before
    run = Run(
        wall=wall,
        mbps=size / wall / 1e6,
        proc_cpu=ru.ru_utime + ru.ru_stime,
        proc_rss_kib=ru.ru_maxrss,
        node_cpu=0.0,
        node_hwm_kib=0,
        node_rss0_kib=0,
        node_hwm_reset=node_hwm_reset,
        storage_cpu=storage_cpu,
        stdout=stdout,
    )
    if node_pid is not None:
        run.node_cpu = cpu_seconds(node_pid) - node_cpu0
        run.node_hwm_kib = status_kib(node_pid, "VmHWM")
        run.node_rss0_kib = node_rss0
    run.cpu = run.proc_cpu + run.node_cpu
    run.cpu_per_mb = run.cpu / (size / 1e6)
    run.rss_kib = run.proc_rss_kib + run.node_hwm_kib  # both processes hold their memory at once
    return run


# The Tahoe client node driven over its web API by a lean HTTP client (1 MiB reads and writes), to show what the
# `tahoe` CLI itself costs: `tahoe get` reads the node's reply 4 KiB at a time.
WEBAPI_CLIENT = r"""
import http.client, os, sys
op, base, arg, out = sys.argv[1:5]
host = base[len("http://"):].rstrip("/")
conn = http.client.HTTPConnection(host, timeout=1800)
if op == "put":
    size = os.path.getsize(arg)
    with open(arg, "rb") as f:
        conn.request("PUT", "/uri", body=f, headers={"Content-Length": str(size)}, encode_chunked=False)
        resp = conn.getresponse()
        body = resp.read()
    if resp.status not in (200, 201):
        sys.exit(f"PUT /uri: HTTP {resp.status}: {body[:500]!r}")
    sys.stdout.write(body.decode())
else:
    conn.request("GET", "/uri/" + arg)
    resp = conn.getresponse()
    if resp.status != 200:
        sys.exit(f"GET: HTTP {resp.status}: {resp.read()[:500]!r}")
    with open(out, "wb") as f:
        while True:
            b = resp.read(1 << 20)
            if not b:
                break
            f.write(b)
"""


def has_put_and_get(binary):
    if not os.access(binary, os.X_OK):
        return f"no executable {binary}"
    for sub in ("put", "get"):
        out = subprocess.run([binary, sub, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if out.returncode != 0:
            return f"{binary} has no `{sub}` command yet"
    return None


def write_random_file(path, size):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(left, 4 * MiB))
            f.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


# get-null: the download written to /dev/null.
OPS = ("put", "get", "get-null")
COLUMNS = (("ours", "tahoe-mount"), ("tahoe", "tahoe CLI"), ("webapi", "Tahoe web API"))


def report(size, results, skipped):
    print()
    print(
        f"immutable file of {size / MiB:g} MiB ({size} bytes), {K}-of-{N} happy {HAPPY}, {N} storage nodes on "
        f"127.0.0.1, {os.cpu_count()} CPUs; MB = 10^6 bytes"
    )
    print(f"  {'':<30}" + "".join(f"{title:>16}" for _, title in COLUMNS))
    rows = (
        ("wall s", "{:.2f}", lambda r: r.wall),
        ("MB/s", "{:.1f}", lambda r: r.mbps),
        ("client CPU s/MB", "{:.4f}", lambda r: r.cpu_per_mb),
        ("client peak RSS MiB", "{:.0f}", lambda r: r.rss_kib / 1024),
        ("storage nodes CPU s", "{:.2f}", lambda r: r.storage_cpu),
        ("storage nodes CPUs busy", "{:.2f}", lambda r: r.storage_cpu / r.wall),
    )
    for op in OPS:
        for label, form, value in rows:
            cells = []
            for who, _ in COLUMNS:
                r = results.get((who, op))
                cells.append(form.format(value(r)) if r is not None else "-")
            print(f"  {op + ' ' + label:<30}" + "".join(f"{c:>16}" for c in cells))
    print("  ratios, tahoe-mount / Tahoe (CPU/MB: below 1 is less CPU; throughput: above 1 is faster):")
    for op in OPS:
        ours = results.get(("ours", op))
        for who, title in COLUMNS[1:]:
            theirs = results[(who, op)]
            if ours is None:
                print(f"    {op} vs {title}: -")
                continue
            print(
                f"    {op} vs {title:<14} CPU/MB ratio {ours.cpu_per_mb / theirs.cpu_per_mb:.3f}, "
                f"throughput ratio {ours.mbps / theirs.mbps:.2f}"
            )
    print(
        "  Tahoe's client in detail (node = the client node's `tahoe run`; front = the `tahoe` CLI, or the lean "
        "web API client):"
    )
    for who, title in COLUMNS[1:]:
        for op in OPS:
            r = results[(who, op)]
            note = "" if r.node_hwm_reset else " (VmHWM not reset: peak since the node started)"
            print(
                f"    {title} {op}: node CPU {r.node_cpu:.2f} s, front CPU {r.proc_cpu:.2f} s; node peak RSS "
                f"{r.node_hwm_kib / 1024:.0f} MiB ({r.node_rss0_kib / 1024:.0f} MiB before the run){note}, "
                f"front peak RSS {r.proc_rss_kib / 1024:.0f} MiB"
            )
    if skipped:
        print(f"  tahoe-mount not measured: {skipped}")


def bench(a):
    size = a.size or (32 * MiB if a.quick else 256 * MiB)
    skipped = "--tahoe-only" if a.tahoe_only else has_put_and_get(a.bin)
    if skipped and not a.tahoe_only:
        raise BenchError(f"{skipped} (--tahoe-only measures Tahoe alone)")
    grid("stop", WORK, check=False)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    t0 = time.monotonic()
    grid("start", WORK, str(N), "--parent-pid", str(os.getpid()))
    grid("client", WORK, "--needed", str(K), "--happy", str(HAPPY), "--total", str(N))
    with open(os.path.join(WORK, "grid.json")) as f:
        storage_pids = [s["pid"] for s in json.load(f)["servers"]]
    with open(os.path.join(WORK, "client", "run.pid")) as f:
        node_pid = int(f.read().split()[0])
    print(f"grid of {N} storage nodes and a client node up in {time.monotonic() - t0:.1f} s", flush=True)

    src = os.path.join(WORK, "input")
    digest = write_random_file(src, size)
    tahoe = os.path.join(os.path.dirname(sys.executable), "tahoe")
    client_dir = os.path.join(WORK, "client")
    servers = os.path.join(WORK, "servers.yaml")
    config = os.path.join(WORK, "tahoe-mount-config")
    os.makedirs(config)
    ours_base = [a.bin]
    results, caps = {}, {}

    def put(who, cmd, pid):
        r = measure(cmd, pid, storage_pids, size)
        cap = r.stdout.decode().strip()
        if not cap.startswith("URI:CHK:"):
            raise BenchError(f"{who} put printed {r.stdout!r}, not a CHK cap")
        results[(who, "put")], caps[who] = r, cap
        print(f"  {who} put: {r.wall:.2f} s, {r.mbps:.1f} MB/s", flush=True)

    def get(who, cmd_for, pid, want=digest):
        out = os.path.join(WORK, f"output-{who}")
        r = measure(cmd_for(caps[who], out), pid, storage_pids, size)
        if sha256_file(out) != want:
            raise BenchError(f"{who} get: the output differs from the input (SHA-256)")
        os.unlink(out)
        results[(who, "get")] = r
        print(f"  {who} get: {r.wall:.2f} s, {r.mbps:.1f} MB/s, output identical", flush=True)

    with open(os.path.join(client_dir, "node.url")) as f:
        node_url = f.read().strip()
    webapi = [sys.executable, "-c", WEBAPI_CLIENT]
    # The two Tahoe clients share the node's convergence secret: the web API run gets other bytes, or it would
    # find every share already there. tahoe-mount has a secret of its own (created in its --config-dir).
    put("tahoe", [tahoe, "-d", client_dir, "put", src], node_pid)
    if not skipped:
        put("ours", ours_base + ["put", "--servers-file", servers, "--config-dir", config, src], None)
    src2 = os.path.join(WORK, "input-webapi")
    digest2 = write_random_file(src2, size)
    put("webapi", webapi + ["put", node_url, src2, "-"], node_pid)
    get("tahoe", lambda cap, out: [tahoe, "-d", client_dir, "get", cap, out], node_pid)
    if not skipped:
        get("ours", lambda cap, out: ours_base + ["get", "--servers-file", servers, cap, out], None)
    get("webapi", lambda cap, out: webapi + ["get", node_url, cap, out], node_pid, digest2)

    # The same downloads into /dev/null: the client's own work, without the local file system's (writing a fresh
    # 256 MiB file costs the kernel about as much CPU as our whole download). Checked above; here only timed.
    def get_null(who, cmd_for, pid):
        r = measure(cmd_for(caps[who], os.devnull), pid, storage_pids, size)
        results[(who, "get-null")] = r
        print(f"  {who} get to /dev/null: {r.wall:.2f} s, {r.mbps:.1f} MB/s", flush=True)

    get_null("tahoe", lambda cap, out: [tahoe, "-d", client_dir, "get", cap, out], node_pid)
    if not skipped:
        get_null("ours", lambda cap, out: ours_base + ["get", "--servers-file", servers, cap, out], None)
    get_null("webapi", lambda cap, out: webapi + ["get", node_url, cap, out], node_pid)
    report(size, results, skipped)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a 32 MiB file instead of 256 MiB (for CI)")
    p.add_argument("--size", type=int, help="file size in bytes (overrides --quick)")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    p.add_argument("--bin", default=os.path.join(target, "release", "tahoe-mount"), help="tahoe-mount binary")
    p.add_argument("--keep", action="store_true", help="keep the grid directory (shares, logs) afterwards")
    p.add_argument("--tahoe-only", action="store_true", help="measure Tahoe alone, without tahoe-mount")
    a = p.parse_args()
    a.bin = os.path.abspath(a.bin)
    ok = False
    try:
        bench(a)
        ok = True
    except BenchError as e:
        print(f"immutable.py: {e}", file=sys.stderr)
    finally:
        stopped = grid("stop", WORK, check=False) if os.path.isdir(WORK) else None
        if stopped is not None and stopped.returncode != 0:
            print(f"immutable.py: grid.py stop failed: {stopped.stderr.decode()}", file=sys.stderr)
            ok = False
        if ok and not a.keep:
            shutil.rmtree(WORK, ignore_errors=True)
        elif os.path.isdir(WORK):
            print(f"grid directory kept: {WORK}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
