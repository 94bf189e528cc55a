"""A `pidelta run` on one-minute tickets: renewed without a gap or a duplicate, through a
keytab rotated on disk mid-run, and no credential in the logs or the metrics.

The run lasts KERBEROS_RUN_SECONDS (75 s: past the first ticket's end and two renewals,
within the group's time budget); `make drill-kerberos` runs it for three minutes.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import MockServer
from tests.e2e.helpers import (
    assert_same,
    checkpoints,
    expected,
    iso,
    metrics_port_env,
    read_table,
    start_worker,
    truth_for,
    wait_for,
    within,
    worker_env,
)
from tests.kerberos.conftest import Principals, auth_counts

RUN_SECONDS = float(os.environ.get("KERBEROS_RUN_SECONDS", "75"))
TICKET_SECONDS = 60
ROTATE_AFTER = 15


def test_one_minute_tickets_across_a_run(
    kerberos: Principals, kerberos_mock: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = kerberos_mock(tag_count=20)
    truth = truth_for(mock)
    keytab = kerberos.realm.export("svc-short", tmp_path / "pidelta.keytab")
    origin = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    target = tmp_path / "lake"
    env = worker_env(
        mock,
        target,
        pi_auth="kerberos",
        pi_keytab=keytab,
        pi_principal=kerberos.short,
        start=iso(origin),
        poll_interval=1,
        safety_lag=2,
        log_level="DEBUG",
    )
    env, port = metrics_port_env({**env, **kerberos.env()})
    launched = datetime.now(UTC)
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    try:
        assert wait_for(lambda: (target / "_pidelta_checkpoints").exists(), 60), worker.text()
        time.sleep(max(0.0, ROTATE_AFTER - (datetime.now(UTC) - launched).total_seconds()))
        # A new key at the KDC and on disk: the tickets in hand stay valid, the next
        # renewal must read the new file (the old key no longer logs in).
        kerberos.realm.export("svc-short", keytab)
        rotated = datetime.now(UTC)
        time.sleep(max(0.0, RUN_SECONDS - (datetime.now(UTC) - launched).total_seconds()))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
    finally:
        code = worker.terminate()
    log = worker.text()
    assert code == 0, log[-3000:]
    renewed = [line for line in log.splitlines() if "Kerberos tickets renewed" in line]
    assert len(renewed) >= int(RUN_SECONDS // (TICKET_SECONDS * 0.55)) - 1, log[-3000:]
    assert "renewal failed" not in log
    assert "were not renewed" not in log
    counts = auth_counts(mock)
    assert counts["refused"] == 0
    assert counts["clients"] == [kerberos.short]

    cps = checkpoints(target)
    assert len(cps) == 20
    # Data kept landing after the first ticket ended and after the rotation.
    first_ticket_end = launched + timedelta(seconds=TICKET_SECONDS)
    assert min(cps.values()) > max(first_ticket_end, rotated), (min(cps.values()), log[-3000:])
    ranges = {w: (origin, c) for w, c in cps.items()}
    assert_same(within(read_table(target), ranges), expected(truth, ranges))

    keytab_text = base64.b64encode(keytab.read_bytes()).decode()
    for text in (log, metrics):
        assert "Negotiate " not in text
        assert keytab_text[:24] not in text
