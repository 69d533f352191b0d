#!/usr/bin/env python3
"""Lease secrets and write enablers as tahoe-lafs 1.20 derives them for one real server, for
tests/storage_gbs.rs to compare with ours (which take the tubid from the pinned certificate, not the fURL).

stdin: JSON {"server_id", "ann", "lease_secret" (hex), "writecap", "storage_index" (hex)}
stdout: JSON {"lease_seed", "write_enabler_seed", "immutable": {"renew", "cancel"},
              "mutable": {"write_enabler", "renew", "cancel"}}, all hex.
Uses allmydata's own objects: HTTPNativeStorageServer (the seeds), SecretHolder, and MutableFileNode's
get_write_enabler / get_renewal_secret / get_cancel_secret; the immutable secrets follow immutable/upload.py.
"""
import json
import sys

from allmydata import uri
from allmydata.client import SecretHolder
from allmydata.mutable.filenode import MutableFileNode
from allmydata.storage_client import HTTPNativeStorageServer
from allmydata.util import hashutil


def main():
    request = json.load(sys.stdin)
    server = HTTPNativeStorageServer(request["server_id"].encode(), request["ann"], {"tcp": "tcp"})
    holder = SecretHolder(bytes.fromhex(request["lease_secret"]), b"\0" * 32)
    node = MutableFileNode(None, holder, {"k": 3, "n": 10}, None).init_from_cap(uri.from_string(request["writecap"]))
    storage_index = bytes.fromhex(request["storage_index"])
    seed = server.get_lease_seed()
    file_renewal = hashutil.file_renewal_secret_hash(holder.get_renewal_secret(), storage_index)
    file_cancel = hashutil.file_cancel_secret_hash(holder.get_cancel_secret(), storage_index)
    json.dump({
        "lease_seed": seed.hex(),
        "write_enabler_seed": server.get_foolscap_write_enabler_seed().hex(),
        "immutable": {
            "renew": hashutil.bucket_renewal_secret_hash(file_renewal, seed).hex(),
            "cancel": hashutil.bucket_cancel_secret_hash(file_cancel, seed).hex(),
        },
        "mutable": {
            "write_enabler": node.get_write_enabler(server).hex(),
            "renew": node.get_renewal_secret(server).hex(),
            "cancel": node.get_cancel_secret(server).hex(),
        },
    }, sys.stdout)


if __name__ == "__main__":
    main()
