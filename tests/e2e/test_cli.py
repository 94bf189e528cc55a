"""The `pidelta` command line as users meet it: exit codes, one-line errors, and the
outputs of discover, status and shards plan checked against the mock's catalog."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from mock_pi.catalog import Catalog
from service.status import collect_status, format_status
from shard_config.jump_hash import JumpHash
from shard_config.plan import compute_plan, format_plan
from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import (
    checkpoints,
    fixed_past,
    iso,
    metrics_port_env,
    ok,
    pidelta,
    read_table,
    scrape,
    start_worker,
    wait_for,
    worker_env,
)
from workers.lake.tables import TableStore


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["once"],
            {"PIDELTA_SHARD_INDEX": "4", "PIDELTA_SHARD_COUNT": "4"},
            "pidelta: invalid configuration: PIDELTA_SHARD_INDEX=4 must be below "
            "PIDELTA_SHARD_COUNT=4",
        ),
        (
            ["run"],
            {"PIDELTA_PI_URL": "ftp://pi"},
            "pidelta: invalid configuration: PIDELTA_PI_URL: must start with http:// or https://",
        ),
        (
            ["backfill", "--start", "yesterday-ish", "--end", "*"],
            {},
            "pidelta: backfill: Cannot parse time string 'yesterday-ish'.",
        ),
        (
            ["backfill", "--start", "*", "--end", "*-1d"],
            {},
            "pidelta: backfill: --end *-1d is not after --start",
        ),
        (
            ["shards", "plan", "--shards", "0"],
            {},
            "pidelta: shards plan: --shards must be at least 1, got 0",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    base = worker_env("http://127.0.0.1:9/piwebapi", tmp_path / "lake")
    result = pidelta(*args, env={**base, **env}, timeout=60)
    assert result.returncode == 2
    assert result.stderr == line + "\n"
    assert result.stdout == ""
    assert not (tmp_path / "lake").exists()


def test_unreachable_server_is_said_at_once_then_one_line(tmp_path: Path) -> None:
    env = worker_env(
        "http://127.0.0.1:9/piwebapi", tmp_path / "lake", pi_max_attempts=2, pi_max_retry_seconds=2
    )
    result = pidelta("once", env=env, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    said = [i for i, line in enumerate(lines) if "PI Web API unreachable: " in line]
    failed = [i for i, line in enumerate(lines) if "pidelta once failed: " in line]
    assert len(said) == 1
    assert "retrying (up to 2 attempts in 2 s); check PIDELTA_PI_URL" in lines[said[0]]
    assert failed == [len(lines) - 1]
    assert said[0] < failed[0]
    assert lines[-1].endswith("after 2 attempts; check PIDELTA_PI_URL")
    assert "the PI Web API is unreachable: GET http://127.0.0.1:9/piwebapi/" in lines[-1]
    assert "Traceback" not in result.stderr
    debug = pidelta("once", env={**env, "PIDELTA_LOG_LEVEL": "DEBUG"}, timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("PIDELTA_START", "garbage", "PIDELTA_START: Cannot parse time string 'garbage'."),
        ("PIDELTA_EVENTS_START", "*-1x", "PIDELTA_EVENTS_START: Cannot parse time string '*-1x'."),
        ("PIDELTA_STORAGE_OPTIONS", "{bad", "PIDELTA_STORAGE_OPTIONS: not valid JSON"),
        (
            "PIDELTA_STORAGE_OPTIONS",
            '{"timeout": 5}',
            "PIDELTA_STORAGE_OPTIONS[timeout]: Input should be a valid string",
        ),
        (
            "PIDELTA_LOG_FORMAT",
            "xml",
            "PIDELTA_LOG_FORMAT: Input should be 'text' or 'json'",
        ),
    ],
)
def test_settings_are_validated_before_any_table(
    tmp_path: Path, variable: str, value: str, line: str
) -> None:
    env = worker_env("http://127.0.0.1:9/piwebapi", tmp_path / "lake")
    result = pidelta("once", env={**env, variable: value}, timeout=60)
    assert (result.returncode, result.stderr) == (2, f"pidelta: invalid configuration: {line}\n")
    assert not (tmp_path / "lake").exists()


def test_a_misspelled_variable_is_named_with_the_closest_one(
    mock_pi: MockServer, tmp_path: Path
) -> None:
    env = {**worker_env(mock_pi, tmp_path, tag_filter="TI-*"), "PIDELTA_SHARD_CNT": "4"}
    result = ok(pidelta("discover", env=env))
    assert (
        "WARNING [shard 0/1] pidelta: PIDELTA_SHARD_CNT is not a pidelta setting and is "
        "ignored; did you mean PIDELTA_SHARD_COUNT?"
    ) in result.stderr


def test_an_empty_discovery_is_a_warning_and_once_exits_2(
    mock_pi: MockServer, tmp_path: Path
) -> None:
    env = worker_env(mock_pi, tmp_path, tag_filter="NOSUCH-*")
    listed = ok(pidelta("discover", env=env))
    assert listed.stdout == "name\twebid\tpoint_type\tunits\tshard\n"
    assert f"discover: no PI point matches PIDELTA_TAG_FILTER='NOSUCH-*' at {mock_pi.url}" in (
        listed.stderr
    )
    for command in (["once"], ["backfill", "--start", "*-1h", "--end", "*-30m"]):
        result = pidelta(*command, env=env)
        assert result.returncode == 2
        assert result.stderr.splitlines()[-1] == (
            f"pidelta: {command[0]}: no PI point matches PIDELTA_TAG_FILTER='NOSUCH-*' at "
            f"{mock_pi.url}"
        )


def test_refused_credentials_are_one_line(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    server = mock_pi_factory(
        tag_count=10, auth="basic", username="operator", password="right-password"
    )
    env = worker_env(
        server, tmp_path, pi_auth="basic", pi_username="operator", pi_password="wrong-password"
    )
    result = pidelta("once", env=env)
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert "ERROR [shard 0/1] pidelta: pidelta once failed: the PI Web API refused the " in last
    assert "HTTP 401 credentials refused (PIDELTA_PI_AUTH=basic)" in last
    assert last.endswith("; check PIDELTA_PI_USERNAME and PIDELTA_PI_PASSWORD")
    assert "Traceback" not in result.stderr


def test_https_to_a_plain_http_server_says_so(mock_pi: MockServer, tmp_path: Path) -> None:
    env = worker_env(mock_pi.url.replace("http://", "https://"), tmp_path)
    result = pidelta("once", env=env)
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.endswith(
        "pidelta once failed: TLS with the PI Web API failed: the server speaks plain HTTP, "
        f"not TLS: use http:// in PIDELTA_PI_URL ({mock_pi.url.replace('http://', 'https://')}"
        "/dataservers?selectedFields=Items.WebId;Items.Name)"
    )
    assert "Traceback" not in result.stderr


def test_a_target_that_cannot_be_written_is_one_line(mock_pi: MockServer, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = pidelta("once", env=worker_env(mock_pi, tmp_path / "file" / "lake"))
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.endswith(
        f"pidelta once failed: cannot write the target: Not a directory: "
        f"{tmp_path}/file/lake/pi_timeseries; check PIDELTA_TARGET (the worker creates a "
        "folder per table there)"
    )
    assert "Traceback" not in result.stderr


def test_discover_lists_every_tag_with_its_shard(mock_pi: MockServer, tmp_path: Path) -> None:
    env = worker_env(mock_pi, tmp_path, shard_count=4)
    lines = ok(pidelta("discover", env=env)).stdout.splitlines()
    assert lines[0] == "name\twebid\tpoint_type\tunits\tshard"
    catalog = Catalog(42, 1000)
    want = sorted(
        (p.name, p.webid, p.point_type, p.units, str(JumpHash(4).owner(p.webid)))
        for p in (catalog.point(i) for i in range(1000))
    )
    assert sorted(tuple(line.split("\t")) for line in lines[1:]) == want


def test_shards_plan_is_the_plan_of_the_discovered_tags(
    mock_pi: MockServer, tmp_path: Path
) -> None:
    out = ok(pidelta("shards", "plan", "--shards", "5", env=worker_env(mock_pi, tmp_path))).stdout
    catalog = Catalog(42, 1000)
    webids = [catalog.point(i).webid for i in range(1000)]
    assert out == format_plan(compute_plan(webids, 5)) + "\n"


def test_status_groups_shards_by_generation(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock_pi = mock_pi_factory(clock=clock, tag_count=1000, seed=42, rate_limit=0)
    target = tmp_path / "lake"
    env = worker_env(mock_pi, target, start=iso(fixed_past(3)), tag_filter="TI-*")
    empty = pidelta("status", env=env)
    assert empty.returncode == 1
    assert empty.stdout == ""
    assert empty.stderr.splitlines()[-1].endswith(
        f"pidelta: status: no pidelta table at {target}; check PIDELTA_TARGET"
    )
    ok(pidelta("once", env=env))
    shards, tables, verification = ok(pidelta("status", env=env)).stdout.split("\n\n")
    assert verification.splitlines()[0].startswith("verification")
    title, header, row = shards.splitlines()
    assert re.fullmatch(r"generation 1 \(current\): 1 shards, announced \S+Z", title)
    assert header == "shard\ttags\tlag_seconds\toldest_checkpoint\tlast_commit\tstate"
    app, tags, lag, _, _, state = row.split("\t")
    assert (app, state) == ("pidelta-ts-0-of-1", "ok")
    assert int(tags) == len(read_table(target, "_pidelta_checkpoints"))
    assert 0 < float(lag) < 120
    rows = {line.split("\t")[0]: line.split("\t") for line in tables.splitlines()[1:]}
    assert int(rows["pi_timeseries"][1]) == read_table(target).num_rows > 0
    assert int(rows["pi_timeseries"][2]) >= 1

    # Two shards now, of which only shard 0 ever runs: shard 1 is missing, the old app id
    # is listed as replaced, without a lag.
    ok(pidelta("once", env={**env, "PIDELTA_SHARD_COUNT": "2"}, timeout=300))
    shards = ok(pidelta("status", env=env)).stdout.split("\n\n")[0].splitlines()
    assert re.fullmatch(r"generation 2 \(current\): 2 shards, announced \S+Z", shards[0])
    assert shards[2].startswith("pidelta-ts-0-of-2\t")
    assert shards[2].endswith("\tok")
    assert shards[3] == "pidelta-ts-1-of-2\t0\t-\t-\t-\tmissing: never committed"
    assert re.fullmatch(r"generation 1 \(replaced\): 1 shards, announced \S+Z", shards[4])
    assert re.fullmatch(
        r"pidelta-ts-0-of-1\t\d+\t-\t\S+Z\t\S+Z\treplaced: its tags moved to the current "
        r"generation",
        shards[6],
    )
    # An hour later without a commit, the running shard is stale.
    report = collect_status(TableStore(str(target)))
    later = format_status(report, clock.now() + timedelta(hours=1)).splitlines()
    assert later[2].endswith("\tstale: no commit for 1h 0m")


def test_backfill_entirely_in_the_future_is_refused(tmp_path: Path) -> None:
    env = worker_env("http://127.0.0.1:9/piwebapi", tmp_path / "lake")
    result = pidelta("backfill", "--start", "*+1h", "--end", "*+2h", env=env, timeout=60)
    assert result.returncode == 2
    assert re.fullmatch(
        r"pidelta: backfill: the range starts at \S+Z, not before now minus the safety lag "
        r"\(\S+Z\): PI holds none of it yet \(PIDELTA_SAFETY_LAG=10\)\n",
        result.stderr,
    ), result.stderr
    assert not (tmp_path / "lake").exists()


def test_lag_counts_committed_checkpoints_only(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """Batches buffered but not committed (a commit every 10 minutes here) leave the lag
    where the table is: at the start, three minutes back; the buffer has its own gauge.

    On the recorded path (updates off): with stream updates, a tag's catch-up is committed
    at once, before it is followed, so nothing stays buffered for the gauge to show."""
    mock_pi = mock_pi_factory(clock=SimClock.start(), tag_count=1000, seed=42, rate_limit=0)
    start = fixed_past(3)
    env, port = metrics_port_env(
        worker_env(
            mock_pi,
            tmp_path,
            start=iso(start),
            tag_filter="TI-*",
            commit_max_age=600,
            poll_interval=1,
            maintain_interval=0,
            updates=False,
        )
    )
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    try:
        gauge = 'pidelta_buffered_rows{shard="0"}'
        lag = 'pidelta_lag_seconds{shard="0"}'
        assert wait_for(
            lambda: worker.alive() and _scraped(port).get(gauge, 0) > 0 and lag in scrape(port),
            timeout=180,
        ), worker.text()[-3000:]
        # Another poll with the rows still buffered.
        polls = scrape(port)[
            'pidelta_pi_requests_total{endpoint="streamsets/recorded",status="200"}'
        ]
        assert wait_for(
            lambda: (
                scrape(port)[
                    'pidelta_pi_requests_total{endpoint="streamsets/recorded",status="200"}'
                ]
                > polls
            ),
            timeout=120,
        )
        seen = scrape(port)
        assert seen[gauge] > 0
        assert seen[lag] >= 180
        assert read_table(tmp_path).num_rows == 0
    finally:
        assert worker.terminate() == 0


def _scraped(port: int) -> dict[str, float]:
    """The metrics, or nothing while the server is not up yet."""
    try:
        return scrape(port)
    except OSError:
        return {}


def test_each_time_series_commit_is_one_info_line(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock_pi = mock_pi_factory(clock=SimClock.start(), tag_count=1000, seed=42, rate_limit=0)
    start = fixed_past(3)
    env = worker_env(mock_pi, tmp_path, start=iso(start), tag_filter="TI-*")
    result = ok(pidelta("once", env=env))
    lines = [
        line for line in result.stderr.splitlines() if "pidelta.pipeline: pi_timeseries: " in line
    ]
    assert len(lines) == 1
    found = re.search(
        r" INFO \[shard 0/1\] pidelta\.pipeline: pi_timeseries: committed (\d+) rows of (\d+) "
        r"tags, (\S+) \.\. (\S+), in \d+\.\d\d s, batch 1 of pidelta-ts-0-of-1$",
        lines[0],
    )
    assert found, lines[0]
    cps = checkpoints(tmp_path)
    assert int(found[1]) == read_table(tmp_path).num_rows > 0
    assert int(found[2]) == len(cps)
    assert found[3] == iso(start).replace(".000000", "")
    (end,) = set(cps.values())
    assert found[4] == end.isoformat(timespec="seconds").replace("+00:00", "Z")


def test_run_warns_of_an_empty_discovery_and_keeps_going(
    mock_pi: MockServer, tmp_path: Path
) -> None:
    env = worker_env(mock_pi, tmp_path, tag_filter="NOSUCH-*", maintain_interval=0)
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    line = (
        f"WARNING [shard 0/1] pidelta: run: no PI point matches PIDELTA_TAG_FILTER='NOSUCH-*' at "
        f"{mock_pi.url}; asked again every PIDELTA_REDISCOVER_INTERVAL"
    )
    try:
        assert wait_for(lambda: line in worker.text(), timeout=120), worker.text()[-3000:]
        assert worker.alive()
    finally:
        assert worker.terminate() == 0
