"""MOCK_PI_FAULTS: every kind seen by a plain client, and the same seed repeats the same run."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from typing import Any

from mock_pi.faults import FaultInjector
from tests.conftest import get_json
from tests.mock_pi.test_protocol import call

MIXED = "503=0.15,429=0.1,500=0.1,reset=0.1,truncate=0.1"


def attempt(url: str) -> tuple[Any, float]:
    """What a plain client sees: a status, "reset" or "truncated"; and how long it took."""
    began = time.monotonic()
    missing: int | None = None
    try:
        status, headers, body = call("GET", url)
    except ConnectionResetError:
        return "reset", time.monotonic() - began
    except http.client.IncompleteRead as exc:
        missing = exc.expected or 0
    if missing is not None:
        assert missing > 0  # bytes promised by Content-Length that never came
        return "truncated", time.monotonic() - began
    if status in (503, 429):
        assert headers["Retry-After"] == "1"
    if status == 503:
        assert body == {"Errors": ["The service is unavailable."]}
    if status == 429:
        assert body == {"Errors": ["Rate limit was reached"]}
    if status == 500:
        assert body == {"Errors": ["An error has occurred."]}
    return status, time.monotonic() - began


def run(server: Any, n: int) -> list[Any]:
    return [attempt(server.url + "/dataservers")[0] for _ in range(n)]


def injected(server: Any) -> dict[str, Any]:
    status, body = get_json(server.url + "/mock/faults")
    assert status == 200
    return body


KIND_OF = {503: "503", 429: "429", 500: "500", "reset": "reset", "truncated": "truncate"}


def test_draws_depend_only_on_seed_and_request_number() -> None:
    def draws(seed: int) -> list[tuple[bool, str | None]]:
        injector = FaultInjector.from_spec(seed, MIXED + ",slow=0.1")
        return [(d.slow, d.terminal) for d in (injector.draw() for _ in range(500))]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    terminals = Counter(t for _, t in draws(1))
    assert set(terminals) == {None, "503", "429", "500", "reset", "truncate"}


def test_same_seed_same_faults_over_http(mock_pi_factory) -> None:
    first = mock_pi_factory(tag_count=10, rate_limit=0, seed=7, faults=MIXED)
    second = mock_pi_factory(tag_count=10, rate_limit=0, seed=7, faults=MIXED)
    other = mock_pi_factory(tag_count=10, rate_limit=0, seed=8, faults=MIXED)
    outcomes = [run(server, 40) for server in (first, second, other)]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] != outcomes[2]
    for server, seen in zip((first, second, other), outcomes, strict=True):
        report = injected(server)
        assert report["Requests"] == 40
        counts = Counter(KIND_OF[o] for o in seen if o != 200)
        assert report["Injected"] == {**dict.fromkeys(report["Injected"], 0), **counts}
    assert {"reset", "truncated", 503, 429, 500} <= set(outcomes[0])


def test_every_kind_is_seen_by_a_plain_client(mock_pi_factory) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=0, seed=3, faults=MIXED + ",slow=0.08")
    results = [attempt(server.url + "/dataservers") for _ in range(30)]
    outcomes = [o for o, _ in results]
    slow = sum(1 for _, took in results if took >= 2.0)
    report = injected(server)
    assert report["Injected"]["slow"] == slow >= 1
    assert {"reset", "truncated", 503, 429, 500, 200} <= set(outcomes)
    counts = Counter(KIND_OF[o] for o in outcomes if o != 200)
    assert {k: v for k, v in report["Injected"].items() if k != "slow"} == {
        **dict.fromkeys(("503", "429", "500", "reset", "truncate"), 0),
        **counts,
    }
