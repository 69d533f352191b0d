#!/usr/bin/env python3
"""Generates tests/vectors/tahoe-primitives.json from the installed tahoe-lafs (the reference implementation).

Run with the project's venv: `.venv/bin/python tests/vectors/generate.py`. Deterministic (fixed seed), so a second
run over the same tahoe-lafs gives the same file; `--check` compares instead of writing, so a test can prove the
committed vectors still come from the installed tahoe-lafs.

Every value is produced by calling allmydata's own functions; nothing here re-implements Tahoe.
"""
import json
import random
import sys
from pathlib import Path

import allmydata
from allmydata import hashtree, uri
from allmydata.crypto import aes
from allmydata.util import base32, hashutil, netstring

OUT = Path(__file__).with_name("tahoe-primitives.json")
rng = random.Random(0x7A407)


def rb(n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def h(b):
    return b.hex()


def hashes():
    out = []
    def add(fn, args, result):
        out.append({"fn": fn, "args": [h(a) if isinstance(a, bytes) else a for a in args], "out": h(result)})

    for n in (0, 1, 31, 32, 33, 64, 100, 1000):
        data = rb(n)
        add("sha256d", [data], _sha256d(data))
        add("tagged_hash", [b"tag", data], hashutil.tagged_hash(b"tag", data))
        add("tagged_hash_truncated16", [b"another tag", data], hashutil.tagged_hash(b"another tag", data, 16))
        add("tagged_pair_hash", [b"pair", data, data[::-1]], hashutil.tagged_pair_hash(b"pair", data, data[::-1]))
        add("block_hash", [data], hashutil.block_hash(data))
        add("uri_extension_hash", [data], hashutil.uri_extension_hash(data))
        add("plaintext_hash", [data], hashutil.plaintext_hash(data))
        add("crypttext_hash", [data], hashutil.crypttext_hash(data))
        add("crypttext_segment_hash", [data], hashutil.crypttext_segment_hash(data))
        add("plaintext_segment_hash", [data], hashutil.plaintext_segment_hash(data))
        add("backupdb_dirhash", [data], hashutil.backupdb_dirhash(data))
        add("ssk_writekey_hash", [data], hashutil.ssk_writekey_hash(data))
        add("ssk_pubkey_fingerprint_hash", [data], hashutil.ssk_pubkey_fingerprint_hash(data))
    for _ in range(4):
        key16, key32, si, peerid, iv = rb(16), rb(32), rb(16), rb(20), rb(16)
        add("storage_index_hash", [key16], hashutil.storage_index_hash(key16))
        add("my_renewal_secret_hash", [key32], hashutil.my_renewal_secret_hash(key32))
        add("my_cancel_secret_hash", [key32], hashutil.my_cancel_secret_hash(key32))
        add("file_renewal_secret_hash", [key32, si], hashutil.file_renewal_secret_hash(key32, si))
        add("file_cancel_secret_hash", [key32, si], hashutil.file_cancel_secret_hash(key32, si))
        add("bucket_renewal_secret_hash", [key32, peerid], hashutil.bucket_renewal_secret_hash(key32, peerid))
        add("bucket_cancel_secret_hash", [key32, peerid], hashutil.bucket_cancel_secret_hash(key32, peerid))
        tag, msg = rb(rng.randrange(1, 80)), rb(rng.randrange(0, 200))
        add("hmac", [tag, msg], hashutil.hmac(tag, msg))
        add("mutable_rwcap_key_hash", [iv, key16], hashutil.mutable_rwcap_key_hash(iv, key16))
        add("mutable_rwcap_salt_hash", [key16], hashutil.mutable_rwcap_salt_hash(key16))
        add("ssk_write_enabler_master_hash", [key16], hashutil.ssk_write_enabler_master_hash(key16))
        add("ssk_write_enabler_hash", [key16, peerid], hashutil.ssk_write_enabler_hash(key16, peerid))
        add("ssk_readkey_hash", [key16], hashutil.ssk_readkey_hash(key16))
        add("ssk_readkey_data_hash", [iv, key16], hashutil.ssk_readkey_data_hash(iv, key16))
        add("ssk_storage_index_hash", [key16], hashutil.ssk_storage_index_hash(key16))
    for k, n, segsize in ((3, 10, 131072), (1, 1, 1), (25, 50, 4096), (256, 256, 131072)):
        for secret in (b"", rb(16), rb(32)):
            data = rb(rng.randrange(0, 300))
            add("convergence_hash", [k, n, segsize, data, secret],
                hashutil.convergence_hash(k, n, segsize, data, secret))
    return out


def _sha256d(data):
    hasher = hashutil._SHA256d_Hasher()
    hasher.update(data)
    return hasher.digest()


def base32_vectors():
    enc = []
    for n in list(range(0, 41)) + [100, 255]:
        data = rb(n)
        enc.append({"bytes": h(data), "b32": base32.b2a(data).decode()})
    # Candidate strings: canonical ones, ones with non-zero trailing bits, impossible lengths, bad characters.
    candidates = ["", "a", "aa", "ab", "ae", "aq", "aaa", "aaaa", "aaab", "aaaq", "aaaaa", "aaaab", "aaaaaa",
                  "aaaaaaa", "aaaaaab", "aaaaaaaa", "aaaaaaaaa", "AA", "a1", "a8", "a=", "a a", "zz", "z2", "77",
                  "7777777", "77777777", "ac", "aaai", "aaaaaae", "mzxw6", "mzxw6ytb", "mzxw6ytboi", "mzxw6ytbo", "0", "aA", "ba"]
    for _ in range(60):
        n = rng.randrange(1, 30)
        candidates.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(n)))
    dec = []
    for s in candidates:
        sb = s.encode()
        ok = bool(base32.could_be_base32_encoded(sb))
        entry = {"b32": s, "valid": ok}
        if ok:
            entry["bytes"] = h(base32.a2b(sb))
        dec.append(entry)
    return {"encode": enc, "decode": dec}


def netstring_vectors():
    enc = [{"bytes": h(d), "netstring": h(netstring.netstring(d))} for d in (b"", b"a", b"hello world", rb(10), rb(200))]
    split = []
    cases = [
        (b"1:a,", 1, 0, None),
        (b"1:a,2:bc,", 2, 0, None),
        (b"1:a,2:bc,extra", 2, 0, None),
        (b"1:a,2:bc,", 1, 4, None),
        (b"0:,0:,", 2, 0, None),
        (b"1:a,2:bc,", 2, 0, b""),
        (b"1:a,2:bc,xy", 2, 0, b"xy"),
        (b"1:a,2:bc,xy", 2, 0, b"xz"),
        (b"1:a,", 2, 0, None),
        (b"3:ab,", 1, 0, None),
        (b"2:abc", 1, 0, None),
        (b"x:a,", 1, 0, None),
        (b"1a,", 1, 0, None),
        (b"", 1, 0, None),
    ]
    for data, count, pos, trailer in cases:
        entry = {"data": h(data), "count": count, "position": pos, "trailer": None if trailer is None else h(trailer)}
        try:
            elements, newpos = netstring.split_netstring(data, count, pos, trailer)
            entry["ok"] = {"elements": [h(e) for e in elements], "position": newpos}
        except (ValueError, AssertionError, IndexError):
            entry["error"] = True
        split.append(entry)
    return {"encode": enc, "split": split}


def aes_vectors():
    out = []
    for keylen in (16, 32):
        for iv in (None, rb(16), b"\xff" * 16, b"\x00" * 8 + b"\xff" * 8):
            for n in (0, 1, 15, 16, 17, 100, 4096 + 7):
                key = rb(keylen)
                pt = rb(n)
                ct = aes.encrypt_data(aes.create_encryptor(key, iv), pt)
                assert aes.decrypt_data(aes.create_decryptor(key, iv), ct) == pt
                out.append({"key": h(key), "iv": None if iv is None else h(iv), "plaintext": h(pt), "ciphertext": h(ct)})
    return out


def hashtree_vectors():
    trees = []
    for n in list(range(0, 18)) + [31, 32, 33]:
        leaves = [rb(32) for _ in range(n)]
        t = hashtree.HashTree(leaves)
        trees.append({
            "leaves": [h(x) for x in leaves],
            "nodes": [h(x) for x in t],
            "first_leaf_num": t.first_leaf_num,
            "needed": [sorted(t.needed_hashes(i)) for i in range(max(n, 1))],
            "needed_with_leaf": [sorted(t.needed_hashes(i, include_leaf=True)) for i in range(max(n, 1))],
        })
    # IncompleteHashTree.set_hashes scenarios: good proofs, a bad leaf, a bad uncle, a missing uncle.
    scenarios = []
    for n in (1, 2, 3, 5, 8, 13):
        leaves = [rb(32) for _ in range(n)]
        full = hashtree.HashTree(leaves)
        for leafnum in range(n):
            needed = full.needed_hashes(leafnum)
            proof = {i: full[i] for i in needed}
            proof[0] = full[0]
            for variant in ("good", "bad_leaf", "bad_uncle", "missing_uncle", "no_root"):
                hashes = dict(proof)
                leaf = leaves[leafnum]
                if variant == "bad_leaf":
                    leaf = bytes([leaf[0] ^ 1]) + leaf[1:]
                elif variant == "bad_uncle" and needed:
                    i = max(needed)
                    hashes[i] = bytes([hashes[i][0] ^ 1]) + hashes[i][1:]
                elif variant == "missing_uncle" and needed:
                    del hashes[max(needed)]
                elif variant == "no_root":
                    del hashes[0]
                elif variant != "good":
                    continue
                t = hashtree.IncompleteHashTree(n)
                result = "ok"
                try:
                    t.set_hashes(hashes=hashes, leaves={leafnum: leaf})
                except hashtree.BadHashError:
                    result = "bad_hash"
                except hashtree.NotEnoughHashesError:
                    result = "not_enough_hashes"
                scenarios.append({
                    "num_leaves": n, "leafnum": leafnum, "variant": variant,
                    "hashes": {str(i): h(v) for i, v in sorted(hashes.items())},
                    "leaf": h(leaf), "result": result,
                    "needed_before": sorted(hashtree.IncompleteHashTree(n).needed_hashes(leafnum, include_leaf=True)),
                    "nodes_after": [None if x is None else h(x) for x in t],
                })
    return {"trees": trees, "incomplete": scenarios}


def describe(cap_string):
    """Everything the Rust side must reproduce about one cap string, through uri.from_string."""
    u = uri.from_string(cap_string)
    d = {"cap": cap_string, "class": type(u).__name__}
    if isinstance(u, uri.UnknownURI):
        d["error"] = None if u.get_error() is None else type(u.get_error()).__name__
        return d
    d["string"] = u.to_string().decode()
    d["readonly"] = u.is_readonly()
    d["mutable"] = u.is_mutable()
    ro = u.get_readonly()
    d["readonly_cap"] = None if ro is None else ro.to_string().decode()
    v = u.get_verify_cap()
    try:
        d["verify_cap"] = None if v is None else v.to_string().decode()
    except AssertionError:
        # Tahoe 1.20 bug: a DIR2-MDMF-Verifier's verify cap is a DirectoryURIVerifier around an MDMF verifier,
        # whose to_string() asserts. Recorded so the Rust side can assert its own (self-referential) answer.
        d["verify_cap"] = "tahoe-assertion-error"
    si = u.get_storage_index()
    d["storage_index"] = None if si is None else h(si)
    return d


def cap_vectors():
    good = []
    def file_caps():
        key, ueb, writekey, fp, data = rb(16), rb(32), rb(16), rb(32), rb(rng.randrange(0, 56))
        k = rng.randrange(1, 256)
        n = rng.randrange(k, 257)
        size = rng.randrange(0, 2**40)
        chk = uri.CHKFileURI(key, ueb, k, n, size)
        lit = uri.LiteralFileURI(data)
        ssk = uri.WriteableSSKFileURI(writekey, fp)
        mdmf = uri.WriteableMDMFFileURI(rb(16), rb(32))
        return [chk, chk.get_verify_cap(), lit, ssk, ssk.get_readonly(), ssk.get_verify_cap(),
                mdmf, mdmf.get_readonly(), mdmf.get_verify_cap()]
    for _ in range(6):
        for fc in file_caps():
            good.append(describe(fc.to_string().decode()))
            if not isinstance(fc, (uri.CHKFileVerifierURI, uri.SSKVerifierURI, uri.MDMFVerifierURI)):
                good.append(describe(uri.wrap_dirnode_cap(fc).to_string().decode()))
        ssk = uri.WriteableSSKFileURI(rb(16), rb(32))
        mdmf = uri.WriteableMDMFFileURI(rb(16), rb(32))
        chk = uri.CHKFileURI(rb(16), rb(32), 3, 10, 12345)
        good.append(describe(uri.DirectoryURIVerifier(ssk.get_verify_cap()).to_string().decode()))
        good.append(describe(uri.MDMFDirectoryURIVerifier(mdmf.get_verify_cap()).to_string().decode()))
        good.append(describe(uri.ImmutableDirectoryURIVerifier(chk.get_verify_cap()).to_string().decode()))
    # Edge cases and malformed caps: Tahoe either parses them (with what result) or turns them into UnknownURI.
    chk = uri.CHKFileURI(rb(16), rb(32), 3, 10, 1000).to_string().decode()
    ssk = uri.WriteableSSKFileURI(rb(16), rb(32)).to_string().decode()
    mdmf = uri.WriteableMDMFFileURI(rb(16), rb(32)).to_string().decode()
    lit = uri.LiteralFileURI(b"hello").to_string().decode()
    parts = chk.split(":")
    edge = [
        "URI:LIT:", lit, lit + "a", "URI:LIT:ab", "URI:LIT:ac", "URI:LIT:aaai", "URI:LIT:aaaaaae",
        chk[:-1], chk + "x", chk.replace("URI:CHK:", "URI:CHK:a"), ":".join(parts[:3] + ["x"] + parts[4:]),
        ":".join(parts[:2] + [parts[2][:-1] + "b"] + parts[3:]),  # non-canonical trailing bits in the key
        ":".join(parts[:2] + [parts[2].upper()] + parts[3:]),
        ":".join(parts[:5] + ["007"] + parts[6:]),
        ssk + ":extra", mdmf + ":extra:stuff", mdmf.replace("URI:MDMF:", "URI:MDMF-RO:") + ":x",
        "URI:DIR2:" + ssk[len("URI:SSK:"):], "URI:DIR2:garbage", "URI:DIR2-MDMF:" + mdmf[len("URI:MDMF:"):] + ":ext",
        "ro." + ssk, "ro." + lit, "imm." + chk, "imm." + ssk, "ro.URI:SSK-RO:" + ssk[len("URI:SSK:"):],
        "URI:NEW-FUTURE-KIND:abc", "x-tahoe-crazy:stuff", "", "URI:", "URI:SSK:", "URI:CHK:a:b:1:2:3",
    ]
    bad = [describe(s) for s in edge]
    return {"good": good, "edge": bad}


def permutation_vectors():
    """Server permutation seeds and lease seeds parsed from announcements by storage_client._parse_announcement,
    and the permuted server order for storage indexes (the sort key of StorageFarmBroker.get_servers_for_psi)."""
    from allmydata.storage_client import _parse_announcement
    servers = []
    for i in range(7):
        key = base32.b2a(rb(32))
        server_id = b"v0-" + key
        furl = b"pb://" + base32.b2a(rb(20)) + b"@tcp:127.0.0.1:%d/" % (4000 + i) + base32.b2a(rb(20))
        ann = {"anonymous-storage-FURL": furl.decode(), "nickname": "s%d" % i}
        if i % 3 != 2:
            # 1.20 announces the base32 of the ASCII of the key; an old node may omit the key.
            ann["permutation-seed-base32"] = base32.b2a(key).decode()
        if i == 6:
            server_id = b"not-a-v0-id-%d" % i
        _, seed, tubid, _, _ = _parse_announcement(server_id, furl, ann)
        servers.append({"server_id": server_id.decode(), "ann": ann, "seed": h(seed), "tubid": h(tubid)})
    orders = []
    for _ in range(20):
        si = rb(16)
        order = sorted(range(len(servers)),
                       key=lambda j: hashutil.permute_server_hash(si, bytes.fromhex(servers[j]["seed"])))
        orders.append({"si": h(si), "order": order})
    return {"servers": servers, "orders": orders}


def immutable_layout_vectors():
    """Share headers and allocated sizes from immutable/layout.py's own WriteBucketProxy (v1 when it fits, v2 for
    the large ones, as make_write_bucket_proxy chooses), and URI extension blocks from uri.pack_extension."""
    from allmydata.immutable import layout
    headers = []
    cases = [(0, 0, 1, 1, 100), (1, 1, 1, 3, 300), (131072 * 3, 131072, 3, 4, 320), (7, 3, 3, 7, 333),
             (2**32 - 100, 2**20, 4096, 5, 400), (2**32 + 5, 2**20, 4097, 5, 400), (5 * 2**32, 2**32 + 1, 5, 9, 500)]
    for data_size, block_size, num_segments, num_share_hashes, ueb_size in cases:
        wbp = layout.make_write_bucket_proxy(None, None, data_size, block_size, num_segments,
                                             num_share_hashes, ueb_size)
        headers.append({"data_size": data_size, "block_size": block_size, "num_segments": num_segments,
                        "num_share_hashes": num_share_hashes, "uri_extension_size": ueb_size,
                        "version": 2 if isinstance(wbp, layout.WriteBucketProxy_v2) else 1,
                        "header": h(wbp._offset_data), "allocated_size": wbp.get_allocated_size()})
    uebs = []
    for size in (0, 56, 131073, 35 * 2**20 + 7):
        d = {"codec_name": b"crs", "codec_params": b"131073-3-10", "tail_codec_params": b"3-3-10",
             "size": size, "segment_size": 131073, "num_segments": 1 + size // 131073, "needed_shares": 3,
             "total_shares": 10, "crypttext_hash": rb(32), "crypttext_root_hash": rb(32), "share_root_hash": rb(32)}
        packed = uri.pack_extension(d)
        back = uri.unpack_extension(packed)
        uebs.append({"packed": h(packed), "unpacked": {k: (v if isinstance(v, int) else h(v)) for k, v in back.items()},
                     "hash": h(hashutil.uri_extension_hash(packed))})
    return {"headers": headers, "uri_extensions": uebs}


def main():
    vectors = {
        "generator": "tests/vectors/generate.py",
        "tahoe_lafs_version": allmydata.__version__,
        "hashes": hashes(),
        "base32": base32_vectors(),
        "netstring": netstring_vectors(),
        "aes_ctr": aes_vectors(),
        "hashtree": hashtree_vectors(),
        "caps": cap_vectors(),
        "permutation": permutation_vectors(),
        "immutable_layout": immutable_layout_vectors(),
    }
    text = json.dumps(vectors, indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            sys.exit("tests/vectors/tahoe-primitives.json differs from what the installed tahoe-lafs generates")
        print("vectors match the installed tahoe-lafs", allmydata.__version__)
    else:
        OUT.write_text(text)
        print("wrote", OUT)


if __name__ == "__main__":
    main()
