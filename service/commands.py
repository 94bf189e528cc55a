"""One function per `pidelta` command: `(args, settings) -> exit code`.

`service.cli` parses, builds the settings and maps exceptions to exit codes; these
functions only do the work. Long-running modes serve `/metrics`, `/healthz` and `/readyz`
on `settings.metrics_port` while they work.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from service.commands_maintain import run_with_maintenance
from service.metrics import Metrics, MetricsObserver, MetricsServer, Readiness
from service.status import collect_status, format_status, has_tables
from service.version import package_version
from shard_config.jump_hash import JumpHash
from shard_config.plan import compute_plan, format_plan
from workers.errors import CommitAbandoned, ConfigError, RetriesAbandoned, StaleGeneration
from workers.lake.tables import TableStore
from workers.lifecycle import Lifecycle
from workers.pi.client import PIClient
from workers.pi.times import parse_time
from workers.settings import Settings
from workers.timeseries.backfills import backfill_range, iso, record_request
from workers.timeseries.discovery import discover_tags
from workers.timeseries.pipeline import Pipeline
from workers.timeseries.plan import first_checkpoint

log = logging.getLogger("pidelta")

PROGRESS_LOG_SECONDS = 10.0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Continuous worker: poll, write, repeat until SIGTERM/SIGINT, then exit 0.

    AF and event frames sync, and the tables are maintained, on their own schedules beside
    the time series.
    """

    from service.commands_af import run_schedules  # AF code only where it runs
    from service.commands_points import run_schedules as run_points
    from service.commands_verify import verify_in_run

    async def body(pipeline: Pipeline, metrics: Metrics) -> None:
        # The dimensions start a commit age after the time series: a worker (re)starting,
        # dozens at once in a reshard, catches its tags up before it lists PI's points and
        # AF again.
        lifecycle, delay = pipeline.lifecycle, settings.commit_max_age
        schedules = asyncio.create_task(
            _after(delay, lifecycle, lambda: run_schedules(settings, pipeline.client, lifecycle,
                                                           metrics))
        )  # fmt: skip
        points = asyncio.create_task(
            _after(delay, lifecycle, lambda: run_points(settings, pipeline.client,
                                                        pipeline.tags.values, lifecycle, metrics))
        )  # fmt: skip
        verification = asyncio.create_task(verify_in_run(settings, pipeline, metrics))
        try:
            await run_with_maintenance(pipeline)
        finally:
            if not pipeline.lifecycle.stopping:
                schedules.cancel()
                points.cancel()
            verification.cancel()  # a repair is one atomic commit: stopping mid-pass is safe
            await asyncio.gather(schedules, points, verification, return_exceptions=True)

    return asyncio.run(_worker(settings, "run", body))


async def _after(
    seconds: float, lifecycle: Lifecycle, start: Callable[[], Awaitable[None]]
) -> None:
    """`start()` once `seconds` have passed, unless the worker is stopping by then."""
    if not await lifecycle.wait(seconds):
        await start()


def once(args: argparse.Namespace, settings: Settings) -> int:
    """Catch this shard up to now minus the safety lag, then exit 0."""
    from service.commands_af import AfMetricsObserver, sync_once  # AF code only where it runs
    from service.commands_points import sync_once as sync_points_once

    lag = timedelta(seconds=settings.safety_lag)

    async def body(pipeline: Pipeline, metrics: Metrics) -> None:
        await pipeline.catch_up(datetime.now(UTC) - lag)
        await pipeline.flush()
        await pipeline.compact_state()
        observer = AfMetricsObserver(metrics, pipeline.shard)
        await sync_once(settings, pipeline.client, observer)
        await sync_points_once(settings, pipeline.client, pipeline.tags.values(), metrics)
        log.info("once: %s", _summary(pipeline))

    return asyncio.run(_worker(settings, "once", body))


def backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Load [start, end] for this shard; a rerun continues where a crash stopped it.

    The end is capped at now minus the safety lag (`backfills.backfill_range`): the same
    command run after the end has passed loads the rest.
    """
    now = datetime.now(UTC)
    try:
        start = parse_time(args.backfill_start, now)
        end = parse_time(args.backfill_end, now)
    except ValueError as exc:
        raise ConfigError(f"backfill: {exc}") from None
    if end <= start:
        raise ConfigError(f"backfill: --end {args.backfill_end} is not after --start")
    try:
        rng = backfill_range(start, end, now, timedelta(seconds=settings.safety_lag))
    except ConfigError as exc:
        raise ConfigError(f"backfill: {exc}") from None
    ready_at = rng.end + timedelta(seconds=settings.safety_lag)
    later = f"; run the same command again after {iso(ready_at)} to complete it"

    async def body(pipeline: Pipeline, metrics: Metrics) -> None:
        app_id = pipeline.backfill_app_id
        await asyncio.to_thread(record_request, pipeline.sink, app_id, rng, now)
        if rng.capped:
            log.warning(
                "backfill: --end %s is after now minus the safety lag: loading up to %s%s",
                iso(rng.end),
                iso(rng.until),
                later,
            )
        with _Progress(f"backfill {app_id}") as bar:
            await pipeline.backfill(first_checkpoint(rng.start), rng.until, bar.update)
            if not pipeline.lifecycle.stopping:
                bar.update(1.0, 1.0)
        log.info("backfill %s .. %s: %s", iso(rng.start), iso(rng.until), _summary(pipeline))
        if rng.capped and not pipeline.lifecycle.stopping:
            log.warning(
                "backfill: unfinished, loaded up to %s of %s%s", iso(rng.until), iso(rng.end), later
            )

    return asyncio.run(_worker(settings, "backfill", body))


def _summary(pipeline: Pipeline) -> str:
    stats = pipeline.fetch_stats
    return (
        f"{pipeline.rows_written} rows written in {pipeline.batches_done} batches; "
        f"{stats.values} values read in {stats.calls} PI calls ({stats.bytes} bytes)"
    )


def discover(args: argparse.Namespace, settings: Settings) -> int:
    """Tab-separated: name, WebID, point type, units, owning shard."""

    async def listing() -> int:
        async with PIClient(settings) as client:
            tags = await discover_tags(client, settings)
        if not tags:
            nothing_in_scope(settings, "discover")
        owners = JumpHash(settings.shard_count).owners(t.webid for t in tags)
        lines = ["name\twebid\tpoint_type\tunits\tshard"]
        lines.extend(
            f"{t.name}\t{t.webid}\t{t.point_type}\t{t.units}\t{owner}"
            for t, owner in zip(tags, owners.tolist(), strict=True)
        )
        return _print("\n".join(lines))

    return asyncio.run(listing())


def shards_plan(args: argparse.Namespace, settings: Settings) -> int:
    """How the discovered tags spread over `--shards N`, and what moves when N changes."""
    if args.shards < 1:
        raise ConfigError(f"shards plan: --shards must be at least 1, got {args.shards}")

    async def planning() -> int:
        async with PIClient(settings) as client:
            tags = await discover_tags(client, settings)
        return _print(format_plan(compute_plan((t.webid for t in tags), args.shards)))

    return asyncio.run(planning())


def status(args: argparse.Namespace, settings: Settings) -> int:
    """Shards by generation, backfills, tables (`service.status`); exit 1 when the target
    holds no pidelta table (a wrong PIDELTA_TARGET is the usual cause)."""
    report = collect_status(TableStore.from_settings(settings))
    if not has_tables(report):
        log.error("status: no pidelta table at %s; check PIDELTA_TARGET", settings.target)
        return 1
    from service.commands_verify import verification_status

    now = datetime.now(UTC)
    return _print(format_status(report, now) + "\n\n" + verification_status(settings, now))


def nothing_in_scope(settings: Settings, mode: str) -> None:
    """An empty discovery: a warning, and a configuration error for `once` and `backfill`
    (which would otherwise exit 0 having done nothing)."""
    where = f" on data server {settings.pi_data_server}" if settings.pi_data_server else ""
    line = (
        f"no PI point matches PIDELTA_TAG_FILTER={settings.tag_filter!r}{where} "
        f"at {settings.pi_url}"
    )
    if mode in ("once", "backfill"):
        raise ConfigError(f"{mode}: {line}")
    again = "; asked again every PIDELTA_REDISCOVER_INTERVAL" if mode == "run" else ""
    log.warning("%s: %s%s", mode, line, again)


def _print(text: str) -> int:
    """Print a command's output; a closed pipe (`| head`) is not an error."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
    return 0


# ---------------------------------------------------------------------- worker plumbing


async def _worker(
    settings: Settings, mode: str, body: Callable[[Pipeline, Metrics], object]
) -> int:
    """Metrics server, signals, pipeline start-up, the mode's body; exit code."""
    metrics = Metrics(package_version())
    lifecycle = Lifecycle()
    ready = {"ok": False}

    async def readiness() -> Readiness:
        return Readiness(True) if ready["ok"] else Readiness(False, "starting")

    async with _metrics_server(metrics, settings, readiness):
        observer = MetricsObserver(metrics)
        client = PIClient(settings, observer, stop=lifecycle.stop_event)
        with lifecycle.signals():
            async with (
                Pipeline(
                    settings, observer=observer, lifecycle=lifecycle, client=client
                ) as pipeline,
                client,
            ):
                try:
                    await pipeline.prepare(running=mode == "run")
                    if not pipeline.discovered:
                        nothing_in_scope(settings, mode)
                    ready["ok"] = True
                    log.info(
                        "%s: shard %d of %d owns %d tags, app id %s",
                        mode,
                        settings.shard_index,
                        settings.shard_count,
                        len(pipeline.tags),
                        pipeline.backfill_app_id if mode == "backfill" else pipeline.app_id,
                    )
                    await body(pipeline, metrics)  # type: ignore[misc]
                    await pipeline.flush()
                except StaleGeneration as exc:
                    log.info("%s: stopping, %s", mode, exc)
                except CommitAbandoned as exc:
                    log.info("%s: stopping; %s left to the next start", mode, exc)
                except RetriesAbandoned as exc:
                    log.info("%s: %s; flushing what is complete", mode, exc)
                    await pipeline.flush()
    if lifecycle.stopping:
        log.info("%s: stopped cleanly (%s)", mode, lifecycle.reason)
    return 0


@asynccontextmanager
async def _metrics_server(
    metrics: Metrics, settings: Settings, readiness: Callable[[], object]
) -> AsyncIterator[None]:
    host, port = settings.metrics_host, settings.metrics_port
    server = MetricsServer(metrics, port, readiness, host=host)  # type: ignore[arg-type]
    try:
        bound = await server.start()
        log.info("metrics on http://%s:%d/metrics", host, bound)
    except OSError as exc:
        log.warning("metrics server not started on %s:%d: %s", host, port, exc)
    try:
        yield
    finally:
        await server.stop()


class _Progress:
    """A tqdm bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._last_log = 0.0
        self._finished = False

    def __enter__(self) -> _Progress:
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=100.0, desc=self.label, unit="%", bar_format=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, done: float, total: float) -> None:
        # Rounded down, so only a finished range prints 100.0 %.
        share = math.floor(1000.0 * min(1.0, done / total)) / 10.0 if total else 100.0
        if self._bar is not None:
            self._bar.n = round(share, 2)
            self._bar.refresh()
            return
        now = time.monotonic()
        finished = share >= 100.0
        if finished and self._finished:
            return  # the loop's last round and the command's end both report 100 %
        if now - self._last_log >= PROGRESS_LOG_SECONDS or finished:
            self._last_log = now
            self._finished = finished
            log.info("%s: %.1f%% done", self.label, share)
