#!/usr/bin/env python3
"""End-to-end tests of the tahoe-mount FUSE mount on a real local grid of tahoe-lafs 1.20 storage nodes.

usage: test_mount.py [--bin PATH] [--only NAME[,NAME]] [--quick] [--fake-mount] [--keep] [--work DIR]

One grid of 5 storage nodes with a grid service directory (mountlib.Grid), mounted through its invitation with
shares 2-of-4, happy 3. Every test mounts a root of its own (its own --config-dir), and asserts what a user would
see:
  tree     maketree.py (>= 2000 files, a 100 MiB file, also with --quick) copied in by `cp -a`, `tar x` and
           `rsync -a`: each copy `diff -r` clean, `rsync -n -c -a --itemize-changes` itemizes nothing, modes and
           ns mtimes equal, a second `rsync -a` transfers nothing; again after unmount and a fresh mount
  restic   restic init / backup into the mount, remount, check --read-data, restore elsewhere, diff -r
  kill9    files closed (30 MiB ones and many small ones), daemon killed with SIGKILL while uploads are pending,
           mounted again with the same --config-dir/--data-dir: every closed file there (SHA-256); then again from a
           fresh data dir (from the grid alone)
  servers  a node stopped during a large upload: write + fsync succeed; happiness made impossible: fsync fails
           and the file stays pending; nodes back: unmount waits and succeeds, a fresh mount reads both files
  fsx      fsx.py, >= 10000 ops, then a close/reopen-heavy run
  small    .grid/, mkdir/rmdir (ENOTEMPTY), rename over a file and across dirs, hard link, symlink, chmod and
           touch -d through a remount, df, read-only mounts (-o ro, --root READCAP) refuse writes with EROFS
  cli      `mount` without -f returns once mounted (daemon), the word `mount` may be left out, `status`, a bad
           invitation fails with a message
Prints each test and its time; exits non-zero if any fails. --fake-mount bind-mounts a local directory in place
of the FUSE mount (no tahoe-mount mount needed) to show the checks themselves work: what only the real mount
can show is reported as skipped. maketree.py and fsx.py are mount-tests/ (or $TAHOE_MOUNT_TEST_TOOLS) scripts.
"""

import argparse
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

sys.path.insert(0, HERE)
import venv_reexec  # noqa: E402

venv_reexec.ensure(__file__)

import mountlib as ml  # noqa: E402
from mountlib import MiB, TestError, log  # noqa: E402

TESTS = []


def test(name, timeout, quick_timeout):
    def register(fn):
        TESTS.append((name, fn, timeout, quick_timeout))
        return fn

    return register


class Skip(Exception):
    pass


class Ctx:
    def __init__(self, a, grid):
        self.a = a
        self.grid = grid
        self.quick = a.quick
        self.fake = a.fake_mount
        self.work = a.work
        self.skipped = []  # what this test could not check (fake mount)
        self._tree = None

    def dir(self, *p):
        d = os.path.join(self.work, *p)
        os.makedirs(d, exist_ok=True)
        return d

    def mount(self, name, data="data", config="config", **kw):
        base = self.dir("t", name)
        return ml.Mount(self.grid, os.path.join(base, kw.pop("mnt", "mnt")), os.path.join(base, config),
                        os.path.join(base, data), fake=self.fake, **kw)

    def fresh_data_dir(self, m):
        """A data directory the mount has never used (DATA.1, DATA.2, ...): a mount from it reads the grid only."""
        base = getattr(m, "first_data_dir", None) or m.data_dir
        m.first_data_dir = base
        i = 1
        while os.path.exists(f"{base}.{i}"):
            i += 1
        return f"{base}.{i}"

    def skip(self, what):
        self.skipped.append(what)
        log(f"SKIP (fake mount): {what}")

    def tree(self):
        """The source tree of maketree.py, made once per run."""
        if self._tree is None:
            src = os.path.join(self.work, "src-tree")
            shutil.rmtree(src, ignore_errors=True)
            big = 100 * MiB  # the size, in CI too
            t0 = time.monotonic()
            ml.run([sys.executable, ml.tool("maketree.py"), src, "--files", "2000", "--big-size", big,
                    "--seed", self.a.seed], timeout=1800)
            n = sum(len(d) + len(f) for _, d, f in os.walk(src))
            size = sum(os.lstat(os.path.join(dp, f)).st_size for dp, _, fs in os.walk(src) for f in fs)
            log(f"maketree: {n} entries, {size / MiB:.1f} MiB in {time.monotonic() - t0:.1f} s")
            if n < 2000:
                raise TestError(f"maketree.py made only {n} entries")
            self._tree = src
        return self._tree


def mbps(size, seconds):
    return f"{size / seconds / 1e6:.1f} MB/s" if seconds > 0 else "-"


def tree_size(root):
    return sum(os.lstat(os.path.join(dp, f)).st_size for dp, _, fs in os.walk(root) for f in fs)


# ---------------------------------------------------------------------------------------------------------------
# a. tree


def check_copy(src, dst, again=True):
    t0 = time.monotonic()
    ml.diff_r(src, dst)
    ml.rsync_verify(src, dst)
    ml.compare_meta(src, dst)
    if again:
        ml.rsync_again(src, dst)
    log(f"  {os.path.basename(dst)}: diff -r clean, rsync -n -c itemizes nothing, modes and ns mtimes equal"
        + (", a second rsync -a transfers nothing" if again else "") + f" ({time.monotonic() - t0:.1f} s)")


@test("tree", 7200, 3600)
def t_tree(c):
    src = c.tree()
    size = tree_size(src)
    tarball = os.path.join(c.work, "src-tree.tar")
    # pax format: keeps ns mtimes, long and UTF-8 names.
    ml.run(["tar", "--format=posix", "-C", src, "-cf", tarball, "."])
    with c.mount("tree") as m:
        copies = []
        for how in ("cp", "tar", "rsync"):
            dst = os.path.join(m.path, f"by-{how}")
            t0 = time.monotonic()
            if how == "cp":
                ml.run(["cp", "-a", src, dst], timeout=3600)
            elif how == "tar":
                os.mkdir(dst)
                ml.run(["tar", "-xpf", tarball, "-C", dst], timeout=3600)
            else:
                ml.run(["rsync", "-a", src + "/", dst + "/"], timeout=3600)
            took = time.monotonic() - t0
            log(f"{how} into the mount: {took:.1f} s ({mbps(size, took)})")
            check_copy(src, dst)
            copies.append(dst)
        t0 = time.monotonic()
        m.unmount()
        log(f"unmount (waits for the uploads): {m.unmount_seconds:.1f} s")
        ml.drop_caches()
        m.data_dir = c.fresh_data_dir(m)
        m.mount()
        log(f"mounted again from a fresh data dir, page cache dropped")
        for dst in copies:
            check_copy(src, dst, again=False)


# ---------------------------------------------------------------------------------------------------------------
# b. restic


@test("restic", 7200, 3600)
def t_restic(c):
    src = c.tree()
    env = dict(os.environ, RESTIC_PASSWORD="tahoe-mount test", RESTIC_CACHE_DIR=c.dir("restic-cache"))
    restored = os.path.join(c.work, "restic-restored")
    shutil.rmtree(restored, ignore_errors=True)
    with c.mount("restic") as m:
        repo = os.path.join(m.path, "restic-repo")
        for step, args in (
            ("init", ["init"]),
            ("backup", ["backup", src]),
        ):
            t0 = time.monotonic()
            ml.run(["restic", "--repo", repo] + args, env=env, timeout=3600)
            log(f"restic {step}: {time.monotonic() - t0:.1f} s")
        m.remount(data_dir=c.fresh_data_dir(m))
        log("mounted again from a fresh data dir, page cache dropped")
        for step, args in (
            ("check --read-data", ["check", "--read-data"]),
            ("restore", ["restore", "latest", "--target", restored]),
        ):
            t0 = time.monotonic()
            ml.run(["restic", "--repo", repo] + args, env=env, timeout=3600)
            log(f"restic {step}: {time.monotonic() - t0:.1f} s")
    out = os.path.join(restored, os.path.relpath(src, "/"))
    ml.diff_r(src, out)
    ml.rsync_verify(src, out)
    log("restored tree: diff -r clean, rsync -n -c itemizes nothing")


# ---------------------------------------------------------------------------------------------------------------
# c. kill -9


def verify_files(root, expected):
    bad = []
    for rel, digest in expected.items():
        p = os.path.join(root, rel)
        try:
            got = ml.sha256_file(p)
        except OSError as e:
            bad.append(f"{rel}: {e}")
            continue
        if got != digest:
            bad.append(f"{rel}: content differs (SHA-256)")
    if bad:
        raise TestError(f"{len(bad)} of {len(expected)} files missing or different, first ones:\n"
                        + "\n".join("      " + b for b in bad[:15]))


@test("kill9", 3600, 1800)
def t_kill9(c):
    nbig, nsmall = (1, 300) if c.quick else (3, 1000)
    rng = random.Random(c.a.seed)
    expected = {}
    with c.mount("kill9") as m:
        d = os.path.join(m.path, "k")
        os.mkdir(d)
        t0 = time.monotonic()
        for i in range(nbig):
            expected[f"k/big{i}.bin"] = ml.write_random(os.path.join(d, f"big{i}.bin"), 30 * MiB, rng.random())
        os.mkdir(os.path.join(d, "small"))
        for i in range(nsmall):
            data = ml.random_bytes(rng, rng.choice([0, 1, 1000, 4096, rng.randrange(1, 65536)]))
            rel = f"k/small/f{i:04d}"
            ml.write_file(os.path.join(m.path, rel), data)
            expected[rel] = hashlib.sha256(data).hexdigest()
        log(f"wrote and closed {nbig} x 30 MiB and {nsmall} small files in {time.monotonic() - t0:.1f} s")
        if c.fake:
            c.skip("status before the kill")
        else:
            t1 = time.monotonic()
            st = m.status()
            pending = ml.pending_changes(st)
            log(f"status ({time.monotonic() - t1:.2f} s) just before the kill: {pending} changes pending\n"
                + ml.tail(st, 8))
            if pending is None:
                raise TestError(f"status shows no 'pending: N changes' line:\n{ml.tail(st)}")
            if pending == 0:
                log("WARNING: nothing was pending when the daemon was killed: this run shows less than it should")
        m.kill9()
        m.mount()
        t0 = time.monotonic()
        try:
            verify_files(m.path, expected)
        except TestError as e:
            if c.fake:
                raise
            st = m.status()
            bad = [line for line in st.splitlines() if any(f"/{rel.split('/')[-1]} " in line for rel in expected)]
            raise TestError(f"{e}\n    status now: {st.splitlines()[0]}\n" + ml.tail("\n".join(bad[:10]), 10)) from None
        log(f"after kill -9 and a new mount (same config and data dirs): all {len(expected)} files identical "
            f"({time.monotonic() - t0:.1f} s)")
        m.unmount()
        log(f"unmount (waits for the replayed uploads): {m.unmount_seconds:.1f} s")
        ml.drop_caches()
        m.data_dir = c.fresh_data_dir(m)
        m.mount()
        verify_files(m.path, expected)
        log("mounted from a fresh data dir (only the grid): all files identical")


# ---------------------------------------------------------------------------------------------------------------
# d. storage servers stopped


def incoming_shares(grid, i):
    """Number of partial shares node i is receiving now (Tahoe writes them under storage/shares/incoming)."""
    n = 0
    for _, _, files in os.walk(os.path.join(grid.dir, f"storage{i}", "storage", "shares", "incoming")):
        n += len(files)
    return n


def stored_shares(grid, i):
    """Number of complete shares node i holds (under storage/shares, outside incoming/)."""
    n = 0
    for path, _, files in os.walk(os.path.join(grid.dir, f"storage{i}", "storage", "shares")):
        if "incoming" not in path.split(os.sep):
            n += len(files)
    return n


class Bg(threading.Thread):
    """fn() in a thread; .result or .error once done."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:
            self.error = e


@test("servers", 3600, 1800)
def t_servers(c):
    g = c.grid
    if g.n < 5 or (g.needed, g.happy, g.total) != (2, 3, 4):
        raise TestError("needs the 5-node grid with shares 2-of-4, happy 3")
    size = 64 * MiB if c.quick else 200 * MiB
    try:
        with c.mount("servers") as m:
            big = os.path.join(m.path, "big.bin")
            written = threading.Event()

            def write_big():
                seed = c.a.seed + 1
                rng = random.Random(seed)
                h = hashlib.sha256()
                with open(big, "wb") as f:
                    left = size
                    while left:
                        b = ml.random_bytes(rng, min(left, 4 * MiB))
                        f.write(b)
                        h.update(b)
                        left -= len(b)
                        if left <= size // 2:
                            written.set()
                    f.flush()
                    t0 = time.monotonic()
                    os.fsync(f.fileno())
                    log(f"fsync of {size / MiB:.0f} MiB returned after {time.monotonic() - t0:.1f} s")
                return h.hexdigest()

            t0 = time.monotonic()
            w = Bg(write_big)
            # Stop a node that is receiving a share of this file, as soon as one is; if no upload is seen while the
            # file is written (it may start at close or fsync), keep looking until the writer is done.
            stopped = None
            while w.is_alive() and stopped is None:
                busy = [i for i in g.running() if incoming_shares(g, i)]
                if busy:
                    stopped = busy[0]
                    g.stop_nodes(stopped)
                    log(f"stopped storage{stopped} while it was receiving a share "
                        f"({time.monotonic() - t0:.1f} s into the write)")
                time.sleep(0.05)
            w.join()
            if w.error:
                raise TestError(f"write + fsync with one node stopped failed: {w.error!r}")
            if stopped is None:
                if not c.fake:
                    raise TestError("no node was ever seen receiving a share during write + fsync")
                c.skip("a node stopped during the upload (no upload to see)")
                stopped = 4
                g.stop_nodes(stopped)
            digest = w.result
            log(f"write + fsync of {size / MiB:.0f} MiB with storage{stopped} stopped: ok in "
                f"{time.monotonic() - t0:.1f} s")
            if ml.sha256_file(big) != digest:
                raise TestError("big.bin reads back different")
            # Happiness impossible: 2 nodes left, happy is 3.
            more = [i for i in g.running()][:2]
            g.stop_nodes(*more)
            log(f"stopped storage{more[0]} and storage{more[1]} too: running {g.running()}, happy {g.happy}")
            small = os.path.join(m.path, "while-unhappy.bin")
            small_size = 8 * MiB

            def write_small():
                with open(small, "wb") as f:
                    f.write(ml.random_bytes(random.Random(7), small_size))
                    f.flush()
                    t1 = time.monotonic()
                    try:
                        os.fsync(f.fileno())
                    except OSError as e:
                        return e, time.monotonic() - t1
                    return None, time.monotonic() - t1

            small_digest = hashlib.sha256(ml.random_bytes(random.Random(7), small_size)).hexdigest()
            w = Bg(write_small)
            w.join(600)
            if w.is_alive():
                raise TestError("fsync with happiness impossible neither failed nor returned within 600 s")
            if w.error:
                raise TestError(f"writing while unhappy failed before fsync: {w.error!r}")
            err, took = w.result
            if c.fake:
                c.skip("fsync fails when happiness is impossible")
                c.skip("status shows the unhappy file pending")
            else:
                if err is None:
                    raise TestError(f"fsync succeeded with {len(g.running())} servers running and happy {g.happy}")
                log(f"fsync failed as it should, after {took:.1f} s: {err!r}")
                if err.errno not in (errno.EIO, errno.ENOSPC, errno.EAGAIN, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                                     errno.ENOTCONN, errno.EREMOTEIO):
                    log(f"note: errno {errno.errorcode.get(err.errno, err.errno)} is not one of the usual ones")
                st = m.status()
                log("status while unhappy:\n" + ml.tail(st, 12))
                if not ml.pending_changes(st) or "while-unhappy.bin" not in st:
                    raise TestError("status does not show while-unhappy.bin pending")
            if ml.sha256_file(small) != small_digest:
                raise TestError("the file whose upload failed does not read back identical from the mount")
            g.start_nodes()
            log(f"started the nodes again: running {g.running()}")
            out = m.unmount()
            log(f"unmount waited for the pending upload and succeeded in {m.unmount_seconds:.1f} s:\n"
                + ml.tail(out, 6))
            ml.drop_caches()
            m.data_dir = c.fresh_data_dir(m)
            m.mount()
            if ml.sha256_file(os.path.join(m.path, "big.bin")) != digest:
                raise TestError("after a fresh mount, big.bin differs")
            if ml.sha256_file(os.path.join(m.path, "while-unhappy.bin")) != small_digest:
                raise TestError("after a fresh mount, while-unhappy.bin differs")
            log("fresh mount (new data dir): both files identical")
    finally:
        g.start_nodes()


@test("silent", 1800, 900)
def t_silent(c):
    """One storage node stopped with SIGSTOP (its connections open, nothing answered), through a mount that
    reads only the grid: listings and small reads answer within 5 s, a 20 MiB read within 30 s, and writes,
    directory changes and their fsync succeed within 60 s, as happiness still allows (4 of 5 nodes, happy 3)."""
    g = c.grid
    if c.fake:
        c.skip("the whole silent-server test (it is about the grid client)")
        return
    rng = random.Random(c.a.seed + 5)
    big_data = ml.random_bytes(rng, 20 * MiB)
    small = {f"d/s{i}": ml.random_bytes(rng, 3000 + i) for i in range(5)}
    m = c.mount("silent")
    with m:
        os.makedirs(os.path.join(m.path, "d"))
        for name, data in small.items():
            ml.write_file(os.path.join(m.path, name), data)
        ml.write_file(os.path.join(m.path, "big.bin"), big_data, fsync=True)
    m.data_dir = c.fresh_data_dir(m)
    stopped = max(g.running(), key=lambda i: stored_shares(g, i))
    pid = g.servers()[stopped]["pid"]
    bounds = []

    def timed(what, bound, fn):
        t0 = time.monotonic()
        out = fn()
        took = time.monotonic() - t0
        bounds.append(f"{what} {took:.2f} s (bound {bound} s)")
        if took > bound:
            raise TestError(f"with storage{stopped} stopped, {what} took {took:.1f} s (bound {bound} s)")
        return out

    with m:
        os.kill(pid, signal.SIGSTOP)
        try:
            log(f"stopped storage{stopped} (pid {pid}, {stored_shares(g, stopped)} shares) with SIGSTOP")
            names = timed("ls /", 5, lambda: sorted(os.listdir(m.path)))
            if "big.bin" not in names or "d" not in names:
                raise TestError(f"ls / shows {names}")
            timed("ls -l d", 5, lambda: [os.stat(os.path.join(m.path, "d", n)) for n in os.listdir(
                os.path.join(m.path, "d"))])
            for name, data in small.items():
                if timed(f"cat {name}", 5, lambda: ml.read_file(os.path.join(m.path, name))) != data:
                    raise TestError(f"{name} reads back different")
            if timed("read of big.bin (20 MiB)", 30, lambda: ml.read_file(os.path.join(m.path, "big.bin"))) \
                    != big_data:
                raise TestError("big.bin reads back different")
            new = ml.random_bytes(rng, 2 * MiB)
            timed("write + fsync of d/new (2 MiB)", 60,
                  lambda: ml.write_file(os.path.join(m.path, "d", "new"), new, fsync=True))

            def publish():
                os.mkdir(os.path.join(m.path, "e"))
                os.rename(os.path.join(m.path, "d", "s0"), os.path.join(m.path, "e", "s0"))
                fd = os.open(os.path.join(m.path, "e"), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            timed("mkdir e, mv d/s0 e/, fsync e", 60, publish)
        finally:
            os.kill(pid, signal.SIGCONT)
        log(f"with storage{stopped} silent: " + "; ".join(bounds))
        said = ml.read_file(m.log_path).decode(errors="replace")
        if f"slow server: storage{stopped}" not in said:
            raise TestError(f"the mount's log never names storage{stopped} as slow:\n" + ml.tail(said, 8))
    m.data_dir = c.fresh_data_dir(m)
    with m:
        if ml.read_file(os.path.join(m.path, "d", "new")) != new or \
                ml.read_file(os.path.join(m.path, "e", "s0")) != small["d/s0"]:
            raise TestError("after the node came back, a fresh mount reads d/new or e/s0 differently")
        log("storage node resumed; a fresh mount reads what was written while it was silent")


@test("fulldisk", 1800, 900)
def t_fulldisk(c):
    """The mount's data directory on a 48 MiB tmpfs that fills: a write that would leave less than the spool's
    kept-free space (1 % of the disk, at least 1 MiB) fails with ENOSPC before the disk is full (the spool limit,
    when it comes first, with EDQUOT), the failed file's spool copy is removed once it is closed and unlinked (and
    an upload of it under way has ended), mount.log keeps the cause and stays 0600, and the mount goes on working."""
    if c.fake:
        c.skip("the whole full-disk test (it is about the spool)")
        return
    base = c.dir("t", "fulldisk")
    data = os.path.join(base, "data")
    os.makedirs(data, exist_ok=True)
    if os.path.ismount(data):
        ml.run(["umount", data])
    ml.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", data])
    try:
        m = c.mount("fulldisk", options=[f"spool_size={1024 * MiB}"], foreground=False)
        # A tiny log limit, so that the rotation to mount.log.1 shows within this test.
        os.environ["TAHOE_MOUNT_LOG_LIMIT"] = "150"
        with m:
            ml.write_file(os.path.join(m.path, "before"), b"before\n", fsync=True)
            path = os.path.join(m.path, "too-big")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            written, err = 0, None
            chunk = ml.random_bytes(random.Random(3), MiB)
            try:
                while written < 96 * MiB:
                    written += os.write(fd, chunk)
            except OSError as e:
                err = e
            try:
                os.close(fd)
                closed = "close succeeded"
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise TestError(f"close after the failed write: {e!r}, not ENOSPC")
                closed = "close failed with ENOSPC"
            if err is None:
                raise TestError(f"wrote {written / MiB:.0f} MiB to a 48 MiB disk without an error")
            log(f"write failed after {written / MiB:.0f} MiB: {err!r}; {closed}")
            if err.errno != errno.ENOSPC:
                raise TestError(f"a write to a full disk failed with {errno.errorcode.get(err.errno)}, not ENOSPC")
            os.unlink(path)
            # A close that succeeded queued what was written for upload: its copy goes when that upload ends.
            deadline = time.monotonic() + 60
            while True:
                spool_files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(data, "spool"))
                               for f in fs if not f.startswith("journal")]
                used = sum(os.path.getsize(f) for f in spool_files if os.path.exists(f))
                if used <= 8 * MiB or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if used > 8 * MiB:
                raise TestError(f"after the failed file was closed and unlinked, the spool holds {used / MiB:.1f} "
                                f"MiB: {spool_files}")
            ml.write_file(os.path.join(m.path, "after"), b"after\n", fsync=True)
            if ml.read_file(os.path.join(m.path, "before")) != b"before\n":
                raise TestError("a file written before the disk filled reads back different")
            log(f"ENOSPC before the disk filled ({closed}); the failed file's spool copy is gone; the mount "
                "goes on writing")
        # The daemon logs its last line as it exits: by then the log has passed its limit and been rotated.
        logs = [os.path.join(data, n) for n in ("mount.log", "mount.log.1")]
        t0 = time.monotonic()
        while not all(os.path.exists(f) for f in logs) and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        if not all(os.path.exists(f) for f in logs):
            raise TestError(f"with a 150-byte log limit, the log was not rotated: {os.listdir(data)}")
        log_text = "".join(ml.read_file(f).decode(errors="replace") for f in logs)
        if "No space left" not in log_text:
            raise TestError("mount.log does not say the disk filled:\n" + ml.tail(log_text, 10))
        for f in logs:
            st = os.stat(f)
            if st.st_mode & 0o777 != 0o600 or st.st_size > 150 + 4096:
                raise TestError(f"{f}: mode {st.st_mode & 0o777:o}, {st.st_size} bytes (limit 150 + a line)")
        log("mount.log says the disk filled, is 0600, and was rotated to mount.log.1 at its limit:\n"
            + ml.tail(log_text, 4))
    finally:
        os.environ.pop("TAHOE_MOUNT_LOG_LIMIT", None)
        # Kept beside the tmpfs, which goes away, for whoever reads a failure.
        if os.path.exists(os.path.join(data, "mount.log")):
            shutil.copy(os.path.join(data, "mount.log"), os.path.join(base, "mount.log"))
        ml.run(["umount", "-l", data], check=False)


def wait_gone(m, bound, what):
    """Waits up to `bound` seconds for m's daemon to exit and its mount to go; returns the seconds it took."""
    t0 = time.monotonic()
    while m.alive() or ml.is_mounted(m.path):
        if time.monotonic() - t0 > bound:
            raise TestError(f"{what}: the daemon (pid {m.pid}) still runs, or the mount is still there, after "
                            f"{bound} s:\n" + m.log_tail())
        time.sleep(0.1)
    m.pid = None
    return time.monotonic() - t0


@test("signals", 1800, 900)
def t_signals(c):
    """A daemon stops promptly however it is told while its uploads cannot complete (the mount wants 2-of-5 on
    5 servers, happy 5, and one node is stopped: directories still read, nothing new can be placed): on SIGTERM
    within 10 s; after `fusermount3 -u` once the grid has refused for a minute; `tahoe-mount unmount` gives up
    after --stuck-after, says why and leaves the mount up, and `unmount --keep-pending` unmounts at once. Every
    file closed before is uploaded by the next mount."""
    g = c.grid
    if c.fake:
        c.skip("the whole signals test (it is about the daemon)")
        return
    rng = random.Random(c.a.seed + 9)
    files = {}
    if g.n != 5:
        raise TestError("needs the 5-node grid")
    m = c.mount("signals", foreground=False, shares=False,
                args=["--shares-needed", "2", "--shares-happy", "5", "--shares-total", "5"])
    try:
        for round_name in ("sigterm", "fusermount", "unmount"):
            with m:
                g.stop_nodes(g.running()[0])
                data = ml.random_bytes(rng, 300_000)
                ml.write_file(os.path.join(m.path, round_name), data)
                files[round_name] = data
                if round_name == "sigterm":
                    os.kill(m.pid, signal.SIGTERM)
                    took = wait_gone(m, 10, "SIGTERM")
                    log(f"SIGTERM with an upload that cannot complete: daemon gone in {took:.1f} s")
                elif round_name == "fusermount":
                    ml.run(["fusermount3", "-u", m.path])
                    took = wait_gone(m, 120, "fusermount3 -u")
                    log(f"fusermount3 -u with an upload that cannot complete: daemon gone in {took:.1f} s")
                else:
                    t0 = time.monotonic()
                    p = ml.run([g.bin, "unmount", "--data-dir", m.data_dir, "--stuck-after", "5", m.path],
                               check=False, timeout=300, env=g.env())
                    took = time.monotonic() - t0
                    said = p.out + p.err
                    if p.returncode == 0 or "--keep-pending" not in said or not ml.is_mounted(m.path):
                        raise TestError(f"unmount with the grid refusing: exit {p.returncode} after {took:.0f} s, "
                                        f"mounted {ml.is_mounted(m.path)}:\n{ml.tail(said)}")
                    log(f"unmount --stuck-after 5 gave up after {took:.1f} s, the mount stays: "
                        f"{said.strip().splitlines()[-1][:300]}")
                    t0 = time.monotonic()
                    ml.run([g.bin, "unmount", "--data-dir", m.data_dir, "--keep-pending", m.path], timeout=60,
                           env=g.env())
                    took = wait_gone(m, 10, "unmount --keep-pending")
                    log(f"unmount --keep-pending: daemon gone in {took:.1f} s")
            g.start_nodes()
        # The same data directory: the journal replays, and the files go to the grid.
        with m:
            m.unmount()
        m.data_dir = c.fresh_data_dir(m)
        with m:
            for name, data in files.items():
                if ml.read_file(os.path.join(m.path, name)) != data:
                    raise TestError(f"{name}, closed before the daemon was stopped, is not on the grid")
        log("a mount of the same data directory uploaded all three; a fresh mount reads them back")
    finally:
        g.start_nodes()


# ---------------------------------------------------------------------------------------------------------------
# e. fsx


def fsx_reopen_args(fsx):
    """The close/reopen-heavy mix: fsx.py --reopen-prob (its default is 0.03)."""
    help_text = ml.run([sys.executable, fsx, "--help"]).out
    if "--reopen-prob" not in help_text:
        raise TestError(f"fsx.py --help shows no --reopen-prob:\n{ml.tail(help_text)}")
    return ["--reopen-prob", "0.3"]


@test("fsx", 3600, 1800)
def t_fsx(c):
    fsx = ml.tool("fsx.py")
    ops = 10000 if c.quick else 30000
    failed = []
    with c.mount("fsx") as m:
        for name, extra in (("plain", []), ("reopen-heavy", fsx_reopen_args(fsx))):
            t0 = time.monotonic()
            p = ml.run([sys.executable, fsx, os.path.join(m.path, f"fsx-{name}"), "--ops", ops, "--seed", c.a.seed,
                        "--log", os.path.join(c.dir("t", "fsx"), f"fsx-{name}.log")] + extra, timeout=3600, check=False)
            if p.returncode != 0:
                log(f"fsx {name}: FAILED after {time.monotonic() - t0:.1f} s:\n{ml.tail(p.out + p.err, 40)}")
                failed.append(name)
                continue
            summary = p.out.strip().splitlines()[-1] if p.out.strip() else ""
            log(f"fsx {name}: no mismatch, {time.monotonic() - t0:.1f} s; {summary.split(': ', 1)[-1]}")
    if failed:
        raise TestError(f"fsx.py ({ops} ops) failed: {', '.join(failed)} (reports above)")


# ---------------------------------------------------------------------------------------------------------------
# f. small things users notice


def root_writecap(config_dir):
    roots = os.path.join(config_dir, "roots")
    files = [os.path.join(roots, f) for f in os.listdir(roots)] if os.path.isdir(roots) else []
    if len(files) != 1:
        raise TestError(f"expected one saved root under {roots}, found {files}")
    mode = os.stat(files[0]).st_mode & 0o777
    if mode != 0o600:
        raise TestError(f"{files[0]} has mode {oct(mode)}, not 0600")
    with open(files[0]) as f:
        text = f.read()
    caps = [w for w in text.split() if w.startswith("URI:DIR2")]
    if not caps:
        raise TestError(f"{files[0]} holds no URI:DIR2 cap")
    return caps[0]


def readcap_of(binary, writecap):
    out = ml.run([binary, "cap", "-"], input=writecap).out
    caps = [w.strip(",;") for w in out.split() if w.startswith("URI:DIR2-RO:") or w.startswith("URI:DIR2-MDMF-RO:")]
    if not caps:
        raise TestError(f"`tahoe-mount cap` shows no read-only cap:\n{ml.tail(out)}")
    return caps[0]


def check_ro(path, what):
    ml.expect_errno(lambda: open(os.path.join(path, "new-file"), "wb").close(), errno.EROFS, what=f"{what}: create")
    ml.expect_errno(lambda: os.mkdir(os.path.join(path, "new-dir")), errno.EROFS, what=f"{what}: mkdir")
    ml.expect_errno(lambda: open(os.path.join(path, "kept.txt"), "r+b").close(), errno.EROFS,
                    what=f"{what}: open for writing")
    ml.expect_errno(lambda: os.unlink(os.path.join(path, "kept.txt")), errno.EROFS, what=f"{what}: unlink")
    if ml.read_file(os.path.join(path, "kept.txt")) != b"kept\n":
        raise TestError(f"{what}: kept.txt does not read back")


def make_owned_tree(root):
    """A tree as a root-run backup meets it: files of other owners and groups, hard links (within and across
    directories), FIFOs, character and block devices, a socket, symlinks with owners of their own, set-id bits,
    extended attributes on files and directories, and an old directory mtime."""
    import socket
    os.makedirs(os.path.join(root, "home", "alice"))
    os.makedirs(os.path.join(root, "var", "spool"))
    os.makedirs(os.path.join(root, "dev"))
    rnd = random.Random(5)
    for i in range(12):
        p = os.path.join(root, "home", "alice", f"file{i}")
        ml.write_file(p, ml.random_bytes(rnd, rnd.choice([0, 17, 4096, 200_000])))
        os.chown(p, 1000 + i % 3, 100 + i % 2)
        os.chmod(p, rnd.choice([0o600, 0o644, 0o755, 0o4755, 0o2750]))
    os.link(os.path.join(root, "home", "alice", "file1"), os.path.join(root, "home", "alice", "file1.hard"))
    os.link(os.path.join(root, "home", "alice", "file2"), os.path.join(root, "var", "spool", "file2.elsewhere"))
    os.link(os.path.join(root, "home", "alice", "file2"), os.path.join(root, "file2.third"))
    os.mkfifo(os.path.join(root, "var", "spool", "fifo"), 0o620)
    os.chown(os.path.join(root, "var", "spool", "fifo"), 7, 8)
    os.mknod(os.path.join(root, "dev", "tty9"), 0o620 | stat.S_IFCHR, os.makedev(4, 9))
    os.mknod(os.path.join(root, "dev", "loop7"), 0o660 | stat.S_IFBLK, os.makedev(7, 7))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(root, "var", "spool", "socket"))
    sock.close()
    os.symlink("../home/alice/file3", os.path.join(root, "var", "link"))
    os.lchown(os.path.join(root, "var", "link"), 1001, 101)
    os.chmod(os.path.join(root, "var", "spool"), 0o1777)
    # Extended attributes, as desktops tag files (user.) and as overlay and capability tools leave them (trusted.).
    os.setxattr(os.path.join(root, "home", "alice", "file4"), "user.xdg.origin.url", b"https://example.org/f4")
    os.setxattr(os.path.join(root, "home", "alice", "file4"), "user.binary", bytes(range(256)))
    os.setxattr(os.path.join(root, "home", "alice", "file1"), "user.on-a-hard-link", b"both names")
    os.setxattr(os.path.join(root, "home", "alice"), "user.dir-tag", b"")
    os.setxattr(os.path.join(root, "var", "spool"), "trusted.overlay.opaque", b"y")
    os.utime(os.path.join(root, "home"), (946_684_800, 946_684_800))


@test("rsync_root", 1800, 900)
def t_rsync_root(c):
    """rsync -aHAX --numeric-ids of an owned tree (as root) into the mount, then back after a remount from a fresh
    data directory: a dry run with checksums finds nothing to do, and hard links are one inode with their count.
    Then two snapshots with --link-dest: the unchanged files of the second are the first's inodes."""
    if os.geteuid() != 0:
        c.skip("the whole test (it needs root to make owners and device nodes)")
        return
    src = c.dir("t", "rsync_root", "src")
    shutil.rmtree(src, ignore_errors=True)
    make_owned_tree(src)
    rsync = ["rsync", "-aHAX", "--numeric-ids"]
    with c.mount("rsync_root", options=["allow_other"]) as m:
        dst = os.path.join(m.path, "backup")
        t0 = time.monotonic()
        ml.run(rsync + [src + "/", dst + "/"])
        log(f"rsync -aHAX --numeric-ids into the mount: {time.monotonic() - t0:.1f} s")
        m.unmount()
        m.data_dir = c.fresh_data_dir(m)
        m.mount()
        back = ml.run(["rsync", "-n", "-i", "-c"] + rsync[1:] + [dst + "/", src + "/"])
        if back.out.strip():
            raise TestError("after a remount, rsync -n -c -aHAX back finds differences:\n" + back.out[-3000:])
        a = os.lstat(os.path.join(dst, "home", "alice", "file2"))
        b = os.lstat(os.path.join(dst, "var", "spool", "file2.elsewhere"))
        if (a.st_ino, a.st_nlink) != (b.st_ino, 3):
            raise TestError(f"hard links after a remount: inodes {a.st_ino}/{b.st_ino}, nlink {a.st_nlink}")
        hard = os.path.join(dst, "home", "alice", "file1.hard")
        if os.getxattr(hard, "user.on-a-hard-link") != b"both names":
            raise TestError(f"{hard}: the extended attribute of its other name is not there")
        log("after a remount from a fresh data dir: rsync -n -c -aHAX back has nothing to do (extended attributes "
            "too); hard links are one inode with nlink 3")
        # Snapshots as backup tools make them.
        snap1, snap2 = os.path.join(m.path, "snap1"), os.path.join(m.path, "snap2")
        ml.run(rsync + [src + "/", snap1 + "/"])
        ml.write_file(os.path.join(src, "home", "alice", "file0"), b"changed since the first snapshot\n")
        ml.run(rsync + ["--link-dest", snap1, src + "/", snap2 + "/"])
        shared, changed = 0, 0
        for dirpath, _, files in os.walk(snap2):
            for f in files:
                p2 = os.path.join(dirpath, f)
                p1 = os.path.join(snap1, os.path.relpath(p2, snap2))
                s1, s2 = os.lstat(p1), os.lstat(p2)
                if not stat.S_ISREG(s2.st_mode):
                    continue
                if s1.st_ino == s2.st_ino:
                    shared += 1
                else:
                    changed += 1
        if changed != 1 or shared < 10:
            raise TestError(f"--link-dest: {shared} files share an inode with the first snapshot, {changed} do not "
                            "(expected all but the one changed)")
        log(f"rsync --link-dest: {shared} unchanged files share the first snapshot's inodes, the changed one does not")


@test("small", 1800, 900)
def t_small(c):
    g = c.grid
    with c.mount("small") as m:
        p = m.path
        # .grid/
        gd = os.path.join(p, ".grid")
        names = sorted(os.listdir(gd))
        if len(names) != g.n:
            raise TestError(f".grid/ lists {names}, expected {g.n} servers")
        texts = []
        for n in names:
            with open(os.path.join(gd, n)) as f:
                text = f.read()
            try:
                json.loads(text)
            except ValueError as e:
                raise TestError(f".grid/{n} is not JSON ({e}): {text[:200]!r}") from None
            texts.append(text)
        missing = [s["name"] for s in g.servers() if not any(s["nurl"] in t for t in texts)]
        if missing:
            raise TestError(f"no file in .grid/ has the NURL of {missing}")
        if c.fake:
            c.skip(".grid/ refuses writes")
        else:
            ml.expect_errno(lambda: open(os.path.join(gd, "x"), "wb").close(), errno.EROFS, errno.EACCES,
                            errno.EPERM, what="create in .grid/")
            ml.expect_errno(lambda: open(os.path.join(gd, names[0]), "ab").close(), errno.EROFS, errno.EACCES,
                            errno.EPERM, what="open .grid/ file for writing")
        log(f".grid/: {len(names)} files of valid JSON, one per server")
        # mkdir / rmdir
        os.makedirs(os.path.join(p, "a", "b"))
        ml.expect_errno(lambda: os.rmdir(os.path.join(p, "a")), errno.ENOTEMPTY, errno.EEXIST, what="rmdir non-empty")
        os.rmdir(os.path.join(p, "a", "b"))
        os.rmdir(os.path.join(p, "a"))
        if os.path.exists(os.path.join(p, "a")):
            raise TestError("a/ still there after rmdir")
        log("mkdir -p, rmdir of a non-empty dir (ENOTEMPTY), rmdir: ok")
        # rename over a file, across dirs
        ml.write_file(os.path.join(p, "x"), b"one")
        ml.write_file(os.path.join(p, "y"), b"two")
        os.rename(os.path.join(p, "x"), os.path.join(p, "y"))
        if os.path.exists(os.path.join(p, "x")) or ml.read_file(os.path.join(p, "y")) != b"one":
            raise TestError("rename x over y: x still there or y not x's content")
        os.mkdir(os.path.join(p, "d1"))
        os.mkdir(os.path.join(p, "d2"))
        ml.write_file(os.path.join(p, "d1", "f"), b"moved\n")
        os.rename(os.path.join(p, "d1", "f"), os.path.join(p, "d2", "g"))
        if os.listdir(os.path.join(p, "d1")) or ml.read_file(os.path.join(p, "d2", "g")) != b"moved\n":
            raise TestError("rename d1/f to d2/g: not moved")
        os.rename(os.path.join(p, "d2"), os.path.join(p, "d1", "d2"))
        if ml.read_file(os.path.join(p, "d1", "d2", "g")) != b"moved\n":
            raise TestError("rename of a directory into another: d1/d2/g not there")
        log("rename over a file, across dirs, of a dir: ok")
        # hard link, symlink
        ml.write_file(os.path.join(p, "orig"), b"linked content\n" * 1000)
        ml.run(["ln", os.path.join(p, "orig"), os.path.join(p, "hard")])
        if ml.read_file(os.path.join(p, "hard")) != ml.read_file(os.path.join(p, "orig")):
            raise TestError("the hard link reads other content")
        os.symlink("d1/d2/g", os.path.join(p, "sym"))
        if os.readlink(os.path.join(p, "sym")) != "d1/d2/g" or ml.read_file(os.path.join(p, "sym")) != b"moved\n":
            raise TestError("symlink: readlink or reading through it differs")
        log("hard link (ln) reads the same content; symlink + readlink: ok")
        # chmod, touch -d, through a remount
        meta = os.path.join(p, "meta.txt")
        ml.write_file(meta, b"meta\n")
        os.chmod(meta, 0o751)
        ml.run(["touch", "-d", "2001-02-03 04:05:06.123456789", meta])
        os.chmod(os.path.join(p, "d1"), 0o700)
        ml.run(["touch", "-d", "1999-12-31 23:59:59.5", os.path.join(p, "d1")])
        want = {q: (os.stat(q).st_mode & 0o7777, os.stat(q).st_mtime_ns) for q in (meta, os.path.join(p, "d1"))}
        local = os.path.join(c.work, "touch-reference")
        ml.write_file(local, b"")
        ml.run(["touch", "-d", "2001-02-03 04:05:06.123456789", local])
        if want[meta] != (0o751, os.stat(local).st_mtime_ns):
            raise TestError(f"meta.txt after chmod 751 and touch -d: mode {oct(want[meta][0])}, mtime_ns "
                            f"{want[meta][1]}, expected {os.stat(local).st_mtime_ns}")
        # df
        df = ml.run(["df", "-B1", p]).out.splitlines()
        size = int(df[1].split()[1])
        vfs = os.statvfs(p)
        if size <= 0 or vfs.f_blocks <= 0 or vfs.f_bsize <= 0:
            raise TestError(f"df shows no size: {df} / statvfs {vfs}")
        log(f"df: size {size / 1e9:.1f} GB, available {int(df[1].split()[3]) / 1e9:.1f} GB")
        ml.write_file(os.path.join(p, "kept.txt"), b"kept\n")
        m.remount(data_dir=c.fresh_data_dir(m))
        got = {q: (os.stat(q).st_mode & 0o7777, os.stat(q).st_mtime_ns) for q in want}
        if got != want:
            raise TestError(f"chmod/touch -d did not survive a remount: {want} then {got}")
        for rel, data in (("hard", b"linked content\n" * 1000), ("d1/d2/g", b"moved\n"), ("y", b"one")):
            if ml.read_file(os.path.join(m.path, rel)) != data:
                raise TestError(f"{rel} differs after the remount")
        if os.readlink(os.path.join(m.path, "sym")) != "d1/d2/g":
            raise TestError("symlink target differs after the remount")
        log("after a remount (fresh data dir): modes, ns mtimes, links, renamed files as they were")
        config = m.config_dir
    # read-only mounts of the same root
    with c.mount("small", data="data-ro", mnt="mnt-ro", options=["ro"]) as ro:
        check_ro(ro.path, "-o ro")
        log("-o ro: create, mkdir, open for writing and unlink fail with EROFS; files read")
    if c.fake:
        c.skip("--root READCAP")
        return
    readcap = readcap_of(c.grid.bin, root_writecap(config))
    with c.mount("small", data="data-rocap", mnt="mnt-rocap", config="config-rocap", root=readcap) as ro:
        check_ro(ro.path, "--root READCAP")
        log("--root READCAP (another config dir): read-only, EROFS on writes; files read")


# ---------------------------------------------------------------------------------------------------------------
# g. the command line


@test("cli", 600, 600)
def t_cli(c):
    if c.fake:
        c.skip("the whole cli test (it is about the binary)")
        return
    m = c.mount("cli", foreground=False)
    with m:
        ml.write_file(os.path.join(m.path, "hello"), b"hello\n")
        st = m.status()
        log(f"daemon mode: mounted when `mount` returned (pid {m.pid}); status:\n" + ml.tail(st, 10))
        if ml.pending_changes(st) is None or f"servers: {c.grid.n}" not in st:
            raise TestError(f"status shows no pending line or not servers: {c.grid.n}")
    # without the word `mount`, and with the -o options of the contract
    m2 = c.mount("cli", data="data-2", mnt="mnt-2", foreground=False,
                 options=["dir_ttl=5", f"cache_size={256 * MiB}", f"spool_size={1024 * MiB}"])
    orig = m2.command
    m2.command = lambda: [x for i, x in enumerate(orig()) if not (i == 1 and x == "mount")]
    with m2:
        if ml.read_file(os.path.join(m2.path, "hello")) != b"hello\n":
            raise TestError("`tahoe-mount GRID MOUNTPOINT` (no `mount`): hello differs")
        log("`tahoe-mount -o dir_ttl=5,cache_size=..,spool_size=.. GRID MOUNTPOINT` (without `mount`) mounts the "
            "same root")
    # A root writecap never shows in the daemon's command line (any local user reads it), given inline or as
    # --root @FILE, and the daemon's log and control socket are its user's only.
    config3 = c.dir("t", "cli", "config-3")
    p = ml.run([c.grid.bin, "mkdir", "--config-dir", config3, "--grid", "@" + c.grid.invitation], timeout=120,
               env=c.grid.env())
    root = p.out.strip()
    if not root.startswith("URI:DIR2:"):
        raise TestError(f"tahoe-mount mkdir printed {root[:20]!r}…, not a directory writecap")
    root_file = os.path.join(config3, "root.cap")
    with open(os.open(root_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(root + "\n")
    for i, given in enumerate([root, "@" + root_file]):
        m3 = c.mount("cli", data=f"data-3{i}", mnt=f"mnt-3{i}", config="config-3", foreground=False, root=given)
        with m3:
            ml.write_file(os.path.join(m3.path, "via-root"), b"root\n")
            with open(f"/proc/{m3.pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if any(b"URI:" in a for a in argv):
                raise TestError(f"the daemon's command line shows a cap: {[a[:16] for a in argv]}")
            modes = {}
            for dirpath, _, names in os.walk(m3.data_dir):
                for name in names:
                    if name == "mount.log" or name.endswith(".sock"):
                        modes[name] = os.stat(os.path.join(dirpath, name)).st_mode & 0o777
            if len(modes) != 2 or any(mode != 0o600 for mode in modes.values()):
                raise TestError(f"the daemon's log and control socket are not 0600: {modes}")
        log(f"--root {'inline' if i == 0 else '@FILE'}: the daemon's command line holds no cap; "
            f"mount.log and the control socket are 0600")
    # a bad invitation: non-zero exit, a message, nothing mounted
    mp = c.dir("t", "cli", "mnt-bad")
    p = ml.run([c.grid.bin, "mount", "--config-dir", c.dir("t", "cli", "config-bad"), "--data-dir",
                c.dir("t", "cli", "data-bad"), '{"not": "an invitation"}', mp], check=False, timeout=120,
               env=c.grid.env())
    if p.returncode == 0 or not (p.out + p.err).strip() or ml.is_mounted(mp):
        ml.fusermount_u(mp)
        raise TestError(f"mount of a bad invitation: exit {p.returncode}, output {(p.out + p.err)!r}")
    log(f"a bad invitation: exit {p.returncode}: {(p.out + p.err).strip().splitlines()[-1][:200]}")


# ---------------------------------------------------------------------------------------------------------------
# h. the maintainer: servers leave the grid, and the tree is healthy again with no user action


def wait_status(m, predicate, what, timeout):
    """Polls `tahoe-mount status` until predicate(text) holds; returns the text."""
    t0 = time.monotonic()
    while True:
        text = m.status()
        if predicate(text):
            return text
        if time.monotonic() - t0 > timeout:
            raise TestError(f"status never showed {what} within {timeout} s:\n{text}")
        time.sleep(1)


@test("maintain", 1800, 900)
def t_maintain(c):
    g = c.grid
    if c.fake:
        c.skip("the maintainer needs the real mount")
        return
    state = os.path.join(g.dir, "gsd.json")
    removed = []
    try:
        with c.mount("maintain", options=["renew_interval=86400", "poll_interval=2", "maintain_delay=0"]) as m:
            rng = random.Random(c.a.seed + 7)
            os.makedirs(os.path.join(m.path, "docs", "old"))
            written = {}
            for i in range(24):
                sub = ["", "docs", os.path.join("docs", "old")][i % 3]
                path = os.path.join(m.path, sub, f"file{i}.bin")
                written[path] = ml.random_bytes(rng, 3000 + 997 * i)
                ml.write_file(path, written[path], fsync=True)
            # Everything is on the grid and the first pass (at mount time) has renewed it.
            text = wait_status(m, lambda t: "last pass: finished" in t and "pass under way" not in t
                               and ml.pending_changes(t) == 0, "a finished first pass", 300)
            log("first pass: " + [line for line in text.splitlines() if "last pass" in line][0].strip())
            # Two servers die and the operator removes them from the grid service directory.
            removed = [3, 4]
            g.stop_nodes(*removed)
            for i in removed:
                ml.run([g.bin, "gsd", "remove", "--state", state, "--config-dir", g.operator_config,
                        f"storage{i}"], env=g.env())
            t0 = time.monotonic()
            text = wait_status(m, lambda t: "last pass: finished" in t and "(servers left the grid)" in t
                               and "pass under way" not in t, "a pass after the servers left", 600)
            line = [x for x in text.splitlines() if "last pass" in x][0].strip()
            log(f"after gsd remove of storage3 and storage4: {line} ({time.monotonic() - t0:.1f} s)")
            repaired = re.search(r"(\d+) repaired", line)
            if not repaired or int(repaired.group(1)) == 0:
                raise TestError(f"the pass after the servers left repaired nothing: {line}")
            roots = os.path.join(m.config_dir, "roots")
            root = open(os.path.join(roots, os.listdir(roots)[0])).read().strip()
            p = ml.run([g.bin, "deep-check", "--grid", "@" + g.invitation, "--grid-max-age", "0",
                        "--shares-happy", str(g.happy), root], env=g.env(), check=False, input=None)
            if p.returncode != 0:
                raise TestError(f"deep-check on the remaining servers after the maintainer's repair: exit "
                                f"{p.returncode}\n{p.out}\n{p.err}")
            log("deep-check on the three remaining servers: " + p.out.strip().splitlines()[0])
            for path, data in written.items():
                if ml.read_file(path) != data:
                    raise TestError(f"{path} reads back different after the repair")
    finally:
        # Bring the grid back whole for whatever runs next.
        g.start_nodes()
        for i in removed:
            marker = os.path.join(g.servers()[i]["basedir"], "gsd-enrolled")
            if os.path.exists(marker):
                os.remove(marker)
        if removed:
            g.make_gsd()


# ---------------------------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=ml.default_bin(), help="tahoe-mount binary")
    p.add_argument("--only", help="run only these tests (comma-separated names)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for CI")
    p.add_argument("--fake-mount", action="store_true", help="a bind-mounted local directory instead of the mount")
    p.add_argument("--keep", action="store_true", help="keep the work directory (and the grid's shares) afterwards")
    p.add_argument("--work", default=os.path.join(REPO, "mount-tests", "work", "mount"), help="work directory")
    p.add_argument("--seed", type=int, default=int(os.environ.get("TAHOE_MOUNT_TEST_SEED", "1")))
    a = p.parse_args()
    a.bin = os.path.abspath(a.bin)
    a.work = os.path.abspath(a.work)
    names = [t[0] for t in TESTS]
    chosen = TESTS
    if a.only:
        want = a.only.split(",")
        unknown = [w for w in want if w not in names]
        if unknown:
            p.error(f"unknown test(s) {unknown}; tests: {', '.join(names)}")
        chosen = [t for t in TESTS if t[0] in want]
    if os.geteuid() != 0:
        print("note: not root; dropping the page cache and bind mounts (--fake-mount) need root", file=sys.stderr)
    if not a.fake_mount and not ml.has_mount_command(a.bin):
        print(f"test_mount.py: {a.bin} has no `mount` command (--fake-mount runs the checks without it)",
              file=sys.stderr)
        return 2
    ml.unmount_leftovers(a.work)
    grid_dir = os.path.join(a.work, "grid")
    ml.Grid(grid_dir).stop()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    print(f"tahoe-mount mount tests ({'quick' if a.quick else 'full'}{', FAKE MOUNT' if a.fake_mount else ''}), "
          f"binary {a.bin}, work {a.work}", flush=True)
    grid = ml.Grid(grid_dir, n=5, bin=a.bin, needed=2, happy=3, total=4)
    results = []
    t_all = time.monotonic()
    try:
        grid.start()
        ctx = Ctx(a, grid)
        for name, fn, timeout, quick_timeout in chosen:
            limit = quick_timeout if a.quick else timeout
            print(f"== {name}", flush=True)
            ctx.skipped = []
            t0 = time.monotonic()

            def alarm(signum, frame, name=name, limit=limit):
                raise TestError(f"test {name} did not finish within {limit} s")

            signal.signal(signal.SIGALRM, alarm)
            signal.alarm(limit)
            try:
                fn(ctx)
                outcome = "ok" if not ctx.skipped else f"ok, {len(ctx.skipped)} check(s) skipped"
            except TestError as e:
                outcome = "FAIL"
                print(f"    FAIL: {e}", flush=True)
            except Exception as e:
                outcome = "FAIL"
                print(f"    FAIL: {type(e).__name__}: {e}\n" + ml.tail(traceback.format_exc(), 20), flush=True)
            finally:
                signal.alarm(0)
            took = time.monotonic() - t0
            results.append((name, outcome, took, list(ctx.skipped)))
            print(f"{outcome.split(',')[0].upper():4} {name} ({took:.1f} s)", flush=True)
    except TestError as e:
        print(f"test_mount.py: setting up the grid failed: {e}", file=sys.stderr)
        results.append(("grid", "FAIL", 0, []))
    finally:
        ml.unmount_leftovers(a.work)
        grid.stop()
    print(f"\nsummary ({time.monotonic() - t_all:.0f} s{', FAKE MOUNT' if a.fake_mount else ''}):")
    for name, outcome, took, skipped in results:
        print(f"  {name:8} {outcome:28} {took:7.1f} s" + (f"   skipped: {'; '.join(skipped)}" if skipped else ""))
    failed = [r for r in results if r[1] == "FAIL"]
    if not failed and not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)
    elif os.path.isdir(a.work):
        print(f"work directory kept: {a.work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
