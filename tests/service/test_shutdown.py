"""SIGTERM on `pidelta run`: stop polling, commit what is buffered, exit 0 within 10 s.

Commits are held back (huge `COMMIT_MAX_AGE` and `COMMIT_MAX_ROWS`), so at the signal every
ingested row is only in memory: the one commit of the run is the shutdown flush, and the
table must then equal mock-pi's truth up to each tag's last checkpoint, nothing lost,
nothing beyond.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from deltalake.exceptions import TableNotFoundError

from tests.conftest import ROOT, MockServer, SimClock
from tests.e2e.helpers import (
    assert_same,
    checkpoints,
    expected,
    fixed_past,
    iso,
    metrics_port_env,
    read_table,
    scrape,
    start_worker,
    truth_for,
    wait_for,
    worker_env,
)

TAGS = 30
COMMITTED = re.compile(
    r"pi_timeseries: committed (\d+) rows of \d+ tags, \S+ \.\. \S+, in \S+ s, "
    r"batch(?:es \d+-| )(\d+) of pidelta-ts-0-of-1"
)
STOPPING = "stopping: SIGTERM received; flushing"


def buffered(port: int) -> float:
    try:
        return scrape(port).get('pidelta_buffered_rows{shard="0"}', 0.0)
    except OSError:
        return 0.0


def failed_requests(port: int) -> float:
    try:
        samples = scrape(port)
    except OSError:
        return 0.0
    return sum(v for k, v in samples.items() if 'status="error:' in k)


def held_back_env(mock: MockServer, target: Path, start: datetime) -> tuple[dict[str, str], int]:
    """A worker that polls every second and commits only when told to stop."""
    return metrics_port_env(
        worker_env(
            mock,
            target,
            start=iso(start),
            poll_interval=1,
            commit_max_age=3600,
            commit_max_rows=10_000_000,
            log_level="DEBUG",
            # The recorded buffer alone: stream updates would add a commit of their own.
            updates="false",
        )
    )


def test_sigterm_flushes_buffer_and_loses_nothing(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = mock_pi_factory(clock=SimClock.start(), tag_count=TAGS, seed=7)
    target = tmp_path / "lake"
    start = fixed_past(10)
    env, port = held_back_env(mock, target, start)
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    try:
        assert wait_for(lambda: buffered(port) > 0, 60), worker.text()[-3000:]
        assert read_table(target).num_rows == 0, "committed before the signal"
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=10) == 0, worker.text()[-3000:]
    finally:
        worker.kill9()

    log = worker.text()
    assert STOPPING in log
    assert "run: stopped cleanly (SIGTERM received; flushing)" in log
    commits = [(m.start(), int(m.group(1))) for m in COMMITTED.finditer(log)]
    assert len(commits) == 1, log[-3000:]
    (at, flushed), table = commits[0], read_table(target)
    assert at > log.index(STOPPING)
    assert flushed == table.num_rows > 0

    cps = checkpoints(target)
    assert len(cps) == TAGS
    assert all(cp > start for cp in cps.values())
    assert_same(table, expected(truth_for(mock), {w: (start, cp) for w, cp in cps.items()}))


def test_sigterm_during_a_pi_outage_still_flushes_and_exits_0(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """Kubernetes sends SIGTERM whatever PI is doing; the buffer must still be committed."""
    mock = mock_pi_factory(clock=SimClock.start(), tag_count=TAGS, seed=8)
    target = tmp_path / "lake"
    start = fixed_past(10)
    env, port = held_back_env(mock, target, start)
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    try:
        assert wait_for(lambda: buffered(port) > 0, 60), worker.text()[-3000:]
        mock.stop()
        assert wait_for(lambda: failed_requests(port) > 0, 30), worker.text()[-3000:]
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=10) == 0, worker.text()[-3000:]
    finally:
        worker.kill9()
    cps = checkpoints(target)
    assert len(cps) == TAGS
    assert_same(
        read_table(target), expected(truth_for(mock), {w: (start, cp) for w, cp in cps.items()})
    )


def tag_checkpoints(target: Path) -> dict[str, datetime]:
    """Checkpoints so far; none before the worker has created its tables."""
    try:
        return checkpoints(target)
    except TableNotFoundError:
        return {}


def restart(mock: MockServer) -> MockServer:
    """The same mock-pi (same seed, same port) back after an outage."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mock_pi"],
        cwd=ROOT,
        env=mock.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return MockServer(proc, mock.port, mock.env, mock.clock)


def test_run_outlives_a_pi_outage_and_catches_up_exactly(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """PI down longer than every retry: `run` keeps polling (no crash loop), then catches up."""
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, seed=9)
    target = tmp_path / "lake"
    start = fixed_past(10)
    env, port = metrics_port_env(
        worker_env(
            mock,
            target,
            start=iso(start),
            poll_interval=1,
            commit_max_age=1,
            pi_max_attempts=2,
            pi_max_retry_seconds=1,
        )
    )
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    back: MockServer | None = None
    try:
        assert wait_for(lambda: len(tag_checkpoints(target)) == TAGS, 60), worker.text()[-3000:]
        mock.stop()

        def outage_errors() -> float:
            try:
                return scrape(port).get('pidelta_errors_total{kind="pi_unavailable"}', 0.0)
            except OSError:
                return 0.0

        assert wait_for(lambda: outage_errors() >= 3, 60), worker.text()[-3000:]
        assert worker.alive(), worker.text()[-3000:]
        back = restart(mock)
        resumed = clock.now()
        assert wait_for(lambda: min(checkpoints(target).values()) > resumed, 60), worker.text()[
            -3000:
        ]
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=10) == 0, worker.text()[-3000:]
    finally:
        worker.kill9()
        if back is not None:
            back.stop()
    assert "poll failed, retrying in 1 s" in worker.text()
    cps = checkpoints(target)
    assert_same(
        read_table(target), expected(truth_for(mock), {w: (start, cp) for w, cp in cps.items()})
    )


def catches_sigterm(pid: int) -> bool:
    """True once the process has a handler for SIGTERM (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def test_sigterm_at_any_moment_of_start_up_exits_0(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """From the moment `run` can catch SIGTERM (first thing in `python -m service`, before
    the imports) to a running loop, SIGTERM ends it with 0: Kubernetes may stop a pod the
    moment it started."""
    mock = mock_pi_factory(clock=SimClock.start(), tag_count=5, rate_limit=0)
    env = worker_env(mock, tmp_path / "lake", start=iso(fixed_past(1)))
    for delay in (0.0, 0.05, 0.2, 0.5, 1.0, 2.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert wait_for(lambda p=proc: catches_sigterm(p.pid), 30, interval=0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (delay, err.decode()[-2000:])
