"""Decode throughput on one core: 100 streams × 10,000 values of mixed kinds, per reader.

Run: `.venv/bin/python scripts/bench_decode.py [--streams 100] [--values 10000] [--repeat 3]`.
Prints values/s (wall, and per CPU-second: the machine may be shared) for each body shape,
read as pidelta reads it (the C reader first, `body.READERS`) and with msgspec alone (a
pure install). Shapes: the fields `RecordedSource` selects with numbers as mock-pi writes
them (three decimals: Clinger's fast path in C), the same with full-precision doubles (17
digits: CPython's dtoa in C), a full TimedValue with units per value (the C reader declines
it), and the first shape spread over many short streams.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa

from workers.timeseries import body as body_readers
from workers.timeseries.body import parse_typed
from workers.timeseries.calls import SELECTED_FIELDS
from workers.timeseries.decode import TagMeta, decode_streamset

KINDS = ("Float32",) * 7 + ("Int32", "String", "Digital")
SELECTED = tuple(f.rsplit(".", 1)[1] for f in SELECTED_FIELDS.split(";") if "Items.Items." in f)


def make_body(
    streams: int, values: int, *, per_value_units: bool, digits: int | None, seed: int = 7
) -> tuple[bytes, dict]:
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
                number = rng.random() * 1000
                value: object = number if digits is None else round(number, digits)
            elif kind == "Int32":
                value = rng.randrange(100_000)
            elif kind == "String":
                value = f"batch-{i % 97}"
            else:
                value = {"Name": ("Open", "Closed")[i % 2], "Value": i % 2, "IsSystem": False}
            row = {"Timestamp": ts, "Value": value, "Good": True, "Questionable": False}
            row |= {"Substituted": False, "Annotated": False}
            if per_value_units:
                row["UnitsAbbreviation"] = "m3/h"
            rows.append({k: v for k, v in row.items() if per_value_units or k in SELECTED})
        if kind == "Float32" and s % 20 == 0:
            rows[values // 2]["Value"] = {"Name": "I/O Timeout", "Value": 246, "IsSystem": True}
            rows[values // 2]["Good"] = False
        items.append({"WebId": webid, "Name": f"bench.tag.{s}", "Items": rows})
    return orjson.dumps({"Items": items, "Links": {}}), tags


def run(label: str, body: bytes, tags: dict, total: int, repeat: int) -> None:
    decode_streamset(body, tags)  # untimed: the first body of a process faults its pages in
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        batch = decode_streamset(body, tags)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert batch.values == total, (batch.values, total)
    best, median, cpu = min(walls), statistics.median(walls), min(cpus)
    print(
        f"{label:<40} {len(body) / 1e6:6.1f} MB  "
        f"wall best {total / best:>9,.0f} /s, median {total / median:>9,.0f} /s  "
        f"CPU {cpu / (total / 1e6):.2f} CPU-s per million values"
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
        ("selected, 3 decimals", args.streams, args.values, False, 3),
        ("selected, 17 digits", args.streams, args.values, False, None),
        ("full TimedValue", args.streams, args.values, True, 3),
        (f"selected, {total // 100}x100", total // 100, 100, False, 3),
    )
    readers: tuple[tuple[str, tuple[Callable, ...]], ...] = (
        ("C reader", body_readers.READERS),
        ("msgspec", (parse_typed,)),
    )
    print(f"{total:,} values per body, best of {args.repeat}")
    for label, streams, values, per_value_units, digits in shapes:
        body, tags = make_body(streams, values, per_value_units=per_value_units, digits=digits)
        for reader, parsers in readers:
            body_readers.READERS = parsers
            run(f"{label} ({reader})", body, tags, streams * values, args.repeat)
        body_readers.READERS = readers[0][1]


if __name__ == "__main__":
    main()
