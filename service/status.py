"""`pidelta status`: what the tables say about each shard, backfill and table.

Read from the tables only (no PI call), so it answers for a worker that is down. Live shards
are grouped by shard generation (`_pidelta_shards`): the current one lists every shard it
should have, flagging one that never committed (missing) or has not for a while (stale);
app ids of replaced generations are listed without a lag, since their tags moved. Backfills
show progress against the range asked for (`_pidelta_backfills`), not a lag. Each block is
a pair of functions (collect, format) so that another block slots in beside them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from workers.lake.schemas import BACKFILLS, CHECKPOINTS, SHARDS
from workers.lake.tables import ALL_TABLES, TableStore
from workers.timeseries.checkpoints import BACKFILL_PREFIX, LIVE_PREFIX

# A live shard with no commit for this long is flagged stale (the PideltaNoCommit alert
# looks at 15 minutes of commits).
STALE_AFTER = timedelta(minutes=15)
_APP_ID = re.compile(r"^pidelta-(?:ts|bf)-(\d+)-of-(\d+)$")

Report = dict[str, object]


def collect_status(store: TableStore) -> Report:
    """Everything `status` prints: tables, generations, live shards, backfills."""
    tables = [_table(store, name) for name in ALL_TABLES]
    checkpoints = _read(store, CHECKPOINTS, ["app_id", "tag_webid", "checkpoint", "committed_at"])
    per_app = _per_app(checkpoints)
    # A generation's first row announces it; the rows after are its workers joining.
    generations = (
        _read(store, SHARDS, ["generation", "shard_count", "announced_at"])
        .sort("generation", "announced_at")
        .group_by("generation", maintain_order=True)
        .first()
    )
    return {
        "tables": tables,
        "generations": generations.to_dicts(),
        "shards": _live(per_app, generations),
        "backfills": _backfills(store, checkpoints),
    }


def format_status(report: Report, now: datetime) -> str:
    """The blocks of `status`, separated by an empty line."""
    return "\n\n".join(
        block
        for block in (
            format_shards(report, now),
            format_backfills(report),
            format_tables(report),
        )
        if block
    )


def has_tables(report: Report) -> bool:
    return any(t["exists"] for t in report["tables"])  # type: ignore[attr-defined,index]


# ---------------------------------------------------------------------- tables


def _table(store: TableStore, name: str) -> dict[str, object]:
    if not DeltaTable.is_deltatable(store.uri(name), storage_options=store.options(name)):
        return {"table": name, "exists": False}
    dt = DeltaTable(store.uri(name), storage_options=store.options(name))
    actions = pl.from_arrow(pa.table(dt.get_add_actions(flatten=True)))
    rows = int(actions["num_records"].sum()) if "num_records" in actions.columns else 0
    history = dt.history(1)
    last = history[0].get("timestamp") if history else None
    return {
        "table": name,
        "exists": True,
        "version": dt.version(),
        "files": actions.height,
        "rows": rows,
        "last_commit": _from_ms(last),
    }


def format_tables(report: Report) -> str:
    lines = ["table\trows\tfiles\tversion\tlast_commit"]
    for table in report["tables"]:  # type: ignore[attr-defined]
        if not table["exists"]:
            lines.append(f"{table['table']}\t-\t-\t-\tnot created")
            continue
        lines.append(
            f"{table['table']}\t{table['rows']}\t{table['files']}\t{table['version']}\t"
            f"{_iso(table['last_commit'])}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- live shards


def _per_app(checkpoints: pl.DataFrame) -> pl.DataFrame:
    """Per app id: tags, oldest and newest checkpoint, last commit (latest row per tag)."""
    per_tag = checkpoints.group_by(["app_id", "tag_webid"]).agg(
        pl.col("checkpoint").max(), pl.col("committed_at").max()
    )
    return per_tag.group_by("app_id").agg(
        pl.len().alias("tags"),
        pl.col("checkpoint").min().alias("oldest"),
        pl.col("checkpoint").max().alias("newest"),
        pl.col("committed_at").max().alias("last_commit"),
    )


def _live(per_app: pl.DataFrame, generations: pl.DataFrame) -> list[dict[str, object]]:
    """Every live app id with its shard, count and generation, plus the shards of the
    current generation that never committed (`missing`)."""
    rows = {
        r["app_id"]: r
        for r in per_app.filter(pl.col("app_id").str.starts_with(LIVE_PREFIX)).to_dicts()
    }
    counts = dict(zip(generations["shard_count"], generations["generation"], strict=True))
    current = generations["shard_count"][-1] if generations.height else None
    if current is None and rows:
        current = max(_shard_of(a)[1] for a in rows)
    shards: list[dict[str, object]] = []
    if current is not None:
        for index in range(current):
            app_id = f"{LIVE_PREFIX}{index}-of-{current}"
            row = rows.pop(app_id, None)
            base = {"app_id": app_id, "shard": index, "count": current, "current": True}
            if row is None:
                shards.append({**base, "tags": 0, "oldest": None, "last_commit": None})
            else:
                shards.append({**base, **row})
    for app_id, row in sorted(rows.items()):
        index, count = _shard_of(app_id)
        shards.append({**row, "shard": index, "count": count, "current": False})
    for shard in shards:
        shard["generation"] = counts.get(shard["count"])
    return shards


def _shard_of(app_id: str) -> tuple[int, int]:
    m = _APP_ID.match(app_id)
    return (int(m[1]), int(m[2])) if m else (-1, 0)


def shard_state(shard: dict[str, object], now: datetime) -> str:
    if not shard["current"]:
        return "replaced: its tags moved to the current generation"
    last = shard["last_commit"]
    if not isinstance(last, datetime):
        return "missing: never committed"
    if now - last > STALE_AFTER:
        return f"stale: no commit for {_duration(now - last)}"
    return "ok"


def format_shards(report: Report, now: datetime) -> str:
    shards: list[dict[str, object]] = report["shards"]  # type: ignore[assignment]
    if not shards:
        return "no shard has committed yet"
    generations = {g["shard_count"]: g for g in report["generations"]}  # type: ignore[attr-defined]
    lines: list[str] = []
    for current in (True, False):
        group = [s for s in shards if s["current"] is current]
        for count in sorted({s["count"] for s in group}, reverse=True):  # type: ignore[type-var]
            gen = generations.get(count)
            title = f"generation {gen['generation']}" if gen else "generation ?"
            when = f", announced {_iso(gen['announced_at'])}" if gen else ""
            label = "current" if current else "replaced"
            lines.append(f"{title} ({label}): {count} shards{when}")
            lines.append("shard\ttags\tlag_seconds\toldest_checkpoint\tlast_commit\tstate")
            for s in (s for s in group if s["count"] == count):
                oldest = s["oldest"]
                lag = (
                    f"{(now - oldest).total_seconds():.1f}"
                    if current and isinstance(oldest, datetime)
                    else "-"
                )
                lines.append(
                    f"{s['app_id']}\t{s['tags']}\t{lag}\t{_iso(oldest)}\t"
                    f"{_iso(s['last_commit'])}\t{shard_state(s, now)}"
                )
    return "\n".join(lines)


# ---------------------------------------------------------------------- backfills


def _backfills(store: TableStore, checkpoints: pl.DataFrame) -> list[dict[str, object]]:
    """The latest backfill of each backfill app id, with its progress over its range."""
    asked = _read(
        store, BACKFILLS, ["app_id", "range_start", "range_end", "loaded_until", "requested_at"]
    )
    if asked.is_empty():
        return []
    latest = asked.sort("requested_at").group_by("app_id").last()
    per_tag = (
        checkpoints.filter(pl.col("app_id").str.starts_with(BACKFILL_PREFIX))
        .group_by(["app_id", "tag_webid"])
        .agg(pl.col("checkpoint").max(), pl.col("committed_at").max())
    )
    done = (
        per_tag.join(latest, on="app_id")
        .with_columns(
            pl.col("checkpoint").clip(pl.col("range_start"), pl.col("range_end")).alias("reached")
        )
        .group_by("app_id")
        .agg(
            pl.len().alias("tags"),
            (pl.col("reached") >= pl.col("range_end")).sum().alias("tags_done"),
            (pl.col("reached") - pl.col("range_start")).dt.total_microseconds().sum().alias("us"),
            pl.col("committed_at").max().alias("last_commit"),
        )
    )
    rows = latest.join(done, on="app_id", how="left").sort("app_id").to_dicts()
    for row in rows:
        span = (row["range_end"] - row["range_start"]).total_seconds() * 1e6
        tags = row["tags"] or 0
        row["tags"] = tags
        row["tags_done"] = row["tags_done"] or 0
        row["share"] = (row["us"] or 0) / (span * tags) if tags and span else 0.0
    return rows


def format_backfills(report: Report) -> str:
    backfills: list[dict[str, object]] = report["backfills"]  # type: ignore[assignment]
    if not backfills:
        return ""
    lines = ["backfill\ttags\tprogress\trange\tloaded_until\tlast_commit"]
    for b in backfills:
        share = 100.0 * b["share"]  # type: ignore[operator]
        progress = f"{share:.1f}% ({b['tags_done']}/{b['tags']} tags done)"
        lines.append(
            f"{b['app_id']}\t{b['tags']}\t{progress}\t{_iso(b['range_start'])} .. "
            f"{_iso(b['range_end'])}\t{_iso(b['loaded_until'])}\t{_iso(b['last_commit'])}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- helpers


def _read(store: TableStore, name: str, columns: list[str]) -> pl.DataFrame:
    """Some columns of a state table; empty (with those columns) when it does not exist."""
    schema = ALL_TABLES[name].schema
    if not DeltaTable.is_deltatable(store.uri(name), storage_options=store.options(name)):
        return pl.from_arrow(pa.schema([schema.field(c) for c in columns]).empty_table())
    dt = DeltaTable(store.uri(name), storage_options=store.options(name))
    return pl.from_arrow(dt.to_pyarrow_table(columns=columns))  # type: ignore[return-value]


def _from_ms(ms: object) -> datetime | None:
    if not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86_400:
        return f"{seconds // 86_400}d {seconds % 86_400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 60}m {seconds % 60}s"


def _iso(moment: object) -> str:
    if not isinstance(moment, datetime):
        return "-"
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
