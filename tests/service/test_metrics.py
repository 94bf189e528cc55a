"""The Prometheus observer: bounded labels whatever the server answers."""

from __future__ import annotations

from service.metrics import Metrics, MetricsObserver


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
