#!/usr/bin/env python3
"""A real local Tahoe-LAFS 1.20 storage grid on 127.0.0.1, with no introducer, for tests and demos.

Owns the layout of a grid directory DIR:
  DIR/storage<i>/     node directory of storage node i (0-based): tahoe.cfg, keys, run.log, server.json,
                      run.pid ("PID STARTTIME" of its `tahoe run`)
  DIR/grid.json       {"servers": [...]} what clients need per server (NURLs, fURL, ids, announcement, ...)
  DIR/servers.yaml    the same servers in Tahoe's static-server format (private/servers.yaml of a client)
  DIR/client/         optional Tahoe client node using servers.yaml (`client` subcommand)
  DIR/watchdog.pid    the watcher that stops the grid when a parent process dies (`start --parent-pid`)

Our processes are known by their Popen in the invocation that started them, and in later invocations by pid plus
start time (field 22 of /proc/PID/stat), recorded together: never by their command line, which can read empty under
load. A process is dead only when its Popen says so, or /proc/PID/stat is gone or shows another start time.

Subcommands: start DIR N, stop DIR [--node I], status DIR, client DIR. Run it with the interpreter of the venv that
has tahoe-lafs 1.20.0; with any other python3 it makes/reuses that venv with venv.sh and re-executes itself.
Exit status is non-zero on any failure, with the node, what failed, and the tail of its run.log.
"""

import argparse
import base64
import fcntl
import hashlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

try:
    import allmydata  # noqa: F401  (only to know we run in the tahoe venv)
except ImportError:
    # Not the tahoe venv: create/reuse it (venv.sh prints the interpreter last) and run again under it.
    if os.environ.get("TAHOE_MOUNT_GRID_REEXEC"):
        sys.exit("grid.py: the interpreter from venv.sh cannot import allmydata")
    out = subprocess.run(["bash", os.path.join(HERE, "venv.sh")], stdout=subprocess.PIPE)
    if out.returncode != 0 or not out.stdout.strip():
        sys.exit(f"grid.py: no tahoe-lafs here, and mount-tests/venv.sh failed (status {out.returncode})")
    python = out.stdout.decode().strip().splitlines()[-1]
    os.environ["TAHOE_MOUNT_GRID_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])

START_TIMEOUT = 60.0  # seconds for every node to answer; first start generates an RSA key
STOP_GRACE = 8.0  # seconds between SIGTERM and SIGKILL; a 1.20 node takes about 2 s to shut down
RESERVED_SPACE = "1M"
RUN_HEADER = "==== grid.py start "  # written to run.log before each start  # create-node's 1G makes small test disks refuse shares


class GridError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Processes


def proc_stat(pid):
    """(state, starttime) of a live process, or None when it is gone. Zombies count as gone: an orphaned node is
    reaped by whatever is PID 1, which in a container may never do it.

    Only a missing /proc/PID means gone. Any other failure to read or parse its stat (a busy machine can make
    /proc reads come back short) is retried briefly; if it persists, the process is presumed alive with an unknown
    start time ("?", None), since a transient failure must never declare a process dead."""
    for _ in range(20):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            data = b""
        # The command name (field 2) is in parentheses and may itself hold spaces and ")": split after the last.
        _, paren, rest = data.rpartition(b")")
        fields = rest.split()
        if paren and len(fields) >= 20:
            state = fields[0].decode(errors="replace")
            if state in ("Z", "X"):
                return None
            return state, fields[19].decode(errors="replace")  # field 22: start time in clock ticks after boot
        time.sleep(0.01)
    return "?", None


def same_process(pid, starttime):
    """True if pid is alive and is the process that had that start time when it was recorded. Pid files go stale
    and pids get reused, so a pid alone never identifies a process we started; the command line does not either, as
    /proc/PID/cmdline can read empty under load. An unreadable start time presumes the process alive."""
    if pid is None or starttime is None:
        return False
    stat = proc_stat(pid)
    return stat is not None and (stat[1] is None or stat[1] == starttime)


def cmdline(pid):
    """The arguments of pid ([] if unreadable). For finding other programs' processes (mountlib uses it); grid.py
    never decides from it whether one of its own processes lives."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def read_pid_file(path):
    """(pid, starttime) from a run.pid written by Node.start ("PID STARTTIME"), or (None, None). A pid with no
    start time (a file from an older grid.py, or a child that exited at once) gives (pid, None): never ours."""
    try:
        with open(path) as f:
            parts = f.read().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def log_tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"    (no log at {path})"
    # Only this start's lines: older runs in the same log would mislead.
    text = text.rsplit(RUN_HEADER, 1)[-1]
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (nothing logged yet)"


def tahoe_command():
    exe = os.path.join(os.path.dirname(sys.executable), "tahoe")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "allmydata"]


class Lock:
    """An exclusive flock on DIR/.grid.lock, so start, stop and the watchdog never interleave."""

    def __init__(self, grid_dir):
        os.makedirs(grid_dir, exist_ok=True)
        self.f = open(os.path.join(grid_dir, ".grid.lock"), "w")

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


# ---------------------------------------------------------------------------------------------------------------
# A node directory and what it publishes


class Node:
    """One node directory (storage<i> or client) and the files Tahoe keeps in it."""

    def __init__(self, grid_dir, name):
        self.name = name
        self.dir = os.path.join(grid_dir, name)
        self.pid_file = os.path.join(self.dir, "run.pid")
        self.log = os.path.join(self.dir, "run.log")
        self.proc = None  # the Popen of `tahoe run` when this invocation started it

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def exists(self):
        return os.path.exists(self.path("tahoe.cfg"))

    def read(self, *p):
        with open(self.path(*p)) as f:
            return f.read().strip()

    def cfg(self):
        import configparser

        c = configparser.ConfigParser(interpolation=None)
        c.read(self.path("tahoe.cfg"))
        return c

    def pid(self):
        """The pid of the `tahoe run` we started for this node while it runs, else None. The invocation that started
        it asks its Popen; a later one (stop, status, start again) trusts run.pid only while that pid still has the
        start time recorded beside it."""
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        pid, starttime = read_pid_file(self.pid_file)
        return pid if same_process(pid, starttime) else None

    def port(self):
        # tub.port is "tcp:PORT:interface=127.0.0.1"; it lives in tahoe.cfg so it survives restarts.
        return int(self.cfg()["node"]["tub.port"].split(":")[1])

    def start(self):
        """Starts `tahoe run` in its own process group, unless ours already runs."""
        if self.pid():
            return False
        # A killed node leaves running.process behind, and tahoe refuses to start if that pid was reused.
        for stale in ("running.process", "run.pid"):
            try:
                os.unlink(self.path(stale))
            except FileNotFoundError:
                pass
        with open(self.log, "ab") as log:
            log.write(f"{RUN_HEADER}{time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            log.flush()
            # --allow-stdin-close: otherwise tahoe exits at once, as its stdin is /dev/null.
            self.proc = subprocess.Popen(
                tahoe_command() + ["run", "--allow-stdin-close", self.dir],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        # "PID STARTTIME": readers that want the pid alone take the first word. A child gone already has no start
        # time to record (its Popen says it exited; later invocations never take that pid for ours).
        stat = proc_stat(self.proc.pid)
        starttime = stat[1] if stat is not None and stat[1] is not None else ""
        with open(self.pid_file, "w") as f:
            f.write(f"{self.proc.pid} {starttime}".rstrip() + "\n")
        return True

    def send(self, sig):
        pid = self.pid()
        if pid is None:
            return None
        try:
            # Our process group (start_new_session); a group that is not the pid's own would be someone else's.
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass
        return pid

    def forget(self):
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass


def b64url_nopad(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def spki_hash_of_cert(cert):
    from cryptography.hazmat.primitives import serialization

    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64url_nopad(hashlib.sha256(spki).digest())


def node_spki_hash(node):
    """As allmydata.storage.http_common.get_spki_hash: sha256 of the DER SubjectPublicKeyInfo of the node's
    Foolscap certificate (private/node.pem), base64url without padding."""
    from cryptography import x509

    with open(node.path("private", "node.pem"), "rb") as f:
        return spki_hash_of_cert(x509.load_pem_x509_certificate(f.read()))


def b32(b):
    return base64.b32encode(b).decode().lower().rstrip("=")


def storage_info(node, nickname_fallback):
    """Everything a client needs about a started storage node, read from its directory. No file holds the NURLs,
    so they are built as protocol_switch.add_storage_server does: one per tcp: hint of tub.location, with the
    SPKI pin of node.pem and the swissnum of private/storage.furl (probe() checks the pin against the live node).
    """
    cfg = node.cfg()
    furl = node.read("private", "storage.furl")
    tubid = furl[len("pb://"):].split("@", 1)[0]
    swissnum = furl.rsplit("/", 1)[1]
    spki = node_spki_hash(node)
    nurls = []
    for hint in cfg["node"]["tub.location"].split(","):
        parts = hint.strip().split(":")
        if parts[0] == "tcp" and len(parts) == 3:
            nurls.append(f"pb://{spki}@{parts[1]}:{int(parts[2])}/{swissnum}#v=1")
    nurls.sort()
    server_id = node.read("node.pubkey")
    if server_id.startswith("pub-"):
        server_id = server_id[len("pub-"):]
    seed = node.read("permutation-seed")
    nickname = cfg["node"].get("nickname", "") or nickname_fallback
    try:
        seqnum = int(node.read("announcement-seqnum"))
    except (OSError, ValueError):
        seqnum = 1  # a node with no introducer never publishes; its first publish would be seqnum 1
    from importlib.metadata import version

    # The dict Client.init_storage + IntroducerClient.create_announcement_dict/publish would sign and send.
    # The nonce is random per publish in Tahoe; here it is fixed per node so the file is stable across restarts.
    announcement = {
        "version": 0,
        "nickname": nickname,
        "app-versions": [],
        "my-version": f"tahoe-lafs/{version('tahoe-lafs')}",
        "oldest-supported": "1.0.0",
        "service-name": "storage",
        "permutation-seed-base32": seed,
        "anonymous-storage-NURLs": nurls,
        "anonymous-storage-FURL": furl,
        "seqnum": seqnum,
        "nonce": b32(hashlib.sha256(b"grid.py nonce " + server_id.encode()).digest()),
    }
    return {
        "name": nickname,
        "server_id": server_id,
        "nurl": nurls[0] if nurls else None,
        "nurls": nurls,
        "furl": furl,
        "tubid": tubid,
        "permutation_seed_base32": seed,
        "announcement": announcement,
        "port": node.port(),
        "pid": node.pid(),
        "basedir": node.dir,
        "swissnum": swissnum,
    }


class NotYet(Exception):
    """The node does not answer yet (refused, reset, TLS not up): worth retrying until the deadline."""


def probe(host, port, swissnum, spki, timeout=2.0):
    """GET /storage/v1/version over HTTPS as a GBS client does: pin the server's SPKI (no CA, self-signed v1
    certificate) before sending the swissnum, then expect 200. Raises NotYet or GridError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw) as s:
                from cryptography import x509

                served = spki_hash_of_cert(x509.load_der_x509_certificate(s.getpeercert(binary_form=True)))
                if served != spki:
                    raise GridError(
                        f"{host}:{port} serves a certificate with SPKI hash {served}, but node.pem gives {spki}: "
                        "another process on this port?"
                    )
                auth = base64.b64encode(swissnum.encode()).decode()
                s.sendall(
                    (
                        "GET /storage/v1/version HTTP/1.1\r\n"
                        f"Host: {host}:{port}\r\n"
                        f"Authorization: Tahoe-LAFS {auth}\r\n"
                        "Accept: application/cbor\r\n"
                        "Connection: close\r\n\r\n"
                    ).encode()
                )
                head = b""
                while b"\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
    except (OSError, ssl.SSLError) as e:
        raise NotYet(f"{type(e).__name__}: {e}") from None
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise NotYet(f"no HTTP status line: {status_line!r}")
    if parts[1] != "200":
        raise NotYet(f"GET /storage/v1/version answered {status_line!r}")


def probe_node(node, timeout=2.0):
    try:
        furl = node.read("private", "storage.furl")
        swissnum = furl.split("@", 1)[1].split("/", 1)[1]
        spki = node_spki_hash(node)
    except (OSError, IndexError, ValueError) as e:
        # Before the first start these files do not exist, and Foolscap rewrites storage.furl at each start.
        raise NotYet(f"node files not ready: {type(e).__name__}: {e}") from None
    probe("127.0.0.1", node.port(), swissnum, spki, timeout)


def wait_until(node, ready, timeout, what):
    """Polls ready() until it returns without NotYet. Fails at once if the process exits (as its Popen says, or
    for a node started earlier, its recorded pid and start time), or at the deadline, naming the node and showing
    the tail of its run.log."""
    last = "not started"
    deadline = time.monotonic() + timeout
    while True:
        if node.pid() is None:
            rc = node.proc.returncode if node.proc is not None else None  # set by the poll() in pid()
            raise GridError(
                f"{node.name}: `tahoe run` exited (status {rc}) before {what}; tail of {node.log}:\n"
                + log_tail(node.log)
            )
        try:
            ready()
            return
        except (NotYet, FileNotFoundError, KeyError) as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise GridError(
                f"{node.name}: no {what} within {timeout:g} s (last: {last}); tail of {node.log}:\n"
                + log_tail(node.log)
            )
        time.sleep(0.05)


def in_parallel(items, fn):
    """Runs fn(item) in one thread per item; raises one GridError naming every failure."""
    errors = []

    def run(item):
        try:
            fn(item)
        except GridError as e:
            errors.append(str(e))
        except Exception as e:  # a bug or an unexpected file state: still say which node
            errors.append(f"{getattr(item, 'name', item)}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise GridError("\n".join(errors))


# ---------------------------------------------------------------------------------------------------------------
# Creating node directories


def ephemeral_port_range():
    """The kernel's range for automatically chosen local ports (outgoing connections and bind to port 0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n):
    """n distinct free ports on 127.0.0.1, chosen outside the kernel's ephemeral range.

    A port from the ephemeral range can be handed to any outgoing connection between the moment we probe it and
    the moment tahoe binds it (or while a stopped node is down), and the node then never listens. Ports below the
    range are only ever taken by a process that asks for that number."""
    low, high = ephemeral_port_range()
    candidates = [p for p in range(10000, 65536) if not low <= p <= high]
    random.shuffle(candidates)
    ports = []
    for port in candidates:
        if len(ports) == n:
            break
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            ports.append(port)
        except OSError:
            pass
        finally:
            s.close()
    if len(ports) < n:
        raise GridError(f"only {len(ports)} free ports outside the ephemeral range {low}-{high}; need {n}")
    return ports


def check_port_free(node):
    """Fails fast if another process holds the node's port: tahoe would then run without listening, and only its
    flog (not run.log) would say why."""
    port = node.port()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted listens; TIME_WAIT is no obstacle
    try:
        s.bind(("127.0.0.1", port))
    except OSError as e:
        raise GridError(f"{node.name}: its port 127.0.0.1:{port} (from tahoe.cfg) is taken by another process: {e}")
    finally:
        s.close()


def tahoe_create(args):
    """`tahoe <args>` in this process: the same code as the CLI, without paying about 1.5 s of imports per
    node. create-node with --port/--location does no I/O that waits, so its Deferred has fired on return."""
    import io

    from allmydata.scripts.create_node import create_client, create_node
    from allmydata.scripts.runner import parse_options

    top = parse_options(args)
    opts = top.subOptions
    opts.stdout, opts.stderr = io.StringIO(), io.StringIO()
    fn = create_client if args[0] == "create-client" else create_node
    result = []
    fn(opts).addBoth(result.append)
    if result != [0]:
        raise GridError(f"tahoe {' '.join(args)} failed: {result} {opts.stderr.getvalue()}")


def set_cfg(node, section, key, value):
    """Sets one key in tahoe.cfg, keeping the file as create-node wrote it."""
    lines = open(node.path("tahoe.cfg")).read().splitlines()
    out, in_section, done = [], False, False
    for line in lines:
        s = line.strip()
        if s.startswith("["):
            if in_section and not done:
                out.append(f"{key} = {value}")
                done = True
            in_section = s == f"[{section}]"
        elif in_section and not done and s.split("=")[0].strip().lstrip("#") == key:
            line, done = f"{key} = {value}", True
        out.append(line)
    if not done:
        if not in_section:
            out.append(f"[{section}]")
        out.append(f"{key} = {value}")
    with open(node.path("tahoe.cfg"), "w") as f:
        f.write("\n".join(out) + "\n")


def create_storage_nodes(nodes, nicknames):
    ports = free_ports(len(nodes))
    for node, nick, port in zip(nodes, nicknames, ports):
        # --port/--location instead of --hostname: --hostname makes tub.port "tcp:PORT", which listens on every
        # interface; this listens on 127.0.0.1 only and announces 127.0.0.1. No --introducer: the grid is static.
        tahoe_create(
            [
                "create-node",
                "--nickname", nick,
                "--port", f"tcp:{port}:interface=127.0.0.1",
                "--location", f"tcp:127.0.0.1:{port}",
                "--webport", "none",
                node.dir,
            ]
        )
        set_cfg(node, "storage", "reserved_space", RESERVED_SPACE)
        # GBS is on unless force_foolscap is set; say so explicitly so the NURLs are always published.
        set_cfg(node, "storage", "force_foolscap", "false")


# ---------------------------------------------------------------------------------------------------------------
# Grid files


def storage_nodes(grid_dir):
    """The storage<i> node directories present, by index."""
    found = []
    try:
        names = os.listdir(grid_dir)
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith("storage") and name[len("storage"):].isdigit():
            node = Node(grid_dir, name)
            if node.exists():
                found.append((int(name[len("storage"):]), node))
    return [n for _, n in sorted(found, key=lambda t: t[0])]


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_grid_files(grid_dir):
    """server.json per node, grid.json and servers.yaml, from the node directories (pids as of now)."""
    import yaml

    servers = []
    for node in storage_nodes(grid_dir):
        if not os.path.exists(node.path("private", "storage.furl")):
            continue  # never started: it has no keys yet
        info = storage_info(node, node.name)
        write_json(node.path("server.json"), info)
        servers.append(info)
    write_json(os.path.join(grid_dir, "grid.json"), {"servers": servers})
    static = {"storage": {}}
    for s in servers:
        # Tahoe's static-server format (docs/configuration.rst): the FURL is required even for HTTP, and the
        # announced permutation seed must be copied, since the fallback derived from the id differs.
        static["storage"][s["server_id"]] = {
            "ann": {
                "nickname": s["name"],
                "anonymous-storage-FURL": s["furl"],
                "anonymous-storage-NURLs": s["nurls"],
                "permutation-seed-base32": s["permutation_seed_base32"],
            }
        }
    tmp = os.path.join(grid_dir, "servers.yaml.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(static, f, sort_keys=False, default_flow_style=False)
    os.replace(tmp, os.path.join(grid_dir, "servers.yaml"))
    return servers


# ---------------------------------------------------------------------------------------------------------------
# Watchdog


def watchdog_file(grid_dir):
    return os.path.join(grid_dir, "watchdog.pid")


def watchdog_pid(grid_dir):
    """(pid, watched parent) of the live watchdog of this grid, or (None, None). watchdog.pid records the
    watchdog's start time beside its pid, so a reused pid is not taken for it."""
    try:
        with open(watchdog_file(grid_dir)) as f:
            w = json.load(f)
    except (OSError, ValueError):
        return None, None
    pid = w.get("pid") if isinstance(w, dict) else None
    if isinstance(pid, int) and same_process(pid, w.get("starttime")):
        return pid, w.get("parent")
    return None, None


def terminate(pid):
    """SIGTERM to pid, which may have exited meanwhile."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def ensure_watchdog(grid_dir, parent):
    stat = proc_stat(parent)
    if stat is None:
        raise GridError(f"--parent-pid {parent} is not a running process")
    if stat[1] is None:
        raise GridError(f"--parent-pid {parent}: cannot read its start time from /proc/{parent}/stat")
    pid, watched = watchdog_pid(grid_dir)
    if pid and watched == parent:
        return
    if pid:
        terminate(pid)
    with open(os.path.join(grid_dir, "watchdog.log"), "ab") as log:
        w = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_watch", grid_dir, str(parent), stat[1]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wstat = proc_stat(w.pid)
    starttime = wstat[1] if wstat is not None else None
    write_json(watchdog_file(grid_dir), {"pid": w.pid, "starttime": starttime, "parent": parent})


def stop_watchdog(grid_dir):
    pid, _ = watchdog_pid(grid_dir)
    if pid and pid != os.getpid():
        terminate(pid)
    try:
        os.unlink(watchdog_file(grid_dir))
    except FileNotFoundError:
        pass


def cmd_watch(a):
    """Polls the parent every 0.2 s; when it is gone (or its pid reused), stops the whole grid. Exits quietly
    when `stop` has removed or replaced its watchdog.pid."""
    grid_dir, parent, start = a.dir, a.parent, a.starttime
    while True:
        time.sleep(0.2)
        try:
            with open(watchdog_file(grid_dir)) as f:
                if json.load(f).get("pid") != os.getpid():
                    return 0
        except (OSError, ValueError):
            return 0
        if not same_process(parent, start):
            print(f"{time.strftime('%H:%M:%S')} parent {parent} is gone: stopping the grid", flush=True)
            stop_grid(grid_dir, None)
            return 0


# ---------------------------------------------------------------------------------------------------------------
# Subcommands


def all_nodes(grid_dir):
    nodes = storage_nodes(grid_dir)
    client = Node(grid_dir, "client")
    if client.exists():
        nodes.append(client)
    return nodes


def cmd_start(a):
    grid_dir = a.dir
    t0 = time.monotonic()
    with Lock(grid_dir):
        existing = storage_nodes(grid_dir)
        if len(existing) > a.n:
            raise GridError(f"{grid_dir} already has {len(existing)} storage nodes; start it with N >= that")
        if a.parent_pid is not None:
            # Before any node starts: if the parent dies while we wait, the watchdog (blocked on the lock until
            # this start ends) still stops the grid.
            ensure_watchdog(grid_dir, a.parent_pid)
        nodes = [Node(grid_dir, f"storage{i}") for i in range(a.n)]
        missing = [n for n in nodes if not n.exists()]
        if missing:
            create_storage_nodes(missing, [f"{a.nickname_prefix}{n.name[len('storage'):]}" for n in missing])
        for node in nodes:
            if not node.pid():
                check_port_free(node)
        started = [n for n in nodes if n.start()]

        def ready(node):
            what = f"answer to GET https://127.0.0.1:{node.port()}/storage/v1/version"
            wait_until(node, lambda: probe_node(node), a.timeout, what)

        try:
            in_parallel(nodes, ready)
        except GridError:
            # Leave nothing half-started behind from this call.
            stop_nodes(started)
            raise
        servers = write_grid_files(grid_dir)
    took = time.monotonic() - t0
    print(f"grid {grid_dir}: {len(servers)} storage nodes up in {took:.1f} s ({len(started)} started)")
    for s in servers:
        print(f"  {s['name']:12} pid {s['pid']:<7} {s['nurl']}")
    return 0


def stop_nodes(nodes):
    """SIGTERM to every node's process group at once, wait, then SIGKILL what is left. "Left" is node.pid(): the
    Popen if this invocation started the node (which also reaps it), else the recorded pid and start time."""
    signalled = [(n, n.send(signal.SIGTERM)) for n in nodes]
    deadline = time.monotonic() + STOP_GRACE
    for node, pid in signalled:
        while pid is not None and node.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
    for node, pid in signalled:
        if pid is not None and node.pid() is not None:
            print(f"{node.name}: still running {STOP_GRACE:.0f} s after SIGTERM: SIGKILL", file=sys.stderr)
            node.send(signal.SIGKILL)
            end = time.monotonic() + 5
            while node.pid() is not None and time.monotonic() < end:
                time.sleep(0.02)
            if node.pid() is not None:
                raise GridError(f"{node.name}: pid {pid} survives SIGKILL")
        node.forget()
    return [n for n, pid in signalled if pid is not None]


def stop_grid(grid_dir, only):
    """Stops every node, or (only = a list of indexes or names) just those, all at once."""
    with Lock(grid_dir):
        nodes = all_nodes(grid_dir)
        if only:
            chosen = []
            for o in only:
                match = [n for n in nodes if n.name in (o, f"storage{o}")]
                if not match:
                    raise GridError(f"{grid_dir} has no node {o}")
                chosen += [n for n in match if n not in chosen]
            nodes = chosen
        else:
            stop_watchdog(grid_dir)
        stopped = stop_nodes(nodes)
        if os.path.exists(os.path.join(grid_dir, "grid.json")):
            write_grid_files(grid_dir)  # pids are now null
    return stopped


def cmd_stop(a):
    if not os.path.isdir(a.dir):
        raise GridError(f"no grid directory {a.dir}")
    stopped = stop_grid(a.dir, a.node)
    print(f"stopped {len(stopped)} node(s): {' '.join(n.name for n in stopped) or '-'}")
    return 0


def cmd_status(a):
    nodes = all_nodes(a.dir)
    if a.node is not None:
        nodes = [n for n in nodes if n.name in (a.node, f"storage{a.node}")]
    if not nodes:
        raise GridError(f"no node {a.node or ''} under {a.dir}")
    bad = 0
    for node in nodes:
        pid = node.pid()
        if pid is None:
            state = "stopped"
            bad += 1
        elif node.name == "client":
            state = "running"
        else:
            try:
                probe_node(node)
                state = "running, answers"
            except (NotYet, GridError, OSError) as e:
                state = f"running, does not answer ({e})"
                bad += 1
        port = node.port() if node.name != "client" else "-"
        print(f"{node.name:10} port {port!s:6} pid {pid or '-'!s:7} {state}")
    wpid, parent = watchdog_pid(a.dir)
    print(f"watchdog   {f'pid {wpid}, stops the grid when pid {parent} exits' if wpid else 'none'}")
    return 1 if bad else 0


def http_get_json(url, timeout=2.0):
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def cmd_client(a):
    """A client node DIR/client with no introducer and private/servers.yaml = DIR/servers.yaml, started and
    waited for until it reports every server connected (over HTTP when NURLs are present)."""
    grid_dir = a.dir
    with Lock(grid_dir):
        servers = json.load(open(os.path.join(grid_dir, "grid.json")))["servers"]
        n = len(servers)
        node = Node(grid_dir, "client")
        if not node.exists():
            needed = a.needed or max(1, (2 * n) // 3)
            tahoe_create(
                [
                    "create-client",
                    "--nickname", "client",
                    "--webport", f"tcp:{free_ports(1)[0]}:interface=127.0.0.1",
                    "--shares-needed", str(needed),
                    "--shares-happy", str(a.happy or n),
                    "--shares-total", str(a.total or n),
                    node.dir,
                ]
            )
        else:
            # An existing client keeps its keys and convergence secret; parameters given now still apply.
            for key, value in (("shares.needed", a.needed), ("shares.happy", a.happy), ("shares.total", a.total)):
                if value is not None:
                    set_cfg(node, "client", key, str(value))
        with open(os.path.join(grid_dir, "servers.yaml")) as src:
            data = src.read()
        with open(node.path("private", "servers.yaml"), "w") as dst:
            dst.write(data)  # rewritten every time: the client reads it at start-up only
        if node.pid():
            stop_nodes([node])
        node.start()
        webport = int(node.cfg()["node"]["web.port"].split(":")[1])
        url = f"http://127.0.0.1:{webport}/"

        def connected():
            try:
                st = http_get_json(url + "?t=json")
            except OSError as e:
                raise NotYet(str(e)) from None
            ok = [s for s in st["servers"] if s["connection_status"] == "connected"]
            if len(ok) < n:
                raise NotYet(f"{len(ok)} of {n} servers connected: {[s['connection_status'] for s in st['servers']]}")

        wait_until(node, connected, a.timeout, f"connection to all {n} servers")
    print(f"client {node.dir}: web API {url}, connected to {n} servers")
    print(f"  try: {tahoe_command()[0]} -d {node.dir} put FILE  /  get CAP")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="create (if missing) and start N storage nodes; idempotent")
    s.add_argument("dir")
    s.add_argument("n", type=int)
    s.add_argument("--nickname-prefix", default="storage")
    s.add_argument("--parent-pid", type=int, help="stop the grid when this process exits")
    s.add_argument("--timeout", type=float, default=START_TIMEOUT)
    s = sub.add_parser("stop", help="stop every node started here (or some, with --node)")
    s.add_argument("dir")
    s.add_argument(
        "--node", action="append", help="index or name of a node (storage<i> or client); repeat it for several"
    )
    s = sub.add_parser("status", help="show each node and whether it runs and answers; exit 1 if one does not")
    s.add_argument("dir")
    s.add_argument("--node", help="index or name of one node")
    s = sub.add_parser("client", help="create and start a client node DIR/client using the grid")
    s.add_argument("dir")
    s.add_argument("--needed", type=int)
    s.add_argument("--happy", type=int)
    s.add_argument("--total", type=int)
    s.add_argument("--timeout", type=float, default=START_TIMEOUT)
    s = sub.add_parser("_watch")
    s.add_argument("dir")
    s.add_argument("parent", type=int)
    s.add_argument("starttime")
    a = p.parse_args()
    a.dir = os.path.abspath(a.dir)
    if a.cmd == "start" and a.n < 1:
        p.error("N must be at least 1")
    try:
        return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "client": cmd_client, "_watch": cmd_watch}[
            a.cmd
        ](a)
    except GridError as e:
        print(f"grid.py {a.cmd}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
