"""The wheel built from a copy of the sources, and a fresh virtual environment holding it.

Sources are copied first (the files the Dockerfile's builder copies) so that building
never writes build/ or *.egg-info into the working tree others are using.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.queries import ROOT

SOURCES = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "service",
    "workers",
    "shard_config",
    "mock_pi",
)


def shared_tmpdir() -> Path:
    """A temp dir every user can read and enter: the tests run the wheel as `nobody`."""
    path = Path(tempfile.mkdtemp(prefix="pidelta-deploy-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def deploy_tmp() -> Iterator[Path]:
    path = shared_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def copy_sources(to: Path) -> Path:
    """The files the Dockerfile's builder copies (no C extension built in place here)."""
    to.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    for name in SOURCES:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, to / name, ignore=ignore)
        else:
            shutil.copy2(item, to / name)
    return to


@pytest.fixture(scope="session")
def wheel(deploy_tmp: Path) -> Path:
    """`pip wheel . --no-deps`, as the Dockerfile builds it: with the C reader, so a wheel
    for this platform and Python."""
    src = copy_sources(deploy_tmp / "src")
    out = deploy_tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, src],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("pidelta-*-cp311-abi3-linux_*.whl")
    return built


@pytest.fixture(scope="session")
def wheel_venv(deploy_tmp: Path, wheel: Path) -> Path:
    """A new venv (no system site-packages) with the wheel and its declared dependencies.

    The project's pip installs into it (`--python`), reusing pip's cache. Bytecode is
    compiled at install time because the non-root user cannot write it later.
    """
    venv = deploy_tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, result.stderr
    return venv
