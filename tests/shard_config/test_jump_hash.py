"""Exact properties of tag ownership: stable, unique, minimal movement, balanced."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mock_pi import webid
from mock_pi.catalog import Catalog
from shard_config import JumpHash, owned
from shard_config.jump_hash import hash_key, hash_keys, jump, jump_many
from tests.shard_config import SEED, point_name, webids

ROOT = Path(__file__).resolve().parents[2]

# Outputs of the paper's C JumpConsistentHash (compiled with gcc) for these 64-bit keys
# and shard counts: both Python paths must reproduce the published algorithm exactly.
JUMP_COUNTS = (1, 2, 10, 100, 101, 1000, 1 << 20)
JUMP_REFERENCE = {
    0: (0, 0, 0, 0, 0, 0, 0),
    1: (0, 0, 6, 55, 55, 549, 985611),
    42: (0, 1, 2, 43, 43, 571, 153897),
    0xDEADBEEF: (0, 1, 5, 87, 87, 285, 479362),
    0x0A7F5D5AD7A8CC88: (0, 0, 4, 43, 43, 836, 206761),
    0xFFFFFFFFFFFFFFFF: (0, 1, 9, 92, 92, 313, 589430),
    0x3E5560C2818CBDBD: (0, 0, 6, 16, 16, 997, 394928),
}

# If these fail, the key hash or the jump changed and a deployed fleet would reshuffle
# nearly every tag (and its checkpoints' owner): do not update them to make a test pass.
PINNED_HASH_OF_FIRST_WEBID = 0x0A7F5D5AD7A8CC88
PINNED_OWNERS_100 = (43, 16, 28, 18, 3)

_SUBPROCESS = """
import json
from shard_config import JumpHash
from tests.shard_config import webids
keys = webids(2000)
print(json.dumps({"hash": hash(keys[0]), "owners": JumpHash(37).owners(keys).tolist()}))
"""


def test_synthetic_keys_are_mock_pi_point_webids() -> None:
    server_id = Catalog(SEED, 0).server_id
    for i, key in enumerate(webids(300)):
        assert key == webid.pi_point(server_id, i + 1, "MOCKPI01", point_name(i))


@pytest.mark.parametrize(("key", "expected"), sorted(JUMP_REFERENCE.items()))
def test_jump_matches_the_reference_implementation(key: int, expected: tuple[int, ...]) -> None:
    assert tuple(jump(key, n) for n in JUMP_COUNTS) == expected
    hashes = np.array([key], dtype=np.uint64)
    assert tuple(int(jump_many(hashes, n)[0]) for n in JUMP_COUNTS) == expected


def test_pinned_hash_and_owners() -> None:
    keys = webids(5)
    assert hash_key(keys[0]) == PINNED_HASH_OF_FIRST_WEBID
    assert tuple(JumpHash(100).owner(k) for k in keys) == PINNED_OWNERS_100
    assert tuple(JumpHash(100).owners(keys).tolist()) == PINNED_OWNERS_100


@pytest.mark.parametrize("shard_count", [1, 2, 7, 100, 1000])
def test_scalar_and_vectorised_owners_agree(shard_count: int) -> None:
    keys = webids(5000)
    ring = JumpHash(shard_count)
    assert ring.owners(keys).tolist() == [ring.owner(k) for k in keys]
    assert hash_keys(keys).tolist() == [hash_key(k) for k in keys]


def test_owners_is_the_same_in_processes_with_other_hash_seeds() -> None:
    expected = JumpHash(37).owners(webids(2000)).tolist()
    results = []
    for hash_seed in ("1", "987654321"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        results.append(json.loads(out.stdout))
    assert results[0]["hash"] != results[1]["hash"]  # salted hash() really differed
    assert [r["owners"] for r in results] == [expected, expected]


def test_each_key_has_exactly_one_owner() -> None:
    keys = webids(100_000)
    owners = JumpHash(13).owners(keys)
    assert owners.dtype == np.int64
    assert owners.shape == (len(keys),)
    assert owners.min() >= 0
    assert owners.max() < 13
    masks = np.stack([owned(keys, i, 13) for i in range(13)])
    assert (masks.sum(axis=0) == 1).all()
    assert (masks.argmax(axis=0) == owners).all()


def test_one_shard_owns_everything() -> None:
    keys = webids(10_000)
    assert not JumpHash(1).owners(keys).any()
    assert all(JumpHash(1).owner(k) == 0 for k in keys[:100])
    assert owned(keys, 0, 1).all()


def test_owners_accepts_any_iterable_and_empty_input() -> None:
    keys = webids(100)
    ring = JumpHash(5)
    assert ring.owners(iter(keys)).tolist() == ring.owners(list(keys)).tolist()
    empty = ring.owners([])
    assert empty.dtype == np.int64
    assert empty.shape == (0,)
    assert owned([], 0, 5).shape == (0,)


@pytest.mark.parametrize("shard_count", [1, 2, 3, 10, 99, 100, 250])
def test_growing_moves_tags_only_to_the_new_shard(shard_count: int) -> None:
    hashes = hash_keys(webids(100_000))
    before = jump_many(hashes, shard_count)
    after = jump_many(hashes, shard_count + 1)
    moved = before != after
    assert moved.any()
    assert (after[moved] == shard_count).all()
    assert (after == shard_count).sum() == moved.sum()


@pytest.mark.parametrize("shard_count", [2, 3, 10, 100, 101, 250])
def test_shrinking_moves_only_the_tags_of_the_last_shard(shard_count: int) -> None:
    hashes = hash_keys(webids(100_000))
    before = jump_many(hashes, shard_count)
    after = jump_many(hashes, shard_count - 1)
    assert ((before != after) == (before == shard_count - 1)).all()


def test_million_tags_over_100_shards_balance_and_growth() -> None:
    hashes = hash_keys(webids(1_000_000))
    owners = jump_many(hashes, 100)
    counts = np.bincount(owners, minlength=100)
    assert counts.sum() == 1_000_000
    assert counts.max() / counts.mean() <= 1.10
    moved = float(np.mean(jump_many(hashes, 101) != owners))
    assert 0.5 / 101 <= moved <= 1.5 / 101


@pytest.mark.parametrize("shard_count", [0, -1])
def test_invalid_shard_count_is_rejected(shard_count: int) -> None:
    message = f"shard_count must be at least 1, got {shard_count}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        JumpHash(shard_count)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        owned(webids(3), 0, shard_count)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        jump_many(hash_keys(webids(3)), shard_count)


@pytest.mark.parametrize("shard_index", [-1, 4, 5])
def test_shard_index_out_of_range_is_rejected(shard_index: int) -> None:
    message = f"shard_index must be in [0, 3] for shard_count 4, got {shard_index}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        owned(webids(3), shard_index, 4)
