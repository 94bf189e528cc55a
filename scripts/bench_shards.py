"""Time shard ownership and plans for many PI point WebIDs, and print the figures.

Run after `make venv`: `.venv/bin/python scripts/bench_shards.py [--tags N] [--shards N]`.
The targets (1M tags, 100 shards): owners and plan well under 5 s, max/mean <= 1.10, at
most 1.5/101 of the tags moving to 101 shards, and none moving between old shards.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mock_pi import webid
from mock_pi.catalog import KINDS, SERVER_NAME, Catalog
from shard_config import JumpHash, compute_plan, format_plan
from shard_config.jump_hash import hash_keys, jump_many


def make_webids(count: int, seed: int) -> list[str]:
    """WebIDs of points 1..count on mock-pi's data server, names cycling the kinds."""
    server_id = Catalog(seed, 0).server_id
    prefixes = [kind.prefix for kind, _ in KINDS]
    return [
        webid.pi_point(server_id, i + 1, SERVER_NAME, f"{prefixes[i % len(prefixes)]}-{i:07d}.PV")
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    n = args.shards

    started = time.perf_counter()
    keys = make_webids(args.tags, args.seed)
    print(f"built {len(keys):,} WebIDs in {time.perf_counter() - started:.2f} s (not timed below)")

    started = time.perf_counter()
    owners = JumpHash(n).owners(keys)
    owners_s = time.perf_counter() - started

    started = time.perf_counter()
    hashes = hash_keys(keys)
    hash_s = time.perf_counter() - started
    started = time.perf_counter()
    grown = jump_many(hashes, n + 1)
    jump_s = time.perf_counter() - started

    started = time.perf_counter()
    report = compute_plan(keys, n)
    plan_s = time.perf_counter() - started

    moved = owners != grown
    between_old = int(np.count_nonzero(moved & (grown != n)))
    print(f"JumpHash({n}).owners: {owners_s:.2f} s for {len(keys):,} keys")
    print(f"  of which BLAKE2b hashing {hash_s:.2f} s, jump over {n + 1} shards {jump_s:.2f} s")
    print(f"compute_plan: {plan_s:.2f} s")
    print(f"imbalance (max/mean): {report.imbalance:.4f} (target <= 1.10)")
    print(
        f"moved {n} -> {n + 1}: {report.moved_up:.5f} = {report.moved_up * (n + 1):.3f}/{n + 1} "
        f"(target <= 1.5/{n + 1}); moved between old shards: {between_old}"
    )
    print()
    print(format_plan(report))


if __name__ == "__main__":
    main()
