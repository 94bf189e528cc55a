"""The Prometheus observer: bounded labels whatever the server answers."""

from __future__ import annotations

import aiohttp

from service.metrics import PI_FAILING, Metrics, MetricsObserver, MetricsServer, Readiness


def test_status_labels_are_http_codes_or_other() -> None:
    metrics = Metrics(process=False)
    observer = MetricsObserver(metrics)
    for status in ("200", "503", "799", "0", "20000", "error:reset", "799"):
        observer.on_request("streamsets/recorded", status, 0.01)
    counts = {
        sample.labels["status"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "pidelta_pi_requests"
        for sample in family.samples
        if sample.name == "pidelta_pi_requests_total"
    }
    assert counts == {"200": 1.0, "503": 1.0, "other": 4.0, "error:reset": 1.0}


async def test_readiness_fails_while_every_request_fails_401_included() -> None:
    metrics = Metrics(process=False)
    observer = MetricsObserver(metrics)

    async def started() -> Readiness:
        return Readiness(True)

    server = MetricsServer(metrics, 0, started, host="127.0.0.1")
    port = await server.start()

    async def readyz() -> tuple[int, dict[str, str]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as resp,
        ):
            return resp.status, await resp.json()

    failing = (503, {"status": "not ready", "reason": PI_FAILING})
    try:
        verdicts = []
        for statuses in (["200"], ["401", "401"], [], ["503", "error:reset", "429"], ["404"]):
            for status in statuses:
                observer.on_request("streamsets/recorded", status, 0.01)
            verdicts.append(await readyz())
    finally:
        await server.stop()
    ready = (200, {"status": "ready"})
    assert verdicts == [ready, failing, failing, failing, ready]
