#!/usr/bin/env python3
"""Coverage-guided fuzz target of the decode path of `/streamsets/recorded` bodies.

A PI body is untrusted input, read first by a hand-written C reader. Each input is
decoded twice: with the C reader first, as in production, and with the Python readers
only (msgspec, then orjson). Both must raise the same `DecodeError`, or return the same
rows, quarantine and count of non-finite values, bit for bit. Anything else is a finding
that stops libFuzzer and leaves the input in `fuzz/artifacts/`: another exception
(TypeError, RecursionError...) from either path, a difference between them, or an
AddressSanitizer/UndefinedBehaviorSanitizer report from the C reader, which is loaded from
its sanitizer build in `fuzz/build/` (`make fuzz-build`), never from the in-place build.

Run it through `fuzz/run.sh` (`make fuzz-short`, `make fuzz`), which preloads atheris's
ASan runtime; `fuzz/run.sh repro FILE...` decodes given files once each.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import atheris
import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
SANITIZED_READER = HERE / "build" / f"_pijson{sysconfig.get_config_var('EXT_SUFFIX')}"
INGESTED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ARTIFACTS = HERE / "artifacts"
# `make fuzz`: a Python finding is kept (the first input of each kind) and the run goes on;
# fuzz/run.sh fails at the end when there is any. Sanitizer reports always stop the run.
KEEP_GOING = os.environ.get("FUZZ_KEEP_GOING") == "1"

# Points of mock-pi (seed 42, 1000 tags) that the corpus uses: (name, point type, units).
# AI-0000007.PV (Float64) also appears in the corpus but is left out here on purpose: a
# stream of a tag the decoder has no metadata for takes any value type.
TAGS: dict[str, tuple[str, str, str | None]] = {
    "F1DPPnLzRsG6LFKZ6wZMfoI2fAAQAAAATU9DS1BJMDFcVEktMDAwMDAwMC5QVg": (
        "TI-0000000.PV",
        "Float32",
        "°C",
    ),
    "F1DPPnLzRsG6LFKZ6wZMfoI2fAAgAAAATU9DS1BJMDFcWFYtMDAwMDAwMS5QVg": (
        "XV-0000001.PV",
        "Digital",
        None,
    ),
    "F1DPPnLzRsG6LFKZ6wZMfoI2fACQAAAATU9DS1BJMDFcTVNHLTAwMDAwMDguUFY": (
        "MSG-0000008.PV",
        "String",
        None,
    ),
}
UNTAGGED = "F1DPPnLzRsG6LFKZ6wZMfoI2fACAAAAATU9DS1BJMDFcQUktMDAwMDAwNy5QVg"

Outcome = tuple[pa.Table, pa.Table]  # rows, quarantine
Decode = Callable[[bytes, bool], Outcome]  # (body, with the C reader first)


class ReadersDiffer(AssertionError):
    """The C reader and the Python readers decode one body differently."""


def bind_decode() -> tuple[Decode, type[Exception]]:
    """THE ONLY COUPLING TO PIDELTA: re-point this function when the decode modules move.

    It loads the sanitizer build of the C reader in place of `workers.timeseries._pijson`,
    imports the decoder under atheris's instrumentation (Python coverage), and returns
    `decode(body, native)`, which picks the readers (`body.READERS`: the C reader then msgspec
    when `native`, msgspec alone otherwise) and decodes with the fixed `TAGS` and
    ingestion time, and the error class a bad body must raise.
    """
    if not SANITIZED_READER.exists():
        sys.exit(f"{SANITIZED_READER} is missing: run `make fuzz-build`")
    with atheris.instrument_imports(include=["workers"]):
        import workers.timeseries as package

        spec = importlib.util.spec_from_file_location(
            "workers.timeseries._pijson", SANITIZED_READER
        )
        if spec is None or spec.loader is None:
            sys.exit(f"{SANITIZED_READER} is not a loadable extension module")
        reader: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reader)
        sys.modules[spec.name] = reader
        package._pijson = reader  # type: ignore[attr-defined]
        from workers import errors
        from workers.timeseries import body as bodies
        from workers.timeseries import decode
    if bodies._pijson is not reader:
        sys.exit("the decoder did not pick up the sanitizer build of the C reader")
    tags = {w: decode.TagMeta(w, name, kind, units) for w, (name, kind, units) in TAGS.items()}
    readers = {True: (bodies.parse_columns, bodies.parse_typed), False: (bodies.parse_typed,)}

    def run(body: bytes, native: bool) -> Outcome:
        bodies.READERS = readers[native]
        batch = decode.decode_streamset(body, tags, ingestion_time=INGESTED)
        return batch.rows, batch.quarantine

    return run, errors.DecodeError


def outcome(run: Decode, error: type[Exception], body: bytes, native: bool) -> Outcome | str:
    """The decoded batch, or the text of the typed error the body raised."""
    try:
        return run(body, native)
    except error as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        if not KEEP_GOING:
            path = "the C reader first" if native else "the Python readers only"
            print(f"fuzz: the exception below comes from decoding with {path}", file=sys.stderr)
        raise


def difference(native: Outcome | str, pure: Outcome | str) -> str | None:
    """Where two outcomes differ, or None when they are the same bit for bit."""
    if isinstance(native, str) or isinstance(pure, str):
        if native == pure:
            return None
        return f"C reader path: {summary(native)}; Python readers: {summary(pure)}"
    for what, a, b in (("rows", native[0], pure[0]), ("quarantine", native[1], pure[1])):
        if not a.schema.equals(b.schema, check_metadata=True):
            return f"{what} schema: {a.schema} != {b.schema}"
        if a.num_rows != b.num_rows:
            return f"{what}: {a.num_rows} rows != {b.num_rows} rows"
        for name in a.column_names:
            if not same_column(a.column(name), b.column(name)):
                return f"{what}.{name}: {a.column(name)} != {b.column(name)}"
    return None


def summary(found: Outcome | str) -> str:
    if isinstance(found, str):
        return found
    rows, quarantine = found
    return f"{rows.num_rows} rows, {quarantine.num_rows} quarantined"


def same_column(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values and nulls; floats compared by their bits (-0.0 is not 0.0, NaN is NaN)."""
    if not pa.types.is_floating(a.type):
        return a.equals(b)
    if not a.is_null().equals(b.is_null()):
        return False
    bits = f"i{a.type.byte_width}"
    return bool(
        np.array_equal(
            np.asarray(a.fill_null(0).to_numpy()).view(bits),
            np.asarray(b.fill_null(0).to_numpy()).view(bits),
        )
    )


def keep(body: bytes, exc: Exception) -> None:
    """Save the first input of each kind of finding: its exception type, the innermost
    line of pidelta that raised it and its message with the numbers left out."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f for f in reversed(frames) if "/workers/" in f.filename), frames[-1])
    message = re.sub(r"\d+", "N", str(exc))[:80]
    kind = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}: {message}"
    path = ARTIFACTS / f"finding-{hashlib.sha1(kind.encode()).hexdigest()[:12]}"
    if not path.exists():
        path.write_bytes(body)
        print(f"fuzz: finding {path.name}: {kind}", file=sys.stderr)


def main() -> None:
    run, error = bind_decode()

    def test_one_input(body: bytes) -> None:
        try:
            found = difference(outcome(run, error, body, True), outcome(run, error, body, False))
            if found is not None:
                raise ReadersDiffer(found)
        except Exception as exc:
            if not KEEP_GOING:
                raise
            keep(body, exc)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
