"""Which shard owns a tag: jump consistent hash over a stable 64-bit hash of its WebID.

The key is the WebID string, which every pidelta table keys a tag by (`tag_webid`,
checkpoints), so the owner of a tag and of its checkpoint rows always agree. A PI point
WebID 2.0 embeds the upper-cased path, so a rename gives a new WebID and a new tag.

Why jump hash (Lamping & Veach, 2014, arXiv:1406.2294) and not a vnode ring: shards are
ordinals (`PIDELTA_SHARD_INDEX` of `PIDELTA_SHARD_COUNT`, app id `pidelta-ts-<i>-of-<n>`,
StatefulSet pods), so they only ever come and go at the end, which is the one change jump
hash supports. In exchange it balances as well as uniform hashing can (max/mean ≈ 1.03 for
1M tags over 100 shards, against ≈ 1.05-1.10 for a 1000-vnode ring), moves exactly the
minimum when N changes (growing N → N+1 moves only tags to the new shard, an expected
1/(N+1); shrinking moves only the tags of the last shard), and needs no ring in memory.

Keys are hashed with BLAKE2b (8-byte digest, little-endian), never Python's salted
`hash()`, so every process, host and Python version agrees. Changing either hash moves
nearly every tag: `tests/shard_config/test_jump_hash.py` pins known owners to catch that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

_MASK64 = (1 << 64) - 1
# The paper's 64-bit linear congruential step.
_LCG_MUL = 2862933555777941757
_TWO_31 = float(1 << 31)


def check_shard_count(shard_count: int) -> None:
    """Raise the one ValueError every entry point gives for a bad shard count."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")


def hash_key(key: str) -> int:
    """Stable unsigned 64-bit hash of one key (UTF-8 BLAKE2b, 8 bytes, little-endian)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def hash_keys(keys: Iterable[str]) -> npt.NDArray[np.uint64]:
    """`hash_key` of every key, as one uint64 array (hashed once, reused for many counts)."""
    digests = b"".join(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest() for key in keys)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64, copy=False)


def jump(key_hash: int, shard_count: int) -> int:
    """Jump consistent hash of one 64-bit hash, exactly as in the paper's C code."""
    check_shard_count(shard_count)
    b, j = -1, 0
    while j < shard_count:
        b = j
        key_hash = (key_hash * _LCG_MUL + 1) & _MASK64
        j = int((b + 1) * (_TWO_31 / float((key_hash >> 33) + 1)))
    return b


def jump_many(hashes: npt.NDArray[np.uint64], shard_count: int) -> npt.NDArray[np.int64]:
    """`jump` of every hash, vectorised: each round advances only the keys still jumping.

    A key takes about ln(N) + 1 rounds, so the work is a few passes over the array; the
    float64 arithmetic is the same IEEE operations as the scalar path, hence same owners.
    """
    check_shard_count(shard_count)
    owner = np.zeros(len(hashes), dtype=np.int64)
    state = np.array(hashes, dtype=np.uint64, copy=True)
    nxt = np.zeros(len(hashes), dtype=np.int64)
    active = np.arange(len(hashes), dtype=np.intp)
    mul, one, shift = np.uint64(_LCG_MUL), np.uint64(1), np.uint64(33)
    while active.size:
        b = nxt[active]
        owner[active] = b
        s = state[active] * mul + one  # uint64 arrays wrap modulo 2**64, as in C
        state[active] = s
        j = ((b + 1) * (_TWO_31 / ((s >> shift) + one).astype(np.float64))).astype(np.int64)
        nxt[active] = j
        active = active[j < shard_count]
    return owner


class JumpHash:
    """Owners of tag keys among `shard_count` shards (see the module docstring for why)."""

    def __init__(self, shard_count: int) -> None:
        check_shard_count(shard_count)
        self.shard_count = shard_count

    def __repr__(self) -> str:
        return f"JumpHash(shard_count={self.shard_count})"

    def owner(self, key: str) -> int:
        """The shard index in [0, shard_count) that owns `key`."""
        return jump(hash_key(key), self.shard_count)

    def owners(self, keys: Iterable[str]) -> npt.NDArray[np.int64]:
        """The owner of every key, in order; ~1 s for 1M WebIDs, mostly the hashing."""
        return jump_many(hash_keys(keys), self.shard_count)


def owned(keys: Iterable[str], shard_index: int, shard_count: int) -> npt.NDArray[np.bool_]:
    """Mask of the keys that shard `shard_index` of `shard_count` owns."""
    check_shard_count(shard_count)
    if not 0 <= shard_index < shard_count:
        raise ValueError(
            f"shard_index must be in [0, {shard_count - 1}] for shard_count {shard_count}, "
            f"got {shard_index}"
        )
    return JumpHash(shard_count).owners(keys) == shard_index
