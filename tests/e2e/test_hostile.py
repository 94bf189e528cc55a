"""A hostile or broken server in front of a real mock-pi (`tests/hostile.py`): the worker
stays bounded, keeps running, and the lake still equals PI once the server behaves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import MockServer
from tests.e2e.helpers import (
    assert_no_duplicates,
    assert_same,
    checkpoints,
    expected,
    iso,
    read_table,
    start_worker,
    truth_for,
    wait_for,
    within,
    worker_env,
)
from tests.hostile import HostileProxy, gzip_bomb

TAGS = 20
# The worker's peak memory while a 1 GiB gzip bomb is answered to every read: the
# response limit (here 1000 items x 1 KiB) plus the process itself. Unbounded, the same
# bomb took a 20-tag worker to 2.7 GB.
PEAK_RSS_BOUND = 400 << 20


def peak_rss(pid: int) -> int:
    """VmHWM of a process: the most resident memory it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_gzip_bomb_neither_grows_the_worker_nor_stops_it(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = mock_pi_factory(tag_count=TAGS, rate_limit=0)
    origin = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    target = tmp_path / "lake"
    with HostileProxy(mock) as proxy:
        proxy.misbehave("streamsets/recorded", gzip_bomb(1 << 30))
        env = worker_env(
            proxy.url,
            target,
            start=iso(origin),
            poll_interval=1,
            safety_lag=2,
            pi_max_items_per_call=1000,
            pi_page_size=1000,
        )
        worker = start_worker("run", env=env, log=tmp_path / "worker.log")
        try:
            bombed = lambda: sum("streamsets/recorded" in path for _, path in proxy.seen)  # noqa: E731
            assert wait_for(lambda: bombed() >= 9, 60), worker.text()[-3000:]
            assert worker.alive(), worker.text()[-3000:]
            assert peak_rss(worker.process.pid) < PEAK_RSS_BOUND
            proxy.misbehave("streamsets/recorded", None)
            healed = datetime.now(UTC)
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


def _caught_up(target: Path, since: datetime) -> bool:
    try:
        cps = checkpoints(target)
    except Exception:
        return False
    return len(cps) == TAGS and min(cps.values()) >= since - timedelta(seconds=3)
