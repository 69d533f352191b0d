#!/usr/bin/env python3
"""Other projects' POSIX test suites (pjdfstest, xfstests' fsx and fsstress) run against a real tahoe-mount FUSE
mount of a local grid.

usage: peer_suites.py {build,pjdfstest,fsx,fsstress,all} [--bin PATH] [--suites DIR] [--cache DIR] [--work DIR]
                      [--keep] [--min-free SIZE] [options of the parts below]

What it owns:
  * Building the suites from the pinned archives in --suites (default <repo>/../shared/peer-suites, see its
    README.md): unpacked and built under --cache (default mount-tests/work/peer-suites/NAME-SHA12/), one build per
    archive SHA-256, reused while the archive is unchanged. Their code never enters the repository.
  * pjdfstest: every group (tests/*/) run by `prove -v` as root, each group in its own directory of one mount, --jobs
    groups at a time, each bounded by --group-timeout (a hang is a failure of the file it was in, not a hang of
    CI). The TAP of every file gives the failing test points (`chmod/00.t:12`) and the files that died
    (`chmod/00.t:died`: no plan, fewer points than planned, a non-zero exit, killed by the timeout, or never run
    because of it). They are compared with mount-tests/pjdfstest-expected.txt (`group/NN.t:N  # reason`, `#`
    starts a comment): a failure not listed there is a regression (exit status 1); listed points that now pass
    are printed, so the list can be trimmed. --write-expected rewrites the list from this run (reasons kept for
    lines still failing, TODO for new ones; groups not run keep their lines).
  * fsx: `ltp/fsx -N N FILE`, with mmap and without (`-R -W`); each must exit 0. Times are reported.
  * fsstress: `ltp/fsstress -d DIR -n N -p P -s SEED -v` with every op the mount does not support off
    (FSSTRESS_OFF says why for each; --all-ops to revise it, --off to leave out more), and RLIMIT_FSIZE
    (--max-file-size, SIGXFSZ ignored: writes past it fail with EFBIG) so files stay small: fsstress otherwise
    grows files by up to 1024 * st_blksize (1 GiB on the mount) per copy or splice, and every close of a changed
    file uploads all of it (so most copyranges fail under the limit). Afterwards a manifest of DIR (type, mode, size,
    SHA-256, symlink target; link count and mtime of all but directories), an unmount (it waits for the uploads), a mount from a
    fresh data dir (so everything is read from the grid), and the same manifest again: they must be equal. Reports
    the daemon's peak RSS (VmHWM), the spool's peak size, the grid's share bytes, and errors by op.
Throughout, a watcher stops everything (the suites and the mount daemon, whose uploads fill the grid's disk) when
free space on the work directory's filesystem falls below --min-free: the grid's shares share that disk.

One grid of 5 storage nodes with a GSD (mountlib.Grid), shares 2-of-4, happy 3, as test_mount.py; each part
mounts a root of its own with -o allow_other (pjdfstest switches to other uids). Results and logs go to
--work/results/ (pjdfstest-results.txt, prove logs per group, fsx and fsstress logs, manifests, daemon logs); the
grid and the mounts' data are removed at the end unless --keep. Needs root, FUSE, and mount-tests/deps.sh's
packages (autotools, gcc, prove, xfslibs-dev and friends).
"""

import argparse
import concurrent.futures
import errno
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

sys.path.insert(0, HERE)
import venv_reexec  # noqa: E402

venv_reexec.ensure(__file__)

import mountlib as ml  # noqa: E402
from mountlib import MiB, TestError, log  # noqa: E402

GiB = 1 << 30
EXPECTED = os.path.join(HERE, "pjdfstest-expected.txt")

# fsstress ops switched off (-f OP=0), and why: each fails on every call on the mount (seen with --all-ops), so it
# only adds noise, and its errors could hide a new error of an op that works. Ops this build of fsstress leaves out
# (io_uring, btrfs snapshots and subvolumes: no liburing, no btrfsutil), ops off by default (attr_set,
# attr_remove) and the RWF_DONTCACHE reads and writes (plain ones after the first EOPNOTSUPP) need no entry.
FSSTRESS_OFF = {
    # Extended attributes: the mount has no getxattr/setxattr/listxattr/removexattr.
    "getfattr": "no extended attributes (EOPNOTSUPP)",
    "setfattr": "no extended attributes (EOPNOTSUPP)",
    "listfattr": "no extended attributes (EOPNOTSUPP)",
    "removefattr": "no extended attributes (EOPNOTSUPP)",
    # fallocate(2) in every mode, and XFS's space reservation ioctls that fall back to it.
    "fallocate": "no fallocate (EOPNOTSUPP)",
    "punch": "no fallocate (EOPNOTSUPP)",
    "zero": "no fallocate (EOPNOTSUPP)",
    "collapse": "no fallocate (EOPNOTSUPP)",
    "insert": "no fallocate (EOPNOTSUPP)",
    "unshare": "no fallocate (EOPNOTSUPP)",
    "resvsp": "no fallocate (EOPNOTSUPP)",
    "unresvsp": "no fallocate (EOPNOTSUPP)",
    # Extents shared or swapped between files.
    "clonerange": "no reflinks (FICLONERANGE: EOPNOTSUPP)",
    "deduperange": "no reflinks (FIDEDUPERANGE: EOPNOTSUPP)",
    "exchangerange": "no XFS_IOC_EXCHANGE_RANGE (ENOTTY)",
    # rename(2) flags other than RENAME_NOREPLACE.
    "rexchange": "no RENAME_EXCHANGE (EINVAL)",
    "rwhiteout": "no RENAME_WHITEOUT (EINVAL)",
    # ioctls of other filesystems (fsstress shows only -1).
    "getattr": "FS_IOC_GETFLAGS (ENOTTY)",
    "setattr": "FS_IOC_SETFLAGS (ENOTTY)",
    "setxattr": "FS_IOC_FSSETXATTR (ENOTTY)",
    "bulkstat": "XFS bulkstat ioctl (ENOTTY)",
    "bulkstat1": "XFS bulkstat ioctl (ENOTTY)",
    "fiemap": "no FIEMAP (EOPNOTSUPP)",
}

# Errors an op the mount supports must never give; any of them fails the fsstress part.
FSSTRESS_BAD_ERRNOS = {errno.EIO, errno.EDQUOT, errno.ENOSPC, errno.ENOTCONN, errno.ESTALE}


def parse_size(text):
    """"4M" -> 4 MiB; K, M, G suffixes (binary), a plain number is bytes."""
    m = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4M, 10G)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def human(n):
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def disk_bytes(root):
    """Bytes a tree takes on disk (st_blocks, so holes are free); 0 if it is not there."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass  # removed while we walk (a spool file uploaded, a share replaced)
    return total


def share_bytes(grid):
    return sum(disk_bytes(os.path.join(s["basedir"], "storage")) for s in grid.servers())


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def vm_hwm(pid):
    """The peak resident set size of a process (VmHWM, bytes), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Building the suites


class Suite:
    """One archive and how to build it: `commands` run in order in the unpacked top directory; `products` are the
    files the build must leave (relative to that directory)."""

    def __init__(self, name, archive, commands, products):
        self.name, self.archive, self.commands, self.products = name, archive, commands, products


def suites(suites_dir):
    return {
        "pjdfstest": Suite("pjdfstest", os.path.join(suites_dir, "pjdfstest.tar.gz"),
                           [["autoreconf", "-ifs"], ["./configure"], ["make", "pjdfstest"]], ["pjdfstest"]),
        "xfstests": Suite("xfstests", os.path.join(suites_dir, "xfstests.tar.gz"),
                          [["make", "configure"], ["./configure"], ["make", "-C", "lib"], ["make", "-C", "ltp"]],
                          ["ltp/fsx", "ltp/fsstress"]),
    }


def build(suite, cache):
    """The built tree of suite: cache/NAME-SHA12/TOP (the archive's top directory), built there on first use.
    A stamp holding the archive's SHA-256, written last, marks a finished build; anything else is rebuilt."""
    if not os.path.isfile(suite.archive):
        raise TestError(f"no {suite.archive} (--suites DIR names the directory of the peer suites' archives)")
    sha = ml.sha256_file(suite.archive)
    root = os.path.join(cache, f"{suite.name}-{sha[:12]}")
    stamp = os.path.join(root, "built.sha256")
    if os.path.exists(stamp) and open(stamp).read().strip() == sha:
        return os.path.join(root, open(os.path.join(root, "top")).read().strip())
    for tool in ("tar", "autoreconf", "make", "gcc"):
        if shutil.which(tool) is None:
            raise TestError(f"building {suite.name} needs {tool}: run mount-tests/deps.sh (as root)")
    for old in os.listdir(cache) if os.path.isdir(cache) else []:
        if old.startswith(suite.name + "-"):
            shutil.rmtree(os.path.join(cache, old))
    os.makedirs(root)
    t0 = time.monotonic()
    ml.run(["tar", "-xzf", suite.archive, "-C", root])
    tops = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    if len(tops) != 1:
        raise TestError(f"{suite.archive}: expected one top directory, found {tops}")
    top = os.path.join(root, tops[0])
    with open(os.path.join(root, "build.log"), "w") as logf:
        for cmd in suite.commands:
            logf.write(f"==== {' '.join(cmd)}\n")
            logf.flush()
            p = subprocess.run(cmd, cwd=top, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               timeout=1800)
            if p.returncode != 0:
                raise TestError(f"building {suite.name}: `{' '.join(cmd)}` exited {p.returncode}; log "
                                f"{logf.name}:\n" + ml.file_tail(logf.name))
    missing = [p for p in suite.products if not os.access(os.path.join(top, p), os.X_OK)]
    if missing:
        raise TestError(f"building {suite.name} left no {', '.join(missing)}")
    with open(os.path.join(root, "top"), "w") as f:
        f.write(tops[0] + "\n")
    with open(stamp, "w") as f:
        f.write(sha + "\n")
    log(f"built {suite.name} ({sha[:12]}) in {time.monotonic() - t0:.1f} s: {top}")
    return top


# ---------------------------------------------------------------------------------------------------------------
# Watching the disk (and sampling the spool and the daemon)


class Watch(threading.Thread):
    """Samples every `interval` seconds until stop(): free space on the work directory's filesystem and, when
    given, the spool's size (its peak) and the daemon's VmHWM. When free space falls below min_free it SIGKILLs
    every registered process group and the daemon (a runaway upload stops there) and records why in `tripped`."""

    def __init__(self, work, min_free, interval=2.0, daemon_pid=None, spool=None):
        super().__init__(daemon=True)
        self.work, self.min_free, self.interval = work, min_free, interval
        self.daemon_pid, self.spool = daemon_pid, spool
        self.groups = set()
        self.tripped = None
        self.min_free_seen = None
        self.peak_spool = self.peak_rss = 0
        self._stop_event = threading.Event()

    def register(self, pgid):
        self.groups.add(pgid)
        if self.tripped:
            kill_group(pgid)

    def unregister(self, pgid):
        self.groups.discard(pgid)

    def sample(self):
        free = free_bytes(self.work)
        self.min_free_seen = free if self.min_free_seen is None else min(self.min_free_seen, free)
        if self.spool:
            self.peak_spool = max(self.peak_spool, disk_bytes(self.spool))
        if self.daemon_pid:
            self.peak_rss = max(self.peak_rss, vm_hwm(self.daemon_pid) or 0)
        if free < self.min_free and not self.tripped:
            self.tripped = (f"free space on {self.work} fell to {human(free)} (--min-free {human(self.min_free)}): "
                            f"stopped the suite and the mount daemon")
            log(self.tripped)
            for pgid in list(self.groups):
                kill_group(pgid)
            if self.daemon_pid:
                try:
                    os.kill(self.daemon_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self):
        self._stop_event.set()
        self.join()
        self.sample()
        if self.tripped:
            raise TestError(self.tripped)


def run_bounded(cmd, cwd, log_path, timeout, watch, preexec_fn=None):
    """Runs cmd in a session of its own, output (both streams) to log_path, registered with watch; after timeout
    seconds kills the whole session. Returns (exit status or None if killed by the timeout, seconds)."""
    t0 = time.monotonic()
    with open(log_path, "wb") as out:
        p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec_fn)
    watch.register(p.pid)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log(f"`{cmd[0]}` (pid {p.pid}) survives SIGKILL: stuck in the kernel on the mount?")
        rc = None
    finally:
        watch.unregister(p.pid)
    return rc, time.monotonic() - t0


# ---------------------------------------------------------------------------------------------------------------
# The run: one grid, a mount per part


class Ctx:
    def __init__(self, a, grid, trees):
        self.a, self.grid, self.trees = a, grid, trees
        self.results = os.path.join(a.work, "results")

    def mount(self, name):
        base = os.path.join(self.a.work, "t", name)
        return ml.Mount(self.grid, os.path.join(base, "mnt"), os.path.join(base, "config"),
                        os.path.join(base, "data"), options=["allow_other"],
                        log_path=os.path.join(self.results, f"{name}-daemon.log"), unmount_timeout=3600)

    def watch(self, m, **kw):
        """A started Watch of the disk and of mount m's daemon."""
        w = Watch(self.a.work, self.a.min_free, daemon_pid=m.pid, **kw)
        w.start()
        return w


# ---------------------------------------------------------------------------------------------------------------
# pjdfstest


class TapFile:
    """The TAP of one .t file as prove -v showed it: its plan, {point: (ok, line)}, and why it died (or None)."""

    def __init__(self, name):
        self.name = name
        self.plan = None
        self.points = {}
        self.notes = []
        self.died = None

    def finish(self):
        if self.died:
            return
        dubious = [n for n in self.notes if n.startswith("Dubious")]
        if self.plan is None:
            self.died = "no plan: " + ("; ".join(self.notes) or "no output")
        elif len(self.points) < self.plan:
            self.died = f"planned {self.plan}, ran {len(self.points)}"
        elif dubious:
            self.died = dubious[0]

    def failing(self):
        return {n: line for n, (ok, line) in self.points.items() if not ok}


TAP_HEADER = re.compile(r"^(.*\.t) \.\.+ ?(.*)$")
TAP_POINT = re.compile(r"^(not )?ok (\d+)\b(.*)$")
TAP_PLAN = re.compile(r"^1\.\.(\d+)")
TAP_DIRECTIVE = re.compile(r"#\s*(TODO|SKIP)\b", re.I)


def parse_prove(text, tests_dir):
    """{'group/NN.t': TapFile} from PROVE's output. A `not ok` with a TODO directive passes (TAP's rule:
    pjdfstest marks known failures of other systems so); SKIP points pass."""
    files = {}
    cur = None
    for line in text.splitlines():
        m = TAP_HEADER.match(line)
        if m and m.group(1).startswith(tests_dir + "/"):
            name = os.path.relpath(m.group(1), tests_dir)
            cur = files.setdefault(name, TapFile(name))
            continue
        if line.startswith("Test Summary Report"):
            break
        if cur is None:
            continue
        m = TAP_POINT.match(line)
        if m:
            ok = not m.group(1) or bool(TAP_DIRECTIVE.search(m.group(3)))
            cur.points[int(m.group(2))] = (ok, line)
        elif TAP_PLAN.match(line):
            cur.plan = int(TAP_PLAN.match(line).group(1))
        elif line.startswith(("Dubious", "No subtests run", "Parse errors", "Bad plan")):
            cur.notes.append(line.strip())
    return files


# prove -v with the formatter it uses on a terminal: the one it picks for a file or pipe holds each test file's
# output back until the file ends, and a group killed by the timeout would leave no trace of the file that hung.
PROVE = ["prove", "-v", "--formatter", "TAP::Formatter::Console"]


def run_group(c, tree, mnt, group, watch):
    """prove -v of one group from its own directory on the mount, bounded by --group-timeout. Returns
    ({file: TapFile} for every .t of the group, seconds)."""
    tests_dir = os.path.join(tree, "tests")
    cwd = os.path.join(mnt, "pjdfstest", group)
    os.makedirs(cwd)
    log_path = os.path.join(c.results, "pjdfstest-logs", f"{group}.log")
    rc, took = run_bounded(PROVE + ["-r", os.path.join(tests_dir, group)], cwd, log_path,
                           c.a.group_timeout, watch)
    with open(log_path, errors="replace") as f:
        files = parse_prove(f.read(), tests_dir)
    if rc is None:
        # The last file prove started is the one that hung; the ones after it never ran.
        started = sorted(files)
        if started:
            files[started[-1]].died = f"hung: killed after the group's {c.a.group_timeout} s"
    for path in sorted(os.listdir(os.path.join(tests_dir, group))):
        name = f"{group}/{path}"
        if path.endswith(".t") and name not in files:
            files[name] = TapFile(name)
            files[name].died = "not run" + (" (the group timed out)" if rc is None else "")
    for f in files.values():
        f.finish()
    log(f"pjdfstest {group}: {sum(len(f.points) for f in files.values())} points, "
        f"{sum(len(f.failing()) for f in files.values())} failed, {sum(1 for f in files.values() if f.died)} files "
        f"died, {took:.0f} s" + (" (TIMED OUT)" if rc is None else ""))
    return files, took


def point_key(key):
    """Sort key of 'group/NN.t:N' (numbers numerically, 'died' first)."""
    name, _, point = key.rpartition(":")
    return (name, -1 if point == "died" else int(point))


def read_expected(path):
    """{'group/NN.t:N': reason} of the expected-failures file ({} if there is none)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, reason = line.partition("#")
            out[key.strip()] = reason.strip() or "TODO"
    return out


def write_expected(path, entries):
    with open(path, "w") as f:
        f.write("# pjdfstest test points known to fail on tahoe-mount: `group/NN.t:N  # reason`, or\n"
                "# `group/NN.t:died  # reason` for a file that dies. mount-tests/peer_suites.py pjdfstest fails on\n"
                "# any failure not listed here and prints listed ones that pass; `--write-expected` rewrites this\n"
                "# file from a run (reasons of lines still failing are kept, new ones get TODO).\n")
        for key in sorted(entries, key=point_key):
            f.write(f"{key}  # {entries[key]}\n")


def tried_op(line):
    """('chown', 'EPERM') from a pjdfstest failure line "... tried '-u 65534 chown ...', expected 0, got EPERM";
    ('test_check', 'false') from a bare "not ok N" (a test_check comparison: of ctimes, mtimes, ...); None when the
    line says neither."""
    if re.fullmatch(r"not ok \d+", line.strip()):
        return ("test_check", "false")
    m = re.search(r"tried '([^']*)', expected \S+, got (\S*)", line)
    if not m:
        return None
    words = m.group(1).split()
    while words and words[0] in ("-u", "-g", "-U", "--"):
        words = words[1:] if words[0] == "--" else words[2:]
    return (words[0] if words else "?", m.group(2) or "(nothing)")


def part_pjdfstest(c):
    tree = c.trees["pjdfstest"]
    if shutil.which("prove") is None:
        raise TestError("pjdfstest needs prove (Debian: perl): run mount-tests/deps.sh")
    groups = sorted(d for d in os.listdir(os.path.join(tree, "tests"))
                    if os.path.isdir(os.path.join(tree, "tests", d)))
    if c.a.groups:
        unknown = set(c.a.groups.split(",")) - set(groups)
        if unknown:
            raise TestError(f"no pjdfstest group(s) {', '.join(sorted(unknown))}; groups: {', '.join(groups)}")
        groups = [g for g in groups if g in c.a.groups.split(",")]
    os.makedirs(os.path.join(c.results, "pjdfstest-logs"), exist_ok=True)
    files, times = {}, {}
    with c.mount("pjdfstest") as m:
        watch = c.watch(m)
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=c.a.jobs) as pool:
                runs = pool.map(lambda g: run_group(c, tree, m.path, g, watch), groups)
                for group, (group_files, took) in zip(groups, runs):
                    files.update(group_files)
                    times[group] = took
        finally:
            watch.stop()

    failing = {}  # key -> the TAP line or why the file died
    for f in files.values():
        for n, line in f.failing().items():
            failing[f"{f.name}:{n}"] = line
        if f.died:
            failing[f"{f.name}:died"] = f.died
    run_points = sum(len(f.points) for f in files.values())
    failed_points = sum(len(f.failing()) for f in files.values())
    passed = run_points - failed_points
    died = sorted(f.name for f in files.values() if f.died)
    totals = (f"{run_points} test points run in {len(files)} files of {len(groups)} groups: {passed} passed, "
              f"{failed_points} failed ({100 * passed / max(run_points, 1):.1f} % pass); {len(died)} files died")

    expected = read_expected(c.a.expected)
    ran_groups = set(groups)
    regressions = sorted((k for k in failing if k not in expected), key=point_key)
    # Listed points that ran and passed now (or listed deaths of files that ran through).
    now_pass = []
    for key in sorted(expected, key=point_key):
        name, _, point = key.rpartition(":")
        f = files.get(name)
        if f is None or key in failing:
            continue
        if (point == "died" and not f.died) or (point != "died" and int(point) in f.points):
            now_pass.append(key)

    ops = {}
    for line in failing.values():
        op = tried_op(line)
        if op:
            ops[op] = ops.get(op, 0) + 1
    by_group = {}
    for key in failing:
        by_group[key.split("/")[0]] = by_group.get(key.split("/")[0], 0) + 1

    results = os.path.join(c.results, "pjdfstest-results.txt")
    with open(results, "w") as out:
        out.write(f"# pjdfstest on tahoe-mount {c.a.bin_id}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n# {totals}\n")
        out.write("# group: failing entries, seconds\n")
        for g in groups:
            out.write(f"#   {g:16} {by_group.get(g, 0):5} {times[g]:7.1f}\n")
        out.write("# failures by syscall and result:\n")
        for (op, got), n in sorted(ops.items(), key=lambda kv: -kv[1]):
            out.write(f"#   {n:5}  {op} -> {got}\n")
        for key in sorted(failing, key=point_key):
            out.write(f"{'REGRESSION' if key in regressions else 'expected  '} {key}  {failing[key]}\n")
        for key in now_pass:
            out.write(f"now passes {key}  (listed: {expected[key]})\n")

    print(f"  pjdfstest: {totals}")
    print("  failing entries by group: " + ", ".join(f"{g} {by_group[g]}" for g in groups if by_group.get(g)))
    print("  failures by syscall and result (top 15): " + "; ".join(
        f"{op}->{got} {n}" for (op, got), n in sorted(ops.items(), key=lambda kv: -kv[1])[:15]))
    if died:
        print("  files that died: " + ", ".join(f"{n} ({files[n].died})" for n in died))
    print(f"  results: {results}")
    if now_pass:
        print(f"  {len(now_pass)} listed in {c.a.expected} now pass (trim the list): " + " ".join(now_pass))
    if c.a.write_expected:
        kept = {k: r for k, r in expected.items() if k.split("/")[0] not in ran_groups}
        kept.update({k: expected.get(k, "TODO") for k in failing})
        write_expected(c.a.expected, kept)
        print(f"  wrote {len(kept)} entries to {c.a.expected}")
    elif regressions:
        shown = "\n".join(f"      {k}  {failing[k]}" for k in regressions[:20])
        raise TestError(f"{totals}; {len(regressions)} failures not in {c.a.expected}"
                        f"{' (first 20)' if len(regressions) > 20 else ''}:\n{shown}")
    return totals


# ---------------------------------------------------------------------------------------------------------------
# fsx


def part_fsx(c):
    fsx = os.path.join(c.trees["xfstests"], "ltp", "fsx")
    failed, lines = [], []
    with c.mount("fsx") as m:
        watch = c.watch(m)
        try:
            for name, extra in (("mmap", []), ("no-mmap", ["-R", "-W"])):
                logdir = os.path.join(c.results, f"fsx-{name}")
                os.makedirs(logdir, exist_ok=True)
                cmd = [fsx, "-N", c.a.fsx_ops, "-P", logdir] + extra + [os.path.join(m.path, f"fsx-{name}")]
                rc, took = run_bounded(cmd, m.path, os.path.join(logdir, "output.log"), c.a.fsx_timeout, watch)
                outcome = "ok" if rc == 0 else ("TIMED OUT" if rc is None else f"exit {rc}")
                line = f"fsx -N {c.a.fsx_ops} {' '.join(extra) or '(mmap on)'}: {outcome} in {took:.1f} s"
                log(line)
                lines.append(line)
                if rc != 0:
                    print(ml.file_tail(os.path.join(logdir, "output.log"), 30), flush=True)
                    failed.append(name)
        finally:
            watch.stop()
    if failed:
        raise TestError(f"fsx failed: {', '.join(failed)} (logs in {c.results}/fsx-*/)")
    return "; ".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# fsstress


KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
         stat.S_IFSOCK: "socket", stat.S_IFCHR: "char device", stat.S_IFBLK: "block device"}


def manifest(root):
    """{relative path: {type, mode, size, sha256, target, nlink, mtime_ns}} of every entry under root. A directory's
    link count and mtime are left out: a mount shows 1 link for a directory it has not listed yet (as find(1)
    understands), and keeps the mtime its entries' changes give a directory only while it runs (documented)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            e = {"type": KINDS.get(stat.S_IFMT(st.st_mode), "other"), "mode": oct(stat.S_IMODE(st.st_mode))}
            if not stat.S_ISDIR(st.st_mode):
                e.update(nlink=st.st_nlink, mtime_ns=st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                e["sha256"] = ml.sha256_file(p)
            elif stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            out[os.path.relpath(p, root)] = e
    return out


def manifest_diff(before, after):
    """([one line per entry that differs], {(kind, field): count})."""
    diffs, fields = [], {}
    for rel in sorted(set(before) | set(after)):
        a, b = before.get(rel), after.get(rel)
        if a is None:
            diffs.append(f"new after the remount: {rel}")
        elif b is None:
            diffs.append(f"gone after the remount: {rel}")
        elif a != b:
            changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            diffs.append(f"{rel}: " + ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in changed))
            for k in changed:
                fields[(a["type"], k)] = fields.get((a["type"], k), 0) + 1
    return diffs, fields


FSSTRESS_LINE = re.compile(r"^\d+/\d+: (\S+) (.*)$")


def fsstress_errors(text):
    """{op: {errno: count}} from fsstress -v output. The last word of an op's line is its errno (0 for success),
    or -1 where fsstress shows only that a call failed (its ioctls; copyrange's "copied -1??"); lines of its own
    bookkeeping (" - no filename", "add id=", "entry:") are not ops."""
    out = {}
    for line in text.splitlines():
        m = FSSTRESS_LINE.match(line)
        if not m or " - " in line or " add id=" in line or " entry: " in line:
            continue
        last = line.split()[-1]
        if last == "-1??":
            last = "-1"
        if re.fullmatch(r"-?\d+", last) and int(last) != 0:
            errs = out.setdefault(m.group(1), {})
            errs[int(last)] = errs.get(int(last), 0) + 1
    return out


def errors_text(errors):
    """'creat EEXISTx3; write EFBIGx12' from {op: {errno: count}}."""
    return "; ".join(f"{op} " + ",".join(f"{errno.errorcode.get(e, 'failed')}x{n}" for e, n in sorted(errs.items()))
                     for op, errs in sorted(errors.items()))


def part_fsstress(c):
    fsstress = os.path.join(c.trees["xfstests"], "ltp", "fsstress")
    cap = c.a.max_file_size

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited across exec: writes past the limit get EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    shares_before = share_bytes(c.grid)  # the grid may hold the other parts' files already
    with c.mount("fsstress") as m:
        watch = c.watch(m, spool=os.path.join(m.data_dir, "spool"))
        try:
            d = os.path.join(m.path, "fsstress")
            cmd = [fsstress, "-d", d, "-n", c.a.fsstress_ops, "-p", c.a.fsstress_procs, "-s", c.a.seed, "-v"]
            off = set() if c.a.all_ops else set(FSSTRESS_OFF)
            for op in sorted(off | set(filter(None, (c.a.off or "").split(",")))):
                cmd += ["-f", f"{op}=0"]
            out_path = os.path.join(c.results, "fsstress.log")
            log(f"{' '.join(map(str, cmd))}  (RLIMIT_FSIZE {human(cap)})")
            rc, took = run_bounded(cmd, m.path, out_path, c.a.fsstress_timeout, watch, preexec_fn=limit_file_size)
            with open(out_path, errors="replace") as f:
                errors = fsstress_errors(f.read())
            lines = [f"fsstress: {'exit 0' if rc == 0 else ('TIMED OUT' if rc is None else f'exit {rc}')} in "
                     f"{took:.1f} s"]
            if errors:
                lines.append("errors by op: " + errors_text(errors))
            for line in lines:
                log(line)
            if rc != 0:
                raise TestError(f"fsstress did not finish well ({lines[0]}); log {out_path}:\n"
                                + ml.file_tail(out_path))
            t0 = time.monotonic()
            before = manifest(d)
            with open(os.path.join(c.results, "fsstress-manifest-before.json"), "w") as f:
                json.dump(before, f, indent=1, sort_keys=True)
            kinds = {}
            for e in before.values():
                kinds[e["type"]] = kinds.get(e["type"], 0) + 1
            size = sum(e.get("size", 0) for e in before.values())
            lines.append(f"left {len(before)} entries ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
                         f"{human(size)} in files; manifest in {time.monotonic() - t0:.1f} s")
            log(lines[-1])
            rss = vm_hwm(m.pid)
            pending = ml.pending_changes(m.status())
            m.unmount()
            lines.append(f"unmount (waits for the {pending or 0} pending changes) {m.unmount_seconds:.1f} s")
            log(lines[-1])
        finally:
            watch.stop()
        lines.append(f"daemon peak RSS (VmHWM) {human(max(rss or 0, watch.peak_rss))}, spool peak "
                     f"{human(watch.peak_spool)}, grid share bytes +{human(share_bytes(c.grid) - shares_before)} "
                     f"(now {human(share_bytes(c.grid))}), least free disk {human(watch.min_free_seen)}")
        log(lines[-1])
        ml.drop_caches()
        m.data_dir += ".fresh"
        m.mount()
        t0 = time.monotonic()
        after = manifest(d)
        with open(os.path.join(c.results, "fsstress-manifest-after.json"), "w") as f:
            json.dump(after, f, indent=1, sort_keys=True)
        diffs, fields = manifest_diff(before, after)
        lines.append(f"mounted again from a fresh data dir: {len(diffs)} entries differ"
                     + "".join(f", {kind} {field} {n}" for (kind, field), n in sorted(fields.items()))
                     + f" (read back in {time.monotonic() - t0:.1f} s)")
        log(lines[-1])
    if diffs:
        raise TestError(f"{lines[-1]}; first 20:\n"
                        + "\n".join("      " + x for x in diffs[:20]))
    bad = {op: errs for op, errs in errors.items() if set(errs) & FSSTRESS_BAD_ERRNOS}
    if bad:
        raise TestError("fsstress ops failed with errors the mount must not give: " + errors_text(bad))
    return "; ".join(lines)


# ---------------------------------------------------------------------------------------------------------------


PARTS = {"pjdfstest": (part_pjdfstest, ["pjdfstest"]), "fsx": (part_fsx, ["xfstests"]),
         "fsstress": (part_fsstress, ["xfstests"])}


def main():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("what", choices=["build", "all"] + list(PARTS), help="what to run")
    p.add_argument("--bin", default=ml.default_bin(), help="tahoe-mount binary")
    p.add_argument("--suites", default=os.path.join(os.path.dirname(REPO), "shared", "peer-suites"),
                   help="directory of pjdfstest.tar.gz and xfstests.tar.gz (default <repo>/../shared/peer-suites)")
    p.add_argument("--cache", default=os.path.join(HERE, "work", "peer-suites"), help="where the suites are built")
    p.add_argument("--work", default=os.path.join(HERE, "work", "peer-suites-run"),
                   help="grid, mounts, and results/ (emptied at the start)")
    p.add_argument("--keep", action="store_true", help="keep the grid and the mounts' data dirs afterwards")
    p.add_argument("--min-free", type=parse_size, default=parse_size("10G"),
                   help="stop everything when free space on --work's filesystem falls below this (default 10G)")
    g = p.add_argument_group("pjdfstest")
    g.add_argument("--jobs", type=int, default=2, help="groups run at the same time (default 2)")
    g.add_argument("--groups", help="only these groups (comma-separated, e.g. chmod,rename)")
    g.add_argument("--group-timeout", type=int, default=600, help="seconds per group (default 600)")
    g.add_argument("--expected", default=EXPECTED,
                   help="expected failures (default mount-tests/pjdfstest-expected.txt)")
    g.add_argument("--write-expected", action="store_true", help="rewrite --expected from this run's failures")
    g = p.add_argument_group("fsx")
    g.add_argument("-N", "--fsx-ops", type=int, default=100000, help="operations per fsx run (default 100000)")
    g.add_argument("--fsx-timeout", type=int, default=3600, help="seconds per fsx run (default 3600)")
    g = p.add_argument_group("fsstress")
    g.add_argument("-n", "--fsstress-ops", type=int, default=2000, help="operations per process (default 2000)")
    g.add_argument("-p", "--fsstress-procs", type=int, default=4, help="processes (default 4)")
    g.add_argument("-s", "--seed", type=int, default=12345, help="fsstress seed (default 12345)")
    g.add_argument("--max-file-size", type=parse_size, default=parse_size("2M"),
                   help="RLIMIT_FSIZE of fsstress (default 2M)")
    g.add_argument("--all-ops", action="store_true",
                   help="leave every op on (to see which ones the mount refuses, when revising FSSTRESS_OFF)")
    g.add_argument("--off", help="more ops to switch off (comma-separated, e.g. link)")
    g.add_argument("--fsstress-timeout", type=int, default=3600, help="seconds for fsstress (default 3600)")
    a = p.parse_args()
    a.bin = os.path.abspath(a.bin)
    a.work = os.path.abspath(a.work)
    a.cache = os.path.abspath(a.cache)
    a.expected = os.path.abspath(a.expected)

    parts = list(PARTS) if a.what in ("all", "build") else [a.what]
    t_all = time.monotonic()
    try:
        t0 = time.monotonic()
        trees = {}
        for name in sorted({s for part in parts for s in PARTS[part][1]}):
            trees[name] = build(suites(a.suites)[name], a.cache)
        log(f"suites ready in {time.monotonic() - t0:.1f} s: " + ", ".join(trees.values()))
    except TestError as e:
        print(f"peer_suites.py: {e}", file=sys.stderr)
        return 2
    if a.what == "build":
        return 0
    if os.geteuid() != 0:
        print("peer_suites.py: needs root (pjdfstest runs as root; FUSE; dropping the page cache)", file=sys.stderr)
        return 2
    if not ml.has_mount_command(a.bin):
        print(f"peer_suites.py: {a.bin} has no `mount` command", file=sys.stderr)
        return 2

    ml.unmount_leftovers(a.work)
    grid_dir = os.path.join(a.work, "grid")
    ml.Grid(grid_dir).stop()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(os.path.join(a.work, "results"))
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(a.bin).st_mtime))
    a.bin_id = f"{a.bin} (sha256 {ml.sha256_file(a.bin)[:12]}, modified {built})"
    print(f"peer suites on tahoe-mount: {', '.join(parts)}; binary {a.bin_id}, work {a.work}", flush=True)
    grid = ml.Grid(grid_dir, n=5, bin=a.bin, needed=2, happy=3, total=4)
    results = []
    try:
        grid.start()
        c = Ctx(a, grid, trees)
        for part in parts:
            print(f"== {part}", flush=True)
            t0 = time.monotonic()
            try:
                summary, outcome = PARTS[part][0](c), "ok"
            except TestError as e:
                summary, outcome = str(e).splitlines()[0], "FAIL"
                print(f"    FAIL: {e}", flush=True)
            took = time.monotonic() - t0
            results.append((part, outcome, took, summary))
            print(f"{outcome.upper():4} {part} ({took:.1f} s)", flush=True)
    except TestError as e:
        print(f"peer_suites.py: setting up the grid failed: {e}", file=sys.stderr)
        results.append(("grid", "FAIL", 0, str(e).splitlines()[0]))
    finally:
        ml.unmount_leftovers(a.work)
        grid.stop()
        if not a.keep:
            for d in ("grid", "t"):
                shutil.rmtree(os.path.join(a.work, d), ignore_errors=True)
    print(f"\nsummary ({time.monotonic() - t_all:.0f} s; results in {os.path.join(a.work, 'results')}):")
    for part, outcome, took, summary in results:
        print(f"  {part:9} {outcome:4} {took:7.1f} s  {summary}")
    return 1 if any(r[1] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
