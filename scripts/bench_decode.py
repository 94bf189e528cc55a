"""Decode throughput on one core: 100 streams × 10,000 values of mixed kinds.

Run: `.venv/bin/python scripts/bench_decode.py [--streams 100] [--values 10000] [--repeat 3]`.
Prints values/s (wall, and per CPU-second: the machine may be shared) for a full TimedValue
body, for a body trimmed with `selectedFields` (what the fetch layer should ask for) and
for the same values spread over many short streams.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa

from workers.decode import TagMeta, decode_streamset

KINDS = ("Float32",) * 7 + ("Int32", "String", "Digital")
TRIMMED = ("Timestamp", "Value", "Good")


def make_body(streams: int, values: int, trimmed: bool, seed: int = 7) -> tuple[bytes, dict]:
    """A `/streamsets/recorded` body; every 20th numeric stream holds one system state."""
    rng = random.Random(seed)
    base = datetime(2026, 11, 27, tzinfo=UTC)
    stamps = [
        (base + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{rng.randrange(10**7):07d}Z"
        for i in range(values)
    ]
    tags, items = {}, []
    for s in range(streams):
        kind = KINDS[s % len(KINDS)]
        webid = f"F1DPbench{s:05d}"
        tags[webid] = TagMeta(webid, f"bench.tag.{s}", kind, "m3/h")
        rows = []
        for i, ts in enumerate(stamps):
            if kind == "Float32":
                value: object = rng.random() * 1000
            elif kind == "Int32":
                value = rng.randrange(100_000)
            elif kind == "String":
                value = f"batch-{i % 97}"
            else:
                value = {"Name": ("Open", "Closed")[i % 2], "Value": i % 2, "IsSystem": False}
            rows.append(
                {
                    "Timestamp": ts,
                    "Value": value,
                    "UnitsAbbreviation": "m3/h",
                    "Good": True,
                    "Questionable": False,
                    "Substituted": False,
                    "Annotated": False,
                }
            )
        if kind == "Float32" and s % 20 == 0:
            rows[values // 2]["Value"] = {"Name": "I/O Timeout", "Value": 246, "IsSystem": True}
            rows[values // 2]["Good"] = False
        if trimmed:
            rows = [{k: r[k] for k in TRIMMED} for r in rows]
        items.append({"WebId": webid, "Name": f"bench.tag.{s}", "Items": rows})
    return orjson.dumps({"Items": items, "Links": {}}), tags


def run(label: str, body: bytes, tags: dict, total: int, repeat: int) -> None:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        batch = decode_streamset(body, tags)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert batch.values == total, (batch.values, total)
    best, median, cpu = min(walls), statistics.median(walls), min(cpus)
    print(
        f"{label:<24} {len(body) / 1e6:6.1f} MB  {total:,} values  "
        f"wall best {total / best:>9,.0f} /s, median {total / median:>9,.0f} /s  "
        f"CPU {total / cpu:>9,.0f} values per CPU-s = {cpu / (total / 1e6):.2f} CPU-s per million"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    total = args.streams * args.values
    shapes = (
        (f"full {args.streams}x{args.values}", args.streams, args.values, False),
        (f"trimmed {args.streams}x{args.values}", args.streams, args.values, True),
        (f"full {total // 100}x100", total // 100, 100, False),
    )
    for label, streams, values, trimmed in shapes:
        body, tags = make_body(streams, values, trimmed)
        run(label, body, tags, streams * values, args.repeat)


if __name__ == "__main__":
    main()
