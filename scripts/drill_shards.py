"""The shard drill (`make drill-shards`): many `pidelta run` workers on one mock-pi and one
target; a quarter of them killed with SIGKILL at seeded random moments and restarted; one
`pidelta maintain` beside them; a live reshard from N to N+4; then every worker stopped with
SIGTERM, the table checked against the mock's ground truth, and the figures printed.

Environment: DRILL_SHARDS (32), DRILL_TAGS_PER_SHARD (200), DRILL_MINUTES (6),
DRILL_TARGET (`local`, or `s3` on a moto server), DRILL_SEED (1), DRILL_DIR (logs and the
local lake; a fresh temporary folder by default), DRILL_COMMIT_MAX_AGE (30, the default
setting), DRILL_UPDATES (true, as `run`'s default: stream updates; false: recorded
re-reads), DRILL_EDITS (false; true: mock-pi edits 2% and deletes 1% of the values 60 s
after their timestamp and sends a tenth of the tags 90 s late, and the table is compared
with PI's archive as of each tag's checkpoint). The state tables' rows per app id are
sampled twelve times over the run, so that a long run (DRILL_MINUTES=60) shows whether
they stay bounded. Exit 0 when no value is lost, doubled or changed and every worker
exited 0 (on SIGTERM, or on seeing the reshard), 1 otherwise. Run from the repository
root: `python -m scripts.drill_shards`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from pyarrow import fs

from scripts import drill_figures as figures
from scripts import drill_truth
from tests.conftest import MockServer, free_port, start_mock
from tests.e2e.helpers import KEY, Worker, iso, start_worker, truth_for
from tests.e2e.helpers import worker_env as base_env
from tests.storage.conftest import MOTO_KEYS, S3, _stop, _wait_port, start_moto

SCRAPE_EVERY = 10.0
SAMPLE_EVERY = 3.0
STOP_TIMEOUT = 180.0
STATE_SAMPLES = 12
EDITS = {
    "edit_fraction": 0.02,
    "delete_fraction": 0.01,
    "change_seconds": 60,
    "late_fraction": 0.1,
    "late_seconds": 90,
}
STATE_TABLES = ("_pidelta_batches", "_pidelta_checkpoints", "_pidelta_markers")


@dataclass(frozen=True)
class DrillConfig:
    shards: int = 32
    tags_per_shard: int = 200
    minutes: float = 6.0
    target: str = "local"
    seed: int = 1
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="drill-shards-")))
    commit_max_age: float = 30.0
    updates: bool = True
    edits: bool = False

    @classmethod
    def from_env(cls) -> DrillConfig:
        env = os.environ
        return cls(
            shards=int(env.get("DRILL_SHARDS", 32)),
            tags_per_shard=int(env.get("DRILL_TAGS_PER_SHARD", 200)),
            minutes=float(env.get("DRILL_MINUTES", 6)),
            target=env.get("DRILL_TARGET", "local"),
            seed=int(env.get("DRILL_SEED", 1)),
            workdir=Path(env["DRILL_DIR"]) if env.get("DRILL_DIR") else cls().workdir,
            commit_max_age=float(env.get("DRILL_COMMIT_MAX_AGE", 30)),
            updates=env.get("DRILL_UPDATES", "true").lower() == "true",
            edits=env.get("DRILL_EDITS", "false").lower() == "true",
        )


@dataclass
class Incarnation:
    """One worker process of one shard of one generation."""

    shard: int
    count: int
    worker: Worker
    port: int
    usage: figures.Usage = field(default_factory=figures.Usage)
    scraped: dict[tuple[str, str], float] = field(default_factory=dict)
    killed: bool = False
    exit_code: int | None = None

    @property
    def label(self) -> str:
        return f"{self.shard}-of-{self.count}"


@dataclass
class DrillResult:
    tags: int
    rows: int
    found: drill_truth.Comparison
    unchecked_tags: int
    bad_exits: list[str]
    maintain_exit: int | None
    report: list[str]

    @property
    def ok(self) -> bool:
        return (
            self.found.equal
            and self.unchecked_tags == 0
            and not self.bad_exits
            and self.maintain_exit == 0
        )


class Drill:
    """One run of the drill; `run()` does it all and returns the result."""

    def __init__(self, config: DrillConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.workers: list[Incarnation] = []
        self.moto: subprocess.Popen[bytes] | None = None
        self.options: dict[str, str] = {}
        self.events: list[str] = []
        self.maintain: subprocess.Popen[bytes] | None = None
        self.maintain_exit: int | None = None
        self.target = ""
        self.arrivals: pl.DataFrame | None = None  # values the mock held back (DRILL_EDITS)

    def run(self) -> DrillResult:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        changes = EDITS if cfg.edits else {}
        mock = start_mock(
            tag_count=cfg.shards * cfg.tags_per_shard, seed=cfg.seed, rate_limit=0, **changes
        )
        try:
            target, env = self._target(mock)
            self.target = target
            origin = datetime.now(UTC).replace(microsecond=0)
            env = {**env, "PIDELTA_START": iso(origin)}
            began = time.monotonic()
            reshard_at = self._drive(env, began)
            self._stop_all()
            result = self._check(mock, target, origin, began, reshard_at)
            if not result.ok and self.moto is not None:
                result.report.append(self._keep_logs(target))
            return result
        finally:
            for inc in self.workers:
                if inc.worker.alive():
                    inc.worker.kill9()
            if self.maintain is not None and self.maintain.poll() is None:
                self.maintain.kill()
                self.maintain.wait(30)
            mock.stop()
            if self.moto is not None:
                _stop(self.moto)

    def _target(self, mock: MockServer) -> tuple[str, dict[str, str]]:
        """The target URI and the workers' environment (a moto server for `s3`)."""
        cfg = self.config
        settings: dict[str, object] = {
            "commit_max_age": cfg.commit_max_age,
            "updates": str(cfg.updates).lower(),
        }
        if cfg.target == "local":
            target = str(cfg.workdir / "lake")
            return target, base_env(mock, Path(target), **settings)
        if cfg.target != "s3":
            raise SystemExit(f"DRILL_TARGET must be local or s3, not {cfg.target!r}")
        port = free_port()
        log = (cfg.workdir / "moto.log").open("wb")
        self.moto = start_moto(port, log)
        log.close()
        _wait_port(port, self.moto, "moto server")
        s3 = S3(f"http://127.0.0.1:{port}", "lake")
        boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            region_name="us-east-1",
            aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket="lake")
        self.options = s3.options()
        env = {**base_env(mock, Path("unused"), **settings), **s3.env("drill")}
        return s3.root("drill"), env

    def _start(self, env: dict[str, str], shard: int, count: int) -> Incarnation:
        port = free_port()
        worker = start_worker(
            "run",
            env={
                **env,
                "PIDELTA_SHARD_INDEX": str(shard),
                "PIDELTA_SHARD_COUNT": str(count),
                "PIDELTA_METRICS_PORT": str(port),
            },
            log=self.config.workdir / f"shard-{shard}-of-{count}.log",
        )
        inc = Incarnation(shard, count, worker, port)
        self.workers.append(inc)
        return inc

    def _drive(self, env: dict[str, str], began: float) -> float:
        """Phase one with kills and a maintenance pass, the reshard, phase two; returns the
        reshard moment (monotonic)."""
        cfg = self.config
        total = cfg.minutes * 60
        n = cfg.shards
        first = [self._start(env, i, n) for i in range(n)]
        victims = self.rng.sample(range(n), max(1, n // 4))
        kills = sorted((self.rng.uniform(0.15 * total, 0.45 * total), s) for s in victims)
        maintain_at, reshard_at = 0.4 * total, 0.6 * total
        resharded = 0
        last_scrape = last_sample = last_state = 0.0
        while (now := time.monotonic() - began) < total:
            while kills and kills[0][0] <= now:
                _, shard = kills.pop(0)
                old = next(w for w in reversed(first) if w.shard == shard)
                self._scrape(old)
                old.worker.kill9()
                old.killed, old.exit_code = True, old.worker.process.returncode
                first.append(self._start(env, shard, n))
                self.events.append(f"{now:6.1f} s  kill -9 shard {old.label}, restarted")
            if self.maintain is None and now >= maintain_at:
                self.maintain = subprocess.Popen(
                    [sys.executable, "-m", "service", "maintain"],
                    env={**env, "PIDELTA_METRICS_PORT": "0"},
                    stdout=(cfg.workdir / "maintain.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
                self.events.append(f"{now:6.1f} s  pidelta maintain started")
            if now >= reshard_at and resharded < n + 4:
                # One new worker per tick, as a rollout starts pods: the old ones ingest
                # until every new worker has joined the new count (docs/DESIGN.md).
                if resharded == 0:
                    self.events.append(f"{now:6.1f} s  reshard {n} -> {n + 4}: starting workers")
                self._start(env, resharded, n + 4)
                resharded += 1
            if now - last_sample >= SAMPLE_EVERY:
                self._sample()
                last_sample = now
            if now - last_state >= total / STATE_SAMPLES:
                self.events.append(f"{now:6.1f} s  {self._state_sample()}")
                last_state = now
            if now - last_scrape >= SCRAPE_EVERY:
                for inc in self.workers:
                    if inc.worker.alive():
                        self._scrape(inc)
                last_scrape = now
            self._reap(began)
            time.sleep(0.5)
        self._wait_maintain(began)
        return began + reshard_at

    def _wait_maintain(self, began: float) -> None:
        """The maintenance pass ends beside the running workers, or counts as failed."""
        if self.maintain is None:
            return
        try:
            self.maintain_exit = self.maintain.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.maintain.kill()
            self.maintain.wait(30)
        took = time.monotonic() - began
        what = (
            f"exited {self.maintain_exit}"
            if self.maintain_exit is not None
            else f"killed: not done {STOP_TIMEOUT:g} s after the end"
        )
        self.events.append(f"{took:6.1f} s  pidelta maintain {what}")

    def _sample(self) -> None:
        for inc in self.workers:
            if inc.worker.alive():
                figures.sample_proc(inc.worker.process.pid, inc.usage)

    def _scrape(self, inc: Incarnation) -> None:
        scraped = figures.scrape(inc.port)
        if scraped is not None:
            inc.scraped = scraped

    def _reap(self, began: float) -> None:
        """Record the exits of workers that stopped on their own (the reshard's old ones)."""
        for inc in self.workers:
            if inc.exit_code is None and not inc.worker.alive():
                inc.exit_code = inc.worker.process.returncode
                self.events.append(
                    f"{time.monotonic() - began:6.1f} s  shard {inc.label} exited {inc.exit_code}"
                )

    def _stop_all(self) -> None:
        """SIGTERM every live worker at once (after a last sample and scrape), then wait."""
        live = [inc for inc in self.workers if inc.exit_code is None and inc.worker.alive()]
        self._sample()
        for inc in live:
            self._scrape(inc)
            inc.worker.process.terminate()
        for inc in live:
            try:
                inc.exit_code = inc.worker.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                inc.worker.kill9()
                inc.exit_code = inc.worker.process.returncode
        for inc in self.workers:
            if inc.exit_code is None:
                inc.exit_code = inc.worker.process.wait(STOP_TIMEOUT)

    def _keep_logs(self, target: str) -> str:
        """Copy the Delta logs out of moto (in memory, gone when it stops) for a post-mortem."""
        filesystem, root = figures.filesystem(target, self.options)
        for name in figures.table_names(filesystem, root):
            kept = self.config.workdir / "delta_logs" / name
            kept.mkdir(parents=True, exist_ok=True)
            fs.copy_files(
                f"{root}/{name}/_delta_log",
                str(kept),
                source_filesystem=filesystem,
                destination_filesystem=fs.LocalFileSystem(),
            )
        return f"Delta logs kept in {self.config.workdir / 'delta_logs'}"

    def _table(self, target: str, name: str) -> DeltaTable:
        return DeltaTable(f"{target.rstrip('/')}/{name}", storage_options=self.options or None)

    def _check(
        self, mock: MockServer, target: str, origin: datetime, began: float, reshard_at: float
    ) -> DrillResult:
        cfg = self.config
        tags = cfg.shards * cfg.tags_per_shard
        cps = (
            pl.from_arrow(self._table(target, "_pidelta_checkpoints").to_pyarrow_table())
            .filter(pl.col("app_id").str.starts_with("pidelta-ts-"))
            .group_by("tag_webid")
            .agg(pl.col("checkpoint").max())
        )
        ranges = dict(zip(cps["tag_webid"].to_list(), cps["checkpoint"].to_list(), strict=True))
        table = self._table(target, "pi_timeseries").to_pyarrow_table()
        spans = {w: (origin, c) for w, c in ranges.items()}
        truth = truth_for(mock)
        found = drill_truth.compare(table, truth, spans, changes=cfg.edits)
        if cfg.edits:
            self.arrivals = drill_truth.late_arrivals(truth, spans)
        if found.doubled:
            filesystem, root = figures.filesystem(target, self.options)
            log_ = figures.read_log(filesystem, root, "pi_timeseries")
            twice = found.twice.select(KEY)
            print("doubled keys were added by:", flush=True)
            print("\n".join(figures.doubled_origins(filesystem, root, log_, twice)), flush=True)
        bad = [
            f"{inc.label} exited {inc.exit_code}"
            for inc in self.workers
            if not inc.killed and inc.exit_code != 0
        ]
        wall_start = time.time() - (time.monotonic() - began)
        result = DrillResult(
            tags=tags,
            rows=table.num_rows,
            found=found,
            unchecked_tags=tags - len(ranges),
            bad_exits=bad,
            maintain_exit=self.maintain_exit,
            report=[],
        )
        result.report = self._report(
            target, result, origin, int(wall_start * 1000), int((reshard_at - began) * 1000)
        )
        return result

    def _report(
        self, target: str, result: DrillResult, origin: datetime, start_ms: int, reshard_ms: int
    ) -> list[str]:
        cfg = self.config
        found = result.found
        filesystem, root = figures.filesystem(target, self.options)
        names = figures.table_names(filesystem, root)
        logs = {name: figures.read_log(filesystem, root, name) for name in names}
        series = logs["pi_timeseries"]
        first_gen = f"-of-{cfg.shards}"
        firsts: dict[str, int] = {}
        for commit in series.commits:
            if commit.shard and commit.shard.endswith(first_gen):
                firsts.setdefault(commit.shard, commit.millis)
        steady_from = max(firsts.values()) if len(firsts) == cfg.shards else start_ms
        steady_to = start_ms + reshard_ms
        steady_min = (steady_to - steady_from) / 60_000
        lines = [
            f"shard drill: {cfg.shards} shards x {cfg.tags_per_shard} tags, {cfg.minutes:g} min, "
            f"target {cfg.target} ({target}), seed {cfg.seed}, "
            f"commit_max_age {cfg.commit_max_age:g} s; logs in {cfg.workdir}",
            *self.events,
            "",
            f"ground truth: {result.tags} tags ({result.unchecked_tags} without a checkpoint), "
            f"{result.rows} rows; lost {found.lost}, doubled {found.doubled}, "
            f"extra {found.extra}, changed {found.changed}; of these, {found.ahead} ahead of "
            f"their checkpoint (as PI holds them now), {found.to_verify} changed by PI while "
            "no marker covered them (left to verify)",
            "",
            f"commits (steady window: all {cfg.shards} first-generation shards committing, "
            f"until the reshard: {steady_min:.2f} min; whole run in brackets)",
            f"{'table':<28}{'commits':>9}{'/min':>8}{'/shard/min':>12}{'max/shard':>11}"
            f"{'conflicts':>11}{'retries':>9}{'s/commit':>10}{'log files':>11}{'rows':>10}",
        ]
        scraped = figures.Scraped()
        for inc in self.workers:
            scraped.add(inc.scraped)
        end_ms = max((c.millis for log in logs.values() for c in log.commits), default=start_ms)
        for name, log in logs.items():
            n, per_min, by_shard = figures.commit_rates(log, steady_from, steady_to)
            total = figures.commit_rates(log, start_ms, end_ms + 1)[0]
            shard_rates = [v for k, v in by_shard.items() if k.endswith(first_gen)]
            mean = sum(shard_rates) / cfg.shards
            conflicts = int(scraped.of(figures.CONFLICTS, name))
            retries = int(scraped.of(figures.RETRIES, name))
            commits = scraped.of(figures.COMMITS, name)
            cost = scraped.of(figures.COMMIT_SECONDS, name) / commits if commits else 0.0
            rows = self._table(target, name).to_pyarrow_dataset().count_rows()
            lines.append(
                f"{name:<28}{n:>5} [{total:>3}]{per_min:>7.1f} {mean:>10.2f} "
                f"{max(shard_rates, default=0.0):>10.2f} {conflicts:>10} {retries:>8} "
                f"{cost:>9.2f} {log.log_files:>10} {rows:>9}"
            )
        requests = scraped.of(figures.PI_REQUESTS)
        run_s = max((end_ms - start_ms) / 1000, 1e-9)
        lines.append(
            f"PI requests (scraped, so without those since a killed worker's last scrape): "
            f"{requests:.0f}, {requests / run_s:.1f}/s over {run_s:.0f} s, mean "
            f"{scraped.of(figures.PI_SECONDS) / requests if requests else 0.0:.3f} s each"
        )
        lines += self._state_rows(target, names)
        since = _micros(origin + timedelta(minutes=1))
        arrived = figures.freshness(filesystem, root, series, since, self.arrivals)
        fresh = arrived["seconds"].to_numpy()
        lines += [
            "",
            f"freshness of pi_timeseries (arrival in PI -> commit time of the version that first "
            f"added the value, values stamped 1 min after the start on): {fresh.size} values, "
            f"p50 {figures.percentile(fresh, 50):.1f} s, p99 {figures.percentile(fresh, 99):.1f} s,"
            f" max {figures.percentile(fresh, 100):.1f} s",
            _windows(arrived, steady_to * 1000),
            "",
            f"{'worker':<12}{'cpu s':>8}{'peak RSS MB':>13}  exit",
        ]
        for inc in self.workers:
            how = "kill -9 (drill)" if inc.killed else str(inc.exit_code)
            lines.append(
                f"{inc.label:<12}{inc.usage.cpu_seconds:>8.1f}{inc.usage.peak_rss_mb:>13.0f}  {how}"
            )
        cpu = [i.usage.cpu_seconds for i in self.workers]
        rss = [i.usage.peak_rss_mb for i in self.workers]
        lines += [
            f"workers: {len(self.workers)}; cpu s mean {sum(cpu) / len(cpu):.1f}, max "
            f"{max(cpu):.1f}; peak RSS MB mean {sum(rss) / len(rss):.0f}, max {max(rss):.0f}",
            f"exit 0 on SIGTERM or reshard: {'all' if not result.bad_exits else result.bad_exits}",
            f"pidelta maintain exit: {result.maintain_exit}",
            f"RESULT: {'PASS' if result.ok else 'FAIL'}",
        ]
        return lines

    def _rows_per_app_id(self, name: str) -> tuple[int, float] | None:
        """(max, mean) rows per app id of a state table; None when it has no app id or rows."""
        table = self._table(self.target, name)
        if "app_id" not in table.schema().to_arrow().names:
            return None
        per = pl.from_arrow(table.to_pyarrow_table(columns=["app_id"]))["app_id"].value_counts()
        return (int(per["count"].max()), float(per["count"].mean())) if per.height else None

    def _state_rows(self, target: str, names: list[str]) -> list[str]:
        """Rows per shard (app id) of the state tables that carry one."""
        lines = ["", "state tables: rows per app id (max / mean)"]
        for name in names:
            if name.startswith("_pidelta_") and (rows := self._rows_per_app_id(name)):
                lines.append(f"  {name:<26} {rows[0]:>8} / {rows[1]:.0f}")
        return lines

    def _state_sample(self) -> str:
        """One line of the state tables' rows per app id (max / mean), while the run goes on."""
        parts = []
        for name in STATE_TABLES:
            try:
                rows = self._rows_per_app_id(name)
            except (DeltaError, OSError) as exc:  # not created yet, or racing a clean-up
                parts.append(f"{name} unread ({type(exc).__name__})")
                continue
            if rows:
                parts.append(f"{name} {rows[0]} / {rows[1]:.0f}")
        return "state rows per app id (max / mean): " + ", ".join(parts)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _windows(arrived: pl.DataFrame, reshard_us: int, width_s: int = 30) -> str:
    """p99 freshness by arrival in `width_s` windows, from a minute before the reshard began
    to three after, and over all values before and from it: where the tail comes from."""
    offset = ((pl.col("us") - reshard_us) / 1e6 / width_s).floor().cast(pl.Int64) * width_s
    tail = (
        arrived.with_columns(offset.alias("from_s"))
        .filter(pl.col("from_s").is_between(-60, 180))
        .group_by("from_s")
        .agg(pl.col("seconds").quantile(0.99, "linear").alias("p99"))
        .sort("from_s")
    )
    before = arrived.filter(pl.col("us") < reshard_us)["seconds"].to_numpy()
    after = arrived.filter(pl.col("us") >= reshard_us)["seconds"].to_numpy()
    spans = ", ".join(f"{w:+d} s {p:.0f}" for w, p in tail.iter_rows())
    return (
        f"  p99 arriving before the reshard began {figures.percentile(before, 99):.1f} s, from "
        f"it on {figures.percentile(after, 99):.1f} s; by {width_s} s window from it: {spans}"
    )


def main() -> int:
    result = Drill(DrillConfig.from_env()).run()
    print("\n".join(result.report))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
