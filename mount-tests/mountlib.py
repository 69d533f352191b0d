"""Helpers for tests and benchmarks of the tahoe-mount FUSE mount on a real local grid.

  grid = Grid(dir, n=5).start()        # grid.py start + a GSD (create, announce, enroll) + DIR/invitation.json
  with Mount(grid, mountpoint, config_dir=..., data_dir=...) as m:   # mounted and ready, unmounted at exit
      ... m.path ...; m.status(); m.kill9(); m.remount()
  grid.stop_nodes(1, 2); grid.start_nodes()                          # grid.py stop --node / start
  client = grid.tahoe_client(); client.put(FILE); client.get(CAP, OUT)  # a Tahoe 1.20 client node (grid.py client)

A Mount with fake=True stands a bind mount of a local directory in for the FUSE mount (no tahoe-mount needed), so
the checks of the tests can be run and shown to work before the mount exists; what only the real mount can show
(fsync failing when happiness is impossible, `status`, `.grid/` being read-only) is skipped there, by the caller
asking `m.fake`.

Run with the venv's Python (mount-tests/venv.sh): grid.py and benches/immutable.py are imported for their helpers.
"""

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "benches"))

import grid as gridpy  # noqa: E402  (mount-tests/grid.py: process helpers, log tails)
import immutable as immutable_bench  # noqa: E402  (benches/immutable.py: random files, SHA-256, CPU seconds)

GRID_PY = os.path.join(HERE, "grid.py")
PYTHON = sys.executable
TAHOE = os.path.join(os.path.dirname(sys.executable), "tahoe")
MiB = 1 << 20

sha256_file = immutable_bench.sha256_file
write_random_file = immutable_bench.write_random_file
cpu_seconds = immutable_bench.cpu_seconds


class TestError(Exception):
    pass


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target, "release", "tahoe-mount")


def log(msg):
    print(f"    {time.strftime('%H:%M:%S')} {msg}", flush=True)


def tail(text, lines=30):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join("      | " + line for line in text.rstrip().splitlines()[-lines:])


def file_tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32768))
            return tail(f.read(), lines)
    except OSError:
        return f"      | (no log at {path})"


def run(cmd, timeout=600, check=True, env=None, cwd=None, input=None):
    """Runs cmd with its output captured (text); on a non-zero exit (with check) or a timeout, raises TestError
    showing the command and the tail of its output."""
    cmd = [str(c) for c in cmd]
    try:
        p = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            env=env,
            cwd=cwd,
            input=input.encode() if isinstance(input, str) else input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise TestError(
            f"`{' '.join(cmd)}` did not finish within {timeout} s\n{tail(e.stdout or b'')}\n{tail(e.stderr or b'')}"
        ) from None
    p.out = p.stdout.decode(errors="replace")
    p.err = p.stderr.decode(errors="replace")
    if check and p.returncode != 0:
        raise TestError(f"`{' '.join(cmd)}` exited {p.returncode}\n{tail(p.out)}\n{tail(p.err)}")
    return p


def tool(name):
    """mount-tests/NAME (maketree.py, fsx.py), or the same name under $TAHOE_MOUNT_TEST_TOOLS until it lands."""
    for d in (HERE, os.environ.get("TAHOE_MOUNT_TEST_TOOLS")):
        if d and os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise TestError(f"no mount-tests/{name} (nor $TAHOE_MOUNT_TEST_TOOLS/{name})")


def drop_caches():
    """sync, then `echo 3 > /proc/sys/vm/drop_caches` (root): page cache, dentries and inodes, so the next reads
    go to the filesystem (for the mount: to its daemon, and from there to its cache or the grid)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"cannot drop the page cache ({e}); figures and re-reads may come from memory")
        return False


def has_mount_command(binary):
    if not os.access(binary, os.X_OK):
        return False
    return run([binary, "mount", "--help"], check=False, timeout=30).returncode == 0


def mounts():
    """{mountpoint: fstype} from /proc/self/mountinfo (octal escapes decoded)."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            mp = left.split()[4]
            mp = mp.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")
            out[mp] = right.split()[0]
    return out


def is_mounted(path):
    return os.path.realpath(path) in mounts()


def fusermount_u(path):
    """fusermount3 -u, then -uz (lazy: detaches even a busy or dead mount); umount / umount -l for a non-FUSE
    (fake) mount. True if the path is no longer a mount point."""
    path = os.path.realpath(path)
    for lazy in (False, True):
        fstype = mounts().get(path)
        if fstype is None:
            return True
        if fstype.startswith("fuse"):
            cmd = ["fusermount3", "-uz" if lazy else "-u", path]
        else:
            cmd = ["umount"] + (["-l"] if lazy else []) + [path]
        run(cmd, check=False, timeout=60)
    return not is_mounted(path)


def unmount_leftovers(work):
    """Unmounts anything a previous run left mounted under the work directory."""
    for mp in sorted(mounts(), key=len, reverse=True):
        if mp.startswith(work.rstrip("/") + "/"):
            print(f"unmounting a leftover mount {mp}")
            fusermount_u(mp)


def random_bytes(rng, n):
    return rng.randbytes(n) if hasattr(rng, "randbytes") else bytes(rng.getrandbits(8) for _ in range(n))


# ---------------------------------------------------------------------------------------------------------------
# The grid


class Grid:
    """A local grid of n real tahoe-lafs 1.20 storage nodes (grid.py) with a grid service directory: created on
    storage0, every server announced (`tahoe-mount announce`) and enrolled (`gsd enroll`), and the invitation in
    DIR/invitation.json. Encoding defaults (needed/happy/total) are what Mount passes to the mount."""

    def __init__(self, dir, n=5, bin=None, needed=2, happy=3, total=4):
        self.dir = os.path.abspath(dir)
        self.n = n
        self.bin = bin or default_bin()
        self.needed, self.happy, self.total = needed, happy, total
        self.invitation = os.path.join(self.dir, "invitation.json")
        self.operator_config = os.path.join(self.dir, "operator-config")
        self.cache_dir = os.path.join(self.dir, "gsd-cache")
        self._client = None

    def grid_py(self, *args, timeout=300):
        return run([PYTHON, GRID_PY] + [str(a) for a in args], timeout=timeout)

    def start(self, gsd=True):
        t0 = time.monotonic()
        self.grid_py("start", self.dir, self.n, "--parent-pid", os.getpid())
        if gsd:
            self.make_gsd()
        log(f"grid of {self.n} storage nodes{' with a GSD' if gsd else ''} up in {time.monotonic() - t0:.1f} s")
        return self

    def servers(self):
        with open(os.path.join(self.dir, "grid.json")) as f:
            return json.load(f)["servers"]

    def make_gsd(self):
        """As demo.sh: gsd create on storage0, invite, announce + enroll each server (enrolled once per grid)."""
        state = os.path.join(self.dir, "gsd.json")
        servers = self.servers()
        b = self.bin
        if not os.path.exists(state):
            run([b, "gsd", "create", "--state", state, "--server", servers[0]["nurl"], "--config-dir", self.operator_config])
        with open(self.invitation, "w") as f:
            f.write(run([b, "gsd", "invite", "--state", state]).out)
        for s in servers:
            node = s["basedir"]
            marker = os.path.join(node, "gsd-enrolled")
            if os.path.exists(marker):
                continue
            gsa = run([b, "announce", "--node-dir", node, "--grid", "@" + self.invitation,
                       "--config-dir", self.operator_config]).out.strip()
            run([b, "gsd", "enroll", "--state", state, "--config-dir", self.operator_config,
                 os.path.basename(node), gsa])
            open(marker, "w").close()

    def env(self, **extra):
        e = dict(os.environ)
        e["TAHOE_MOUNT_CACHE_DIR"] = self.cache_dir
        e.update(extra)
        return e

    def stop_nodes(self, *indexes):
        args = []
        for i in indexes:
            args += ["--node", str(i)]
        self.grid_py("stop", self.dir, *args)

    def start_nodes(self):
        """Starts every stopped storage node again (same ports, keys and NURLs)."""
        self.grid_py("start", self.dir, self.n, "--parent-pid", os.getpid())

    def running(self):
        return [i for i, s in enumerate(self.servers()) if s.get("pid")]

    def stop(self):
        if os.path.isdir(self.dir):
            run([PYTHON, GRID_PY, "stop", self.dir], check=False, timeout=120)

    def node_pids(self):
        return [s["pid"] for s in self.servers() if s.get("pid")]

    def tahoe_client(self, needed=None, happy=None, total=None):
        """A Tahoe 1.20 client node on this grid (grid.py client; the same as benches/immutable.py uses)."""
        self.grid_py("client", self.dir, "--needed", needed or self.needed, "--happy", happy or self.happy,
                     "--total", total or self.total)
        self._client = TahoeClient(os.path.join(self.dir, "client"))
        return self._client


class TahoeClient:
    def __init__(self, node_dir):
        self.dir = node_dir
        with open(os.path.join(node_dir, "run.pid")) as f:
            self.pid = int(f.read().split()[0])
        with open(os.path.join(node_dir, "node.url")) as f:
            self.url = f.read().strip()

    def tahoe(self, *args, timeout=1800):
        return run([TAHOE, "-d", self.dir] + [str(a) for a in args], timeout=timeout)

    def put(self, path):
        cap = self.tahoe("put", path).out.strip()
        if not cap.startswith("URI:"):
            raise TestError(f"tahoe put printed {cap!r}")
        return cap

    def get(self, cap, out):
        self.tahoe("get", cap, out)

    def ls(self, cap):
        return self.tahoe("ls", cap).out.splitlines()


# ---------------------------------------------------------------------------------------------------------------
# The mount


class Mount:
    """tahoe-mount mount of GRID (the grid's invitation) at mountpoint, as a context manager.

    foreground=True runs `tahoe-mount mount -f` as a child (its output in log_path); False runs it as a daemon
    (`mount` without -f must return 0 once the mount is ready) and finds the daemon's pid by its command line.
    Either way, entering waits until the mountpoint is a FUSE mount; leaving unmounts (`tahoe-mount unmount`, then
    fusermount3 -u / -uz, then SIGTERM / SIGKILL of the daemon), and on an exception shows the tail of the log.
    fake=True bind-mounts config_dir/fake-root instead (ro for -o ro), with a .grid/ made from grid.json.
    """

    def __init__(self, grid, mountpoint, config_dir, data_dir, options=(), args=(), foreground=True, fake=False,
                 root=None, shares=True, log_path=None, ready_timeout=120, unmount_timeout=1800):
        self.grid = grid
        self.path = os.path.abspath(mountpoint)
        self.config_dir = os.path.abspath(config_dir)
        self.data_dir = os.path.abspath(data_dir)
        self.options = list(options)
        self.args = list(args)
        self.foreground = foreground
        self.fake = fake
        self.root = root
        self.shares = shares
        self.log_path = log_path or self.data_dir.rstrip("/") + ".log"
        self.ready_timeout = ready_timeout
        self.unmount_timeout = unmount_timeout
        self.proc = None
        self.pid = None
        self.mounts = 0

    # -- starting

    def command(self):
        cmd = [self.grid.bin, "mount", "--config-dir", self.config_dir, "--data-dir", self.data_dir]
        if self.foreground:
            cmd.append("-f")
        if self.options:
            cmd += ["-o", ",".join(self.options)]
        if self.root:
            cmd += ["--root", self.root]
        if self.shares:
            cmd += ["--shares-needed", str(self.grid.needed), "--shares-happy", str(self.grid.happy),
                    "--shares-total", str(self.grid.total)]
        return cmd + self.args + ["@" + self.grid.invitation, self.path]

    def mount(self):
        os.makedirs(self.path, exist_ok=True)
        os.makedirs(self.config_dir, exist_ok=True)
        os.makedirs(self.data_dir, exist_ok=True)
        if is_mounted(self.path):
            raise TestError(f"{self.path} is already a mount point")
        t0 = time.monotonic()
        if self.fake:
            self._fake_mount()
        elif self.foreground:
            self._mount_foreground()
        else:
            self._mount_daemon()
        self.mounts += 1
        self.ready_seconds = time.monotonic() - t0
        log(f"mounted {self.path} in {self.ready_seconds:.2f} s" + (" (fake: bind mount)" if self.fake else f" (pid {self.pid})"))
        return self

    def _logfile(self):
        f = open(self.log_path, "ab")
        f.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(self.command())}\n".encode())
        f.flush()
        return f

    def _mount_foreground(self):
        with self._logfile() as logf:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=self.grid.env(), start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.ready_timeout
        while not self._fuse_mounted():
            rc = self.proc.poll()
            if rc is not None:
                raise TestError(f"tahoe-mount mount -f exited {rc} before the mount was ready; log {self.log_path}:\n"
                                + file_tail(self.log_path))
            if time.monotonic() > deadline:
                self._kill()
                raise TestError(f"{self.path} not mounted within {self.ready_timeout} s; log:\n" + file_tail(self.log_path))
            time.sleep(0.05)
        os.stat(self.path)  # the daemon answers

    def _mount_daemon(self):
        with self._logfile() as logf:
            p = subprocess.run(self.command(), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                               env=self.grid.env(), timeout=self.ready_timeout, start_new_session=True)
        if p.returncode != 0:
            raise TestError(f"tahoe-mount mount exited {p.returncode}:\n" + self.log_tail())
        if not self._fuse_mounted():
            raise TestError(f"tahoe-mount mount returned 0 but {self.path} is not a FUSE mount")
        self.pid = self.find_daemon()
        os.stat(self.path)

    def _fuse_mounted(self):
        return mounts().get(self.path, "").startswith("fuse")

    def find_daemon(self):
        """The pid of the tahoe-mount process serving this mountpoint (its command line names it)."""
        exe = os.path.realpath(self.grid.bin)
        found = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            args = gridpy.cmdline(int(d))
            try:
                same = os.path.realpath(f"/proc/{d}/exe") == exe
            except OSError:
                same = False
            if same and self.path in args and gridpy.proc_stat(int(d)):
                found.append(int(d))
        if len(found) != 1:
            raise TestError(f"expected one tahoe-mount process serving {self.path}, found {found}")
        return found[0]

    def _fake_mount(self):
        backing = os.path.join(self.config_dir, "fake-root")
        if not os.path.isdir(backing):
            os.makedirs(os.path.join(backing, ".grid"))
            for s in self.grid.servers():
                with open(os.path.join(backing, ".grid", s["name"]), "w") as f:
                    json.dump(s["announcement"], f)
        run(["mount", "--bind", backing, self.path])
        if "ro" in self.options or (self.root and "DIR2-RO" in self.root):
            run(["mount", "-o", "remount,bind,ro", self.path])

    # -- stopping

    def log_tail(self, lines=40):
        """The tail of this Mount's log (the daemon's output in the foreground, the starter's in daemon mode) and,
        in daemon mode, of the daemon's own DATA_DIR/mount.log."""
        text = f"    daemon log ({self.log_path}), tail:\n" + file_tail(self.log_path, lines)
        daemon_log = os.path.join(self.data_dir, "mount.log")
        if not self.foreground and os.path.exists(daemon_log):
            text += f"\n    {daemon_log}, tail:\n" + file_tail(daemon_log, lines)
        return text

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and gridpy.proc_stat(self.pid) is not None

    def unmount(self, timeout=None):
        """`tahoe-mount unmount` (waits for pending uploads); it must exit 0, leave no mount, and the daemon must
        exit 0 (foreground). Returns the command's output (its progress)."""
        t0 = time.monotonic()
        if self.fake:
            run(["umount", self.path])
            self.unmount_seconds = time.monotonic() - t0
            return ""
        p = run([self.grid.bin, "unmount", "--data-dir", self.data_dir, self.path],
                timeout=timeout or self.unmount_timeout, check=False, env=self.grid.env())
        with open(self.log_path, "a") as f:
            f.write(f"==== tahoe-mount unmount exited {p.returncode}\n{p.out}{p.err}")
        if p.returncode != 0:
            raise TestError(f"tahoe-mount unmount {self.path} exited {p.returncode}:\n{tail(p.out + p.err)}")
        if is_mounted(self.path):
            raise TestError(f"tahoe-mount unmount exited 0 but {self.path} is still mounted")
        self._wait_exit(60)
        self.unmount_seconds = time.monotonic() - t0
        return p.out + p.err

    def _wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise TestError(f"the daemon (pid {self.pid}) still runs {timeout} s after the unmount; log:\n"
                                + file_tail(self.log_path))
            time.sleep(0.05)
        if self.proc is not None and self.proc.returncode != 0:
            raise TestError(f"the daemon exited {self.proc.returncode} after the unmount; log:\n" + file_tail(self.log_path))
        self.proc = None
        self.pid = None

    def _kill(self, sig=signal.SIGKILL):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def kill9(self):
        """kill -9 of the daemon, then the dead mount cleaned up (fusermount3 -u / -uz). Fake: a lazy umount."""
        if self.fake:
            run(["umount", "-l", self.path])
            return
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.alive():
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.05)
            if time.monotonic() > deadline:
                raise TestError(f"pid {pid} survives SIGKILL (stuck in the kernel?)")
        if not fusermount_u(self.path):
            raise TestError(f"{self.path}: still mounted after fusermount3 -u and -uz")
        self.proc = None
        self.pid = None
        with open(self.log_path, "a") as f:
            f.write(f"==== killed pid {pid} with SIGKILL\n")
        log(f"killed the daemon (pid {pid}) with SIGKILL; dead mount cleaned up")

    def cleanup(self):
        """Leaves nothing mounted and nothing running, whatever state it is in (used on failure). Never raises: on
        the failure path, the first error is the one to show."""
        try:
            self._cleanup()
        except Exception as e:
            log(f"cleanup of {self.path}: {type(e).__name__}: {e}")
            try:
                if not fusermount_u(self.path):
                    log(f"{self.path} is still mounted after fusermount3 -uz")
                self._kill(signal.SIGKILL)
            except Exception as e2:
                log(f"cleanup of {self.path}, last resort: {type(e2).__name__}: {e2}")

    def _cleanup(self):
        if self.fake:
            if is_mounted(self.path):
                run(["umount", "-l", self.path], check=False)
            return
        if is_mounted(self.path) and self.alive():
            try:
                p = run([self.grid.bin, "unmount", "--data-dir", self.data_dir, self.path], timeout=60, check=False,
                        env=self.grid.env())
                if p.returncode != 0:
                    log(f"tahoe-mount unmount during cleanup exited {p.returncode}: {(p.out + p.err).strip()[-300:]}")
            except TestError as e:
                log(f"tahoe-mount unmount during cleanup: {e}")
        if not fusermount_u(self.path):
            log(f"{self.path} is still mounted after fusermount3 -uz")
        if self.alive():
            self._kill(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            self._kill(signal.SIGKILL)
        self.proc = None
        self.pid = None

    def remount(self, drop=True, data_dir=None):
        """Unmount (waiting for uploads), drop the page cache, mount again (a fresh daemon); with data_dir, from
        another data directory (a fresh one reads everything from the grid, not from the old spool)."""
        self.unmount()
        if drop:
            drop_caches()
        if data_dir:
            self.data_dir = os.path.abspath(data_dir)
        return self.mount()

    def status(self):
        if self.fake:
            return "(fake mount: no status)"
        return run([self.grid.bin, "status", "--data-dir", self.data_dir, self.path], timeout=60,
                   env=self.grid.env()).out

    def __enter__(self):
        return self.mount()

    def __exit__(self, typ, exc, tb):
        if typ is None:
            try:
                if is_mounted(self.path):
                    self.unmount()
            except BaseException:
                print(self.log_tail(), flush=True)
                self.cleanup()
                raise
        else:
            if not self.fake:
                print(self.log_tail(), flush=True)
            self.cleanup()
        return False


def pending_changes(status_text):
    """The N of `status`'s "pending: N changes, ... to upload" line (None if there is no such line)."""
    for line in status_text.splitlines():
        if line.startswith("pending:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Checks


def expect_errno(fn, *errnos, what=""):
    """fn() must raise OSError with one of errnos; returns the errno."""
    try:
        fn()
    except OSError as e:
        if e.errno in errnos:
            return e.errno
        raise TestError(f"{what}: expected {'/'.join(errno.errorcode[n] for n in errnos)}, got {e!r}") from None
    raise TestError(f"{what}: expected {'/'.join(errno.errorcode[n] for n in errnos)}, but it succeeded")


def write_file(path, data, fsync=False):
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_random(path, size, seed, fsync=False, chunk=4 * MiB):
    """Writes size pseudo-random bytes (reproducible from seed); returns their SHA-256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = random_bytes(rng, min(left, chunk))
            f.write(b)
            h.update(b)
            left -= len(b)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return h.hexdigest()


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def diff_r(src, dst):
    """`diff -r --no-dereference`: must print nothing and exit 0."""
    p = run(["diff", "-r", "--no-dereference", src, dst], check=False, timeout=3600)
    if p.returncode != 0 or p.out.strip():
        raise TestError(f"diff -r {src} {dst} exited {p.returncode}:\n{tail(p.out + p.err, 20)}")


def rsync_verify(src, dst):
    """`rsync -n -c -a --itemize-changes SRC/ DST/` (a dry run comparing checksums, modes, times, symlinks) must
    itemize nothing."""
    p = run(["rsync", "-n", "-c", "-a", "--itemize-changes", src.rstrip("/") + "/", dst.rstrip("/") + "/"],
            timeout=3600, check=False)
    lines = [line for line in p.out.splitlines() if line.strip()]
    if p.returncode != 0 or lines:
        raise TestError(f"rsync -n -c -a --itemize-changes {src}/ {dst}/ exited {p.returncode} and itemized "
                        f"{len(lines)} changes:\n{tail(p.out + p.err, 20)}")


def rsync_again(src, dst):
    """A second `rsync -a --itemize-changes --stats` must transfer nothing: no itemized change, 0 files
    transferred, 0 bytes of literal data."""
    p = run(["rsync", "-a", "--itemize-changes", "--stats", src.rstrip("/") + "/", dst.rstrip("/") + "/"],
            timeout=3600)
    stats, items = {}, []
    in_stats = False
    for line in p.out.splitlines():
        if line.startswith("Number of files:"):
            in_stats = True
        if in_stats:
            if ":" in line:
                k, v = line.split(":", 1)
                stats[k.strip()] = v.strip()
        elif line.strip():
            items.append(line)
    transferred = stats.get("Number of regular files transferred", "?").replace(",", "")
    literal = stats.get("Literal data", "?").split()[0].replace(",", "")
    if items or transferred != "0" or literal != "0":
        raise TestError(f"the second rsync -a transferred something ({transferred} files, {literal} bytes literal, "
                        f"{len(items)} itemized):\n{tail(chr(10).join(items), 20)}")


def tree_meta(root):
    """{relative path: (kind, mode, size, mtime_ns, link target or sha256)} of a tree, root itself included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            if name == "" and dirpath != root:
                continue
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("l", None, None, st.st_mtime_ns, os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d", st.st_mode & 0o7777, None, st.st_mtime_ns, None)
            else:
                out[rel] = ("f", st.st_mode & 0o7777, st.st_size, st.st_mtime_ns, None)
    return out


def compare_meta(src, dst, hash_files=False, ignore=(".grid",)):
    """Kind, permission bits, size, mtime to the nanosecond and symlink targets of every entry; raises TestError
    listing the first differences."""
    a, b = tree_meta(src), tree_meta(dst)
    for rel in list(b):
        if rel.split(os.sep)[0] in ignore:
            del b[rel]
    diffs = []
    for rel in sorted(set(a) | set(b)):
        if rel not in a:
            diffs.append(f"only in {dst}: {rel}")
        elif rel not in b:
            diffs.append(f"only in {src}: {rel}")
        elif a[rel] != b[rel]:
            fields = ("kind", "mode", "size", "mtime_ns", "target")
            d = [f"{fn} {x!r} vs {y!r}" for fn, x, y in zip(fields, a[rel], b[rel]) if x != y]
            diffs.append(f"{rel}: " + ", ".join(d))
        elif hash_files and a[rel][0] == "f" and sha256_file(os.path.join(src, rel)) != sha256_file(os.path.join(dst, rel)):
            diffs.append(f"{rel}: content differs")
    if diffs:
        raise TestError(f"{len(diffs)} differences between {src} and {dst}, first ones:\n"
                        + "\n".join("      " + d for d in diffs[:15]))
