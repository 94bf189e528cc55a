"""The Prometheus metric catalog and the `/metrics`, `/healthz`, `/readyz` server.

Every metric lives in the `Metrics` object's own `CollectorRegistry` (plus the process
collector), passed down explicitly, so tests build as many isolated instances as they like.
Labels are bounded: shard, table, endpoint, status, reason and kind, never a tag name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

_STATUS_LABELS = frozenset(str(s.value) for s in HTTPStatus)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ROWS_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of a readiness check: ready, else a short reason for people."""

    ready: bool
    reason: str = ""


ReadinessCheck = Callable[[], Awaitable[Readiness]]


class Metrics:
    """All pidelta metrics, registered in one private registry."""

    def __init__(self, version: str = "0.0.0", *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=self.registry)
        r = self.registry
        self.values_ingested = Counter(
            "pidelta_values_ingested", "PI values decoded.", ["table", "shard"], registry=r
        )
        self.rows_committed = Counter(
            "pidelta_rows_committed", "Rows committed to Delta.", ["table", "shard"], registry=r
        )
        self.pi_requests = Counter(
            "pidelta_pi_requests", "PI Web API requests.", ["endpoint", "status"], registry=r
        )
        self.pi_request_duration = Histogram(
            "pidelta_pi_request_duration_seconds",
            "PI Web API request duration.",
            ["endpoint"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.pi_retries = Counter(
            "pidelta_pi_retries", "PI Web API retries by cause.", ["reason"], registry=r
        )
        self.commit_duration = Histogram(
            "pidelta_commit_duration_seconds",
            "Delta commit duration.",
            ["table"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.commit_rows = Histogram(
            "pidelta_commit_rows",
            "Rows per Delta commit.",
            ["table"],
            buckets=ROWS_BUCKETS,
            registry=r,
        )
        self.commit_conflicts = Counter(
            "pidelta_commit_conflicts",
            "Concurrent commits a Delta commit met (stepped over or refused by).",
            ["table"],
            registry=r,
        )
        self.commit_retries = Counter(
            "pidelta_commit_retries",
            "Delta commits made again on a fresh snapshot after a conflict.",
            ["table"],
            registry=r,
        )
        self.delta_table_version = Gauge(
            "pidelta_delta_table_version", "Latest Delta version written.", ["table"], registry=r
        )
        self.lag = Gauge(
            "pidelta_lag_seconds",
            "Now minus the oldest committed pi_timeseries checkpoint.",
            ["shard"],
            registry=r,
        )
        self.oldest_unprocessed = Gauge(
            "pidelta_oldest_unprocessed_seconds",
            "Age of the oldest fetched value not committed yet.",
            ["shard"],
            registry=r,
        )
        self.tags_owned = Gauge(
            "pidelta_tags_owned", "Tags owned by this shard.", ["shard"], registry=r
        )
        self.buffered_rows = Gauge(
            "pidelta_buffered_rows", "Rows waiting in the commit buffer.", ["shard"], registry=r
        )
        self.quarantined_values = Counter(
            "pidelta_quarantined_values",
            "Values written to the quarantine table, by reason.",
            ["reason"],
            registry=r,
        )
        self.errors = Counter("pidelta_errors", "Errors by kind.", ["kind"], registry=r)
        self.buckets_verified = Counter(
            "pidelta_buckets_verified",
            "Tag-buckets compared with PI, by result.",
            ["shard", "result"],
            registry=r,
        )
        self.verified_share = Gauge(
            "pidelta_verified_completeness_ratio",
            "Share of tag-buckets in the verification horizon verified equal to PI.",
            ["shard"],
            registry=r,
        )
        self.oldest_unverified = Gauge(
            "pidelta_oldest_unverified_bucket_seconds",
            "Age of the oldest closed bucket in the horizon not verified equal (0: none).",
            ["shard"],
            registry=r,
        )
        self.changes_applied = Counter(
            "pidelta_changes_applied",
            "Stream-update changes applied to pi_timeseries, by action.",
            ["shard", "action"],
            registry=r,
        )
        self.marker_registrations = Counter(
            "pidelta_marker_registrations",
            "Tags registered for stream updates.",
            ["shard"],
            registry=r,
        )
        self.marker_expiries = Counter(
            "pidelta_marker_expiries",
            "Stream-update markers PI refused (expired or unknown).",
            ["shard"],
            registry=r,
        )
        self.marker_takeovers = Counter(
            "pidelta_marker_takeovers",
            "Markers of moved tags taken over from another shard's follower (a reshard).",
            ["shard"],
            registry=r,
        )
        self.fallback_rereads = Counter(
            "pidelta_fallback_rereads",
            "Tags whose gap no marker covered, re-read from recorded values.",
            ["shard", "reason"],
            registry=r,
        )
        self.points_synced = Counter(
            "pidelta_points_synced",
            "pi_points versions written by the points sync, by change.",
            ["shard", "change"],
            registry=r,
        )
        self.points_served = Gauge(
            "pidelta_points_served",
            "Points of the shard PI served at the last successful points sync.",
            ["shard"],
            registry=r,
        )
        self.points_sync_duration = Gauge(
            "pidelta_points_sync_duration_seconds",
            "Duration of the last successful points sync.",
            ["shard"],
            registry=r,
        )
        self.points_last_success = Gauge(
            "pidelta_points_last_success_timestamp_seconds",
            "When the last points sync succeeded (the process start until the first).",
            ["shard"],
            registry=r,
        )
        self.points_interval = Gauge(
            "pidelta_points_interval_seconds",
            "PIDELTA_POINTS_INTERVAL: seconds between two points syncs.",
            ["shard"],
            registry=r,
        )
        self.points_merge_retries = Counter(
            "pidelta_points_merge_retries",
            "pi_points MERGEs computed again after losing a race with another shard.",
            ["shard"],
            registry=r,
        )
        self.digital_states_written = Counter(
            "pidelta_digital_states_written",
            "States written to pi_digital_state_sets (only when the sets changed).",
            ["shard"],
            registry=r,
        )
        self.aggregate_rows = Counter(
            "pidelta_aggregate_rows",
            "pi_summaries and pi_interpolated rows written: new, or rewritten after late data.",
            ["table", "shard", "kind"],
            registry=r,
        )
        self.aggregate_requests = Counter(
            "pidelta_aggregate_requests",
            "PI requests of the summary and grid cycles.",
            ["table", "shard"],
            registry=r,
        )
        self.aggregate_refused = Counter(
            "pidelta_aggregate_refused_ranges",
            "(tag, range)s PI refused for summaries or the grid, kept to read again.",
            ["table", "shard"],
            registry=r,
        )
        self.aggregate_recovered = Counter(
            "pidelta_aggregate_recovered_ranges",
            "Refused ranges read again and written once PI answered.",
            ["table", "shard"],
            registry=r,
        )
        self.aggregate_pending = Gauge(
            "pidelta_aggregate_pending_ranges",
            "Refused ranges of the shard's tags still waiting for PI.",
            ["table", "shard"],
            registry=r,
        )
        self.aggregate_oldest_pending = Gauge(
            "pidelta_aggregate_oldest_pending_seconds",
            "Age of the oldest refused range still pending (0: none).",
            ["table", "shard"],
            registry=r,
        )
        self.aggregate_last_success = Gauge(
            "pidelta_aggregate_last_success_timestamp_seconds",
            "When the last summary or grid cycle succeeded (the process start until the first).",
            ["table", "shard"],
            registry=r,
        )
        self.build_info = Gauge(
            "pidelta_build_info", "Always 1; the version label.", ["version"], registry=r
        )
        self.build_info.labels(version=version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsObserver:
    """The core's `workers.observe.Observer`, feeding the Prometheus catalog."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_request(self, endpoint: str, status: str, seconds: float) -> None:
        # A hostile server picks its status codes: an unknown one must not grow the label set.
        label = status if status in _STATUS_LABELS or status.startswith("error:") else "other"
        self.metrics.pi_requests.labels(endpoint=endpoint, status=label).inc()
        self.metrics.pi_request_duration.labels(endpoint=endpoint).observe(seconds)

    def on_retry(self, reason: str) -> None:
        self.metrics.pi_retries.labels(reason=reason).inc()

    def tags_owned(self, shard: str, count: int) -> None:
        m = self.metrics
        m.tags_owned.labels(shard=shard).set(count)
        # Counters a shard may not touch for hours start at 0, so rates and alerts on them
        # have a series from the first scrape (not "no data" until the first event).
        for result in VERIFY_RESULTS:
            m.buckets_verified.labels(shard=shard, result=result)
        for action in CHANGE_ACTIONS:
            m.changes_applied.labels(shard=shard, action=action)
        for reason in REREAD_REASONS:
            m.fallback_rereads.labels(shard=shard, reason=reason)
        m.marker_registrations.labels(shard=shard)
        m.marker_expiries.labels(shard=shard)
        m.marker_takeovers.labels(shard=shard)

    def values_read(self, table: str, shard: str, count: int) -> None:
        self.metrics.values_ingested.labels(table=table, shard=shard).inc(count)

    def buffered(self, shard: str, rows: int, oldest_seconds: float) -> None:
        self.metrics.buffered_rows.labels(shard=shard).set(rows)
        self.metrics.oldest_unprocessed.labels(shard=shard).set(oldest_seconds)

    def lag(self, shard: str, seconds: float) -> None:
        self.metrics.lag.labels(shard=shard).set(seconds)

    def error(self, kind: str) -> None:
        self.metrics.errors.labels(kind=kind).inc()

    def quarantined(self, counts: Mapping[str, int]) -> None:
        for reason, n in counts.items():
            self.metrics.quarantined_values.labels(reason=reason).inc(n)

    def changes_applied(self, shard: str, counts: Mapping[str, int]) -> None:
        for action, n in counts.items():
            self.metrics.changes_applied.labels(shard=shard, action=action).inc(n)

    def markers(self, shard: str, event: str, count: int) -> None:
        counters = {
            "registered": self.metrics.marker_registrations,
            "expired": self.metrics.marker_expiries,
            "taken_over": self.metrics.marker_takeovers,
        }
        counters[event].labels(shard=shard).inc(count)

    def fallback_reread(self, shard: str, reason: str, tags: int) -> None:
        self.metrics.fallback_rereads.labels(shard=shard, reason=reason).inc(tags)

    def committed(self, table: str, shard: str, rows: int, seconds: float, version: int) -> None:
        m = self.metrics
        m.commit_duration.labels(table=table).observe(seconds)
        m.commit_rows.labels(table=table).observe(rows)
        m.rows_committed.labels(table=table, shard=shard).inc(rows)
        m.delta_table_version.labels(table=table).set(version)
        m.commit_conflicts.labels(table=table)  # 0 until a race: a rate from the first commit
        m.commit_retries.labels(table=table)

    def verified(self, shard: str, results: Mapping[str, int]) -> None:
        for result, n in results.items():
            self.metrics.buckets_verified.labels(shard=shard, result=result).inc(n)

    def completeness(self, shard: str, share: float, oldest_unverified_seconds: float) -> None:
        self.metrics.verified_share.labels(shard=shard).set(share)
        self.metrics.oldest_unverified.labels(shard=shard).set(oldest_unverified_seconds)

    def commit_conflicts(self, table: str, count: int) -> None:
        self.metrics.commit_conflicts.labels(table=table).inc(count)

    def commit_retried(self, table: str) -> None:
        self.metrics.commit_retries.labels(table=table).inc()

    def points_synced(
        self,
        shard: str,
        served: int,
        changes: Mapping[str, int],
        states: int,
        merge_retries: int,
        seconds: float,
    ) -> None:
        m = self.metrics
        for change, n in changes.items():
            m.points_synced.labels(shard=shard, change=change).inc(n)
        m.points_served.labels(shard=shard).set(served)
        m.points_sync_duration.labels(shard=shard).set(seconds)
        m.points_last_success.labels(shard=shard).set_to_current_time()
        m.points_merge_retries.labels(shard=shard).inc(merge_retries)
        m.digital_states_written.labels(shard=shard).inc(states)

    def aggregate_synced(
        self,
        table: str,
        shard: str,
        rows: Mapping[str, int],
        requests: int,
        refused: Mapping[str, int],
        oldest_pending_seconds: float,
    ) -> None:
        m = self.metrics
        for kind, n in rows.items():
            m.aggregate_rows.labels(table=table, shard=shard, kind=kind).inc(n)
        m.aggregate_requests.labels(table=table, shard=shard).inc(requests)
        m.aggregate_refused.labels(table=table, shard=shard).inc(refused.get("noted", 0))
        m.aggregate_recovered.labels(table=table, shard=shard).inc(refused.get("recovered", 0))
        m.aggregate_pending.labels(table=table, shard=shard).set(refused.get("pending", 0))
        m.aggregate_oldest_pending.labels(table=table, shard=shard).set(oldest_pending_seconds)
        m.aggregate_last_success.labels(table=table, shard=shard).set_to_current_time()


VERIFY_RESULTS = ("equal", "repaired", "failed")
CHANGE_ACTIONS = ("Add", "Update", "Delete")
REREAD_REASONS = ("gap", "updates_off")

PI_FAILING = (
    "PI Web API failing: every request since the previous check failed (no answer, 401, 403, "
    "429 or 5xx)"
)
# Statuses that mean PI did not serve the worker: it cannot make progress while all fail.
_FAILED_STATUSES = frozenset({"401", "403", "429", "other"})


def _failed(status: str) -> bool:
    return status.startswith(("error:", "5")) or status in _FAILED_STATUSES


class _PiTraffic:
    """PI usability judged from the worker's own requests, so probes cost PI nothing.

    Failing when every request since the previous check failed: no HTTP answer (`error:*`:
    refused, reset, timed out), credentials refused (401, 403, a revoked token), throttled
    (429) or a server error (5xx). With no request in between (idle between polls), the
    previous verdict stands.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._counter = metrics.pi_requests
        self._seen = self._counts()
        self._verdict = Readiness(True)

    def _counts(self) -> tuple[float, float]:
        answered = failed = 0.0
        for family in self._counter.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                if _failed(sample.labels["status"]):
                    failed += sample.value
                else:
                    answered += sample.value
        return answered, failed

    def check(self) -> Readiness:
        answered, failed = self._counts()
        new_answered, new_failed = answered - self._seen[0], failed - self._seen[1]
        self._seen = (answered, failed)
        if new_answered:
            self._verdict = Readiness(True)
        elif new_failed:
            self._verdict = Readiness(False, PI_FAILING)
        return self._verdict


async def _always_ready() -> Readiness:
    return Readiness(True)


class MetricsServer:
    """aiohttp app serving the metrics and the health checks on `0.0.0.0:<port>`."""

    def __init__(
        self,
        metrics: Metrics,
        port: int,
        readiness: ReadinessCheck = _always_ready,
        host: str = "0.0.0.0",
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self._pi = _PiTraffic(metrics)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        try:
            answer = await self.readiness()
        except Exception as exc:
            answer = Readiness(False, f"readiness check failed: {type(exc).__name__}")
        if answer.ready:
            answer = self._pi.check()
        if answer.ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready", "reason": answer.reason}, status=503)
