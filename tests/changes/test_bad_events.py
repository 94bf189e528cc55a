"""A bad value reported by stream updates has the raw text a recorded read gives it, so the
quarantine lists it once whichever read met it first (docs/DESIGN.md "Bad values")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pyarrow as pa

from tests.conftest import MockServer, SimClock
from workers.pi.client import PIClient
from workers.settings import Settings
from workers.timeseries.discovery import discover_tags
from workers.timeseries.recorded import RecordedSource
from workers.timeseries.updates import UpdatesSource

US = 1_000_000


def texts(tables: list[pa.Table]) -> list[tuple[str, str, bool]]:
    """(tag, raw, has a timestamp) of the quarantine rows, sorted: a row without one is
    listed once by its raw text alone."""
    if not tables:
        return []
    rows = pa.concat_tables(tables)
    keyed = rows.column("timestamp").is_valid().to_pylist()
    tags, raws = rows.column("tag_webid").to_pylist(), rows.column("raw").to_pylist()
    return sorted(zip(tags, raws, keyed, strict=True))


async def read_both(url: str, clock: SimClock) -> tuple[list[tuple[str, str, bool]], ...]:
    settings = Settings(pi_url=url, _env_file=None)
    async with PIClient(settings) as client:
        tags = {t.webid: t for t in await discover_tags(client, settings)}
        updates = UpdatesSource(client, tags, settings.pi_max_url_bytes)
        begin = int(clock.time() * US)
        markers, refused = await updates.register(sorted(tags))
        assert refused == {}
        await asyncio.sleep(4)  # values arrive meanwhile, each reported as an Add event
        got = await updates.retrieve(markers)
        end = int(clock.time() * US)
        recorded = RecordedSource.from_settings(client, settings, tags)
        read = await recorded.read([(w, begin - 2 * US, end) for w in tags])
    return texts(got.quarantine), texts(read.quarantine)


def test_a_bad_event_has_the_raw_text_of_the_recorded_value(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=400, seed=3, rate_limit=0, bad_fraction=0.3)
    events, recorded = asyncio.run(read_both(mock.url, clock))
    assert any(raw.startswith("{") and not keyed for _, raw, keyed in events), events
    missing = [row for row in events if row not in recorded]
    assert missing == []
