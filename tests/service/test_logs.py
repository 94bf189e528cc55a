"""`PIDELTA_LOG_FORMAT=json`: every stderr line one JSON object, and no secret anywhere.

mock-pi asks for Basic auth; a run with the right password and one with a wrong one (whose
401 is logged with its traceback) must both keep to the line format, and neither the
password nor the `Authorization` header value may show in stdout, stderr or `/metrics`.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from service.logs import MASK, configure_logging
from tests.conftest import ROOT, MockServer
from tests.e2e.helpers import metrics_port_env, pidelta, wait_for, worker_env
from workers.settings import Settings

USER = "operator"
PASSWORD = "Qx7-unmistakable-Pa55word"
WRONG = "Wrong-but-also-Secret-913"
KEYS = {"time", "level", "shard", "logger", "message"}
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def forbidden(password: str) -> list[str]:
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    return [password, token, f"Basic {token}"]


def json_lines(stderr: str) -> list[dict[str, object]]:
    """Each line parsed, with the exact keys and values the format promises."""
    docs = []
    for line in stderr.splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        assert set(doc) in (KEYS, KEYS | {"exception"}), line
        assert doc["shard"] == "0/1", line
        assert doc["level"] in LEVELS, line
        moment = datetime.fromisoformat(str(doc["time"]))
        assert moment.utcoffset() == timedelta(0), line
        docs.append(doc)
    assert docs, "no log lines"
    return docs


@pytest.fixture
def auth_mock(mock_pi_factory: Callable[..., MockServer]) -> MockServer:
    return mock_pi_factory(tag_count=10, seed=9, auth="basic", username=USER, password=PASSWORD)


def env_for(mock: MockServer, target: Path, password: str) -> dict[str, str]:
    return worker_env(
        mock,
        target,
        start="*-2m",
        log_format="json",
        pi_auth="basic",
        pi_username=USER,
        pi_password=password,
    )


def test_once_logs_json_without_the_password(auth_mock: MockServer, tmp_path: Path) -> None:
    result = pidelta("once", env=env_for(auth_mock, tmp_path / "lake", PASSWORD), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    docs = json_lines(result.stderr)
    assert any(str(d["message"]).startswith("once: ") for d in docs)
    for secret in forbidden(PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_wrong_password_error_is_json_without_either_password(
    auth_mock: MockServer, tmp_path: Path
) -> None:
    result = pidelta("once", env=env_for(auth_mock, tmp_path / "lake", WRONG), timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [d for d in json_lines(result.stderr) if d["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["message"].startswith("pidelta once failed: the PI Web API refused the ")
    assert "HTTP 401 credentials refused" in errors[0]["message"]
    assert "exception" not in errors[0]  # a traceback only at PIDELTA_LOG_LEVEL=DEBUG
    for secret in forbidden(WRONG) + forbidden(PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_metrics_of_a_running_worker_hold_no_secret(auth_mock: MockServer, tmp_path: Path) -> None:
    env, port = metrics_port_env(env_for(auth_mock, tmp_path / "lake", PASSWORD))
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"

    def scraped() -> str:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    try:
        assert wait_for(lambda: 'status="200"' in scraped(), 60)
        body = scraped()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    json_lines(err)
    for secret in forbidden(PASSWORD):
        assert secret not in body + out + err


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
def test_library_loggers_share_the_json_formatter_and_secrets_are_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(log_format="json", pi_auth="basic", pi_username=USER, pi_password=PASSWORD)
    configure_logging(settings)
    token = forbidden(PASSWORD)[1]
    logging.getLogger("aiohttp.client").warning("aiohttp says %s", "hello")
    logging.getLogger("deltalake.query").error("deltalake says hi")
    logging.getLogger("pidelta.test").info("header Authorization: Basic %s", token)
    try:
        raise RuntimeError(f"password was {PASSWORD}")
    except RuntimeError:
        logging.getLogger("pidelta.test").exception("failed")
    err = capsys.readouterr().err
    docs = json_lines(err)
    assert [(d["logger"], d["level"], d["message"]) for d in docs] == [
        ("aiohttp.client", "WARNING", "aiohttp says hello"),
        ("deltalake.query", "ERROR", "deltalake says hi"),
        ("pidelta.test", "INFO", f"header Authorization: Basic {MASK}"),
        ("pidelta.test", "ERROR", "failed"),
    ]
    assert f"RuntimeError: password was {MASK}" in str(docs[3]["exception"])
    assert PASSWORD not in err
    assert token not in err
