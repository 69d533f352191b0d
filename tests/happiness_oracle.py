#!/usr/bin/env python3
"""Differential oracle for tests/placement_tahoe.rs: answers with allmydata 1.20's own servers-of-happiness,
share placement and failure message for exactly the cases the Rust test sends.

usage: happiness_oracle.py HASH_SEED
    share_placement works on Python sets, so its choices follow string hashing; the oracle re-runs itself
    with PYTHONHASHSEED=HASH_SEED so that a printed seed replays the same answers.

stdin: one JSON object
    {"happiness": [[[server, [share, ...]], ...], ...],
     "placement": [{"total": N, "permuted": [server, ...], "writable": [server, ...],
                    "existing": [[server, [share, ...]], ...]}, ...],
     "failure": [[server_count, needed, happy, effective_happy], ...]}
    Servers are our indices; Tahoe sees them as the ids "s%03d".
stdout: one JSON object
    {"happiness": [servers_of_happiness of each map, ...],
     "placement": [{"mapping": [[share, server], ...]   share_placement's answer,
                    "claimed": calculate_happiness of that answer,
                    "achieved": servers_of_happiness once the uploader has asked for it (read-only servers
                                refuse shares they do not hold already),
                    "places_all": whether every share 0..N is then held somewhere,
                    "refused": [[share, server], ...]   placements on read-only servers that lack the share,
                    "dropped": [server, ...]   writable servers share_placement never considered, because
                                               every share they hold was matched to a read-only server,
                    "best": servers_of_happiness if every writable candidate held every share (no placement
                            can do better)}, ...],
     "failure": [failure_message(...), ...]}
"""
import json
import os
import sys


def reexec_with_hash_seed():
    seed = sys.argv[1] if len(sys.argv) > 1 else "0"
    if os.environ.get("PYTHONHASHSEED") != seed:
        env = dict(os.environ, PYTHONHASHSEED=seed)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


reexec_with_hash_seed()

from allmydata.immutable.happiness_upload import share_placement, calculate_happiness  # noqa: E402
from allmydata.util.happinessutil import servers_of_happiness, failure_message  # noqa: E402


def name(server):
    return "s%03d" % server


def sharemap_of(server_shares):
    """[[server, [share]]] -> Tahoe's {share: set(server id)}."""
    sharemap = {}
    for server, shares in server_shares:
        for share in shares:
            sharemap.setdefault(share, set()).add(name(server))
    return sharemap


def first_distinct(servers, limit):
    seen = []
    for server in servers:
        if server not in seen:
            seen.append(server)
    return seen[:limit]


def placement(case):
    total = case["total"]
    writable = set(case["writable"])
    existing = [(server, shares) for server, shares in case["existing"] if shares]
    # As Tahoe2ServerSelector: the first 2N servers are candidates; those that cannot take a share are
    # read-only. Anyone else who holds shares cannot take more either.
    asked = first_distinct(case["permuted"], 2 * total)
    peers = {name(s) for s in asked if s in writable}
    readonly = {name(s) for s in asked if s not in writable}
    readonly |= {name(s) for s, _ in existing if name(s) not in peers}
    peers_to_shares = {name(s): set(shares) for s, shares in existing}

    mapping = share_placement(peers, readonly, set(range(total)), peers_to_shares)
    claimed = calculate_happiness(mapping) if mapping else 0

    after = sharemap_of(existing)
    refused = []
    for share, peer in mapping.items():
        if peer in peers:
            after.setdefault(share, set()).add(peer)
        elif share not in peers_to_shares.get(peer, set()):
            refused.append([share, int(peer[1:])])
    # share_placement's first matching is the only one that maps shares to read-only servers, and the
    # later ones never remap those shares; a writable server whose shares are all among them is removed
    # from its candidates along with its emptied entry of the server map.
    relied_on = {share for share, peer in mapping.items() if peer in readonly}
    dropped = sorted(
        s for s, shares in existing if name(s) in peers and set(shares) <= relied_on
    )
    best = sharemap_of(existing)
    for share in range(total):
        best.setdefault(share, set()).update(peers)
    return {
        "mapping": sorted([share, int(peer[1:])] for share, peer in mapping.items()),
        "claimed": claimed,
        "achieved": servers_of_happiness(after),
        "places_all": all(share in after for share in range(total)),
        "refused": sorted(refused),
        "dropped": dropped,
        "best": servers_of_happiness({s: p for s, p in best.items() if p}),
    }


def main():
    request = json.load(sys.stdin)
    answer = {
        "happiness": [servers_of_happiness(sharemap_of(m)) for m in request["happiness"]],
        "placement": [placement(case) for case in request["placement"]],
        "failure": [
            failure_message(peer_count=c, k=k, happy=h, effective_happy=e)
            for c, k, h, e in request["failure"]
        ],
    }
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
