"""The C reader (`workers.timeseries._pijson`): exact on what it accepts, None on everything else.

Every test compares against the readers it stands in front of (msgspec, then orjson): a
body gives the same rows, bit for bit, whichever reads it.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from workers.errors import DecodeError, NeedsRawValues
from workers.timeseries import body as body_module
from workers.timeseries import decode as decode_module
from workers.timeseries.body import ValueSlice, parse_columns, parse_typed
from workers.timeseries.decode import TagMeta, decode_parsed, decode_streamset
from workers.timeseries.recorded import leading_at, page_of

NOW = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
TAGS = {
    "WF": TagMeta("WF", "flow", "Float64", "m3/h"),
    "WS": TagMeta("WS", "batch", "String"),
    "WD": TagMeta("WD", "valve", "Digital"),
    "WA": TagMeta("WA", "anything"),
}
T0 = "2026-11-27T10:00:00Z"


def tv(value: Any, ts: str = T0, **flags: Any) -> dict[str, Any]:
    return {"Timestamp": ts, "Value": value} | (flags or {"Good": True, "Questionable": False})


def body(*streams: tuple[str, list[Any]], **top: Any) -> bytes:
    items = [{"WebId": w, "Name": f"name-{w}", "Items": v} for w, v in streams]
    return orjson.dumps({"Items": items, **top})


def by_fallback(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same body read as before the C reader: msgspec, then orjson."""
    with monkeypatch.context() as m:
        m.setattr(body_module, "READERS", (parse_typed,))
        return decode_streamset(raw, TAGS, ingestion_time=NOW)


def float_bits(table: pa.Table, column: str) -> list[int]:
    values = table.column(column).combine_chunks().fill_null(0.0)
    return np.asarray(values).view(np.int64).tolist()


def assert_same(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The body decodes to the same rows and quarantine with and without the C reader."""
    try:
        expected = by_fallback(raw, monkeypatch)
    except DecodeError as exc:
        expected = exc
    if isinstance(expected, DecodeError):
        with pytest.raises(DecodeError, match=f"^{re.escape(str(expected))}$"):
            decode_streamset(raw, TAGS, ingestion_time=NOW)
        return None
    out = decode_streamset(raw, TAGS, ingestion_time=NOW)
    # values as bits: -0.0 is not 0.0 there, and a NaN equals itself
    assert float_bits(out.rows, "value") == float_bits(expected.rows, "value")
    assert out.rows.drop_columns("value").to_pylist() == (
        expected.rows.drop_columns("value").to_pylist()
    )
    assert out.quarantine.to_pylist() == expected.quarantine.to_pylist()
    return out


def test_the_c_reader_is_built() -> None:
    """A build without a C compiler still works, at twice the CPU: CI must notice that."""
    assert body_module._pijson is not None


def test_the_c_result_has_the_fields_its_named_tuple_names() -> None:
    got = body_module.CReading._make(body_module._pijson.decode(body(("WF", [tv(1.5)]))))
    assert (got.streams, got.n) == ([("WF", "name-WF", None, 1)], 1)
    assert np.frombuffer(got.number, np.float64).tolist() == [1.5]


def random_number(rng: random.Random) -> Any:
    """Floats and ints as a PI server may write them, and edge cases of both."""
    pick = rng.randrange(8)
    if pick == 0:
        return round(rng.uniform(-1e4, 1e4), rng.randrange(0, 7))
    if pick == 1:
        return rng.uniform(-1e6, 1e6)  # 17 significant digits
    if pick == 2:
        return rng.randrange(-(10**18) + 1, 10**18)
    if pick == 3:
        bits = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return bits if math.isfinite(bits) else 1.0
    if pick == 4:
        return rng.choice([0, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308])
    if pick == 5:
        return rng.choice([2**53, 2**53 + 1, -(2**53) - 1, 10**17 + 1, 123456789012345678])
    if pick == 6:
        return float(f"{rng.randrange(1, 10 ** rng.randrange(1, 17))}e{rng.randrange(-30, 30)}")
    return rng.randrange(-1000, 1000)


def number_text(value: Any, rng: random.Random) -> str:
    """The value in one of the spellings JSON allows (exponent forms, upper case E)."""
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if "e" in text and rng.random() < 0.5:
        text = text.replace("e", "E").replace("E+", "E")
    return text


def random_stamp(rng: random.Random) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        days=rng.randrange(0, 292 * 365), seconds=rng.randrange(86_400)
    )
    digits = rng.randrange(0, 10)
    fraction = "." + "".join(rng.choice("0123456789") for _ in range(digits)) if digits else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


TEXTS = (
    "batch-1",
    "",
    "ünïcödé",
    "🙂 ok",
    "a b/c",
    'Pump "A" swapped to "B"',
    "C:\\PI\\data",
    "two\nlines\tand a tab",
    "nul \x00 and \x1f",
    "Température élevée — check cooling",
)


def random_clean_body(rng: random.Random) -> bytes:
    """A body the C reader must accept: every value kind its tag allows, flags true, false,
    null or absent, fields in any order, text with escapes or non-ASCII (raw or escaped),
    whitespace, unknown outer fields."""
    streams = []
    for _ in range(rng.randrange(1, 6)):
        webid = rng.choice(list(TAGS))
        values = []
        for _ in range(rng.randrange(0, 8)):
            state = {"Name": rng.choice(["Open", "Ü-Stop", "停止", "", 'Pump "A"', "I/O Timeout"])}
            state["Value"] = rng.randrange(-(2**31), 2**31)
            if rng.random() < 0.7:
                state["IsSystem"] = rng.random() < 0.5
            kinds = {
                "WF": ["number", "state"],
                "WS": ["text", "state"],
                "WD": ["state"],
                "WA": ["number", "text", "state"],
            }[webid]
            kind = rng.choice(kinds)
            value: Any = {
                "number": f"@@{number_text(random_number(rng), rng)}@@",
                "text": rng.choice(TEXTS),
                "state": dict(rng.sample(list(state.items()), len(state))),
            }[kind]
            item = {"Timestamp": random_stamp(rng), "Value": value}
            for flag in ("Good", "Questionable", "Substituted", "Annotated"):
                if rng.random() < 0.8:
                    item[flag] = rng.choice([True, False, None])
            values.append(dict(rng.sample(list(item.items()), len(item))))
        streams.append((webid, values))
    top = {"Links": {"Self": "https://pi/x"}} if rng.random() < 0.5 else {}
    doc = {
        "Items": [{"WebId": w, "Name": rng.choice(TEXTS), "Items": v} for w, v in streams],
        **top,
    }
    if rng.random() < 0.3:
        doc["Items"][0]["UnitsAbbreviation"] = rng.choice([None, "°C", "m³/h"])
    # ensure_ascii: every non-ASCII character as a \u escape, emoji as surrogate pairs
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
    return re.sub(r'"@@([^@]+)@@"', r"\1", text).encode()


def test_clean_bodies_read_by_columns_equal_the_msgspec_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20261128)
    for _ in range(400):
        raw = random_clean_body(rng)
        assert parse_columns(raw) is not None, raw[:300]
        assert_same(raw, monkeypatch)


def test_numbers_are_the_doubles_python_reads() -> None:
    """Clinger's fast path and the dtoa fallback both round exactly as `float(text)`."""
    rng = random.Random(7)
    texts = ["0", "-0", "-0.0", "1e22", "1e23", "9007199254740993", "0.1", "1.5E-7", "2e-310"]
    texts += [number_text(random_number(rng), rng) for _ in range(5000)]
    texts += [f"{rng.randrange(1, 10**15)}e{rng.randrange(-22, 23)}" for _ in range(2000)]
    raw = (
        '{"Items":[{"WebId":"WA","Items":['
        + ",".join(f'{{"Timestamp":"{T0}","Value":{t}}}' for t in texts)
        + "]}]}"
    ).encode()
    doc = parse_columns(raw)
    assert doc is not None
    got = doc.streams[0].values.columns.number
    expected = [float(int(t)) if t.lstrip("-").isdigit() else float(t) for t in texts]
    assert got.view(np.int64).tolist() == np.array(expected).view(np.int64).tolist()


def test_timestamps_are_truncated_to_microseconds_as_arrow_reads_them() -> None:
    rng = random.Random(11)
    stamps = ["1970-01-01T00:00:00Z", "2024-02-29T23:59:59.9999999Z", "2261-12-31T23:59:59Z"]
    stamps += [random_stamp(rng) for _ in range(3000)]
    raw = body(("WA", [tv(1, s) for s in stamps]))
    doc = parse_columns(raw)
    assert doc is not None
    expected, _ = decode_module._timestamps(stamps)
    assert doc.streams[0].values.timestamps().tolist() == expected.cast(pa.int64()).to_pylist()


DECLINED = [
    pytest.param(body(("WS", [tv("x")])).replace(b'"x"', b'"\\ud800"'), id="lone surrogate escape"),
    pytest.param(
        body(("WS", [tv("x")])).replace(b'"x"', b'"\\ude00\\ud83d"'), id="swapped surrogates"
    ),
    pytest.param(body(("WS", [tv("x")])).replace(b'"x"', b'"\\x41"'), id="unknown escape"),
    pytest.param(
        body(("WF", [tv(1.5)]), Links={"x": "@"}).replace(b"@", b"\\ud800"),
        id="lone surrogate in skipped content",
    ),
    pytest.param(
        body(("WF", [tv(1.5)]), Path="@").replace(b"@", b"\\udc00"),
        id="lone low surrogate in skipped content",
    ),
    pytest.param(
        body(("WF", [tv(1.5)]), Path="@").replace(b"@", b"\\ud83d\\u0041"),
        id="high surrogate without its low one in skipped content",
    ),
    pytest.param(body(("WF", [tv(1.5)])).replace(b'"WebId"', b'"Web\\u0049d"'), id="escaped key"),
    pytest.param(body(("WF", [tv(None)])), id="null value"),
    pytest.param(body(("WF", [{"Timestamp": T0, "Good": True}])), id="no value"),
    pytest.param(body(("WF", [{"Value": 1.0}])), id="no timestamp"),
    pytest.param(body(("WF", [tv(True)])), id="boolean value"),
    pytest.param(body(("WF", [tv([1.0])])), id="array value"),
    pytest.param(body(("WF", [tv(1.0, UnitsAbbreviation="l/s")])), id="units per value"),
    pytest.param(
        body(("WF", [tv(None, Errors=[{"FieldName": "Value", "Message": ["x"]}])])),
        id="errors",
    ),
    pytest.param(body(("WF", [tv(1.0, Good="yes")])), id="flag not a boolean"),
    pytest.param(body(("WF", [tv(1.0, "2026-11-27T10:00:00+00:00")])), id="offset"),
    pytest.param(body(("WF", [tv(1.0, "2026-11-27 10:00:00Z")])), id="space"),
    pytest.param(body(("WF", [tv(1.0, "1969-12-31T23:59:59.9999995Z")])), id="before 1970"),
    pytest.param(body(("WF", [tv(1.0, "2262-04-12T00:00:00Z")])), id="past 2261"),
    pytest.param(body(("WF", [tv(1.0, "2026-02-29T00:00:00Z")])), id="no such day"),
    pytest.param(body(("WF", [tv(1.0, "2026-11-27T10:00:60Z")])), id="leap second"),
    pytest.param(body(("WF", [tv(1.0, "2026-11-27T10:00:00.1234567890Z")])), id="ten digits"),
    pytest.param(body(("WF", [tv(1.0, "2026-11-27T10:00:00.Z")])), id="empty fraction"),
    pytest.param(body(("WF", [tv(10**19)])), id="19-digit integer"),
    pytest.param(body(("WD", [tv({"Name": "Open", "Value": 1, "Extra": 0})])), id="state+"),
    pytest.param(body(("WD", [tv({"Name": "Open", "Value": 2**31})])), id="code > int32"),
    pytest.param(body(("WD", [tv({"Name": "Open", "Value": 1.0})])), id="float code"),
    pytest.param(body(("WD", [tv({"Name": None, "Value": 1})])), id="null state name"),
    pytest.param(body(("WD", [tv({"Value": 1})])), id="no state name"),
    pytest.param(body(("WF", [42])), id="value not an object"),
    pytest.param(
        orjson.dumps({"Items": [{"WebId": "WF", "Items": [], "WebException": {"x": 1}}]}),
        id="web exception",
    ),
    pytest.param(orjson.dumps({"Items": [{"WebId": "WF"}]}), id="stream without items"),
    pytest.param(orjson.dumps({"Items": [{"Name": "x", "Items": []}]}), id="no webid"),
    pytest.param(b'{"Items":[],"Items":[]}', id="duplicate key"),
    pytest.param(
        b'{"Items":[{"WebId":"WF","Items":[{"Timestamp":"' + T0.encode() + b'",'
        b'"Value":1,"Value":2}]}]}',
        id="duplicate value field",
    ),
    pytest.param(body(("WS", [tv("ok")])).replace(b"ok", b"o\xffk"), id="invalid UTF-8"),
    pytest.param(body(("WF", [tv(1.5)]))[:-3], id="truncated"),
    pytest.param(body(("WF", [tv(1.5)])) + b"x", id="trailing bytes"),
    pytest.param(b'{"Links":{},"Items":[{"WebId":"WF","Items":[{"Value":NaN}]}]}', id="NaN"),
]


@pytest.mark.parametrize("raw", DECLINED)
def test_bodies_it_does_not_know_are_declined_and_decode_as_before(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_columns(raw) is None
    assert_same(raw, monkeypatch)


MISFITS = [
    pytest.param(body(("WF", [tv(1.5), tv("NaN")])), id="NaN text on a numeric tag"),
    pytest.param(body(("WS", [tv(1.5)])), id="number on a string tag"),
    pytest.param(body(("WD", [tv("Open")])), id="text on a digital tag"),
    pytest.param(body(("WD", [tv(1)])), id="number on a digital tag"),
]


@pytest.mark.parametrize("raw", MISFITS)
def test_a_value_of_the_wrong_type_for_its_tag_is_handed_to_the_next_reader(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Columns keep no raw text to quarantine, nor the string to read as NaN."""
    doc = parse_columns(raw)
    assert doc is not None
    with pytest.raises(NeedsRawValues, match=r"^wrong_value_type$"):
        decode_parsed(doc, TAGS, "streamsets/recorded", ingestion_time=NOW)
    out = assert_same(raw, monkeypatch)
    assert out.values + out.quarantined == 1 + (b"NaN" in raw)


def test_mangled_bodies_never_crash_and_what_it_reads_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Truncated, flipped, inserted and deleted bytes, changed digits: None or the exact
    rows, never a crash."""
    rng = random.Random(3)
    read = 0
    for _ in range(1500):
        raw = bytearray(random_clean_body(rng))
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(raw))
            edit = rng.randrange(5)
            digits = [i for i, c in enumerate(raw) if chr(c).isdigit()]
            if edit == 4 and digits:
                raw[rng.choice(digits)] = ord(rng.choice("0123456789"))
            elif edit == 0:
                del raw[at:]
            elif edit == 1:
                raw[at] = rng.randrange(256)
            elif edit == 2:
                raw.insert(at, rng.choice(b'{}[],:"\\0123456789.eE-tfn \xc3\xff'))
            else:
                del raw[at]
            if not raw:
                raw = bytearray(b"{")
        mangled = bytes(raw)
        if parse_columns(mangled) is not None:
            read += 1
        assert_same(mangled, monkeypatch)
    assert read > 100  # a changed digit often leaves a clean body: compared above


def test_paging_reads_timestamps_and_slices_from_the_columns() -> None:
    stamps = [T0, T0, "2026-11-27T10:00:01Z", "2026-11-27T10:00:02Z", "2026-11-27T10:00:02Z"]
    doc = parse_columns(body(("WA", [tv(i, s) for i, s in enumerate(stamps)])))
    assert doc is not None
    items = doc.streams[0].values
    assert isinstance(items, ValueSlice)
    t0, t2 = (int(x) for x in items.timestamps()[[0, 3]])
    page = page_of(items)
    assert page is not None
    assert (page.items, page.last, page.at_last, page.kept) == (5, t2, 2, 5)
    assert leading_at(items, t0) == 2
    assert leading_at(items, t0, limit=1) == 1
    rest = items[2:]
    assert (len(rest), rest.timestamps().tolist()) == (3, items.timestamps()[2:].tolist())
    assert len(items[:0]) == 0
    assert page_of(items[:0]) is None
