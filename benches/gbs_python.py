#!/usr/bin/env python3
"""Tahoe-LAFS 1.20's own HTTP storage client (allmydata.storage.http_client) uploading and downloading one raw
immutable share, for benches/gbs.rs to print beside ours, measured in the same run against the same server.

usage: gbs_python.py NURL SHARE_BYTES CHUNK_BYTES
prints: "upload MB/s" and "download MB/s" lines (10^6 bytes of share data per second).
The upload is allocate + sequential PATCHes of CHUNK_BYTES (Tahoe's uploader batches about 1 MB); the download
is sequential ranged GETs of CHUNK_BYTES.
"""
import os
import sys
import time

from hyperlink import DecodedURL
from twisted.internet import defer, task

from allmydata.storage.http_client import StorageClientFactory, StorageClientImmutables


async def run(reactor, nurl, size, chunk):
    client = await StorageClientFactory({"tcp": "tcp"}, None).create_storage_client(
        DecodedURL.from_text(nurl), reactor
    )
    immutables = StorageClientImmutables(client)
    data = os.urandom(size)
    storage_index, upload_secret = os.urandom(16), os.urandom(20)
    start = time.perf_counter()
    await immutables.create(storage_index, {0}, size, upload_secret, os.urandom(32), os.urandom(32))
    for offset in range(0, size, chunk):
        await immutables.write_share_chunk(storage_index, 0, upload_secret, offset, data[offset:offset + chunk])
    upload = time.perf_counter() - start
    start = time.perf_counter()
    received = []
    for offset in range(0, size, chunk):
        received.append(await immutables.read_share_chunk(storage_index, 0, offset, min(chunk, size - offset)))
    download = time.perf_counter() - start
    if b"".join(received) != data:
        raise SystemExit("gbs_python.py: downloaded share differs from the upload")
    print(f"upload {size / upload / 1e6:.1f}")
    print(f"download {size / download / 1e6:.1f}")
    await client.shutdown()


def main():
    nurl, size, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, nurl, size, chunk)))


if __name__ == "__main__":
    main()
