#!/usr/bin/env python3
"""maketree.py: generates a deterministic test tree for backup-tool tests (rsync, restic, ... through tahoe-mount).

Owns the directory DIR it is given (which must not exist, or be empty) and everything it writes there. The same
--seed and options give the same tree: names, contents, sizes, permissions and mtimes (only inode numbers, ctimes
and atimes that later reads change differ). Each file's content depends only on the seed and its path, and the big
file has its own random stream: --big-size changes the big file and nothing else.

What the tree holds (paths relative to DIR):
  big/big random.bin     the one big file: --big-size bytes of random data, written in 1 MiB chunks
  edge-sizes/            empty, 1, 54, 55, 56, 57 bytes (Tahoe stores a file of <= 55 bytes in its cap: a LIT
                         file), 128 KiB - 1 / 128 KiB / 128 KiB + 1 (a Tahoe segment) and 256 KiB +- 1
  names/                 names with spaces (leading, trailing, doubled), accents, Greek, Cyrillic, Hebrew, CJK,
                         emoji, shell/glob characters, a leading dash, a dot file, a pair differing only in case, and
                         names of exactly 255 bytes: ASCII, CJK (85 x 3 bytes), emoji (63 x 4 + 3) and mixed
                         accents + emoji; plus a directory with a 255-byte name holding a file with a 255-byte name
  crowd-1 .. crowd-3/    directories with hundreds of entries (20%, 12% and 8% of --files)
  tree/                  the remaining files in nested directories, depth up to 5 from DIR (at least one path that
                         deep), some names with spaces or non-ASCII letters; text, random and shell-script files
  empty dir/, tree/.../empty/   empty directories
  links/, tree/...       relative symlinks to files in the tree (never dangling)
Files are 0644, 0600 or 0755 (all three occur; *.sh are 0755); directories 0755. Every file, symlink and directory
gets its own atime/mtime: whole seconds, milliseconds or arbitrary nanoseconds, from 2000 to 2030, plus one file
at 1970-01-01T00:00:01 and one in 2040, set with os.utime(ns=...) after all content is written; directory times
are set last, deepest first, DIR itself last of all. All names are NFC (Tahoe normalises names to NFC).

Prints one summary line: files, directories, symlinks, total bytes in files, seed, elapsed time. Exit status 0, or
2 for usage errors (DIR not empty, bad option).
"""

import argparse
import os
import random
import stat
import sys
import time

MiB = 1 << 20
CHUNK = 1 * MiB
SEG = 128 * 1024  # Tahoe's default segment size
LIT_MAX = 55  # Tahoe: a file of at most this many bytes is stored in its cap (LIT)
MAX_DEPTH = 5  # directories at most this deep below DIR

T_2000 = 946684800  # 2000-01-01T00:00:00Z
T_2030 = 1893456000  # 2030-01-01T00:00:00Z
T_2040 = 2208988800  # 2040-01-01T00:00:00Z
NS = 1_000_000_000

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
         "whiskey", "xray", "yankee", "zulu", "report", "notes", "draft", "backup", "photo", "invoice", "data")
UNICODE_WORDS = ("café", "naïve", "résumé", "Ölçü", "Ærø", "Ελληνικά", "кириллица", "日本語", "中文", "한국어",
                 "データ", "🎉", "🚀 launch", "emoji😀", "Zürich", "São Paulo", "smörgåsbord")
DIR_WORDS = ("docs", "src", "media", "archive", "2019", "sub dir", "répertoire", "フォルダ", "misc", "old",
             "projects", "x", "deep", "level", "Ω-omega", "build output")
EXTS = (".txt", ".txt", ".md", ".log", ".json", ".csv", ".bin", ".dat", ".sh", "")
SENTENCES = ("the quick brown fox jumps over the lazy dog",
             "tahoe-lafs stores erasure-coded shares on storage servers",
             "a backup is only as good as the restore you tested",
             "lorem ipsum dolor sit amet, consectetur adipiscing elit",
             "ünïcödé text: naïve café, 日本語のテキスト, emoji 🎉",
             "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
             "segments are 128 KiB; files of 55 bytes or less live in their caps")


def exact_255(unit, filler="x"):
    """A name of units repeated, padded with ASCII `filler` so that it is exactly 255 bytes in UTF-8."""
    s = ""
    while len((s + unit).encode()) <= 255:
        s += unit
    s += filler * (255 - len(s.encode()))
    assert len(s.encode()) == 255, s
    return s


LONG_ASCII = exact_255("long-ascii-name-", "z")
LONG_CJK = ("長い名前の漢字" * 13)[:85]  # 85 characters of 3 bytes each
LONG_EMOJI = "emj" + "🎉" * 63  # 3 + 63 x 4 = 255 bytes
LONG_MIXED = exact_255("é😀ñ")
LONG_DIR = exact_255("répertoire-très-long-")
assert all(len(n.encode()) == 255 for n in (LONG_ASCII, LONG_CJK, LONG_EMOJI, LONG_MIXED, LONG_DIR))
assert len(LONG_CJK) == 85 and len(LONG_EMOJI) == 66

SPECIAL_NAMES = (
    "with space.txt", "two  spaces.txt", " leading space.txt", "trailing space.txt ", "café crème.txt",
    "naïve façade résumé.md", "Ærøskøbing Ångström.txt", "Ελληνικά.txt", "кириллица.txt", "עברית.txt",
    "日本語のファイル名.txt", "中文文件.txt", "한국어 파일.txt", "emoji 🎉🚀✨.txt", "mixed Ünïcödé 字 😀.dat",
    "-leading-dash.txt", ".hidden", "semi;colon & ampersand.txt", "quote's \"double\".txt", "dollar $HOME.txt",
    "percent %20 hash #1.txt", "brackets [x] (y) {z}.txt", "star * question ?.txt", "back\\slash.txt",
    "colon: name.txt", "Case.txt", "case.txt", "UPPER lower.TXT",
    LONG_ASCII, LONG_CJK, LONG_EMOJI, LONG_MIXED,
)
EDGE_SIZES = (0, 1, LIT_MAX - 1, LIT_MAX, LIT_MAX + 1, LIT_MAX + 2, SEG - 1, SEG, SEG + 1,
              2 * SEG - 1, 2 * SEG, 2 * SEG + 1)


class Tree:
    def __init__(self, root, seed, nfiles, big_size):
        self.root = root
        self.seed = seed
        self.nfiles = nfiles
        self.big_size = big_size
        self.rng = random.Random(f"maketree:{seed}:structure")
        self.dirs = []  # relative paths, creation order ("" is the root)
        self.files = []  # (relpath, size, perm)
        self.links = []  # (relpath, target)
        self.total = 0

    # ---- helpers ----------------------------------------------------------------------------------------------

    def path(self, rel):
        return os.path.join(self.root, rel)

    def mkdir(self, rel):
        os.mkdir(self.path(rel), 0o755)
        os.chmod(self.path(rel), 0o755)  # whatever the umask
        self.dirs.append(rel)
        return rel

    def perm(self, rel):
        if rel.endswith(".sh"):
            return 0o755
        r = self.rng.random()
        return 0o644 if r < 0.75 else 0o600 if r < 0.88 else 0o755

    def content(self, rel, size, kind):
        """The bytes of a small file, from a stream that depends only on the seed and the path."""
        r = random.Random(f"maketree:{self.seed}:file:{rel}")
        if kind == "random":
            return r.randbytes(size)
        if kind == "script":
            head = f"#!/bin/sh\n# {rel}\necho 'maketree seed {self.seed}'\n"
        else:
            head = f"{rel}\n"
        out = [head.encode()]
        n = len(out[0])
        line = 1
        while n < size:
            s = f"{line:06d} {r.choice(SENTENCES)}\n".encode()
            out.append(s)
            n += len(s)
            line += 1
        return b"".join(out)[:size]

    def write_file(self, rel, size, kind=None, perm=None):
        if kind is None:
            ext = os.path.splitext(rel)[1]
            kind = "random" if ext in (".bin", ".dat") else "script" if ext == ".sh" else "text"
        data = self.content(rel, size, kind)
        with open(self.path(rel), "xb") as fh:
            fh.write(data)
        self.files.append((rel, size, self.perm(rel) if perm is None else perm))
        self.total += size

    def write_big(self, rel):
        r = random.Random(f"maketree:{self.seed}:big")
        left = self.big_size
        with open(self.path(rel), "xb") as fh:
            while left > 0:
                n = min(CHUNK, left)
                fh.write(r.randbytes(n))
                left -= n
        self.files.append((rel, self.big_size, 0o644))
        self.total += self.big_size

    def file_size(self):
        r = self.rng.random()
        if r < 0.03:
            return 0
        if r < 0.58:
            return self.rng.randint(1, 2048)
        if r < 0.88:
            return self.rng.randint(2049, 16 * 1024)
        if r < 0.98:
            return self.rng.randint(16 * 1024 + 1, 64 * 1024)
        return self.rng.randint(64 * 1024 + 1, 200 * 1024)

    def file_name(self, i):
        r = self.rng.random()
        ext = self.rng.choice(EXTS)
        if r < 0.08:
            return f"{self.rng.choice(WORDS)} {self.rng.choice(WORDS)} {i}{ext}"
        if r < 0.14:
            return f"{self.rng.choice(UNICODE_WORDS)}-{i:04d}{ext}"
        return f"{self.rng.choice(WORDS)}-{i:04d}{ext}"

    def stamp(self):
        """(atime_ns, mtime_ns): whole seconds, milliseconds or arbitrary nanoseconds."""
        secs = self.rng.randint(T_2000, T_2030)
        r = self.rng.random()
        frac = 0 if r < 0.3 else self.rng.randint(0, 999) * 1_000_000 if r < 0.5 else self.rng.randint(1, NS - 1)
        mtime = secs * NS + frac
        atime = mtime + self.rng.randint(0, 86400 * NS)
        return atime, mtime

    # ---- the tree ---------------------------------------------------------------------------------------------

    def build(self):
        self.dirs.append("")
        # the big file
        self.mkdir("big")
        self.write_big("big/big random.bin")
        # sizes around Tahoe's LIT threshold and segment size
        self.mkdir("edge-sizes")
        for size in EDGE_SIZES:
            kind = "text" if size <= 2 * LIT_MAX else "random"
            self.write_file(f"edge-sizes/size-{size:06d}.{'txt' if kind == 'text' else 'bin'}", size, kind)
        # awkward names; each of the three permissions at least once here
        self.mkdir("names")
        perms = (0o644, 0o600, 0o755)
        for i, name in enumerate(SPECIAL_NAMES):
            self.write_file(f"names/{name}", self.rng.randint(0, 300) if i % 7 else 0, "text", perms[i % 3])
        self.mkdir(f"names/{LONG_DIR}")
        self.write_file(f"names/{LONG_DIR}/{LONG_MIXED}", 100, "text", 0o644)
        self.mkdir("empty dir")
        # crowded directories
        n_special = len(self.files)
        crowd = [self.nfiles * 20 // 100, self.nfiles * 12 // 100, self.nfiles * 8 // 100]
        serial = 0
        for c, count in enumerate(crowd, 1):
            d = self.mkdir(f"crowd-{c}")
            for _ in range(count):
                serial += 1
                self.write_file(f"{d}/{self.file_name(serial)}", self.file_size())
        # nested directories under tree/, one chain at least MAX_DEPTH deep
        tree_dirs = [self.mkdir("tree")]
        self.grow("tree", 1, tree_dirs, force_deep=True)
        rest = max(0, self.nfiles - n_special - sum(crowd))
        for _ in range(rest):
            serial += 1
            d = self.rng.choice(tree_dirs)
            self.write_file(f"{d}/{self.file_name(serial)}", self.file_size())
        deepest = max(tree_dirs, key=lambda d: d.count("/"))
        if not any(rel.startswith(deepest + "/") for rel, _, _ in self.files):
            self.write_file(f"{deepest}/at the bottom.txt", 1234)
        bottom = next(rel for rel, _, _ in self.files if rel.startswith(deepest + "/"))
        self.mkdir(f"{tree_dirs[1]}/empty")
        # relative symlinks to files in the tree
        self.mkdir("links")
        self.symlink("links/to with space", "names/with space.txt")
        self.symlink("links/ユニコード link", "names/日本語のファイル名.txt")
        self.symlink("links/to-big", "big/big random.bin")
        self.symlink("links/deep link", bottom)
        self.symlink(f"{deepest}/up to a LIT file", f"edge-sizes/size-{LIT_MAX:06d}.txt")
        self.finish()

    def grow(self, parent, depth, out, force_deep=False):
        if depth >= MAX_DEPTH:
            return
        n = self.rng.randint(2, 4) if depth <= 2 else self.rng.randint(0, 3)
        if force_deep:
            n = max(n, 1)
        for i in range(n):
            name = f"{self.rng.choice(DIR_WORDS)}-{depth + 1}.{i}"
            d = self.mkdir(f"{parent}/{name}")
            out.append(d)
            self.grow(d, depth + 1, out, force_deep=force_deep and i == 0)

    def symlink(self, rel, target_rel):
        assert os.path.isfile(self.path(target_rel)), target_rel
        target = os.path.relpath(target_rel, os.path.dirname(rel) or ".")
        os.symlink(target, self.path(rel))
        self.links.append((rel, target))

    def finish(self):
        """Permissions, then times: files and symlinks, then directories deepest first, the root last."""
        for rel, _, perm in self.files:
            os.chmod(self.path(rel), perm)
        stamps = {rel: self.stamp() for rel, _, _ in self.files}
        stamps["edge-sizes/size-000000.txt"] = (1 * NS, 1 * NS)  # 1970-01-01T00:00:01
        stamps["edge-sizes/size-000001.txt"] = (T_2040 * NS + 123456789,) * 2  # after 2038
        for rel, (a, m) in stamps.items():
            os.utime(self.path(rel), ns=(a, m))
        self.link_times_ok = True
        for rel, _ in self.links:
            try:
                os.utime(self.path(rel), ns=self.stamp(), follow_symlinks=False)
            except (OSError, NotImplementedError):
                self.link_times_ok = False
        for rel in sorted(self.dirs, key=lambda d: (-(d.count("/") + 1) if d else 0, d)):
            os.utime(self.path(rel) if rel else self.root, ns=self.stamp())


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
    if v < 0:
        raise argparse.ArgumentTypeError(f"negative size: {s!r}")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="maketree.py",
        description="Generate a deterministic test tree for backup-tool tests in DIR: >= N files in nested "
                    "directories (some with hundreds of entries), one big random file, awkward names (spaces, "
                    "UTF-8, 255-byte names), LIT-threshold and segment-boundary sizes, empty files and "
                    "directories, relative symlinks, varied permissions and nanosecond mtimes.",
        epilog="DIR must not exist or must be empty. The same seed and options give the same tree. Prints one "
               "summary line (files, dirs, symlinks, total bytes).")
    ap.add_argument("dir", metavar="DIR", help="where to create the tree (created; must be absent or empty)")
    ap.add_argument("--files", type=int, default=2100, metavar="N",
                    help="at least this many regular files (default 2100)")
    ap.add_argument("--big-size", type=parse_size, default=100 * MiB, metavar="BYTES",
                    help="size of the one big file; accepts K/M/G suffixes (default 100 MiB)")
    ap.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    args = ap.parse_args(argv)
    if args.files < 0:
        ap.error("--files must be >= 0")
    root = args.dir
    if os.path.lexists(root):
        if not os.path.isdir(root) or os.path.islink(root):
            ap.error(f"{root} exists and is not a directory")
        if os.listdir(root):
            ap.error(f"{root} is not empty (maketree only fills an absent or empty directory)")
    else:
        os.makedirs(root)
    os.chmod(root, 0o755)
    t0 = time.monotonic()
    tree = Tree(root, args.seed, args.files, args.big_size)
    tree.build()
    note = "" if tree.link_times_ok else " (symlink times could not be set here)"
    print(f"maketree: {root}: {len(tree.files)} files, {len(tree.dirs)} dirs (including {root} itself), "
          f"{len(tree.links)} symlinks, {tree.total} bytes in files (big file {args.big_size}); seed {args.seed}; "
          f"{time.monotonic() - t0:.1f}s{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
