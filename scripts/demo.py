"""`make demo`: mock-pi and one `pidelta run` worker, ingesting into ./lakehouse.

Prints the rows per table, the lag and the metrics URL every few seconds; Ctrl-C (or
DEMO_SECONDS, 0 meaning "until Ctrl-C") stops the worker with SIGTERM, which flushes and
commits, then stops mock-pi. Children run in their own sessions so that Ctrl-C reaches only
this script, which then stops them in the right order (worker first, server last).

Environment: PORT (mock-pi port, 8440), DEMO_SECONDS (0), MOCK_PI_TAG_COUNT (500),
PIDELTA_START (*-30m), PIDELTA_COMMIT_MAX_AGE (5), PIDELTA_METRICS_PORT (9464, or a free
port when that one is taken).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.status import collect_status  # noqa: E402
from workers.lake.tables import TableStore  # noqa: E402
from workers.settings import Settings  # noqa: E402

REPORT_EVERY = 10.0
# How to read the tables afterwards: the same three lines as the README's.
QUERY = """demo: query the tables, e.g. with Polars:
{python} - <<'PY'
import polars as pl
values = pl.read_delta("lakehouse/pi_timeseries")
print(values.group_by("tag_name").agg(pl.len(), pl.col("timestamp").max()).sort("tag_name"))
PY"""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: mock-pi exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: mock-pi is not listening on port {port}")


def report(settings: Settings, metrics_url: str) -> None:
    try:
        status = collect_status(TableStore.from_settings(settings))
    except Exception as exc:  # tables may be mid-creation on the first report
        print(f"demo: tables not readable yet ({type(exc).__name__})", flush=True)
        return
    now = datetime.now(UTC)
    stamp = now.strftime("%H:%M:%S")
    rows = ", ".join(
        f"{t['table']}={t['rows']:,}"
        for t in status["tables"]
        if t.get("exists")  # type: ignore[union-attr]
    )
    lags = ", ".join(
        f"{s['app_id']} lag {(now - s['oldest']).total_seconds():.0f} s ({s['tags']} tags)"
        for s in status["shards"]  # type: ignore[union-attr]
        if s["current"] and s["oldest"] is not None
    )
    print(f"[{stamp}] rows: {rows or 'none yet'}", flush=True)
    print(f"[{stamp}] {lags or 'no checkpoint yet'}; metrics: {metrics_url}", flush=True)


def main() -> int:
    mock_port = int(os.environ.get("PORT", "8440"))
    seconds = float(os.environ.get("DEMO_SECONDS", "0") or 0)
    metrics_port = int(os.environ.get("PIDELTA_METRICS_PORT", "9464"))
    if not port_free(metrics_port):
        metrics_port = any_free_port()
    if not port_free(mock_port):
        raise SystemExit(f"demo: port {mock_port} is taken; run `PORT=8441 make demo`")
    target = ROOT / "lakehouse"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MOCK_PI_", "PIDELTA_"))}
    mock_env = {
        **base,
        "MOCK_PI_PORT": str(mock_port),
        "MOCK_PI_TAG_COUNT": os.environ.get("MOCK_PI_TAG_COUNT", "500"),
    }
    worker_env = {
        **base,
        **{k: v for k, v in os.environ.items() if k.startswith("PIDELTA_")},
        "PIDELTA_PI_URL": f"http://127.0.0.1:{mock_port}/piwebapi",
        "PIDELTA_TARGET": str(target),
        "PIDELTA_METRICS_PORT": str(metrics_port),
        "PIDELTA_START": os.environ.get("PIDELTA_START", "*-30m"),
        "PIDELTA_POLL_INTERVAL": os.environ.get("PIDELTA_POLL_INTERVAL", "2"),
        "PIDELTA_SAFETY_LAG": os.environ.get("PIDELTA_SAFETY_LAG", "5"),
        # Commit every few seconds, so that rows are seen landing (production: 30 s).
        "PIDELTA_COMMIT_MAX_AGE": os.environ.get("PIDELTA_COMMIT_MAX_AGE", "5"),
    }
    settings = Settings(target=str(target))
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    stop = {"asked": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print(f"demo: mock-pi on port {mock_port} ({mock_env['MOCK_PI_TAG_COUNT']} tags)", flush=True)
    mock = subprocess.Popen(
        [sys.executable, "-m", "mock_pi"],
        cwd=ROOT,
        env=mock_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    worker: subprocess.Popen[bytes] | None = None
    code = 1
    try:
        wait_listening(mock_port, mock)
        print(f"demo: pidelta run -> {target} (metrics {metrics_url})", flush=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "service", "run"],
            cwd=ROOT,
            env=worker_env,
            start_new_session=True,
        )
        began = time.monotonic()
        next_report = began + 5
        while not stop["asked"] and worker.poll() is None:
            if seconds and time.monotonic() - began >= seconds:
                break
            if time.monotonic() >= next_report:
                report(settings, metrics_url)
                next_report += REPORT_EVERY
            time.sleep(0.2)
        if worker.poll() is None:
            print("demo: stopping the worker (SIGTERM: flush, commit, exit)", flush=True)
            worker.send_signal(signal.SIGTERM)
        code = worker.wait(120)
        report(settings, metrics_url)
        print(f"demo: worker exited with {code}; tables are in {target}", flush=True)
        print(QUERY.format(python=sys.executable), flush=True)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        mock.terminate()
        try:
            mock.wait(10)
        except subprocess.TimeoutExpired:
            mock.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
