"""`compute_plan` figures are the ring's own, and `format_plan` prints them exactly."""

from __future__ import annotations

import re

import numpy as np
import pytest

from shard_config import JumpHash, PlanReport, compute_plan, format_plan
from tests.shard_config import webids


@pytest.mark.parametrize("shard_count", [2, 10, 37])
def test_plan_figures_are_those_of_the_ring(shard_count: int) -> None:
    keys = webids(100_000)
    report = compute_plan(keys, shard_count)
    owners = JumpHash(shard_count).owners(keys)
    counts = np.bincount(owners, minlength=shard_count)
    assert report.shard_count == shard_count
    assert report.tag_count == len(keys)
    assert report.tags_per_shard == counts.tolist()
    assert report.imbalance == counts.max() / counts.mean()
    # Growing moves exactly the tags the new shard gets; shrinking those of the last shard.
    assert report.moved_up == np.mean(JumpHash(shard_count + 1).owners(keys) == shard_count)
    assert report.moved_down == np.mean(owners == shard_count - 1)


def test_plan_for_one_shard() -> None:
    keys = webids(10_000)
    report = compute_plan(keys, 1)
    assert report.tags_per_shard == [10_000]
    assert report.imbalance == 1.0
    assert report.moved_down is None
    assert report.moved_up == np.mean(JumpHash(2).owners(keys) == 1)


def test_plan_without_tags() -> None:
    assert compute_plan([], 3) == PlanReport(3, 0, [0, 0, 0], 1.0, 0.0, 0.0)
    assert compute_plan([], 1) == PlanReport(1, 0, [0], 1.0, 0.0, None)


def test_million_tags_over_100_shards_meet_the_targets() -> None:
    report = compute_plan(webids(1_000_000), 100)
    assert sum(report.tags_per_shard) == 1_000_000
    assert report.imbalance <= 1.10
    assert report.moved_up <= 1.5 / 101
    assert report.moved_down is not None
    assert report.moved_down <= 1.5 / 100


def test_invalid_shard_count_is_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("shard_count must be at least 1, got 0")):
        compute_plan(webids(3), 0)


def test_format_one_line_per_shard() -> None:
    report = PlanReport(3, 3_000, [1_010, 1_000, 990], 1.01, 0.2495, 0.33)
    assert format_plan(report) == (
        "3,000 tags over 3 shards\n"
        "tags per shard: min 990, median 1,000, max 1,010, mean 1,000.0\n"
        "imbalance (max/mean): 1.010 (1.000 is perfect)\n"
        "grow to 4 shards: 24.95% of tags move, all to the new shard 3 (ideal 1/4 = 25.00%)\n"
        "shrink to 2 shards: 33.00% of tags move, only those of shard 2 (ideal 1/3 = 33.33%)\n"
        "\n"
        "shard  tags\n"
        "    0  1,010\n"
        "    1  1,000\n"
        "    2    990"
    )


def test_format_one_shard() -> None:
    text = format_plan(PlanReport(1, 5, [5], 1.0, 0.4, None))
    assert text.splitlines()[:5] == [
        "5 tags over 1 shard",
        "tags per shard: min 5, median 5, max 5, mean 5.0",
        "imbalance (max/mean): 1.000 (1.000 is perfect)",
        "grow to 2 shards: 40.00% of tags move, all to the new shard 1 (ideal 1/2 = 50.00%)",
        "shrink: not possible below 1 shard",
    ]


def test_format_condenses_many_shards_to_ten_a_row() -> None:
    counts = [100 + i for i in range(23)]
    report = PlanReport(23, sum(counts), counts, 122 / (sum(counts) / 23), 0.04, 0.05)
    assert format_plan(report).splitlines()[1:] == [
        "tags per shard: min 100, median 111, max 122, mean 111.0",
        "imbalance (max/mean): 1.099 (1.000 is perfect)",
        "grow to 24 shards: 4.00% of tags move, all to the new shard 23 (ideal 1/24 = 4.17%)",
        "shrink to 22 shards: 5.00% of tags move, only those of shard 22 (ideal 1/23 = 4.35%)",
        "",
        "shards  tags, 10 shards a row",
        "0-9     100 101 102 103 104 105 106 107 108 109",
        "10-19   110 111 112 113 114 115 116 117 118 119",
        "20-22   120 121 122",
    ]
