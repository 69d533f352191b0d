#!/usr/bin/env python3
"""Python zfec's speed, for benches/erasure.rs to print beside ours in the same run.

stdin: lines "k m data_bytes op" (op: encode | decode). stdout: one line per input, "k m data_bytes op MB/s",
where MB/s is 10^6 bytes of file data per second, best of several timed runs of at least --seconds each.
Encode computes the m-k check shares (zfec returns data shares as the input objects, at no cost); decode is
the worst case: data shares 0..L-1 lost (L = min(k, m-k)) and check shares k..k+L-1 used instead.
"""
import argparse
import os
import sys
import time

import zfec


def measure(fn, data_bytes, seconds, runs):
    fn()  # warm up: page in buffers, build tables
    best = 0.0
    for _ in range(runs):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, calls * data_bytes / elapsed / 1e6)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for line in sys.stdin:
        if not line.strip():
            continue
        k, m, data_bytes, op = line.split()
        k, m, data_bytes = int(k), int(m), int(data_bytes)
        block = data_bytes // k
        blocks = [os.urandom(block) for _ in range(k)]
        checks = list(range(k, m))
        encoder = zfec.Encoder(k, m)
        if op == "encode":
            fn = lambda: encoder.encode(blocks, checks)
        else:
            lost = min(k, m - k)
            shares = encoder.encode(blocks)
            numbers = list(range(k, k + lost)) + list(range(lost, k))
            given = [shares[s] for s in numbers]
            decoder = zfec.Decoder(k, m)
            fn = lambda: decoder.decode(given, numbers)
        rate = measure(fn, block * k, args.seconds, args.runs)
        print(f"{k} {m} {data_bytes} {op} {rate:.1f}", flush=True)


if __name__ == "__main__":
    main()
