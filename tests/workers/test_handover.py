"""A new shard count makes before it breaks (docs/DESIGN.md "Resharding fence").

In `run`, workers of a new count wait for one another to join before they fence, while
the old count, still committing, goes on ingesting; the old workers stop once the new
generation has taken over: all its workers joined, or HANDOVER_PATIENCE since its
announcement. Real tables on local disk; the old count's liveness and the sleep are the
seams.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from workers.errors import RetriesAbandoned, StaleGeneration
from workers.lake.schemas import (
    CHECKPOINTS,
    CHECKPOINTS_SCHEMA,
    SHARDS,
    SHARDS_SCHEMA,
)
from workers.lake.tables import TableStore
from workers.pi.times import utcnow
from workers.timeseries import generations
from workers.timeseries.checkpoints import last_commit
from workers.timeseries.generations import (
    HANDOVER_PATIENCE,
    REVERT_GUARD,
    Generation,
    Handover,
    ShardFence,
)
from workers.timeseries.sink import DeltaSink

T = datetime(2026, 12, 4, 10, tzinfo=UTC)


def lake(root: Path) -> tuple[TableStore, DeltaSink]:
    store = TableStore(str(root))
    store.create_all()
    return store, DeltaSink(store)


def fence_of(store: TableStore, sink: DeltaSink, index: int, count: int) -> ShardFence:
    return ShardFence(store, sink, count, f"pidelta-ts-{index}-of-{count}")


async def no_sleep(_seconds: float) -> bool:
    await asyncio.sleep(0.01)
    return False


async def until(found: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Ask `found` until it gives something, letting the joining tasks run between asks."""
    for _ in range(int(seconds / 0.02)):
        if (value := found()) is not None and value is not False:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"not found in {seconds} s")


def stale(fence: ShardFence) -> Callable[[], StaleGeneration | None]:
    def check() -> StaleGeneration | None:
        try:
            fence.check()
        except StaleGeneration as exc:
            return exc
        return None

    return check


def announced(fence: ShardFence, generation: int) -> Callable[[], bool]:
    return lambda: (g := fence.generations.latest()) is not None and g.generation == generation


async def test_the_old_count_ingests_until_every_new_worker_joined_then_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generations, "HANDOVER_DRAIN", timedelta(seconds=5))
    store, sink = lake(tmp_path)
    old = fence_of(store, sink, 0, 1)
    await old.join()
    handover = Handover(no_sleep, lambda count: count == 1)
    first = asyncio.create_task(fence_of(store, sink, 0, 2).join(handover))
    await until(announced(old, 2))
    await asyncio.sleep(0.2)
    # Generation 2 is announced by one of its two workers: it waits, unfenced, and the
    # old worker goes on.
    assert not first.done()
    assert (sink.fenced(), old.check()) == (1, None)
    second = asyncio.create_task(fence_of(store, sink, 1, 2).join(handover))
    # All joined: generation 2 has taken over, and the old worker is told to flush and
    # stop while the table is not fenced yet.
    replaced = await until(old.check)
    assert (replaced.generation, replaced.shard_count, replaced.joined) == (2, 2, 2)
    assert sink.fenced() == 1
    joined = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert [g.joined for g in joined] == [2, 2]
    assert sink.fenced() == 2
    # A drain after it first saw the take-over, the old worker is stale.
    assert str(await until(stale(old))) == "shard generation 2 has 2 shards"
    # A worker of the new count restarting later joins nothing more: it has taken over.
    again = await asyncio.wait_for(fence_of(store, sink, 0, 2).join(handover), 1)
    assert again.joined == 2
    history = old.generations.history()
    assert [(g.generation, g.shard_count, g.joined) for g in history] == [(1, 1, 1), (2, 2, 2)]
    assert history[1].took_over_at is not None
    assert history[1].took_over_at > history[1].announced_at


async def test_a_new_count_fences_at_once_when_the_old_one_no_longer_commits(
    tmp_path: Path,
) -> None:
    store, sink = lake(tmp_path)
    await fence_of(store, sink, 0, 1).join()
    joined = await asyncio.wait_for(
        fence_of(store, sink, 0, 2).join(Handover(no_sleep, lambda _count: False)), 10
    )
    assert (joined.generation, joined.joined, sink.fenced()) == (2, 1, 2)


async def test_once_and_backfill_fence_without_waiting(tmp_path: Path) -> None:
    store, sink = lake(tmp_path)
    await fence_of(store, sink, 0, 1).join()
    joined = await asyncio.wait_for(fence_of(store, sink, 0, 2).join(), 10)
    assert (joined.generation, joined.joined, sink.fenced()) == (2, 1, 2)


async def test_a_worker_stopping_while_it_waits_leaves_the_fence_alone(tmp_path: Path) -> None:
    store, sink = lake(tmp_path)
    await fence_of(store, sink, 0, 1).join()

    async def stopping(_seconds: float) -> bool:
        return True

    with pytest.raises(
        RetriesAbandoned,
        match=r"^the worker is stopping before shard generation 2 took over$",
    ):
        await fence_of(store, sink, 0, 2).join(Handover(stopping, lambda _count: True))
    assert sink.fenced() == 1


async def test_a_third_count_announced_while_waiting_makes_the_waiter_stale(
    tmp_path: Path,
) -> None:
    store, sink = lake(tmp_path)
    await fence_of(store, sink, 0, 1).join()
    waiting = asyncio.create_task(
        fence_of(store, sink, 0, 2).join(Handover(no_sleep, lambda _count: True))
    )
    await until(announced(fence_of(store, sink, 0, 3), 2))
    await fence_of(store, sink, 0, 3).join()
    with pytest.raises(StaleGeneration, match=r"^shard generation 3 has 3 shards$"):
        await asyncio.wait_for(waiting, 10)
    assert sink.fenced() == 3


def test_a_generation_takes_over_when_all_joined_or_after_its_patience() -> None:
    waiting = Generation(2, 3, T, joined=2)
    assert not waiting.taken_over(T + HANDOVER_PATIENCE - timedelta(microseconds=1))
    assert waiting.taken_over(T + HANDOVER_PATIENCE)
    joined = Generation(2, 3, T, joined=3, took_over_at=T + timedelta(seconds=7))
    assert not joined.taken_over(T + timedelta(seconds=6))
    assert joined.taken_over(T + timedelta(seconds=7))


def test_the_last_commit_of_a_shard_count_is_read_from_its_own_checkpoints(
    tmp_path: Path,
) -> None:
    _, sink = lake(tmp_path)
    assert last_commit(sink, ["pidelta-ts-0-of-1"]) is None
    rows = [
        ("pidelta-ts-0-of-1", T),
        ("pidelta-ts-updates-0-of-1", T + timedelta(seconds=5)),
        ("pidelta-ts-0-of-2", T + timedelta(seconds=9)),
    ]
    table = pa.Table.from_pylist(
        [
            {"app_id": app, "tag_webid": "W", "checkpoint": at, "committed_at": at, "batch_id": 1}
            for app, at in rows
        ],
        schema=CHECKPOINTS_SCHEMA,
    )
    sink.append(CHECKPOINTS, table)
    assert last_commit(sink, ["pidelta-ts-0-of-1", "pidelta-ts-updates-0-of-1"]) == rows[1][1]


async def test_a_count_just_replaced_is_not_announced_again(tmp_path: Path) -> None:
    """An old pod restarted during a rollout must not take the lake back to its count."""
    store, sink = lake(tmp_path)
    await fence_of(store, sink, 0, 1).join()
    await fence_of(store, sink, 0, 2).join()
    with pytest.raises(StaleGeneration) as refused:
        await fence_of(store, sink, 0, 1).join()
    assert re.fullmatch(
        r"shard generation 2 replaced 1 shards with 2 \d+ s ago; a worker of a replaced "
        r"count does not announce it again within 10 minutes \(is this an old pod of a "
        r"rollout\?\)",
        str(refused.value),
    )
    assert (sink.fenced(), len(fence_of(store, sink, 0, 1).generations.history())) == (2, 2)


async def test_a_count_replaced_long_ago_may_come_back(tmp_path: Path) -> None:
    store, sink = lake(tmp_path)
    long_ago = utcnow() - REVERT_GUARD - timedelta(seconds=1)
    rows = [
        {"generation": n, "shard_count": n, "announced_at": long_ago, "announced_by": "w"}
        for n in (1, 2)
    ]
    sink.append(SHARDS, pa.Table.from_pylist(rows, schema=SHARDS_SCHEMA))
    joined = await fence_of(store, sink, 0, 1).join()
    assert (joined.generation, joined.shard_count, sink.fenced()) == (3, 1, 1)


def test_the_generations_are_read_again_only_after_a_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sink = lake(tmp_path)
    fence = fence_of(store, sink, 0, 1)
    reads = []
    read = DeltaTable.to_pyarrow_table

    def counted(self: DeltaTable, *args: Any, **kwargs: Any) -> pa.Table:
        reads.append(self.version())
        return read(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "to_pyarrow_table", counted)
    assert fence.generations.history() == []
    assert fence.generations.history() == []
    fence.generations.announce(1, "w")
    assert [g.shard_count for g in fence.generations.history()] == [1]
    assert [g.shard_count for g in fence.generations.history()] == [1]
    assert reads == [0, 1]


async def test_a_take_over_that_lands_late_still_gets_its_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Join rows are stamped before their append, which may land long after on object
    storage: the drain counts from when each worker sees the take-over."""
    monkeypatch.setattr(generations, "HANDOVER_DRAIN", timedelta(seconds=2))
    store, sink = lake(tmp_path)
    old = fence_of(store, sink, 0, 1)
    await old.join()
    stamped = utcnow() - timedelta(seconds=60)
    rows = [
        {"generation": 2, "shard_count": 2, "announced_at": stamped, "announced_by": by}
        for by in ("pidelta-ts-0-of-2", "pidelta-ts-1-of-2")
    ]
    sink.append(SHARDS, pa.Table.from_pylist(rows, schema=SHARDS_SCHEMA))
    replaced = old.check()
    assert replaced is not None
    assert replaced.generation == 2
    began = asyncio.get_running_loop().time()
    joined = await asyncio.wait_for(
        fence_of(store, sink, 0, 2).join(Handover(no_sleep, lambda _count: True)), 10
    )
    assert asyncio.get_running_loop().time() - began >= 2
    assert (joined.joined, sink.fenced()) == (2, 2)
    assert str(await until(stale(old))) == "shard generation 2 has 2 shards"
