"""`_pidelta_shards`: shard generations, and the fence that keeps an old count out.

The protocol is docs/DESIGN.md "Resharding fence": `ShardGenerations` reads and appends
generations and their workers' joins; `ShardFence` joins one on start (announcing a new
count, waiting in `run` for its workers to join while the old count still ingests, then
fencing) and `check`s it before each batch and commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa

from workers.errors import RetriesAbandoned, StaleGeneration
from workers.lake.schemas import SHARDS, SHARDS_SCHEMA
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.times import utcnow
from workers.timeseries.sink import DeltaSink

log = logging.getLogger("pidelta.pipeline")

# How long a new generation waits for its own workers to join before it fences anyway
# (from its announcement), and how often a waiting worker looks.
HANDOVER_PATIENCE = timedelta(seconds=120)
HANDOVER_POLL = 2.0
# From a new generation taking over to its fence: the old workers' last polls and commits
# (they look every poll, then flush as on SIGTERM). A commit later than that is refused.
HANDOVER_DRAIN = timedelta(seconds=20)
# How long a replaced shard count may not be announced again: a worker of the old count
# restarted during a rollout (a pod not yet updated) would otherwise take the lake back.
REVERT_GUARD = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Generation:
    generation: int
    shard_count: int
    announced_at: datetime
    joined: int = 1  # distinct workers that joined it (its announcer first)
    took_over_at: datetime | None = None  # once all joined; else announced + patience

    @property
    def takes_over(self) -> datetime:
        """When it takes over: from then on workers of other counts flush and stop, and
        its workers fence HANDOVER_DRAIN after they see it."""
        return self.took_over_at or self.announced_at + HANDOVER_PATIENCE

    def taken_over(self, now: datetime) -> bool:
        return now >= self.takes_over


@dataclass(frozen=True, slots=True)
class Handover:
    """What a `run` worker joining a new generation needs to wait for its peers."""

    wait: Callable[[float], Awaitable[bool]]  # sleep; True when the worker is stopping
    old_live: Callable[[int], bool]  # whether workers of that count still commit


class ShardGenerations:
    """`_pidelta_shards`: which shard count is current, and since when."""

    def __init__(self, store: TableStore) -> None:
        self.store = store
        store.create(SHARDS)  # many shards start at once: the race is handled there
        self.uri = store.uri(SHARDS)
        self.storage_options = store.options(SHARDS)
        self._table = store.open(SHARDS)
        self._read: tuple[int, pl.DataFrame] | None = None  # rows as of a version

    def _rows(self) -> pl.DataFrame:
        """The rows, read again only when the table has a new version: a `run` worker
        looks every poll, and after a reshard the table holds a file per joined worker
        (on object storage each is a few requests more per look)."""
        self._table = self.store.refresh(SHARDS, self._table)
        version = self._table.version()
        if self._read is None or self._read[0] != version:
            rows = pl.from_arrow(self._table.to_pyarrow_table())
            assert isinstance(rows, pl.DataFrame)
            self._read = (version, rows.sort(["generation", "announced_at"]))
        return self._read[1]

    def history(self) -> list[Generation]:
        """Every generation, oldest first, with the workers that joined it and, once all
        had, when the last of them did."""
        found = []
        for _, rows in self._rows().group_by("generation", maintain_order=True):
            first = rows.row(0, named=True)
            joins = rows.filter(pl.col("shard_count") == first["shard_count"])
            distinct = joins["announced_by"].is_first_distinct().cum_sum()
            complete = joins.filter(distinct >= first["shard_count"])["announced_at"]
            found.append(
                Generation(
                    int(first["generation"]),
                    int(first["shard_count"]),
                    first["announced_at"],
                    joins["announced_by"].n_unique(),
                    complete[0] if complete.len() else None,
                )
            )
        return found

    def latest(self) -> Generation | None:
        history = self.history()
        return history[-1] if history else None

    def announce(self, shard_count: int, by: str) -> Generation:
        """Join the latest generation if it has `shard_count` shards (two workers announcing
        at once both join one), else append a new generation of `shard_count`."""
        current = self.latest()
        if current is not None and current.shard_count == shard_count:
            number = current.generation
        else:
            number = (current.generation if current else 0) + 1
        row = {
            "generation": number,
            "shard_count": shard_count,
            "announced_at": utcnow(),
            "announced_by": by,
        }
        DeltaWriter(self.store).append(SHARDS, pa.Table.from_pylist([row], schema=SHARDS_SCHEMA))
        latest = self.latest()
        assert latest is not None
        return latest


class ShardFence:
    """One worker's shard generation: joined on start, checked before batches and commits."""

    def __init__(
        self,
        store: TableStore,
        sink: DeltaSink,
        shard_count: int,
        app_id: str,
    ) -> None:
        self.generations = ShardGenerations(store)
        self.sink = sink
        self.shard_count = shard_count
        self.app_id = app_id
        self.generation: Generation | None = None
        self._replaced_seen: datetime | None = None  # when a take-over was first seen

    async def join(self, handover: Handover | None = None) -> Generation:
        """Join this shard count's generation, announcing it unless it is current, then fence.

        With `handover` (a `run` worker) a new count makes before it breaks: while workers
        of the previous count still commit, it waits until all its own workers have joined
        (or HANDOVER_PATIENCE), and those old workers go on ingesting through the new ones'
        start-up. No wait for the previous generation to stop: once this worker has seen
        the fence, none of its data commits can land, and recovery advances (then reads)
        whatever it landed.
        """
        count = self.shard_count
        history = await asyncio.to_thread(self.generations.history)
        current = history[-1] if history else None
        if current is None or current.shard_count != count:
            _refuse_a_revert(history, count, utcnow())
            current = await asyncio.to_thread(self.generations.announce, count, self.app_id)
            log.info(
                "announced shard generation %d (%d shards%s)",
                current.generation,
                count,
                f", was {history[-1].shard_count}" if history else "",
            )
        elif handover is not None and not current.taken_over(utcnow()):
            current = await asyncio.to_thread(self.generations.announce, count, self.app_id)
        previous = next((g for g in reversed(history) if g.generation < current.generation), None)
        if handover is not None and previous is not None and previous.shard_count != count:
            current = await self._hand_over(current, previous, handover)
        self.generation = current
        await asyncio.to_thread(self.sink.fence, count)
        return current

    async def _hand_over(
        self, current: Generation, previous: Generation, handover: Handover
    ) -> Generation:
        """Wait until `current` has taken over and the old workers' drain is over, unless
        a peer has fenced already or `previous` no longer commits."""
        if await asyncio.to_thread(self.sink.fenced) == self.shard_count:
            return current
        if not await asyncio.to_thread(handover.old_live, previous.shard_count):
            log.info(
                "shard generation %d: no worker of %d shards commits; fencing now",
                current.generation,
                previous.shard_count,
            )
            return current
        while not current.taken_over(utcnow()):
            if await handover.wait(HANDOVER_POLL):
                raise RetriesAbandoned(
                    f"the worker is stopping before shard generation {current.generation} took over"
                )
            latest = await asyncio.to_thread(self.generations.latest)
            assert latest is not None
            if latest.shard_count != self.shard_count:
                raise StaleGeneration(
                    f"shard generation {latest.generation} has {latest.shard_count} shards"
                )
            current = latest
        log.info(
            "shard generation %d takes over from %d shards: %d of %d workers joined; "
            "fencing once their last commits are in (%.0f s)",
            current.generation,
            previous.shard_count,
            min(current.joined, current.shard_count),
            current.shard_count,
            HANDOVER_DRAIN.total_seconds(),
        )
        # From when this worker saw it, not from the row's stamp: a join row stamped before
        # a slow append (dozens racing on object storage) lands already old.
        drained = utcnow() + HANDOVER_DRAIN
        while (left := (drained - utcnow()).total_seconds()) > 0:
            if await handover.wait(min(left, HANDOVER_POLL)):
                raise RetriesAbandoned(
                    f"the worker is stopping before shard generation {current.generation} "
                    "fenced the table"
                )
        return current

    def check(self) -> Generation | None:
        """The generation with another shard count that has taken over, if one has: this
        worker should flush what it holds and stop. StaleGeneration once its drain is over
        (its fence refuses this worker's commits from then on)."""
        assert self.generation is not None
        latest = self.generations.latest()
        if latest is None or latest.shard_count == self.generation.shard_count:
            return None
        now = utcnow()
        if not latest.taken_over(now):
            return None
        self._replaced_seen = self._replaced_seen or now  # the drain counts from here
        if now >= self._replaced_seen + HANDOVER_DRAIN:
            raise StaleGeneration(
                f"shard generation {latest.generation} has {latest.shard_count} shards"
            )
        return latest


def _refuse_a_revert(history: list[Generation], count: int, now: datetime) -> None:
    """StaleGeneration for a count that an earlier generation had, within REVERT_GUARD of
    the latest announcement: a worker still configured for a count just replaced."""
    latest = history[-1] if history else None
    if latest is None or now - latest.announced_at >= REVERT_GUARD:
        return
    if any(g.shard_count == count for g in history[:-1]):
        since = (now - latest.announced_at).total_seconds()
        raise StaleGeneration(
            f"shard generation {latest.generation} replaced {count} shards with "
            f"{latest.shard_count} {since:.0f} s ago; a worker of a replaced count does not "
            f"announce it again within {REVERT_GUARD.total_seconds() / 60:.0f} minutes "
            "(is this an old pod of a rollout?)"
        )
