"""The built wheel, installed alone in a fresh venv, runs as a non-root user from env vars.

This stands in for the container (no Docker engine runs here): the same wheel, a user
that is not root and owns nothing but its working directory, configuration only through
`PIDELTA_*` variables, and no access to the source tree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from service.settings import Settings
from tests.deploy.queries import ROOT

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


def run(venv: Path, workdir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a venv program the way the image's ENTRYPOINT does: nothing but the given env."""
    clean = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        **env,
    }
    return subprocess.run(
        [*as_non_root(), str(venv / "bin" / argv[0]), *argv[1:]],
        cwd=workdir,
        env=clean,
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
        "import os, service, mock_pi; print(os.geteuid(), service.__file__, mock_pi.__file__)",
    )
    assert result.returncode == 0, result.stderr
    uid, service_file, mock_file = result.stdout.split()
    assert int(uid) != 0
    for module_file in (service_file, mock_file):
        assert Path(module_file).is_relative_to(wheel_venv), module_file
        assert not Path(module_file).is_relative_to(ROOT)


def test_help_lists_every_setting(wheel_venv: Path, workdir: Path) -> None:
    result = run(wheel_venv, workdir, "pidelta", "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage: pidelta [-h] [--pi-url PI_URL]")
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
