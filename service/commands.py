"""One function per `pidelta` command: `(args, settings) -> exit code`.

`service.cli` parses, builds the settings and maps exceptions to exit codes; these
functions only do the work. Long-running modes serve `/metrics`, `/healthz` and `/readyz`
on `settings.metrics_port` while they work.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from service.commands_maintain import run_with_maintenance
from service.metrics import Metrics, MetricsObserver, MetricsServer, Readiness
from shard_config.jump_hash import JumpHash
from shard_config.plan import compute_plan, format_plan
from workers.errors import ConfigError, RetriesAbandoned, StaleGeneration
from workers.lake.tables import ALL_TABLES, CHECKPOINTS, TableStore
from workers.lifecycle import Lifecycle
from workers.pi.client import PIClient
from workers.pi.times import parse_time
from workers.settings import Settings
from workers.timeseries.checkpoints import BACKFILL_PREFIX, LIVE_PREFIX
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
    from service.commands_verify import verify_in_run

    async def body(pipeline: Pipeline, metrics: Metrics) -> None:
        schedules = asyncio.create_task(
            run_schedules(settings, pipeline.client, pipeline.lifecycle, metrics)
        )
        verification = asyncio.create_task(verify_in_run(settings, pipeline, metrics))
        try:
            await run_with_maintenance(pipeline)
        finally:
            if not pipeline.lifecycle.stopping:
                schedules.cancel()
            verification.cancel()  # a repair is one atomic commit: stopping mid-pass is safe
            await asyncio.gather(schedules, verification, return_exceptions=True)

    return asyncio.run(_worker(settings, "run", body))


def once(args: argparse.Namespace, settings: Settings) -> int:
    """Catch this shard up to now minus the safety lag, then exit 0."""
    from service.commands_af import AfMetricsObserver, sync_once  # AF code only where it runs

    lag = timedelta(seconds=settings.safety_lag)

    async def body(pipeline: Pipeline, metrics: Metrics) -> None:
        await pipeline.catch_up(datetime.now(UTC) - lag)
        await pipeline.flush()
        await pipeline.compact_state()
        observer = AfMetricsObserver(metrics, pipeline.shard)
        await sync_once(settings, pipeline.client, observer)
        log.info("once: %s", _summary(pipeline))

    return asyncio.run(_worker(settings, "once", body))


def backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Load [start, end] for this shard; a rerun continues where a crash stopped it."""
    now = datetime.now(UTC)
    try:
        start = parse_time(args.backfill_start, now)
        end = parse_time(args.backfill_end, now)
    except ValueError as exc:
        raise ConfigError(f"backfill: {exc}") from None
    if end <= start:
        raise ConfigError(f"backfill: --end {args.backfill_end} is not after --start")

    async def body(pipeline: Pipeline, metrics: Metrics) -> None:
        with _Progress(f"backfill shard {settings.shard_index}/{settings.shard_count}") as bar:
            await pipeline.backfill(first_checkpoint(start), end, bar.update)
            if not pipeline.lifecycle.stopping:
                bar.update(1.0, 1.0)
        log.info("backfill %s .. %s: %s", start.isoformat(), end.isoformat(), _summary(pipeline))

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
    """Per-shard lag and last commit, rows and files per table, from the tables themselves."""
    from service.commands_verify import verification_status

    now = datetime.now(UTC)
    report = format_status(collect_status(settings), now)
    return _print(report + "\n\n" + verification_status(settings, now))


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
    metrics = Metrics(_version())
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
                    await pipeline.prepare(wait_for_pi=mode == "run")
                    ready["ok"] = True
                    log.info(
                        "%s: shard %d of %d owns %d tags, app id %s",
                        mode,
                        settings.shard_index,
                        settings.shard_count,
                        len(pipeline.tags),
                        pipeline.app_id,
                    )
                    await body(pipeline, metrics)  # type: ignore[misc]
                    await pipeline.flush()
                except StaleGeneration as exc:
                    log.info("%s: stopping, %s", mode, exc)
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pidelta")
    except PackageNotFoundError:
        return "0.0.0"


class _Progress:
    """A tqdm bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._last_log = 0.0

    def __enter__(self) -> _Progress:
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=100.0, desc=self.label, unit="%", bar_format=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, done: float, total: float) -> None:
        share = 100.0 * min(1.0, done / total) if total else 100.0
        if self._bar is not None:
            self._bar.n = round(share, 2)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_SECONDS or share >= 100.0:
            self._last_log = now
            log.info("%s: %.1f%% done", self.label, share)


# ---------------------------------------------------------------------- status


def collect_status(settings: Settings) -> dict[str, object]:
    """Everything `status` prints, read from Delta metadata and the checkpoints table."""
    store = TableStore.from_settings(settings)
    tables: list[dict[str, object]] = []
    for name in ALL_TABLES:
        if not DeltaTable.is_deltatable(store.uri(name), storage_options=store.options(name)):
            tables.append({"table": name, "exists": False})
            continue
        dt = DeltaTable(store.uri(name), storage_options=store.options(name))
        actions = pl.from_arrow(pa.table(dt.get_add_actions(flatten=True)))
        rows = int(actions["num_records"].sum()) if "num_records" in actions.columns else 0
        history = dt.history(1)
        last = history[0].get("timestamp") if history else None
        tables.append(
            {
                "table": name,
                "exists": True,
                "version": dt.version(),
                "files": actions.height,
                "rows": rows,
                "last_commit": _from_ms(last),
            }
        )
    shards: list[dict[str, object]] = []
    if DeltaTable.is_deltatable(store.uri(CHECKPOINTS), storage_options=store.options(CHECKPOINTS)):
        dt = DeltaTable(store.uri(CHECKPOINTS), storage_options=store.options(CHECKPOINTS))
        frame = pl.from_arrow(
            dt.to_pyarrow_table(columns=["app_id", "tag_webid", "checkpoint", "committed_at"])
        ).filter(
            pl.col("app_id").str.starts_with(LIVE_PREFIX)
            | pl.col("app_id").str.starts_with(BACKFILL_PREFIX)
        )
        if frame.height:
            per_tag = frame.group_by(["app_id", "tag_webid"]).agg(
                pl.col("checkpoint").max(), pl.col("committed_at").max()
            )
            per_app = (
                per_tag.group_by("app_id")
                .agg(
                    pl.len().alias("tags"),
                    pl.col("checkpoint").min().alias("oldest"),
                    pl.col("checkpoint").max().alias("newest"),
                    pl.col("committed_at").max().alias("last_commit"),
                )
                .sort("app_id")
            )
            shards = per_app.to_dicts()
    return {"tables": tables, "shards": shards}


def _from_ms(ms: object) -> datetime | None:
    if not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


def format_status(report: dict[str, object], now: datetime) -> str:
    lines = ["shard\ttags\tlag_seconds\toldest_checkpoint\tlast_commit"]
    for shard in report["shards"]:  # type: ignore[attr-defined]
        oldest = shard["oldest"]
        lag = (now - oldest).total_seconds() if oldest is not None else float("nan")
        lines.append(
            f"{shard['app_id']}\t{shard['tags']}\t{lag:.1f}\t{_iso(oldest)}\t"
            f"{_iso(shard['last_commit'])}"
        )
    lines.append("")
    lines.append("table\trows\tfiles\tversion\tlast_commit")
    for table in report["tables"]:  # type: ignore[attr-defined]
        if not table["exists"]:
            lines.append(f"{table['table']}\t-\t-\t-\tnot created")
            continue
        lines.append(
            f"{table['table']}\t{table['rows']}\t{table['files']}\t{table['version']}\t"
            f"{_iso(table['last_commit'])}"
        )
    return "\n".join(lines)


def _iso(moment: object) -> str:
    if not isinstance(moment, datetime):
        return "-"
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
