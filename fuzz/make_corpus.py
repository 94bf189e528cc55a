"""Regenerate the seed corpus of the decode fuzz target: `python fuzz/make_corpus.py`.

Two parts, each file one small body:
- `mock-*`: `/streamsets/recorded` answers of a mock-pi started here (seed 42, 1000 tags)
  at fixed times, so the same files come back on every run: the production query
  (selectedFields, which the C reader reads), the full answer (Name, Path, Links, which it
  skips), each point type alone, a WebId the server does not know, and the same with
  `MOCK_PI_BAD_FRACTION=0.2` (malformed values for the Python readers to quarantine).
- `hostile-*`: bodies a broken or hostile server may send (`HOSTILE`).

A body that the decode path still gets wrong goes to `fuzz/findings/` instead (listed in
`FINDINGS`, described in `fuzz/findings/README.md`), so `make fuzz-short` stays green
until it is fixed; then drop its name from `FINDINGS` and run this again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from decode_fuzz import TAGS, UNTAGGED

from workers.timeseries.calls import SELECTED_FIELDS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "corpus"
FINDINGS = HERE / "findings"
FLOAT32, DIGITAL, STRING = TAGS
WINDOWS = (
    ("2026-01-05T00:00:00Z", "2026-01-05T00:10:00Z"),
    ("2026-01-05T06:00:00Z", "2026-01-05T07:00:00Z"),
)
MAX_COUNT = 12


def hostile() -> dict[str, bytes]:
    """Bodies no mock-pi sends: broken JSON, extreme values and timestamps, deep nesting."""
    f32, digital, string = (w.encode() for w in (FLOAT32, DIGITAL, STRING))

    def body(value: bytes, webid: bytes = f32, ts: bytes = b"2026-01-05T00:00:00Z") -> bytes:
        return (
            b'{"Items":[{"WebId":"%s","UnitsAbbreviation":"x","Items":[{"Timestamp":"%s",'
            b'"Value":%s,"Good":true,"Questionable":false,"Substituted":false,'
            b'"Annotated":false}]}]}' % (webid, ts, value)
        )

    def stream_with(extra: bytes) -> bytes:
        return (
            b'{"Items":[{"WebId":"%s",%s,"Items":[{"Timestamp":"2026-01-05T00:00:00Z",'
            b'"Value":"ok","Good":true}]}]}' % (string, extra)
        )

    def nested(depth: int, webid: bytes) -> bytes:
        return body(b"[" * depth + b"1" + b"]" * depth, webid)

    def nested_object(depth: int) -> bytes:
        return body(b'{"Name":' * depth + b'"x"' + b"}" * depth, digital)

    return {
        "html-200": b"<!DOCTYPE html><html><head><title>Sign in</title></head>"
        b"<body><form method='post'><input name='user'></form></body></html>\n",
        "value-1e999": body(b"1e999"),
        "value-minus-1e999": body(b"-1e999"),
        "value-1e999-string-tag": body(b"1e999", string),
        "utf8-invalid-value": body(b'"\xff\xfe"', string),
        "utf8-invalid-webid": body(b"1.5", b"F1DP\xc0\x80"),
        "surrogate-value": body(b'"\\ud800"', string),
        "surrogate-links": stream_with(b'"Links":{"Source":"\\ud800"}'),
        "surrogate-path": stream_with(b'"Path":"\\\\\\\\PI\\\\\\ud800"'),
        "surrogate-unknown-key": stream_with(b'"Extra":["\\ud800"]'),
        "surrogate-unknown-value-key": body(b'"a","Extra":"\\ud800"', string),
        "nul-raw-in-string": body(b'"a\x00b"', string),
        "nul-raw-outside": body(b"1.5\x00"),
        "nul-escaped": body(b'"a\\u0000b"', string),
        "stream-missing": (
            b'{"Items":[{"WebId":"%s","Items":[]},{"WebId":"%s","Items":[],'
            b'"WebException":{"StatusCode":404,"Errors":["not found"]}}]}' % (digital, f32)
        ),
        "nested-254": nested(254, f32),
        "nested-990": nested(990, f32),
        "nested-254-untagged": nested(254, UNTAGGED.encode()),
        "nested-990-untagged": nested(990, UNTAGGED.encode()),
        "nested-object-254": nested_object(254),
        "nested-object-990": nested_object(990),
        "units-not-a-string": stream_with(b'"UnitsAbbreviation":["m3/h"]'),
        "name-not-a-string-untagged": (
            b'{"Items":[{"WebId":"%s","Name":{"x":1},"Items":[{"Timestamp":'
            b'"2026-01-05T00:00:00Z","Value":1.5,"Good":true}]}]}' % UNTAGGED.encode()
        ),
        "ts-9999": body(b"1.5", ts=b"9999-12-31T23:59:59Z"),
        "ts-0001": body(b"1.5", ts=b"0001-01-01T00:00:00Z"),
        "ts-2300": body(b"1.5", ts=b"2300-01-01T00:00:00Z"),
        "ts-fraction-7": body(b"1.5", ts=b"2026-01-05T00:00:00.9999999Z"),
    }


# Hostile bodies the decode path still gets wrong (fuzz/findings/README.md says how).
FINDINGS_NAMES: frozenset[str] = frozenset()  # none open: each was fixed, see git log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mock_pi(**settings: object) -> Iterator[str]:
    """A mock-pi process on a free loopback port: yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCK_PI_")}
    env |= {f"MOCK_PI_{k.upper()}": str(v) for k, v in settings.items()}
    env |= {"MOCK_PI_PORT": str(port), "MOCK_PI_TAG_COUNT": "1000", "MOCK_PI_SEED": "42"}
    env |= {"MOCK_PI_HISTORY_DAYS": "3650", "MOCK_PI_RATE_LIMIT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mock_pi"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mock-pi did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/piwebapi"
    finally:
        proc.terminate()
        proc.wait(10)


def recorded(base: str, webids: list[str], start: str, end: str, fields: str | None) -> bytes:
    params = [("startTime", start), ("endTime", end), ("maxCount", str(MAX_COUNT))]
    params += [("webId", w) for w in webids]
    if fields is not None:
        params.append(("selectedFields", fields))
    url = f"{base}/streamsets/recorded?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.status == 200, url
        # Links hold the server's address: a fixed one keeps the files the same.
        return answer.read().replace(base.encode(), b"https://pi.example/piwebapi")


def mock_bodies(base: str, label: str) -> dict[str, bytes]:
    every = [FLOAT32, DIGITAL, STRING, UNTAGGED]
    names = ("float32", "digital", "string", "untagged")
    alone = {name: [webid] for name, webid in zip(names, every, strict=True)}
    queries = {"all": every, **alone, "unknown": [FLOAT32, "F1DPnope"]}
    out = {}
    for i, (start, end) in enumerate(WINDOWS):
        for name, webids in queries.items():
            out[f"mock-{label}-{name}-w{i}"] = recorded(base, webids, start, end, SELECTED_FIELDS)
        out[f"mock-{label}-full-w{i}"] = recorded(base, every, start, end, None)
    return out


def main() -> None:
    bodies: dict[str, bytes] = {}
    with mock_pi() as base:
        bodies |= mock_bodies(base, "clean")
    with mock_pi(bad_fraction=0.2) as base:
        bodies |= mock_bodies(base, "bad")
    bodies |= {f"hostile-{name}": data for name, data in hostile().items()}
    for folder in (CORPUS, FINDINGS):
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*-*"):
            if old.name.startswith(("mock-", "hostile-")):
                old.unlink()
    for name, data in sorted(bodies.items()):
        folder = FINDINGS if name.removeprefix("hostile-") in FINDINGS_NAMES else CORPUS
        (folder / name).write_bytes(data)
    print(f"{len(bodies)} bodies, {sum(map(len, bodies.values()))} bytes")


if __name__ == "__main__":
    main()
