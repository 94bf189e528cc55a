"""`pidelta shards plan --shards N`: how tags spread over N shards and what moves if N changes.

Keys are hashed once and the owners for N - 1, N and N + 1 shards come from the same
hashes, so a plan for a million tags costs about one `JumpHash.owners` call and a half.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from shard_config.jump_hash import check_shard_count, hash_keys, jump_many

# Up to this many shards the table has one line per shard, beyond it ten shards a line.
_ONE_LINE_PER_SHARD = 16
_PER_ROW = 10


@dataclass(frozen=True, slots=True)
class PlanReport:
    """How `tag_count` tags spread over `shard_count` shards, and the cost of resharding.

    `imbalance` is max/mean tags per shard (1.0 is perfect; 1.0 too when there are no
    tags). `moved_up` is the share of tags whose owner changes from N to N + 1 shards
    (ideal 1/(N+1)), `moved_down` the same from N to N - 1 (ideal 1/N), None when N == 1.
    """

    shard_count: int
    tag_count: int
    tags_per_shard: list[int]
    imbalance: float
    moved_up: float
    moved_down: float | None


def compute_plan(keys: Iterable[str], shard_count: int) -> PlanReport:
    """Plan for `keys` (tag WebIDs, see `jump_hash`) over `shard_count` shards."""
    check_shard_count(shard_count)
    hashes = hash_keys(keys)
    owners = jump_many(hashes, shard_count)
    counts = np.bincount(owners, minlength=shard_count)
    tag_count = len(hashes)
    if tag_count == 0:
        return PlanReport(
            shard_count, 0, counts.tolist(), 1.0, 0.0, None if shard_count == 1 else 0.0
        )
    moved_up = float(np.mean(jump_many(hashes, shard_count + 1) != owners))
    moved_down = (
        None if shard_count == 1 else float(np.mean(jump_many(hashes, shard_count - 1) != owners))
    )
    return PlanReport(
        shard_count=shard_count,
        tag_count=tag_count,
        tags_per_shard=counts.tolist(),
        imbalance=float(counts.max() / counts.mean()),
        moved_up=moved_up,
        moved_down=moved_down,
    )


def _shards(n: int) -> str:
    return f"{n:,} shard" if n == 1 else f"{n:,} shards"


def format_plan(report: PlanReport) -> str:
    """Human-readable plan: summary, per-shard table, and resharding costs against the ideal."""
    n = report.shard_count
    counts = report.tags_per_shard
    lines = [
        f"{report.tag_count:,} tags over {_shards(n)}",
        f"tags per shard: min {min(counts):,}, median {int(np.median(counts)):,}, "
        f"max {max(counts):,}, mean {report.tag_count / n:,.1f}",
        f"imbalance (max/mean): {report.imbalance:.3f} (1.000 is perfect)",
        f"grow to {_shards(n + 1)}: {report.moved_up:.2%} of tags move, all to the new "
        f"shard {n} (ideal 1/{n + 1:,} = {1 / (n + 1):.2%})",
    ]
    if report.moved_down is None:
        lines.append("shrink: not possible below 1 shard")
    else:
        lines.append(
            f"shrink to {_shards(n - 1)}: {report.moved_down:.2%} of tags move, only those "
            f"of shard {n - 1} (ideal 1/{n:,} = {1 / n:.2%})"
        )
    lines.append("")
    width = len(f"{max(counts):,}")
    if n <= _ONE_LINE_PER_SHARD:
        lines.append("shard  tags")
        lines.extend(f"{i:>5}  {c:>{width},}" for i, c in enumerate(counts))
    else:
        label = max(len("shards"), len(f"{n - 1}-{n - 1}"))
        lines.append(f"{'shards':<{label}}  tags, {_PER_ROW} shards a row")
        for start in range(0, n, _PER_ROW):
            row = counts[start : start + _PER_ROW]
            span = f"{start}-{start + len(row) - 1}"
            lines.append(f"{span:<{label}}  " + " ".join(f"{c:>{width},}" for c in row))
    return "\n".join(lines)
