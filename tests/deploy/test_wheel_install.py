"""The built wheel, installed alone in a fresh venv, runs as a non-root user from env vars.

This stands in for the container (no Docker engine runs here): the same wheel, a user
that is not root and owns nothing but its working directory, configuration only through
`PIDELTA_*` variables, and no access to the source tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from mock_pi.catalog import Catalog
from shard_config.jump_hash import JumpHash
from tests.conftest import MockServer, free_port
from tests.deploy.queries import ROOT
from workers.settings import Settings

HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
TAGS = 30

NOBODY = 65534


def as_non_root() -> list[str]:
    """Prefix that drops to `nobody` when the tests run as root (they do in CI)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def workdir(deploy_tmp: Path) -> Path:
    """The container's WORKDIR and HOME: the only place the user may write."""
    path = deploy_tmp / "work"
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    return path


def container_env(venv: Path, workdir: Path, **env: str) -> dict[str, str]:
    """Nothing but what the image sets, plus the given PIDELTA_* variables."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIDELTA_TARGET": str(workdir / "lakehouse"),
        **env,
    }


def run(venv: Path, workdir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a venv program the way the image's ENTRYPOINT does, to completion."""
    return subprocess.run(
        [*as_non_root(), str(venv / "bin" / argv[0]), *argv[1:]],
        cwd=workdir,
        env=container_env(venv, workdir, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runs_as_non_root_from_the_venv_not_the_source_tree(
    wheel_venv: Path, workdir: Path
) -> None:
    result = run(
        wheel_venv,
        workdir,
        "python",
        "-c",
        "import os, service, mock_pi, workers.timeseries._pijson as c;"
        " print(os.geteuid(), service.__file__, mock_pi.__file__, c.__file__)",
    )
    assert result.returncode == 0, result.stderr
    uid, *module_files = result.stdout.split()
    assert int(uid) != 0
    for module_file in module_files:
        assert Path(module_file).is_relative_to(wheel_venv), module_file
        assert not Path(module_file).is_relative_to(ROOT)


def test_help_lists_every_setting(wheel_venv: Path, workdir: Path) -> None:
    result = run(wheel_venv, workdir, "pidelta", "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage: pidelta [-h] [--version] [--pi-url PI_URL]")
    env_lines = [line.split()[0] for line in lines if line.startswith("  PIDELTA_")]
    assert env_lines == [f"PIDELTA_{name.upper()}" for name in Settings.model_fields]
    assert result.stderr == ""


def test_bad_environment_is_one_line_and_exit_2(wheel_venv: Path, workdir: Path) -> None:
    result = run(
        wheel_venv,
        workdir,
        "pidelta",
        "discover",
        PIDELTA_SHARD_INDEX="3",
        PIDELTA_SHARD_COUNT="3",
        PIDELTA_PI_PASSWORD="s3cret-never-shown",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "pidelta: invalid configuration: PIDELTA_SHARD_INDEX=3 must be below PIDELTA_SHARD_COUNT=3"
    ]


def test_discover_lists_every_tag_with_its_owner(
    wheel_venv: Path, workdir: Path, mock_pi_factory: Callable[..., MockServer]
) -> None:
    mock = mock_pi_factory(tag_count=TAGS, seed=7)
    result = run(
        wheel_venv,
        workdir,
        "pidelta",
        "discover",
        PIDELTA_PI_URL=mock.url,
        PIDELTA_SHARD_INDEX="1",
        PIDELTA_SHARD_COUNT="3",
    )
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["name", "webid", "point_type", "units", "shard"]
    catalog = Catalog(seed=7, tag_count=TAGS)
    expected = {catalog.point(i).name: catalog.point(i).webid for i in range(TAGS)}
    ring = JumpHash(3)
    listed = {}
    for row in rows:
        name, webid, _point_type, _units, shard = row.split("\t")
        assert int(shard) == ring.owner(webid), name
        listed[name] = webid
    assert len(rows) == TAGS
    assert listed == expected


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def test_run_serves_health_for_the_image_healthcheck_and_stops_on_sigterm(
    wheel_venv: Path, workdir: Path, mock_pi_factory: Callable[..., MockServer]
) -> None:
    """`docker stop` sends SIGTERM: the worker must flush and exit 0 well within 30 s."""
    mock = mock_pi_factory(tag_count=TAGS, seed=7)
    port = str(free_port())
    env = container_env(
        wheel_venv,
        workdir,
        PIDELTA_PI_URL=mock.url,
        PIDELTA_METRICS_PORT=port,
        PIDELTA_START="*-5m",
        PIDELTA_LOG_FORMAT="json",
    )
    worker = subprocess.Popen(
        [*as_non_root(), str(wheel_venv / "bin" / "pidelta"), "run"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while get_status(f"http://127.0.0.1:{port}/readyz") != 200:
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.2)
        assert get_status(f"http://127.0.0.1:{port}/healthz") == 200
        check = subprocess.run(
            [*as_non_root(), str(wheel_venv / "bin" / "python"), str(HEALTHCHECK)],
            env=env,
            capture_output=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, stderr
    assert (workdir / "lakehouse" / "pi_timeseries").is_dir()
