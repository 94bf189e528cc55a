"""`pi_points` and `pi_digital_state_sets` against mock-pi over HTTP, the tables read back.

The change tests serve an in-process mock-pi on loopback whose clock the test sets, so the
moments of renames, unit changes and deletions are known, and the sync's clock follows it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from deltalake import DeltaTable

from mock_pi import point_attributes as mpa
from mock_pi import point_changes as mpc
from mock_pi.app import STATE, create_app
from mock_pi.catalog import SERVER_NAME
from mock_pi.settings import MockSettings
from mock_pi.state import MockState
from service.metrics import Metrics, MetricsObserver
from workers.lake.schemas import PI_DIGITAL_STATE_SETS, PI_POINTS
from workers.points.layout import bucket_of
from workers.points.source import COLUMNS
from workers.points.sync import sync_points
from workers.settings import Settings, load_settings

DAY = 86_400.0
T0 = 1_780_000_000.0
HISTORY_START = (T0 // DAY) * DAY - 30 * DAY
PERIOD = 3_600.0
TAGS = 300


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def us(self) -> int:
        return round(self.t * 1_000_000)


Served = tuple[str, Clock, MockState]


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def start(**settings: Any) -> Served:
        clock = Clock(T0)  # the archive starts 30 days before T0's day: HISTORY_START
        app = create_app(MockSettings(tag_count=TAGS, rate_limit=0, **settings), clock)
        assert app[STATE].history_start == HISTORY_START
        clock.t = HISTORY_START
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/piwebapi", clock, app[STATE]

    yield start
    for runner in runners:
        await runner.cleanup()


def settings_for(url: str, target: str, **extra: Any) -> Settings:
    return load_settings(pi_url=url, target=target, pi_max_attempts=3, **extra)


def rows(target: str, name: str = PI_POINTS) -> list[dict[str, Any]]:
    return DeltaTable(f"{target}/{name}").to_pyarrow_table().to_pylist()


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(round(seconds * 1_000_000) / 1_000_000, UTC)


def iso_moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def expected_attributes(state: MockState, index: int, t: float) -> dict[str, Any]:
    """What PI serves about a point at time t, as `pi_points` columns."""
    version = state.changes.version(index, t)
    assert version.point is not None
    return as_columns(version.point.webid, mpa.attributes(version))


def as_columns(webid: str, found: dict[str, Any]) -> dict[str, Any]:
    """A point's attributes, as PI serves them by name, in `pi_points` columns."""
    out: dict[str, Any] = {"data_server": SERVER_NAME, "tag_webid": webid}
    for col in COLUMNS:
        value = found[col.attribute]
        if col.attribute in ("creationdate", "changedate"):
            out[col.name] = iso_moment(value)
        elif str(col.type) == "bool":
            out[col.name] = bool(value)
        elif str(col.type) == "double":
            out[col.name] = float(value)
        else:
            out[col.name] = value
    return out


HISTORY = ("valid_from", "valid_to", "is_current", "deleted_at", "synced_at", "point_bucket")


def attributes_of(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in HISTORY}


async def test_pi_points_equals_what_pi_serves_for_every_attribute(
    served: Callable[..., Any], tmp_path: Any
) -> None:
    url, clock, state = await served()
    target = str(tmp_path / "lake")
    metrics = Metrics(process=False)
    result = await sync_points(settings_for(url, target), None, MetricsObserver(metrics),
                               clock=clock.us)  # fmt: skip
    assert (result.points, result.opened, result.changed, result.deleted) == (TAGS, TAGS, 0, 0)
    synced = {c: metrics.registry.get_sample_value("pidelta_points_synced_total",
                                                   {"shard": "0", "change": c})
              for c in ("opened", "changed", "deleted")}  # fmt: skip
    assert synced == {"opened": TAGS, "changed": 0, "deleted": 0}
    assert metrics.registry.get_sample_value("pidelta_points_served", {"shard": "0"}) == TAGS
    assert result.requests == 1
    assert result.merge_attempts == 1
    found = {r["point_id"]: r for r in rows(target)}
    assert all(r["point_bucket"] == bucket_of(r["data_server"], i) for i, r in found.items())
    assert len(found) == TAGS
    async with aiohttp.ClientSession() as session:
        for index in range(TAGS):
            webid = state.catalog.point(index).webid
            async with session.get(f"{url}/points/{webid}/attributes") as resp:
                body = await resp.json()
            want = as_columns(webid, {i["Name"]: i["Value"] for i in body["Items"]})
            assert want == expected_attributes(state, index, clock.t)
            row = found[index + 1]
            assert attributes_of(row) == want
            assert row["valid_from"] == want["change_date"]
            assert (row["valid_to"], row["is_current"], row["deleted_at"]) == (None, True, None)
            assert row["synced_at"] == moment(clock.t)
    # A second sync with nothing changed in PI writes nothing.
    version = DeltaTable(f"{target}/{PI_POINTS}").version()
    again = await sync_points(settings_for(url, target), clock=clock.us)
    assert (again.opened, again.changed, again.deleted, again.state_sets) == (0, 0, 0, None)
    assert DeltaTable(f"{target}/{PI_POINTS}").version() == version


async def test_pi_digital_state_sets_equals_the_served_sets(
    served: Callable[..., Any], tmp_path: Any
) -> None:
    url, clock, state = await served()
    target = str(tmp_path / "lake")
    result = await sync_points(settings_for(url, target), clock=clock.us)
    sets = mpa.enumeration_sets(state.catalog)
    expected = sorted(
        (SERVER_NAME, s.name, code, name, s.name == "SYSTEM", s.webid, moment(clock.t))
        for s in sets
        for name, code in s.states
    )
    got = sorted(tuple(r.values()) for r in rows(target, PI_DIGITAL_STATE_SETS))
    assert got == expected
    assert result.state_sets == len(expected)
    assert ("MOCKPI01", "SYSTEM", 246, "I/O Timeout") in {g[:4] for g in got}
    # Another shard does not write them; shard 0 does not rewrite unchanged sets.
    other = await sync_points(settings_for(url, target, shard_index=1, shard_count=2),
                              clock=clock.us)  # fmt: skip
    assert other.state_sets is None
    assert DeltaTable(f"{target}/{PI_DIGITAL_STATE_SETS}").version() == 1


def expected_history(state: MockState, syncs: list[float]) -> list[tuple[Any, ...]]:
    """The versions syncs at these moments record, by the change model of mock-pi."""
    changes = state.changes
    kinds = changes.kinds(np.arange(TAGS))
    out = []
    for index in range(TAGS):
        kind = int(kinds[index])
        base = expected_attributes(state, index, syncs[0])
        first = (index + 1, base["change_date"])
        n_last = int(changes.changes(np.array([index]), syncs[-1])[0])
        if kind == mpc.NONE or n_last == 0:
            out.append((*first, None, True, None, base["tag_name"], base["tag_webid"]))
            continue
        assert n_last == len(syncs) - 1  # one change between two syncs, in these tests
        if kind == mpc.RECREATE:
            gone = moment(syncs[1])
            out.append((*first, gone, False, gone, base["tag_name"], base["tag_webid"]))
            again = expected_attributes(state, index, syncs[2])
            out.append((again["point_id"], moment(changes.change_time(index, 2)), None, True,
                        None, again["tag_name"], again["tag_webid"]))  # fmt: skip
            continue
        starts = [base["change_date"]] + [moment(changes.change_time(index, k)) for k in (1, 2)]
        for k in range(3):
            now = expected_attributes(state, index, syncs[k])
            end = starts[k + 1] if k < 2 else None
            out.append((index + 1, starts[k], end, k == 2, None, now["tag_name"],
                        now["tag_webid"]))  # fmt: skip
    return sorted(out, key=lambda r: (r[0], r[1]))


def history(target: str) -> list[tuple[Any, ...]]:
    found = [
        (r["point_id"], r["valid_from"], r["valid_to"], r["is_current"], r["deleted_at"],
         r["tag_name"], r["tag_webid"])
        for r in rows(target)
    ]  # fmt: skip
    return sorted(found, key=lambda r: (r[0], r[1]))


@pytest.mark.parametrize("shards", [1, 3])
async def test_renames_unit_changes_and_deletions_give_exact_history(
    served: Callable[..., Any], tmp_path: Any, shards: int
) -> None:
    url, clock, state = await served(point_changes=0.4, point_change_seconds=PERIOD)
    target = str(tmp_path / "lake")
    syncs = [HISTORY_START, HISTORY_START + 2 * PERIOD - 1, HISTORY_START + 3 * PERIOD - 1]
    for t in syncs:
        clock.t = t
        for shard in range(shards):
            settings = settings_for(url, target, shard_index=shard, shard_count=shards)
            await sync_points(settings, clock=clock.us)
    assert history(target) == expected_history(state, syncs)
    kinds = state.changes.kinds(np.arange(TAGS))
    assert {int(k) for k in kinds} == {mpc.NONE, mpc.RENAME, mpc.UNITS, mpc.RECREATE}
    # Units and descriptors follow PI in every version.
    for row in rows(target):
        if row["is_current"]:
            index = (row["point_id"] - 1) % TAGS
            assert attributes_of(row) == expected_attributes(state, index, clock.t)
    # One current version per point PI lists, none for a deleted one.
    current = [r["point_id"] for r in rows(target) if r["is_current"]]
    assert len(current) == len(set(current)) == TAGS
