#!/usr/bin/env python3
"""Differential oracle for tests/dirnode_tahoe.rs: packs and unpacks Tahoe directories with allmydata 1.20's own
dirnode.py, exactly as the Rust test asks.

stdin: one JSON request per line; stdout: one JSON answer per line. Byte strings travel as hex.

  {"op": "pack", "writekey": hex|null, "deep_immutable": bool, "pack_immutable": bool,
   "children": [[name, write_hex|null, read_hex|null, metadata_json_text], ...]}
    Children are made with deep_immutable, and packed with pack_immutable (default: the same).
    -> {"errors": [null | error class name, ...]   one per child, from nodemaker.create_from_cap,
        "packed": hex | null, "pack_error": null | error class name}
       Children whose cap is refused are left out of the packed directory.

  {"op": "unpack", "dircap": str, "data": hex}
    -> {"children": [[name, write_hex|null, read_hex|null, json.dumps(metadata)], ...] sorted by name}
       or {"error": "ClassName: message"}
"""
import json
import sys

from allmydata.dirnode import DirectoryNode, pack_children
from allmydata.interfaces import CapConstraintError
from allmydata.nodemaker import NodeMaker
from allmydata.util import jsonbytes


def nodemaker():
    # Nothing here touches the network: nodes are only made from caps, packed and unpacked.
    return NodeMaker(None, None, None, None, None, {"k": 3, "n": 10, "happy": 7, "max_segment_size": 128 * 1024},
                     None, None)


def unhex(value):
    return None if value is None else bytes.fromhex(value)


def pack(request, nm):
    deep_immutable = request["deep_immutable"]
    children = {}
    errors = []
    for name, write, read, metadata_text in request["children"]:
        node = nm.create_from_cap(unhex(write), unhex(read), deep_immutable=deep_immutable, name=name)
        try:
            node.raise_error()
        except CapConstraintError as e:
            errors.append(type(e).__name__)
            continue
        errors.append(None)
        children[name] = (node, json.loads(metadata_text))
    answer = {"errors": errors, "packed": None, "pack_error": None}
    try:
        pack_immutable = request.get("pack_immutable", deep_immutable)
        answer["packed"] = pack_children(children, unhex(request["writekey"]), deep_immutable=pack_immutable).hex()
    except Exception as e:
        answer["pack_error"] = type(e).__name__
    return answer


def unpack(request, nm):
    dircap = request["dircap"].encode("ascii")
    node = nm.create_from_cap(dircap)
    assert isinstance(node, DirectoryNode), request["dircap"]
    try:
        children = node._unpack_contents(bytes.fromhex(request["data"]))
    except Exception as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}
    listing = []
    for name in sorted(children.keys()):
        child, metadata = children[name]
        write, read = child.get_write_uri(), child.get_readonly_uri()
        listing.append([name,
                        None if write is None else write.hex(),
                        None if read is None else read.hex(),
                        jsonbytes.dumps(metadata)])
    return {"children": listing}


def main():
    nm = nodemaker()
    for line in sys.stdin:
        request = json.loads(line)
        answer = {"pack": pack, "unpack": unpack}[request["op"]](request, nm)
        sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
