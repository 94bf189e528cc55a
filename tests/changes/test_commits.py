"""The follower's commits on pi_timeseries, against mock-pi over HTTP, read back from the
Delta log: a batch of arrivals is one blind append (version 2n + 1), a batch with edits an
append (2n) and a replace (2n + 1) whose predicate stays behind the live edge; both land on
the first try while another writer appends files over every tag at the live times; and a
failure between the two commits, or before the checkpoints, is recovered exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pytest

from mock_pi.truth import GroundTruth
from shard_config.jump_hash import owned
from tests.changes.helpers import log_entries, moments, predicate_times
from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import KEY, assert_same, expected, fixed_past, truth_for, within
from workers.errors import CommitAbandoned, SinkError, StaleGeneration
from workers.lake.schemas import PI_TIMESERIES, PI_TIMESERIES_CHANGES
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.observe import NullObserver
from workers.pi.client import PIClient
from workers.pi.times import to_us
from workers.settings import Settings
from workers.timeseries.checkpoints import CheckpointStore
from workers.timeseries.decode import TagMeta, decode_streamset
from workers.timeseries.discovery import discover_tags
from workers.timeseries.follow import Follower
from workers.timeseries.recorded import RecordedSource
from workers.timeseries.recovery import Recovery
from workers.timeseries.sink import DeltaSink
from workers.timeseries.updates import UpdatesSource

TAGS = 100
RECORDED = "pidelta-ts-0-of-1"
FOLLOWER = "pidelta-ts-updates-0-of-1"
WAIT = 5.0  # seconds between retrievals: values arrive, and are edited 3 s after their time
EDITS = {"edit_fraction": 0.3, "delete_fraction": 0.1, "change_seconds": 3}
US = 1_000_000
# Other writers' tags: their names sort before and after every PI WebID, so the statistics
# of a file holding them span every tag.
OTHERS = ("!other", "~other")


class Counting(NullObserver):
    """Counts what the writer and the follower report of concurrent commits."""

    def __init__(self) -> None:
        self.retried: list[str] = []
        self.refused = 0

    def commit_retried(self, table: str) -> None:
        self.retried.append(table)


@dataclass
class Run:
    """One in-process follower on real tables, reading the mock; restartable."""

    mock: MockServer
    clock: SimClock
    target: Path
    origin: datetime
    observer: Counting = field(default_factory=Counting)
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    caught_up: datetime = field(init=False)

    def settings(self, **shard: int) -> Settings:
        return Settings(_env_file=None, pi_url=self.mock.url, target=str(self.target), **shard)

    def open(self, client: PIClient, tags: dict[str, Any], **shard: int) -> Follower:
        store = TableStore(str(self.target))
        store.create_all()
        sink = DeltaSink(store, observer=self.observer)
        settings = self.settings(**shard)
        source = UpdatesSource(client, tags, settings.pi_max_url_bytes)
        checkpoints = CheckpointStore(sink)
        return Follower(
            settings, source, sink, checkpoints, lambda: None, self.observer, self.clock.now
        )

    async def start(self, client: PIClient, tags: dict[str, Any]) -> Follower:
        """Register every tag, catch it up through recorded values past the registration,
        and follow it (docs/DESIGN.md "Following stream updates", step 1)."""
        follower = self.open(client, tags)
        assert await follower.register(sorted(tags)) == sorted(tags)
        end = self.clock.now()
        read = await RecordedSource.from_settings(client, self.settings(), tags).read(
            [(w, to_us(self.origin), to_us(end)) for w in tags]
        )
        follower.sink.commit_timeseries(pa.concat_tables(read.rows), RECORDED, 1)
        follower.checkpoints.advance(RECORDED, 1, [])
        follower.start({w: end for w in tags})
        self.caught_up = end
        return follower

    async def poll(self, follower: Follower) -> None:
        await asyncio.sleep(WAIT)
        began = self.clock.now()
        await follower.poll()
        self.windows.append((began, self.clock.now()))

    def ranges(self, tags: list[str]) -> dict[str, tuple[datetime, datetime]]:
        return {w: (self.origin + timedelta(microseconds=1), self.windows[-1][1]) for w in tags}

    def assert_table_is_truth(self, table: pa.Table, truth: GroundTruth, tags: list[str]) -> int:
        """The table equals PI's archive as of the last retrieval, but for keys that
        arrived or changed while it was answered."""
        ranges = self.ranges(tags)
        began, ended = self.windows[-1]
        lo, hi = to_us(began) - US // 5, to_us(ended) + US // 5
        doubt = (
            moments(truth, ranges)
            .filter((pl.col("moment") >= lo) & (pl.col("moment") <= hi))
            .select("tag_webid", "timestamp")
            .unique()
        )
        keys = ["tag_webid", "timestamp"]
        want = pl.from_arrow(expected(truth, ranges, at=began.timestamp())).join(
            doubt, on=keys, how="anti"
        )
        got = pl.from_arrow(within(table, ranges)).join(doubt, on=keys, how="anti")
        assert_same(got.to_arrow(), want.to_arrow())
        return want.height


@pytest.fixture
def run_for(mock_pi_factory: Callable[..., MockServer], tmp_path: Path) -> Callable[..., Run]:
    def make(**changes: object) -> Run:
        clock = SimClock.start()
        mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0, **changes)
        return Run(mock, clock, tmp_path / "lake", fixed_past(1))

    return make


def other_rows(start: datetime, end: datetime) -> pa.Table:
    """Another writer's values over [start, end] for tags whose names bracket every tag."""
    steps = max(1, int((end - start).total_seconds() * 4))
    stamps = [start + (end - start) * i / steps for i in range(steps + 1)]
    items = [
        {"Timestamp": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "Value": float(i), "Good": True}
        for i, t in enumerate(stamps)
    ]
    metas = {w: TagMeta(w, w, "Float64") for w in OTHERS}
    raw = orjson.dumps({"Items": [{"WebId": w, "Items": items} for w in OTHERS]})
    return decode_streamset(raw, metas).rows


@contextmanager
def concurrent(
    follower: Follower,
    rows: Callable[[list[str]], pa.Table | None],
    fail: Callable[[str], bool],
    app_id: str | None = None,
    replace: bool = False,
) -> Iterator[list[str]]:
    """Just before each of the follower's pi_timeseries commits (after its snapshot): another
    writer appends `rows(attempts)` (None: nothing; `attempts` are the modes of the
    follower's commits attempted, this one last), or with `replace` replaces its own rows
    by them, as a batch of `app_id` if given, and the commit raises when `fail(mode)` (a
    crash at that instant). Yields the attempts."""
    other = DeltaWriter(TableStore(follower.sink.store.target))
    original = follower.sink._write
    attempts: list[str] = []

    def write(table: Any, name: str, data: pa.Table, mode: str, *args: Any, **kw: Any) -> None:
        if name == PI_TIMESERIES:
            attempts.append(mode)
            extra = rows(attempts)
            if extra is not None:
                batch = len(attempts) if app_id is not None else None
                if replace:
                    mine = ", ".join(f"'{w}'" for w in OTHERS)
                    other.replace_where(
                        PI_TIMESERIES, f"tag_webid IN ({mine})", extra, app_id, batch
                    )
                else:
                    other.append(PI_TIMESERIES, extra, app_id, batch)
            if fail(mode):
                raise OSError(f"injected failure before the {mode}")
        original(table, name, data, mode, *args, **kw)

    follower.sink._write = write  # type: ignore[method-assign]
    try:
        yield attempts
    finally:
        follower.sink._write = original  # type: ignore[method-assign]


def follower_commits(run: Run, after: int) -> list[tuple[object, object]]:
    return [
        (c["mode"], c["txn"])
        for c in log_entries(run.target / PI_TIMESERIES, after)
        if FOLLOWER in c["txn"]  # type: ignore[operator]
    ]


def read(run: Run, name: str = PI_TIMESERIES) -> pa.Table:
    return DeltaWriter(TableStore(str(run.target))).table(name).to_pyarrow_table()


def assert_log_once(run: Run) -> pl.DataFrame:
    log = pl.from_arrow(read(run, PI_TIMESERIES_CHANGES))
    assert log.filter(pl.struct([*KEY, "action"]).is_duplicated()).height == 0
    return log


def nothing(attempts: list[str]) -> None:
    return None


def live_rows(run: Run) -> Callable[[list[str]], pa.Table]:
    """Another shard's live append: over every tag, the second before the last retrieval."""
    began = run.windows[-1][0]
    return lambda _: other_rows(began - timedelta(seconds=1), began)


async def first_batch(run: Run, client: PIClient) -> tuple[Follower, list[str], int]:
    """A follower caught up and one retrieval buffered; the table version before it."""
    tags = {t.webid: t for t in await discover_tags(client, run.settings())}
    follower = await run.start(client, tags)
    seeded = follower.sink.table(PI_TIMESERIES).version()
    await run.poll(follower)
    return follower, sorted(tags), seeded


@pytest.mark.parametrize("others", ["none", "live"])
def test_a_batch_of_arrivals_is_one_blind_append(run_for: Callable[..., Run], others: str) -> None:
    """With another writer appending over every tag at the live times between the
    follower's snapshot and its commit, the batch still lands on the first try."""
    run = run_for()

    async def scenario() -> tuple[list[str], list[str], int]:
        async with PIClient(run.settings()) as client:
            follower, tags, seeded = await first_batch(run, client)
            rows = live_rows(run) if others == "live" else nothing
            with concurrent(follower, rows, lambda _: False) as attempts:
                await follower.commit()
            return attempts, tags, seeded

    attempts, tags, seeded = asyncio.run(scenario())
    assert attempts == ["append"]
    assert run.observer.retried == []
    assert follower_commits(run, seeded) == [("Append", {FOLLOWER: 3})]
    table = read(run)
    assert run.assert_table_is_truth(table, truth_for(run.mock), tags) > 1000
    assert (set(OTHERS) <= set(table.column("tag_webid").to_pylist())) == (others == "live")
    assert assert_log_once(run).height == 0


@pytest.mark.parametrize("others", ["none", "live", "edited times"])
def test_edits_are_an_append_and_a_replace_behind_the_live_edge(
    run_for: Callable[..., Run], others: str
) -> None:
    """Batch 1 of a follower whose tags were edited: its arrivals appended (2), its edits and
    deletions replaced (3) over times no later than the catch-up's end. Another writer's
    append between the snapshot and each commit, live or over the edited times, refuses
    neither: appends are blind, and pi_timeseries is at writeSerializable isolation."""
    run = run_for(**EDITS)

    async def scenario() -> tuple[list[str], list[str], int]:
        async with PIClient(run.settings()) as client:
            follower, tags, seeded = await first_batch(run, client)
            wide = other_rows(run.caught_up - timedelta(seconds=10), run.windows[-1][0])

            def rows(attempts: list[str]) -> pa.Table | None:
                if others == "live":
                    return live_rows(run)(attempts)
                if others == "edited times" and attempts == ["append", "overwrite"]:
                    return wide  # the first replace meets a file over the edited times
                return None

            with concurrent(follower, rows, lambda _: False) as attempts:
                await follower.commit()
            return attempts, tags, seeded

    attempts, tags, seeded = asyncio.run(scenario())
    assert attempts == ["append", "overwrite"]
    assert run.observer.retried == []
    commits = log_entries(run.target / PI_TIMESERIES, seeded)
    mine = [c for c in commits if FOLLOWER in c["txn"]]  # type: ignore[operator]
    assert [(c["mode"], c["txn"]) for c in mine] == [
        ("Append", {FOLLOWER: 2}),
        ("Overwrite", {FOLLOWER: 3}),
    ]
    times = predicate_times(mine[1]["predicate"])
    assert times
    assert times[-1] <= run.caught_up
    table = read(run)
    newest = pl.from_arrow(within(table, run.ranges(tags)))["timestamp"].max()
    assert newest > run.caught_up + timedelta(seconds=WAIT - 1)  # the live edge: appended only
    assert run.assert_table_is_truth(table, truth_for(run.mock), tags) > 1000
    log = assert_log_once(run)
    assert log.filter(pl.col("action") != "Add").height > 0


@pytest.mark.parametrize("crash", ["before the replace", "before the checkpoints"])
def test_a_crash_inside_a_batch_is_recovered_exactly(
    run_for: Callable[..., Run], crash: str
) -> None:
    """Batch 2 fails after its append (2n = 4) landed and before its replace (5), or after
    both and before its checkpoints. A new follower on the same tables recovers: the first
    is re-run as batch 2 (its replace only, its log not written again), the second advanced
    by recovery and its events, reported again from the markers of batch 1, change nothing
    and log nothing. The table then equals PI's archive and no change is logged twice."""
    run = run_for(**EDITS)

    async def scenario() -> tuple[list[str], int, list[tuple[object, object]]]:
        async with PIClient(run.settings()) as client:
            tags = {t.webid: t for t in await discover_tags(client, run.settings())}
            follower = await run.start(client, tags)
            await run.poll(follower)
            await follower.commit()
            await run.poll(follower)
            logged = follower.sink.committed_version(PI_TIMESERIES_CHANGES, FOLLOWER)
            if crash == "before the replace":
                with (
                    concurrent(follower, nothing, lambda mode: mode == "overwrite") as tried,
                    pytest.raises(SinkError, match="injected failure before the overwrite"),
                ):
                    await follower.commit()
                assert tried == ["append", "overwrite"]
                assert follower.sink.committed_version(PI_TIMESERIES, FOLLOWER) == 4
            else:
                advance = follower.checkpoints.advance

                def fail(app_id: str, batch_id: int, *args: Any, **kw: Any) -> bool:
                    if app_id == FOLLOWER and batch_id == 2:
                        raise RuntimeError("injected failure before the checkpoints")
                    return advance(app_id, batch_id, *args, **kw)

                follower.checkpoints.advance = fail  # type: ignore[method-assign]
                with pytest.raises(RuntimeError, match="injected"):
                    await follower.commit()
                assert follower.sink.committed_version(PI_TIMESERIES, FOLLOWER) == 5
            assert follower.sink.committed_version(PI_TIMESERIES_CHANGES, FOLLOWER) == 2
            assert logged in (1, None)  # batch 1's log (None: it changed nothing logged)
            crashed_at = follower.sink.table(PI_TIMESERIES).version()

            # A new process: recovery first, then the follower from its markers.
            again = run.open(client, tags)
            recovery = Recovery(again.sink, again.checkpoints, (RECORDED, FOLLOWER), 1, (RECORDED,))
            assert [b async for b in recovery.unfinished()] == []
            done = again.checkpoints.done_version(FOLLOWER)
            assert done == (1 if crash == "before the replace" else 2)
            again.load(tags)
            assert again.batch_id == (2 if crash == "before the replace" else 3)
            for _ in range(2):
                await run.poll(again)
                await again.commit()
            return sorted(tags), crashed_at, follower_commits(run, crashed_at)

    tags, _, after = asyncio.run(scenario())
    versions = [v[FOLLOWER] for _, v in after]  # type: ignore[index]
    assert versions == sorted(set(versions))
    if crash == "before the replace":
        assert after[0] == ("Overwrite", {FOLLOWER: 5})  # batch 2 again: its replace only
    assert min(versions) >= (5 if crash == "before the replace" else 6)
    assert run.assert_table_is_truth(read(run), truth_for(run.mock), tags) > 1000
    log = assert_log_once(run)
    assert log.filter(pl.col("action") != "Add").height > 0


@pytest.mark.parametrize("at", ["append", "overwrite"])
def test_a_fenced_table_refuses_the_followers_commits(run_for: Callable[..., Run], at: str) -> None:
    """A reshard fences pi_timeseries for another shard count right before the follower's
    append, or its replace: it does not land, not even on the fresh snapshot a retry
    takes (the recorded path's rule)."""
    run = run_for(**EDITS)

    async def scenario() -> int:
        async with PIClient(run.settings()) as client:
            follower, _, seeded = await first_batch(run, client)

            def fence(attempts: list[str]) -> None:
                if attempts.count(at) == 1 and attempts[-1] == at:
                    DeltaSink(TableStore(str(run.target))).fence(2)

            with concurrent(follower, fence, lambda _: False), pytest.raises(StaleGeneration):
                await follower.commit()
            return seeded

    seeded = asyncio.run(scenario())
    landed = [("Append", {FOLLOWER: 2})] if at == "overwrite" else []
    assert follower_commits(run, seeded) == landed


def test_a_moved_tag_takes_over_the_old_followers_marker(run_for: Callable[..., Run]) -> None:
    """A reshard moves tags to another follower: it resumes each from the marker the old
    follower's last landed batch left, so PI reports what changed while they moved (here
    nothing else would: the new follower never registers them), and its own markers win
    once it has landed a batch."""
    run = run_for(edit_fraction=0.05, delete_fraction=0.02, change_seconds=3)
    two = {"shard_index": 1, "shard_count": 2}

    async def scenario() -> tuple[list[str], dict[str, str], dict[str, str]]:
        async with PIClient(run.settings()) as client:
            old, tags, _ = await first_batch(run, client)
            await old.commit()
            moved = [w for w, mine in zip(tags, owned(tags, 1, 2), strict=True) if mine]
            infos = {t.webid: t for t in await discover_tags(client, run.settings())}
            mine = {w: infos[w] for w in moved}
            new = run.open(client, mine, **two)
            new.load(moved)
            assert new.markers == {w: old.markers[w] for w in moved}
            assert new.covered == {w: old.covered[w] for w in moved}
            assert new.batch_id == 1
            for _ in range(2):
                await run.poll(new)
                await new.commit()
            again = run.open(client, mine, **two)
            again.load(moved)
            return moved, dict(new.markers), dict(again.markers)

    moved, markers, reloaded = asyncio.run(scenario())
    assert reloaded == markers
    assert run.assert_table_is_truth(read(run), truth_for(run.mock), moved) > 300
    assert assert_log_once(run).filter(pl.col("action") != "Add").height > 0


def test_a_replace_another_writers_replace_outdated_is_resolved_again(
    run_for: Callable[..., Run],
) -> None:
    """Another shard's replace over the edited times outdates the follower's replace (it is
    no blind append): the replace is resolved again on a fresh snapshot and lands, and the
    other writer's rows stay as it wrote them."""
    run = run_for(**EDITS)

    async def scenario() -> tuple[list[str], int, list[str], pa.Table]:
        async with PIClient(run.settings()) as client:
            follower, tags, _ = await first_batch(run, client)
            wide = other_rows(run.caught_up - timedelta(seconds=10), run.windows[-1][0])
            resolved: list[int] = []
            original = follower._resolve

            def counting(events: pa.Table) -> Any:
                resolved.append(events.num_rows)
                return original(events)

            def rows(attempts: list[str]) -> pa.Table | None:
                return wide if attempts == ["append", "overwrite"] else None

            follower._resolve = counting  # type: ignore[method-assign]
            other = "pidelta-ts-1-of-2"
            with concurrent(follower, rows, lambda _: False, other, replace=True) as attempts:
                await follower.commit()
            return attempts, len(resolved), tags, wide

    attempts, resolves, tags, wide = asyncio.run(scenario())
    assert attempts == ["append", "overwrite", "overwrite"]
    assert run.observer.retried == [PI_TIMESERIES]
    assert resolves == 3  # `_apply` once, the replace once, and again after the conflict
    table = read(run)
    assert run.assert_table_is_truth(table, truth_for(run.mock), tags) > 1000
    others = pl.from_arrow(table).filter(pl.col("tag_webid").is_in(OTHERS))
    assert others.height == wide.num_rows


def test_a_stopping_worker_leaves_an_outdated_replace_to_its_next_start(
    run_for: Callable[..., Run],
) -> None:
    """SIGTERM while another writer keeps outdating the replace: it is not tried again (it
    would be for minutes); the batch, its append in and its replace not, re-runs on start."""
    run = run_for(**EDITS)

    async def scenario() -> list[str]:
        async with PIClient(run.settings()) as client:
            follower, _, _ = await first_batch(run, client)
            wide = other_rows(run.caught_up - timedelta(seconds=10), run.windows[-1][0])
            follower.stopping = lambda: True
            with (
                concurrent(follower, lambda _: wide, lambda _: False, replace=True) as attempts,
                pytest.raises(CommitAbandoned, match="replace of batch 1 of " + FOLLOWER),
            ):
                await follower.commit()
            assert follower.sink.committed_version(PI_TIMESERIES, FOLLOWER) == 2
            assert follower.batch_id == 1
            return attempts

    assert asyncio.run(scenario()) == ["append", "overwrite"]
    assert run.observer.retried == []  # not tried again
