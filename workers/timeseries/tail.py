"""`Tail`: one poll of `run` with change capture, where the recorded path meets the follower.

A tag no marker covers is registered first, then caught up through recorded values past the
moment of registration (its gap re-read once with the late look-back), and only then
followed; a tag PI refuses stays on recorded reads (docs/DESIGN.md "Following stream
updates", step 1). `Tail` decides which tags take which path; the recorded path itself
(planning, fetching, committing) stays in `Pipeline`, reached through `RecordedPath`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from workers.observe import Observer
from workers.timeseries.follow import Follower


class RecordedPath(Protocol):
    """What the tail asks of the recorded path (`pipeline.Pipeline`)."""

    async def catch_up(
        self, until: datetime, only: set[str] | None = None, lookback: bool | None = None
    ) -> None:
        """Live batches until the tags' checkpoints reach `until` (see `Pipeline`)."""

    async def reread_set_aside(self) -> None:
        """One batch of the ranges still set aside."""

    async def flush(self) -> int:
        """Commit every buffered batch, then the follower's events; wait until done."""

    def committed(self, tags: list[str]) -> dict[str, datetime]:
        """The committed live checkpoints of `tags` (a tag without one is absent)."""


class Tail:
    """The polls of `run` while stream updates are on: recorded catch-ups where no marker
    covers a tag, the follower's retrieval for the others."""

    def __init__(
        self,
        follower: Follower,
        recorded: RecordedPath,
        tags: Mapping[str, object],
        observer: Observer,
        shard: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.follower = follower
        self.recorded = recorded
        self.tags = tags  # the pipeline's owned tags, updated by each discovery
        self.observer = observer
        self.shard = shard
        self.clock = clock

    async def poll(self, lag: timedelta) -> None:
        """One poll: recorded reads where no marker covers a tag (all of them while PI
        answers that it has no stream updates), stream updates for the others."""
        follower, recorded = self.follower, self.recorded
        if not follower.active:
            await recorded.catch_up(self.clock() - lag)
            return
        gap = follower.unfollowed(self.tags)
        if gap:
            await self._fall_back(gap, lag)
        if follower.refused:
            await recorded.catch_up(self.clock() - lag, only=follower.refused & set(self.tags))
        await recorded.reread_set_aside()  # no recorded batch carries them while following
        await follower.poll()

    async def _fall_back(self, tags: list[str], lag: timedelta) -> None:
        """Tags no marker covers: register them first (every change from then on is an event),
        then catch them up through recorded values to a moment after the registration,
        re-reading the look-back of a tag that had a checkpoint (its gap, anti-joined), and
        follow them."""
        follower, recorded = self.follower, self.recorded
        if follower.commit_in() is not None:
            await recorded.flush()  # events of a tag whose marker expired land before its re-read
        had = set(recorded.committed(tags))
        registered = await follower.register(tags)
        if not registered:
            await recorded.catch_up(self.clock() - lag, only=set(tags))
            return
        await recorded.catch_up(self.clock() - lag, only=set(registered), lookback=False)
        at = self.clock()
        gap = set(registered) & had
        if gap:
            self.observer.fallback_reread(self.shard, "gap", len(gap))
            await recorded.catch_up(at, only=gap, lookback=True)
        await recorded.catch_up(at, only=set(registered) - had, lookback=False)
        await recorded.flush()  # the recorded rows land before any event of these tags applies
        follower.start(recorded.committed(registered))
