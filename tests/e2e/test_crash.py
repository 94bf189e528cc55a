"""kill -9 drills: random kill instants during `run` and during `backfill`, each followed by
a restart; afterwards the table equals the ground truth exactly, with no duplicate key.

Size: 300 tags for `run`, 200 tags over 12 hours for `backfill`, so that a drill of ten
kills and restarts stays around a minute; a kill comes a random instant (seeded RNG,
printed on failure) after the worker logged that its start-up and recovery are done.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.conftest import FIXED_NOW, MockServer, SimClock
from tests.e2e.helpers import (
    Worker,
    assert_same,
    checkpoints,
    expected,
    fixed_past,
    iso,
    ok,
    pidelta,
    read_table,
    start_worker,
    truth_for,
    wait_for,
    worker_env,
)

KILLS = 10
READY = " owns "  # the log line a worker writes once its start-up (recovery included) is done
SEED = 20261128


def _drill(
    start: Callable[[], Worker], log: Path, rng: random.Random, lo: float, hi: float
) -> list[float]:
    """KILLS times: start, wait until start-up is done, a random instant, kill -9.

    Returns the instants (seconds after start-up) for the failure message.
    """
    instants = []
    for _ in range(KILLS):
        before = _ready_count(log)
        worker = start()
        assert wait_for(lambda w=worker, b=before: _ready_count(log) > b or not w.alive(), 60)
        assert worker.alive(), worker.text()[-3000:]
        instant = rng.uniform(lo, hi)
        instants.append(round(instant, 2))
        time.sleep(instant)
        worker.kill9()
    return instants


def _ready_count(log: Path) -> int:
    return log.read_text(errors="replace").count(READY) if log.exists() else 0


def test_kill9_during_run(mock_pi_factory: Callable[..., MockServer], tmp_path: Path) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=300, rate_limit=0)
    origin = fixed_past(20)
    env = worker_env(
        mock,
        tmp_path / "lake",
        start=iso(origin),
        poll_interval=1,
        safety_lag=2,
        late_lookback=20,
        backfill_window=120,
        commit_max_rows=20_000,
    )
    log = tmp_path / "worker.log"
    rng = random.Random(SEED)
    instants = _drill(lambda: start_worker("run", env=env, log=log), log, rng, 0.0, 4.0)
    before = _ready_count(log)
    worker = start_worker("run", env=env, log=log)
    # SIGTERM once it is up (one still importing on a busy machine dies of the signal).
    assert wait_for(lambda: _ready_count(log) > before or not worker.alive(), 60)
    time.sleep(3)
    assert worker.terminate() == 0, worker.text()[-3000:]
    ok(pidelta("once", env=env))
    target = tmp_path / "lake"
    cps = checkpoints(target)
    assert len(cps) == 300
    assert min(cps.values()) > clock.now() - timedelta(minutes=2)
    truth = expected(truth_for(mock), {w: (origin, c) for w, c in cps.items()})
    try:
        assert_same(read_table(target), truth)
    except AssertionError as exc:
        raise AssertionError(f"kill instants {instants}: {exc}") from None


def test_kill9_during_backfill(mock_pi_factory: Callable[..., MockServer], tmp_path: Path) -> None:
    mock = mock_pi_factory(tag_count=200, rate_limit=0, clock_start=FIXED_NOW.isoformat())
    day = FIXED_NOW.replace(hour=0) - timedelta(days=3)
    start, end = day, day + timedelta(hours=12)
    env = worker_env(mock, tmp_path / "lake", backfill_window=900, commit_max_rows=50_000)
    args = ("backfill", "--start", iso(start), "--end", iso(end))
    log = tmp_path / "worker.log"
    rng = random.Random(SEED + 1)
    instants = _drill(lambda: start_worker(*args, env=env, log=log), log, rng, 0.0, 1.5)
    ok(pidelta(*args, env=env))
    target = tmp_path / "lake"
    cps = checkpoints(target, "pidelta-bf-")
    assert len(cps) == 200
    assert set(cps.values()) == {end}
    truth = expected(truth_for(mock), {w: (start, end) for w in cps})
    try:
        assert_same(read_table(target), truth)
    except AssertionError as exc:
        raise AssertionError(f"kill instants {instants}: {exc}") from None
