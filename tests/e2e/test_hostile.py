"""A hostile or broken server in front of a real mock-pi (`tests/hostile.py`): the worker
stays bounded, keeps running, and the lake still equals PI once the server behaves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from tests.conftest import MockServer, SimClock, get_json
from tests.e2e.helpers import (
    Worker,
    assert_no_duplicates,
    assert_same,
    checkpoints,
    expected,
    fixed_past,
    iso,
    read_table,
    start_worker,
    truth_for,
    wait_for,
    within,
    worker_env,
)
from tests.hostile import HostileProxy, fixed, gzip_bomb, rewrite, unreadable_for

TAGS = 20
# The worker's peak memory while a 1 GiB gzip bomb is answered to every read: the
# response limit (here 1000 items x 1 KiB) plus the process itself. Unbounded, the same
# bomb took a 20-tag worker to 2.7 GB.
PEAK_RSS_BOUND = 400 << 20


def live_worker(
    proxy: HostileProxy, tmp_path: Path, clock: SimClock, **settings: object
) -> tuple[Worker, datetime]:
    """`pidelta run` through the proxy into `tmp_path/lake` on the mock's `clock`, from two
    minutes ago, polling every second; the worker and where it started."""
    origin = fixed_past(2)
    env = worker_env(
        proxy.url,
        tmp_path / "lake",
        clock=clock,
        start=iso(origin),
        poll_interval=1,
        safety_lag=2,
        **settings,
    )
    return start_worker("run", env=env, log=tmp_path / "worker.log"), origin


def peak_rss(pid: int) -> int:
    """VmHWM of a process: the most resident memory it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_gzip_bomb_neither_grows_the_worker_nor_stops_it(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    with HostileProxy(mock) as proxy:
        proxy.misbehave("streamsets/recorded", gzip_bomb(1 << 30))
        worker, origin = live_worker(
            proxy, tmp_path, clock, pi_max_items_per_call=1000, pi_page_size=1000
        )
        try:
            bombed = lambda: sum("streamsets/recorded" in path for _, path in proxy.seen)  # noqa: E731
            assert wait_for(lambda: bombed() >= 9, 60), worker.text()[-3000:]
            assert worker.alive(), worker.text()[-3000:]
            assert peak_rss(worker.process.pid) < PEAK_RSS_BOUND
            proxy.misbehave("streamsets/recorded", None)
            healed = clock.now()
            assert wait_for(lambda: _caught_up(target, healed), 60), worker.text()[-3000:]
            peak = peak_rss(worker.process.pid)
        finally:
            assert worker.terminate() == 0, worker.text()[-3000:]
    assert peak < PEAK_RSS_BOUND
    assert "oversized (body larger than PIDELTA_PI_MAX_RESPONSE_BYTES=1024000)" in worker.text()
    table = read_table(target)
    ranges = {w: (origin, c) for w, c in checkpoints(target).items()}
    assert_no_duplicates(table)
    assert_same(within(table, ranges), expected(truth_for(mock), ranges))


def test_a_stream_whose_answer_cannot_be_read_is_set_aside_then_read_again(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """One tag's reads answer an HTML page with status 200: the other tags go on, the tag
    is set aside (quarantined with what came back, kept in `_pidelta_set_aside`), the worker
    keeps running, and once PI answers again the range is read and the table equals PI."""
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    with HostileProxy(mock) as proxy:
        bad = _first_tag(proxy.url)
        proxy.misbehave("streamsets/recorded", unreadable_for(bad))
        worker, origin = live_worker(proxy, tmp_path, clock)
        try:
            launched = clock.now()
            assert wait_for(lambda: _caught_up(target, launched), 90), worker.text()[-3000:]
            assert worker.alive()
            aside = read_table(target, "_pidelta_set_aside").to_pylist()
            assert {r["tag_webid"] for r in aside} == {bad}
            assert all(r["resolved_at"] is None for r in aside)
            proxy.misbehave("streamsets/recorded", None)
            assert wait_for(lambda: _resolved(target), 60), worker.text()[-3000:]
        finally:
            assert worker.terminate() == 0, worker.text()[-3000:]
    table = read_table(target)
    ranges = {w: (origin, c) for w, c in checkpoints(target).items()}
    assert_no_duplicates(table)
    assert_same(within(table, ranges), expected(truth_for(mock), ranges))
    reasons = read_table(target, "_pidelta_quarantine").to_pylist()
    assert {(q["tag_webid"], q["reason"]) for q in reasons} == {(bad, "unreadable_answer")}
    assert all("'<html>Service Unavailable</html>'" in q["raw"] for q in reasons)


def test_run_waits_for_a_pi_that_fails_at_start_up(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """503 to discovery when `run` starts: it asks again every poll instead of exiting,
    then catches up once PI answers."""
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    with HostileProxy(mock) as proxy:
        proxy.misbehave("dataservers", fixed(503, b'{"Errors":["Service Unavailable"]}'))
        worker, _ = live_worker(proxy, tmp_path, clock, pi_max_attempts=2, pi_max_retry_seconds=2)
        try:
            started = lambda: "PI not usable at start-up" in worker.text()  # noqa: E731
            assert wait_for(started, 60), worker.text()[-3000:]
            assert wait_for(lambda: worker.text().count("PI not usable") >= 2, 30)
            assert worker.alive(), worker.text()[-3000:]
            proxy.misbehave("dataservers", None)
            healed = clock.now()
            assert wait_for(lambda: _caught_up(target, healed), 60), worker.text()[-3000:]
        finally:
            assert worker.terminate() == 0, worker.text()[-3000:]


def far_future_value(body: bytes) -> bytes:
    """Every stream of the answer gains a value stamped 9999-12-31, past any endTime."""
    doc = orjson.loads(body)
    for stream in doc.get("Items", []):
        stream.setdefault("Items", []).append(
            {"Timestamp": "9999-12-31T23:59:59Z", "Value": 1.0, "Good": True}
        )
    return orjson.dumps(doc)


def test_values_past_the_asked_range_are_never_stored(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """A server (or a proxy cache) answering values past endTime, far-future ones included:
    nothing of them lands, shifted or not, and the table equals PI."""
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    with HostileProxy(mock) as proxy:
        proxy.misbehave("streamsets/recorded", rewrite(far_future_value))
        worker, origin = live_worker(proxy, tmp_path, clock)
        try:
            launched = clock.now()
            assert wait_for(lambda: _caught_up(target, launched), 90), worker.text()[-3000:]
        finally:
            assert worker.terminate() == 0, worker.text()[-3000:]
    table = read_table(target)
    ranges = {w: (origin, c) for w, c in checkpoints(target).items()}
    assert_no_duplicates(table)
    assert_same(table, expected(truth_for(mock), ranges))  # the whole table, not a window
    assert "values outside the range or past maxCount" in worker.text()


def _first_tag(url: str) -> str:
    status, body = get_json(f"{url}/dataservers")
    assert status == 200
    server = body["Items"][0]["WebId"]  # type: ignore[index]
    status, points = get_json(f"{url}/dataservers/{server}/points?maxCount=1")
    return str(points["Items"][0]["WebId"])  # type: ignore[index]


def _resolved(target: Path) -> bool:
    rows = read_table(target, "_pidelta_set_aside").to_pylist()
    opened = {(r["range_start"], r["range_end"]) for r in rows if r["resolved_at"] is None}
    closed = {(r["range_start"], r["range_end"]) for r in rows if r["resolved_at"] is not None}
    return bool(opened) and opened <= closed


def _caught_up(target: Path, since: datetime) -> bool:
    try:
        cps = checkpoints(target)
    except Exception:
        return False
    return len(cps) == TAGS and min(cps.values()) >= since - timedelta(seconds=3)
