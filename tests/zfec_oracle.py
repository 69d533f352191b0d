#!/usr/bin/env python3
"""Differential oracle for tests/erasure_zfec.rs: encodes and decodes with Python's zfec (the library
Tahoe-LAFS 1.20 uses) exactly the cases the Rust test sends.

stdin, repeated until EOF, all integers big-endian:
    u16 k, u16 m, u32 block_len, k*block_len bytes of data blocks,
    k x u16 share numbers to decode from (in the order the blocks are given)
stdout, per case: the m shares (share 0 first), then the k blocks zfec decodes from the chosen shares.
"""
import struct
import sys

import zfec


def read_exact(stream, n):
    data = stream.read(n)
    if len(data) != n:
        raise SystemExit(f"zfec_oracle: truncated input: wanted {n} bytes, got {len(data)}")
    return data


def main():
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = src.read(8)
        if not header:
            break
        if len(header) != 8:
            raise SystemExit("zfec_oracle: truncated case header")
        k, m, block_len = struct.unpack(">HHI", header)
        blocks = [read_exact(src, block_len) for _ in range(k)]
        chosen = list(struct.unpack(f">{k}H", read_exact(src, 2 * k)))
        shares = zfec.Encoder(k, m).encode(blocks)
        assert len(shares) == m
        for share in shares:
            dst.write(bytes(share))
        decoded = zfec.Decoder(k, m).decode([shares[s] for s in chosen], chosen)
        for block in decoded:
            dst.write(bytes(block))
    dst.flush()


if __name__ == "__main__":
    main()
