"""Dockerfile, .dockerignore and the HEALTHCHECK script (no Docker engine runs here)."""

from __future__ import annotations

import fnmatch
import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deploy.queries import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
HADOLINT = Path(sys.executable).with_name("hadolint")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def dockerignored(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern matching a path (or a parent) wins."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/"))
            for p in prefixes
        ):
            ignored = not negate
    return ignored


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_multi_stage_slim_wheel_only() -> None:
    froms = [args for k, args in instructions() if k == "FROM"]
    assert froms[0].endswith(" AS builder")
    assert len(froms) == 2
    assert froms[1].startswith(("python:3.11-slim", "python:3.12-slim"))
    final = final_stage()
    copies = [args for k, args in final if k == "COPY"]
    assert any(c.startswith("--from=builder /wheels") for c in copies)
    assert not any(c.split()[0] in {"service", "workers", "mock_pi", "."} for c in copies)
    runs = " ".join(args for k, args in final if k == "RUN")
    assert "pip install --no-cache-dir --no-index --find-links=/wheels /wheels/pidelta-" in runs


def test_non_root_entrypoint_ports_health_and_env() -> None:
    final = dict(final_stage())
    assert final["USER"] == "10001:10001", "numeric, so Kubernetes runAsNonRoot can verify it"
    assert json.loads(final["ENTRYPOINT"]) == ["pidelta"]
    assert json.loads(final["CMD"]) == ["run"]
    assert final["EXPOSE"] == "9464"
    assert final["WORKDIR"] == "/data"
    health = final["HEALTHCHECK"].split(" CMD ", 1)
    assert json.loads(health[1]) == ["python", "/usr/local/lib/pidelta-healthcheck.py"]
    env = dict(pair.split("=", 1) for pair in shlex.split(final["ENV"]))
    assert env["PIDELTA_TARGET"] == "/data/lakehouse"
    assert env["PIDELTA_METRICS_PORT"] == "9464"


def test_every_copied_path_exists_and_is_not_dockerignored() -> None:
    for keyword, args in instructions():
        if keyword != "COPY" or args.startswith("--from="):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not dockerignored(source), f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv",
        "lakehouse",
        ".git",
        ".pytest_cache",
        "tests",
        "service/__pycache__/x.pyc",
        "pidelta.egg-info",
        "build",
    ],
)
def test_dockerignore_excludes(path: str) -> None:
    assert dockerignored(path)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = self.server.healthz_status if self.path == "/healthz" else 404  # type: ignore[attr-defined]
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def healthcheck(port: int) -> int:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"PIDELTA_METRICS_PORT": str(port)},
        capture_output=True,
        timeout=30,
    ).returncode


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1), (500, 1)])
def test_healthcheck_script_follows_healthz(
    health_server: HTTPServer, status: int, exit_code: int
) -> None:
    health_server.healthz_status = status  # type: ignore[attr-defined]
    assert healthcheck(health_server.server_address[1]) == exit_code


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert healthcheck(free_port()) == 1
