#!/usr/bin/env python3
"""Makes the starting inputs of every fuzz target (fuzz/corpus/<target>/seed-*) from real Tahoe-LAFS 1.20 data:
caps from tests/vectors, share files from a local grid's storage nodes (a grid left by the tests under
mount-tests/work, or --grid DIR), and directories, URI extension blocks and storage-protocol replies made with
allmydata and cbor2 themselves. Run with the venv's Python (mount-tests/venv.sh); cargo-fuzz grows the corpora
from these, and `cargo test --test fuzz_corpora` replays them all.

usage: seeds.py [--grid DIR]
"""

import argparse
import glob
import json
import os
import re
import struct

import cbor2
from allmydata import uri
from allmydata.dirnode import pack_children

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def save(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grid", help="a local grid's directory (grid.py's), for share files")
    a = p.parse_args()
    grids = [a.grid] if a.grid else sorted(glob.glob(os.path.join(REPO, "mount-tests", "work", "grid-*")))
    if not grids:
        raise SystemExit("seeds.py: no grid with shares: give --grid DIR")
    grid = grids[0]
    extra = sorted(glob.glob(os.path.join(REPO, "mount-tests", "work", "mount", "grid")))

    vectors = open(os.path.join(REPO, "tests", "vectors", "tahoe-primitives.json")).read()
    caps = sorted(set(re.findall(r'"(URI:[A-Za-z0-9:_-]+)"', vectors)))
    kinds = {}
    for cap in caps:
        kinds.setdefault(cap.split(":")[1], cap)
    for kind, cap in kinds.items():
        save("cap", kind, cap)

    servers = json.load(open(os.path.join(grid, "grid.json")))["servers"]
    for i, s in enumerate(servers[:3]):
        save("nurl", f"{i}", s["nurl"])
    save("nurl", "ipv6", "pb://" + "A" * 43 + "@[::1]:8080,example.org:1/swissnum#v=1")
    save("nurl", "furl", "pb://5tle46leisxf2nljqldkdeucnvrc73wk@tcp:127.0.0.1:24601/cdynbizisajfk3wr6wgdogct3hkc6g2u")
    save("servers_yaml", "grid", open(os.path.join(grid, "servers.yaml")).read())

    dircap = [c for c in caps if c.startswith("URI:DIR2-RO:")][0]
    save("gsd_format", "invitation", json.dumps({"version": 1, "gsd": dircap, "bootstrap": [servers[0]["nurl"]]}))
    save("gsd_format", "announcement", json.dumps({
        "version": 1, "server-id": "v0-" + "a" * 52, "nickname": "storage0", "permutation-seed-base32": "a" * 52,
        "anonymous-storage-FURL": None, "gbs-anonymous-storage-url": servers[0]["nurl"]}))

    immutable, mutable = [], []
    paths = [p for g in [grid] + extra for p in sorted(glob.glob(os.path.join(g, "storage*", "storage", "shares",
                                                                              "*", "*", "*")))]
    for path in paths:
        data = open(path, "rb").read()
        (mutable if data.startswith(b"Tahoe mutable container") else immutable).append(data)
    for i, data in enumerate(immutable[:4]):
        # The share within its container (12 bytes: version, size, lease count), cut to its first 64 KiB.
        share = data[12:]
        save("chk_share", f"{i}", share[:65536])
        version = struct.unpack(">L", share[:4])[0]
        if version == 1:
            ueb_at = struct.unpack(">L", share[0x20:0x24])[0]
            (length,) = struct.unpack(">L", share[ueb_at:ueb_at + 4])
            save("uri_extension", f"{i}", share[ueb_at + 4:ueb_at + 4 + length])
    for i, data in enumerate(mutable[:4]):
        # The container: a 100-byte header and four lease slots before the share (storage/mutable.py).
        (length,) = struct.unpack(">Q", data[84:92])
        save("mutable_share", f"{i}", data[468:468 + length][:65536])
    if not immutable or not mutable:
        raise SystemExit(f"seeds.py: {grid} has {len(immutable)} immutable and {len(mutable)} mutable shares")

    children = {}
    from allmydata.unknown import UnknownNode
    usable = [c for c in caps if c.startswith(("URI:CHK:", "URI:LIT:", "URI:DIR2", "URI:SSK", "URI:MDMF"))]
    for i, cap in enumerate(usable[:8]):
        parsed = uri.from_string(cap)
        if parsed.get_readonly() is None:
            continue
        readonly = parsed.get_readonly().to_string()
        write = cap.encode() if not parsed.is_readonly() else None
        # UnknownNode carries both caps as given, which is all pack_children reads of a child.
        children[f"child-{i}"] = (UnknownNode(write, readonly), {"mtime": 1.5, "tahoe": {"linkcrtime": 1.0}})
    save("dirnode", "readonly", pack_children(children, None))
    save("dirnode", "writeable", pack_children(children, b"\x07" * 16))

    save("replies", "version", cbor2.dumps({
        b"http://allmydata.org/tahoe/protocols/storage/v1": {
            b"maximum-immutable-share-size": 1 << 40, b"maximum-mutable-share-size": 1 << 36,
            b"available-space": 1 << 30, b"tolerates-immutable-read-overrun": True},
        b"application-version": b"tahoe-lafs/1.20.0"}))
    save("replies", "shares", cbor2.dumps(cbor2.CBORTag(258, [0, 3, 7])))
    save("replies", "allocate", cbor2.dumps({"already-have": cbor2.CBORTag(258, [1]),
                                             "allocated": cbor2.CBORTag(258, [0, 2])}))
    save("replies", "patch", cbor2.dumps({"required": [{"begin": 0, "end": 100}]}))
    save("replies", "rtw", cbor2.dumps({"success": True, "data": {0: [b"abc"], 3: [b""]}}))

    save("journal", "link", json.dumps({"dir": dircap, "name": "a file", "link": {"cap": kinds.get("CHK", "")},
                                        "metadata": {"mtime": 1.0}}))
    print("seeds written under", os.path.join(HERE, "corpus"))


if __name__ == "__main__":
    main()
