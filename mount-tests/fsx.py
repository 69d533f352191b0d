#!/usr/bin/env python3
"""fsx.py: a random file exerciser for tahoe-mount, in the style of xfstests' fsx (our own code).

Owns one test FILE (created, or truncated to empty, at the start and left in place at the end) and an in-memory
model of what that file must contain (a bytearray). It drives the real file with a seeded random sequence of
operations and checks every read, every size and the whole file against the model:

  write      positional write (pwrite, or lseek + write) at a random offset, including past EOF (a hole that
             must read back as zeros) and near 4 KiB / 64 KiB / 128 KiB (Tahoe segment) boundaries
  append     lseek(SEEK_END) + write on the main descriptor, or write on a fresh O_APPEND descriptor
  read       pread of a random range (some straddle or start past EOF), compared byte for byte
  truncate   ftruncate down, up (a hole) or by a few bytes; a truncate down first reads (up to 1 MiB of) the
             bytes it discards, which would otherwise never be checked
  otrunc     whole-file check, close, then open(O_RDWR | O_TRUNC)
  reopen     close, then open O_RDWR again; some reopen O_RDONLY first for a read check (--reopen-prob)
  fsync / fdatasync   (not with --no-fsync)
  check      read of the whole file (through the main descriptor or a fresh one) compared with the model
After every mutating op (and fsync) both fstat(fd) and stat(path) must report the model's size. The run ends with a
close, a fresh open O_RDONLY and a whole-file check.

Written data is recognisable: the file is seen as 8-byte records at offsets that are multiples of 8, and the record
op N writes for file offset X is 4 bytes tag(N) + 4 bytes (X/8 xor key(N)), big-endian, where tag and key are
invertible mixes of N. Every byte depends on both the op number and the offset, so a dropped or misplaced write
shows, and a mismatch report decodes the records around the first bad byte ("op 812's data for offset 0x3038").

The first mismatch, wrong size or OS error (EIO, ...) ends the run with a report: the op number and the op, the
offset, the first differing position with ~32 bytes of expected and actual in hex around it, where the bytes came
from, the last 20 ops, and the command to re-run it; with --log FILE the full op log is saved there too (it is
also saved on success). Exit status: 0 pass, 1 failure, 2 usage. The same --seed and options give the same ops.

--self-test runs short sequences against deliberately corrupting I/O wrappers (a dropped write, a byte flipped
behind the file's back, garbage in a hole, a lost truncate, a short read, an injected EIO, a write lost at close)
plus one clean run, and exits 0 only if the clean run passes and every corruption is detected.
"""

import argparse
import errno
import io
import os
import random
import struct
import sys
import tempfile
import time
from array import array

MASK32 = 0xFFFFFFFF
REC = 8  # record size: data is built from 8-byte records aligned to file offsets that are multiples of 8
TAG_MUL = 0x9E3779B1  # odd, so tag() is a bijection on 32-bit op numbers
TAG_MUL_INV = pow(TAG_MUL, -1, 1 << 32)
MAX_MAX_SIZE = REC << 32  # record indexes are 32-bit
MiB = 1 << 20
SMALL_MAX = 64
MEDIUM_MAX = 64 * 1024
LARGE_MAX = 1 * MiB
CHECK_CHUNK = 1 * MiB
TAIL_CHECK = 1 * MiB  # a truncate down first reads up to this much of what it discards
LAST_OPS = 20

# Relative weights of the ops the main loop picks (reopen is picked first, with --reopen-prob).
WEIGHTS = {
    "write": 30,
    "append": 10,
    "read": 32,
    "truncate": 5,
    "otrunc": 1,
    "fsync": 2,
    "fdatasync": 2,
    "check": 2,
}
DATA_OPS = ("write", "append")
READ_SIZES = (0.5, 0.46)  # small, medium (the rest large) for reads; writes use 0.62, 0.34
TRUNC_DOWN, TRUNC_UP = 0.40, 0.40  # truncate: down, up (the rest: by a few bytes)


def tag(op):
    return (op * TAG_MUL) & MASK32


def key(op):
    x = ((op ^ 0x5BD1E995) * 0x85EBCA6B) & MASK32
    return x ^ (x >> 13)


def pattern(op, off, n):
    """The n bytes op `op` writes at file offset `off` (see the module docstring)."""
    if n <= 0:
        return b""
    w0 = off // REC
    w1 = (off + n + REC - 1) // REC
    count = w1 - w0
    words = array("Q", range(w0, w1))
    if sys.byteorder == "little":
        words.byteswap()
    const = ((tag(op) << 32) | key(op)).to_bytes(8, "big")
    # (tag << 32) | (idx ^ key) == ((tag << 32) | key) ^ idx for idx < 2**32: one big-int xor does it all.
    mixed = int.from_bytes(words.tobytes(), "big") ^ int.from_bytes(const * count, "big")
    buf = mixed.to_bytes(REC * count, "big")
    start = off - w0 * REC
    return buf[start:start + n]


def decode_record(rec):
    """(op, file offset) that the 8-byte record `rec` would come from, if it is fsx data."""
    t, f2 = struct.unpack(">II", rec)
    op = (t * TAG_MUL_INV) & MASK32
    return op, (f2 ^ key(op)) * REC


class Failure(Exception):
    def __init__(self, kind, title, lines=()):
        super().__init__(title)
        self.kind = kind  # "data", "size" or "os-error"
        self.title = title
        self.lines = list(lines)


class PosixIO:
    """The system calls fsx makes; --self-test replaces some of them with corrupting versions."""

    def open(self, path, flags, mode=0o644):
        return os.open(path, flags, mode)

    def close(self, fd):
        os.close(fd)

    def pwrite(self, fd, data, off):
        return os.pwrite(fd, data, off)

    def write(self, fd, data):
        return os.write(fd, data)

    def lseek(self, fd, pos, how):
        return os.lseek(fd, pos, how)

    def pread(self, fd, n, off):
        return os.pread(fd, n, off)

    def ftruncate(self, fd, size):
        os.ftruncate(fd, size)

    def fsync(self, fd):
        os.fsync(fd)

    def fdatasync(self, fd):
        os.fdatasync(fd)

    def fstat_size(self, fd):
        return os.fstat(fd).st_size

    def stat_size(self, path):
        return os.stat(path).st_size


def _fmt_arg(a):
    if isinstance(a, (bytes, bytearray)):
        return f"<{len(a)} bytes>"
    return repr(a)


def _fmt_flags(flags):
    names = [n for n in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND") if flags & getattr(os, n)]
    return "|".join(names) or "O_RDONLY"


def _hexrow(b):
    return " ".join(f"{x:02x}" for x in b)


class Fsx:
    def __init__(self, path, ops=10000, seed=1, max_size=4 * MiB, fsync=True, reopen_prob=0.03,
                 io_impl=None, out=None):
        self.path = path
        self.nops = ops
        self.seed = seed
        self.max_size = max_size
        self.use_fsync = fsync
        self.reopen_prob = reopen_prob
        self.io = io_impl or PosixIO()
        self.out = out or sys.stdout
        self.rng = random.Random(seed)
        self.model = bytearray()
        self.fd = None
        self.opnum = 0
        self.oplog = []  # one line per op
        self.opkind = [None]  # op number -> kind
        self.counts = {}
        weights = dict(WEIGHTS)
        if not fsync:
            weights["fsync"] = weights["fdatasync"] = 0
        self.kinds = [k for k, w in weights.items() if w > 0]
        self.weights = [weights[k] for k in self.kinds]

    # ---- plumbing -------------------------------------------------------------------------------------------

    def sys(self, name, *args):
        try:
            return getattr(self.io, name)(*args)
        except OSError as e:
            code = errno.errorcode.get(e.errno, "?") if e.errno is not None else "?"
            shown = [_fmt_arg(a) for a in args]
            if name == "open":
                shown[1] = _fmt_flags(args[1])
                shown[2:] = [f"0o{a:o}" for a in args[2:]]
            call = f"{name}({', '.join(shown)})"
            raise Failure("os-error", f"OS error {code} (errno {e.errno}: {e.strerror}) from {call}") from None

    def log(self, kind, text):
        self.opkind.append(kind)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.oplog.append(f"{self.opnum:7d} {kind:<9} {text}")

    @property
    def size(self):
        return len(self.model)

    def open_rw(self, trunc=False):
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0)
        self.fd = self.sys("open", self.path, flags, 0o644)

    def close_fd(self):
        fd, self.fd = self.fd, None
        self.sys("close", fd)

    def check_size(self, what):
        fsz = self.sys("fstat_size", self.fd)
        psz = self.sys("stat_size", self.path)
        if fsz != self.size or psz != self.size:
            raise Failure("size", f"size mismatch after {what}: expected {self.size}, "
                                  f"fstat says {fsz}, stat(path) says {psz}")

    def set_model(self, off, data):
        end = off + len(data)
        if end > self.size:
            self.model.extend(bytes(end - self.size))
        self.model[off:end] = data

    def pick_len(self, limit, small=0.62, medium=0.34):
        r = self.rng.random()
        if r < small:
            n = self.rng.randint(1, SMALL_MAX)
        elif r < small + medium:
            n = self.rng.randint(SMALL_MAX + 1, MEDIUM_MAX)
        else:
            n = self.rng.randint(MEDIUM_MAX + 1, LARGE_MAX)
        return max(0, min(n, limit))

    def near_boundary(self, limit):
        b = self.rng.choice((4096, 65536, 131072))
        off = self.rng.randint(0, max(0, limit) // b) * b + self.rng.choice((-1, 0, 0, 1))
        return min(max(off, 0), max(limit, 0))

    # ---- verification ---------------------------------------------------------------------------------------

    def verify(self, what, off, actual, expected):
        if actual == expected:
            return
        raise Failure("data", f"data mismatch in {what}", self.mismatch_lines(off, bytes(expected), bytes(actual)))

    def mismatch_lines(self, off, exp, act):
        common = min(len(exp), len(act))
        first = None
        step = 4096
        for s in range(0, common, step):  # find the first differing block quickly, then the byte
            e = min(s + step, common)
            if exp[s:e] != act[s:e]:
                first = next(i for i in range(s, e) if exp[i] != act[i])
                break
        lines = [f"expected {len(exp)} bytes at offset {off} (0x{off:x}); the file returned {len(act)} bytes"]
        if first is None:
            first = common
            lines.append(f"the first {common} bytes agree; the length differs "
                         f"(expected {len(exp)}, got {len(act)}{': a short read' if len(act) < len(exp) else ''})")
        else:
            ndiff = sum(1 for i in range(first, common) if exp[i] != act[i])
            last = max(i for i in range(first, common) if exp[i] != act[i])
            lines.append(f"first difference at file offset {off + first} (0x{off + first:x}), byte {first} of the "
                         f"read; {ndiff} differing byte(s) up to file offset 0x{off + last:x}")
        # ~32 bytes around the first difference, within the read, in rows of 16 aligned to the file offset
        hi = min(max(len(exp), len(act)), max(0, first - 16) + 32)
        lo = max(0, hi - 32)
        row = (off + lo) // 16 * 16  # file offset of the first row
        while row < off + hi:
            a, b = max(row - off, lo), min(row + 16 - off, hi)
            pad = "   " * (off + a - row)
            marks = "".join("^^ " if (i >= len(exp) or i >= len(act) or exp[i] != act[i]) else "   "
                            for i in range(a, b))
            lead = f"  @0x{row:08x} "
            lines.append(f"{lead}expected: {pad}{_hexrow(exp[a:b])}")
            lines.append(f"{'':{len(lead)}}actual:   {pad}{_hexrow(act[a:b])}")
            if marks.strip():
                lines.append(f"{'':{len(lead)}}differ:   {pad}{marks.rstrip()}")
            row += 16
        pos = off + first
        lines.append(f"expected bytes at 0x{pos:x}: {self.provenance(self.model, 0, pos)}")
        lines.append(f"actual bytes at 0x{pos:x}:   {self.provenance(act, off, pos)}")
        return lines

    def provenance(self, buf, buf_off, pos):
        """Where the bytes around file offset pos in buf (which holds file offsets buf_off..) came from."""
        descs = []
        rec = pos - pos % REC
        for r in range(rec, rec + 4 * REC, REC):  # the record holding pos, or the next whole recognisable one
            i = r - buf_off
            if i < 0 or i + REC > len(buf):
                continue
            b = bytes(buf[i:i + REC])
            if b == bytes(REC):
                d = "zeros (a hole, or nothing written)"
            else:
                op, x = decode_record(b)
                if 1 <= op < len(self.opkind) and self.opkind[op] in DATA_OPS and x < self.max_size:
                    d = f"op {op}'s ({self.opkind[op]}) data for offset 0x{x:x}"
                    if x != r:
                        d += " (MISPLACED: it belongs at that offset)"
                else:
                    d = "unrecognised (a record mixing writes, or foreign data)"
            descs.append(f"record 0x{r:x}: {d}")
            if not d.startswith("unrecognised"):
                break
        return "; ".join(descs) or "no whole 8-byte record there"

    def read_check(self, fd, what, off, n):
        data = self.sys("pread", fd, n, off)
        self.verify(f"{what} (pread {n} at {off})", off, data, self.model[off:off + n])

    def whole_check(self, fd, what):
        """Reads the whole file in chunks, each of which must come back whole, then expects EOF."""
        for pos in range(0, self.size, CHECK_CHUNK):
            self.read_check(fd, f"{what}, chunk", pos, CHECK_CHUNK)
        self.read_check(fd, f"{what}, at EOF", self.size, CHECK_CHUNK)

    # ---- ops ------------------------------------------------------------------------------------------------

    def op_write(self):
        n = self.pick_len(self.max_size)
        limit = self.max_size - n
        r = self.rng.random()
        if r < 0.55:
            off = self.rng.randint(0, min(self.size, limit))
        elif r < 0.8:
            off = self.rng.randint(0, limit)  # anywhere: often past EOF, leaving a hole
        else:
            off = self.near_boundary(limit)
        seek = self.rng.random() < 0.15
        data = pattern(self.opnum, off, n)
        old = self.size
        self.log("write", f"off={off} (0x{off:x}) len={n} end=0x{off + n:x} "
                          f"via={'lseek+write' if seek else 'pwrite'} size {old}->{max(old, off + n)}"
                          + (" (hole)" if off > old else ""))
        if seek:
            pos = self.sys("lseek", self.fd, off, os.SEEK_SET)
            if pos != off:
                raise Failure("size", f"lseek(SEEK_SET, {off}) returned {pos}")
            done = self.sys("write", self.fd, data)
        else:
            done = self.sys("pwrite", self.fd, data, off)
        if done != n:
            raise Failure("os-error", f"short write: {done} of {n} bytes at offset {off}")
        self.set_model(off, data)
        self.check_size("write")

    def op_append(self):
        n = self.pick_len(self.max_size - self.size)
        if n == 0:
            return self.op_truncate()
        off = self.size
        separate = self.rng.random() < 0.25
        data = pattern(self.opnum, off, n)
        self.log("append", f"off={off} (0x{off:x}) len={n} end=0x{off + n:x} via="
                           f"{'fresh O_APPEND fd' if separate else 'lseek(SEEK_END)+write'}")
        if separate:
            fd = self.sys("open", self.path, os.O_WRONLY | os.O_APPEND)
            try:
                done = self.sys("write", fd, data)
            finally:
                self.sys("close", fd)
        else:
            pos = self.sys("lseek", self.fd, 0, os.SEEK_END)
            if pos != off:
                raise Failure("size", f"size mismatch: lseek(SEEK_END) returned {pos}, expected {off}")
            done = self.sys("write", self.fd, data)
        if done != n:
            raise Failure("os-error", f"short write: {done} of {n} bytes appended at offset {off}")
        self.set_model(off, data)
        self.check_size("append")

    def pick_read(self):
        n = self.pick_len(LARGE_MAX, *READ_SIZES)
        r = self.rng.random()
        if r < 0.8:
            off = self.rng.randint(0, max(0, self.size - 1))
        elif r < 0.9:
            off = max(0, self.size - self.rng.randint(0, n))  # straddles EOF
        else:
            off = self.near_boundary(self.size)
        return off, n

    def op_read(self):
        off, n = self.pick_read()
        self.log("read", f"off={off} (0x{off:x}) len={n} end=0x{off + n:x} size={self.size}")
        self.read_check(self.fd, "read", off, n)

    def op_truncate(self):
        r = self.rng.random()
        if r < TRUNC_DOWN:
            new = self.rng.randint(0, self.size)
        elif r < TRUNC_DOWN + TRUNC_UP:
            new = self.rng.randint(self.size, self.max_size)
        else:
            new = min(max(0, self.size + self.rng.randint(-64, 64)), self.max_size)
        tail = min(self.size - new, TAIL_CHECK)
        way = "up" if new > self.size else "down" if new < self.size else "same"
        self.log("truncate", f"size {self.size}->{new} (0x{new:x}) {way}"
                             + (f", after reading the {tail} bytes it discards first" if tail > 0 else ""))
        if tail > 0:  # data about to be discarded is otherwise never checked
            self.read_check(self.fd, "read of the tail a truncate will discard", new, tail)
        self.sys("ftruncate", self.fd, new)
        if new < self.size:
            del self.model[new:]
        else:
            self.model.extend(bytes(new - self.size))
        self.check_size("ftruncate")

    def op_otrunc(self):
        self.log("otrunc", f"whole-file check, then close + open(O_RDWR|O_TRUNC) size {self.size}->0")
        self.whole_check(self.fd, "whole-file check before an O_TRUNC open")
        self.close_fd()
        self.open_rw(trunc=True)
        self.model = bytearray()
        self.check_size("open(O_TRUNC)")

    def op_reopen(self):
        rdonly = self.rng.random() < 1 / 3
        if rdonly:
            off, n = self.pick_read()
            self.log("reopen", f"close + open(O_RDONLY) + read off={off} (0x{off:x}) len={n} + close + open(O_RDWR)")
        else:
            self.log("reopen", "close + open(O_RDWR)")
        self.close_fd()
        if rdonly:
            self.fd = self.sys("open", self.path, os.O_RDONLY)
            self.check_size("open(O_RDONLY)")
            self.read_check(self.fd, "read on an O_RDONLY reopen", off, n)
            self.close_fd()
        self.open_rw()
        self.check_size("reopen")

    def op_fsync(self):
        self.log("fsync", f"size={self.size}")
        self.sys("fsync", self.fd)
        self.check_size("fsync")

    def op_fdatasync(self):
        self.log("fdatasync", f"size={self.size}")
        self.sys("fdatasync", self.fd)
        self.check_size("fdatasync")

    def op_check(self):
        fresh = self.rng.random() < 0.5
        self.log("check", f"whole file, size={self.size}, via {'a fresh O_RDONLY fd' if fresh else 'the main fd'}")
        if fresh:
            fd = self.sys("open", self.path, os.O_RDONLY)
            try:
                self.whole_check(fd, "whole-file check on a fresh fd")
            finally:
                self.sys("close", fd)
        else:
            self.whole_check(self.fd, "whole-file check")

    # ---- driver ---------------------------------------------------------------------------------------------

    def run(self):
        """Returns None on success, or the Failure (already reported on self.out)."""
        self.t0 = time.monotonic()
        try:
            self.open_rw(trunc=True)
            self.check_size("open(O_CREAT|O_TRUNC)")
            for self.opnum in range(1, self.nops + 1):
                if self.reopen_prob > 0 and self.rng.random() < self.reopen_prob:
                    kind = "reopen"
                else:
                    kind = self.rng.choices(self.kinds, self.weights)[0]
                getattr(self, "op_" + kind)()
            self.opnum = self.nops + 1
            self.log("final", f"close + open(O_RDONLY) + whole-file check, size={self.size}")
            self.close_fd()
            self.fd = self.sys("open", self.path, os.O_RDONLY)
            self.check_size("final open")
            self.whole_check(self.fd, "final whole-file check")
            self.close_fd()
        except Failure as f:
            self.report(f)
            return f
        finally:
            if self.fd is not None:
                try:
                    self.io.close(self.fd)
                except OSError:
                    pass
                self.fd = None
        return None

    def rerun_hint(self):
        args = [os.path.basename(sys.argv[0]) or "fsx.py", self.path, "--seed", str(self.seed),
                "--ops", str(self.nops), "--max-size", str(self.max_size), "--reopen-prob", str(self.reopen_prob)]
        if not self.use_fsync:
            args.append("--no-fsync")
        return " ".join(args)

    def report(self, f):
        p = lambda s="": print(s, file=self.out)
        op_line = self.oplog[-1] if self.oplog else "(before the first op)"
        p(f"fsx: FAIL at op {self.opnum} of {self.nops} (seed {self.seed}, file {self.path}): {f.title}")
        p(f"  op: {op_line.strip()}")
        for line in f.lines:
            p(f"  {line}")
        p(f"  model size {self.size}; elapsed {time.monotonic() - self.t0:.2f}s")
        p(f"last {min(LAST_OPS, len(self.oplog))} ops:")
        for line in self.oplog[-LAST_OPS:]:
            p(f"  {line}")
        p(f"re-run: {self.rerun_hint()}")
        self.failure_text = [f"FAIL at op {self.opnum}: {f.title}", f"  op: {op_line.strip()}"] + \
                            [f"  {x}" for x in f.lines]

    def summary(self):
        order = list(WEIGHTS) + ["reopen", "final"]
        kinds = ", ".join(f"{k} {self.counts[k]}" for k in order if self.counts.get(k))
        return (f"fsx: PASS {self.path}: {self.nops} ops ({kinds}); final size {self.size}; seed {self.seed}; "
                f"elapsed {time.monotonic() - self.t0:.2f}s")

    def save_log(self, path, argv):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"# fsx op log: {' '.join(argv)}\n# seed {self.seed}, ops {self.nops}, max-size "
                     f"{self.max_size}, reopen-prob {self.reopen_prob}, fsync {self.use_fsync}\n")
            for line in self.oplog:
                fh.write(line + "\n")
            for line in getattr(self, "failure_text", []):
                fh.write("# " + line + "\n")


# ---- self-test: corrupting I/O wrappers -----------------------------------------------------------------------

class _Corrupt(PosixIO):
    """Corrupts at the first eligible call on or after its `after`-th call of the hooked kind, then (with
    `every`) again at every `every`-th eligible call, so that for any seed some corruption survives to be seen."""

    def __init__(self, after, every=None):
        self.after = after
        self.every = every
        self.calls = 0
        self.eligible = 0
        self.fired = 0

    def due(self, ok=True):
        self.calls += 1
        if self.calls < self.after or not ok:
            return False
        self.eligible += 1
        if self.fired and not (self.every and (self.eligible - 1) % self.every == 0):
            return False
        self.fired += 1
        return True


class DroppedWrite(_Corrupt):
    def pwrite(self, fd, data, off):
        if self.due(off + len(data) <= os.fstat(fd).st_size):
            return len(data)  # claims success, writes nothing (only inside the file: the size stays right)
        return os.pwrite(fd, data, off)


class FlippedByte(_Corrupt):
    def fstat_size(self, fd):  # called after every mutating op: flip a byte behind fsx's back
        size = os.fstat(fd).st_size
        if self.due(size > 0):
            with open(f"/proc/self/fd/{fd}", "r+b", buffering=0) as fh:
                fh.seek(size // 2)
                b = fh.read(1)
                fh.seek(size // 2)
                fh.write(bytes([b[0] ^ 0x40]))
        return size


class HoleGarbage(_Corrupt):
    def pwrite(self, fd, data, off):
        size = os.fstat(fd).st_size
        if self.due(off > size):
            os.pwrite(fd, b"\xee" * (off - size), size)  # the hole reads back as 0xee, not zeros
        return os.pwrite(fd, data, off)


class LostTruncate(_Corrupt):
    def ftruncate(self, fd, size):
        if self.due(size < os.fstat(fd).st_size):
            return  # shrink silently ignored
        os.ftruncate(fd, size)


class ShortRead(_Corrupt):
    def pread(self, fd, n, off):
        data = os.pread(fd, n, off)
        if self.due(len(data) == n and n > 1):
            return data[:-1]
        return data


class InjectedEIO(_Corrupt):
    def pread(self, fd, n, off):
        if self.due():
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return os.pread(fd, n, off)


class LostAtClose(_Corrupt):
    """A write-back cache that loses the last pwrite before the close of its descriptor (puts back the bytes and
    the size it overwrote)."""

    def __init__(self, after, every=None):
        super().__init__(after, every)
        self.undo = None

    def pwrite(self, fd, data, off):
        self.undo = (fd, off, os.pread(fd, len(data), off), os.fstat(fd).st_size)
        return os.pwrite(fd, data, off)

    def close(self, fd):
        if self.undo and self.undo[0] == fd and self.due():
            _, off, old, size = self.undo
            os.pwrite(fd, old, off)
            os.ftruncate(fd, size)
        self.undo = None
        os.close(fd)


SELF_TESTS = [
    # (name, io wrapper, the failure kinds that count as detection, or () for "must pass")
    ("clean run", lambda: PosixIO(), ()),
    ("dropped write (every 25th pwrite inside the file)", lambda: DroppedWrite(40, 25), ("data",)),
    ("byte flipped behind the file's back (every 100th size check)", lambda: FlippedByte(60, 100), ("data",)),
    ("garbage in a hole (every 10th pwrite past EOF)", lambda: HoleGarbage(5, 10), ("data",)),
    ("lost truncate (once)", lambda: LostTruncate(3), ("size",)),
    ("short read (once)", lambda: ShortRead(30), ("data",)),
    ("injected EIO (once)", lambda: InjectedEIO(50), ("os-error",)),
    ("last write lost at close (every 3rd close)", lambda: LostAtClose(2, 3), ("data", "size")),
]


def self_test(ops, seed, verbose):
    ok = True
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fsx-selftest-") as tmp:
        for i, (name, make_io, want) in enumerate(SELF_TESTS):
            out = io.StringIO()
            fsx = Fsx(os.path.join(tmp, f"t{i}"), ops=ops, seed=seed, max_size=1 * MiB, reopen_prob=0.05,
                      io_impl=make_io(), out=out)
            fail = fsx.run()
            if not want:
                good = fail is None
                verdict = "passed, as it must" if good else "FAILED on a correct file"
            else:
                good = fail is not None and fail.kind in want
                if fail is None:
                    verdict = "NOT DETECTED"
                elif not good:
                    verdict = f"detected, but as {fail.kind!r}, not {' or '.join(want)}: {fail.title}"
                else:
                    verdict = f"detected at op {fsx.opnum} ({fail.kind}): {fail.title}"
            ok &= good
            print(f"self-test: {'ok  ' if good else 'BAD '} {name}: {verdict}")
            if verbose or not good:
                for line in out.getvalue().splitlines():
                    print(f"    | {line}")
    print(f"self-test: {'PASS' if ok else 'FAIL'} ({len(SELF_TESTS)} cases, {ops} ops each, seed {seed}, "
          f"{time.monotonic() - t0:.2f}s)")
    return 0 if ok else 1


# ---- command line ---------------------------------------------------------------------------------------------

def parse_size(s):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = s.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(t[-1:], 1)
    if t[-1:] in units:
        t = t[:-1]
    try:
        v = int(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (bytes, or with K/M/G)")
    if not 1 <= v < MAX_MAX_SIZE:
        raise argparse.ArgumentTypeError(f"size out of range: {s!r}")
    return v


def parse_prob(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a probability: {s!r}")
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"probability must be in [0, 1]: {s!r}")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="fsx.py",
        description="Random file exerciser: drives FILE with seeded random writes (also past EOF), appends, "
                    "reads, truncates, O_TRUNC opens, reopens and fsyncs, and checks every read, size and the "
                    "whole file against an in-memory model. FILE is created or truncated; it is left in place.",
        epilog="Exit status: 0 pass, 1 mismatch / wrong size / OS error (reported with the op, expected vs actual "
               "bytes and the last 20 ops), 2 usage. The same seed and options give the same op sequence.")
    ap.add_argument("file", nargs="?", metavar="FILE", help="the file to exercise (not needed with --self-test)")
    ap.add_argument("--ops", type=int, metavar="N", help="number of ops (default 10000; 1500 with --self-test)")
    ap.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    ap.add_argument("--max-size", type=parse_size, default=4 * MiB, metavar="BYTES",
                    help="largest size the file may reach; accepts K/M/G suffixes (default 4 MiB)")
    ap.add_argument("--no-fsync", action="store_true", help="never call fsync/fdatasync")
    ap.add_argument("--reopen-prob", type=parse_prob, default=0.03, metavar="P",
                    help="probability that an op is a close + reopen (a third of them reopen O_RDONLY for a "
                         "read first) (default 0.03)")
    ap.add_argument("--log", metavar="LOGFILE",
                    help="write the full op log (and any failure report) to LOGFILE at the end")
    ap.add_argument("--self-test", action="store_true",
                    help="prove fsx detects corruption: run short sequences against corrupting I/O wrappers in a "
                         "temporary directory (uses --seed and --ops); exit 0 only if all "
                         "corruptions were caught and a clean run passed")
    ap.add_argument("--verbose", action="store_true", help="with --self-test, show each detection report in full")
    args = ap.parse_args(argv)
    if args.ops is not None and args.ops < 0:
        ap.error("--ops must be >= 0")
    if args.self_test:
        return self_test(1500 if args.ops is None else args.ops, args.seed, args.verbose)
    if args.ops is None:
        args.ops = 10000
    if not args.file:
        ap.error("FILE is required (or use --self-test)")
    print(f"fsx: {args.file}: {args.ops} ops, seed {args.seed}, max size {args.max_size}, reopen-prob "
          f"{args.reopen_prob}{', no fsync' if args.no_fsync else ''}", flush=True)
    fsx = Fsx(args.file, ops=args.ops, seed=args.seed, max_size=args.max_size, fsync=not args.no_fsync,
              reopen_prob=args.reopen_prob)
    fail = fsx.run()
    if args.log:
        fsx.save_log(args.log, [sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
        if fail:
            print(f"full op log: {args.log}")
    if fail:
        return 1
    print(fsx.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
