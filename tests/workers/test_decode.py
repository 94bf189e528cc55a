"""Decoder: every value kind, exact rows, quarantine rows and reasons, typed errors."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest

from workers.errors import DecodeError
from workers.lake.schemas import PI_TIMESERIES_SCHEMA, QUARANTINE_SCHEMA
from workers.pi.times import to_us
from workers.timeseries.body import FullTimedValue, TimedValue, parse_json, parse_typed
from workers.timeseries.decode import SequenceStart, TagMeta, decode_parsed, decode_streamset
from workers.timeseries.quarantine import (
    MAX_RAW_CHARS,
    REASON_BAD_DIGITAL_STATE,
    REASON_BAD_TIMESTAMP,
    REASON_MISSING_TIMESTAMP,
    REASON_NOT_AN_OBJECT,
    REASON_WRONG_VALUE_TYPE,
)

NOW = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
T0 = "2026-11-27T10:00:00Z"
TAGS = {
    "WF": TagMeta("WF", "flow", "Float32", "m3/h"),
    "WI": TagMeta("WI", "count", "Int32", "pcs"),
    "WS": TagMeta("WS", "batch", "String"),
    "WD": TagMeta("WD", "valve", "Digital", digital_set="OpenClose"),
}


def tv(value: Any = None, ts: str | None = T0, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {} if ts is None else {"Timestamp": ts}
    if value is not None:
        item["Value"] = value
    flags = {"Good": True, "Questionable": False, "Substituted": False, "Annotated": False}
    return item | flags | extra


def body(*streams: tuple[str, list[Any]], units: str | None = None) -> bytes:
    items = [{"WebId": w, "Name": f"name-{w}", "Items": v} for w, v in streams]
    if units is not None:
        for s in items:
            s["UnitsAbbreviation"] = units
    return orjson.dumps({"Items": items, "Links": {}})


def decode(*streams: tuple[str, list[Any]]) -> Any:
    return decode_streamset(body(*streams), TAGS, ingestion_time=NOW)


def rows(batch: Any) -> list[dict[str, Any]]:
    return batch.rows.to_pylist()


def non_finite(batch: Any) -> int:
    """Rows whose number is NaN or infinite (PI writes them as strings)."""
    return sum(not math.isfinite(r["value"]) for r in rows(batch) if r["value"] is not None)


def test_float_int_and_units_fallbacks() -> None:
    out = decode(
        ("WF", [tv(12.5, UnitsAbbreviation="l/s"), tv(7, "2026-11-27T10:00:01Z")]),
        ("WI", [tv(3)]),
    )
    assert out.rows.schema == PI_TIMESERIES_SCHEMA
    got = rows(out)
    assert [(r["tag_webid"], r["tag_name"], r["value"], r["units"]) for r in got] == [
        ("WF", "flow", 12.5, "l/s"),
        ("WF", "flow", 7.0, "m3/h"),
        ("WI", "count", 3.0, "pcs"),
    ]
    first = got[0]
    assert first["timestamp"] == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert first["date"] == date(2026, 11, 27)
    assert first["ingestion_timestamp"] == NOW
    assert (first["value_string"], first["digital_state"], first["digital_code"]) == (None,) * 3
    assert first["is_system_state"] is False
    assert (first["quality_good"], first["quality_questionable"]) == (True, False)
    assert (first["quality_substituted"], first["quality_annotated"]) == (False, False)
    assert first["value_error"] is None
    assert out.quarantined == 0


def test_stream_units_come_before_tag_units() -> None:
    raw = body(("WF", [{"Timestamp": T0, "Value": 1.0}]), units="bar")
    assert rows(decode_streamset(raw, TAGS))[0]["units"] == "bar"


def test_string_digital_and_system_states() -> None:
    out = decode(
        ("WS", [tv("lot-42")]),
        ("WD", [tv({"Name": "Open", "Value": 1, "IsSystem": False})]),
        ("WF", [tv(1.5), tv({"Name": "I/O Timeout", "Value": 246, "IsSystem": True}, Good=False)]),
    )
    got = [
        (
            r["tag_webid"],
            r["value"],
            r["value_string"],
            r["digital_state"],
            r["digital_code"],
            r["is_system_state"],
            r["quality_good"],
        )
        for r in rows(out)
    ]
    assert got == [
        ("WS", None, "lot-42", None, None, False, True),
        ("WD", None, None, "Open", 1, False, True),
        ("WF", 1.5, None, None, None, False, True),
        ("WF", None, None, "I/O Timeout", 246, True, False),
    ]


def test_quality_flags_and_seven_digit_timestamps_truncate() -> None:
    out = decode(
        (
            "WF",
            [
                tv(1.0, "2026-11-27T23:59:59.9999999Z", Questionable=True),
                tv(2.0, "2026-11-27T10:00:00.1234567Z", Substituted=True, Annotated=True),
            ],
        )
    )
    a, b = rows(out)
    assert a["timestamp"] == datetime(2026, 11, 27, 23, 59, 59, 999999, tzinfo=UTC)
    assert a["date"] == date(2026, 11, 27)
    assert (a["quality_questionable"], a["quality_substituted"]) == (True, False)
    assert b["timestamp"] == datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    assert (b["quality_substituted"], b["quality_annotated"]) == (True, True)


def test_times_past_the_nanosecond_range_are_stored_unshifted() -> None:
    """Far-future placeholders and bad interface clocks: years 1 to 9999 at microseconds
    (a nanosecond parse once stored 9999-12-31 as 1816-03-30)."""
    stamps = {
        "9999-12-31T23:59:59.9999999Z": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "0001-01-01T00:00:00Z": datetime(1, 1, 1, tzinfo=UTC),
        "2300-01-01T00:00:00.5Z": datetime(2300, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
        "1677-09-21T00:12:43Z": datetime(1677, 9, 21, 0, 12, 43, tzinfo=UTC),
    }
    out = decode(("WF", [tv(float(n), ts) for n, ts in enumerate(stamps)]))
    assert [(r["timestamp"], r["date"], r["value"]) for r in rows(out)] == [
        (moment, moment.date(), float(n)) for n, moment in enumerate(stamps.values())
    ]
    assert out.quarantine.num_rows == 0


@pytest.mark.parametrize("depth", [254, 990])
def test_a_value_nested_deeper_than_orjson_writes_is_quarantined_with_its_text(
    depth: int,
) -> None:
    """orjson writes 254 levels and msgspec recurses about 990 deep: neither may crash."""
    nested = "[" * depth + "1" + "]" * depth
    value = '{"Timestamp":"' + T0 + '","Value":' + nested + ',"Good":true}'
    raw = ('{"Items":[{"WebId":"WF","Items":[' + value + "]}]}").encode()
    out = decode_streamset(raw, TAGS, ingestion_time=NOW)
    assert out.rows.num_rows == 0
    assert [(q["reason"], q["raw"]) for q in out.quarantine.to_pylist()] == [
        (REASON_WRONG_VALUE_TYPE, value)
    ]


def test_a_value_nested_past_orjsons_depth_is_a_decode_error() -> None:
    nested = "[" * 5000 + "1" + "]" * 5000
    value = '{"Timestamp":"' + T0 + '","Value":' + nested + "}"
    raw = ('{"Items":[{"WebId":"WF","Items":[' + value + "]}]}").encode()
    with pytest.raises(DecodeError, match="depth limit exceeded"):
        decode_streamset(raw, TAGS, ingestion_time=NOW)


def test_the_raw_text_of_a_huge_bad_value_is_bounded() -> None:
    out = decode(("WF", [tv("x" * 200_000)]))
    (row,) = out.quarantine.to_pylist()
    assert len(row["raw"]) == MAX_RAW_CHARS
    assert row["raw"].startswith('{"Timestamp":"' + T0 + '","Value":"xxx')
    assert row["raw"].endswith("...(cut)")


def test_a_stream_name_or_units_that_are_not_text_are_ignored() -> None:
    raw = orjson.dumps(
        {
            "Items": [
                {"WebId": "WF", "UnitsAbbreviation": ["m3/h"], "Items": [tv(1.0)]},
                {"WebId": "WX", "Name": {"x": 1}, "UnitsAbbreviation": 7, "Items": [tv(2.0)]},
            ]
        }
    )
    out = decode_streamset(raw, TAGS, ingestion_time=NOW)
    assert [(r["tag_webid"], r["tag_name"], r["units"]) for r in rows(out)] == [
        ("WF", "flow", "m3/h"),
        ("WX", None, None),
    ]


def test_errors_are_kept_as_text() -> None:
    err = [{"FieldName": "Value", "Message": ["Point not found.", "Try again."]}]
    out = decode(("WF", [tv(ts=T0, Errors=err), tv(4.0, "2026-11-27T10:00:01Z")]))
    assert [(r["value"], r["value_error"]) for r in rows(out)] == [
        (None, "Value: Point not found.; Try again."),
        (4.0, None),
    ]
    assert out.quarantined == 0


def test_selected_fields_trimmed_items() -> None:
    items = [{"Timestamp": T0, "Value": 1.25}, {"Timestamp": "2026-11-27T10:00:01Z", "Value": 2}]
    got = rows(decode(("WF", items)))
    assert [(r["value"], r["quality_good"], r["units"]) for r in got] == [
        (1.25, None, "m3/h"),
        (2.0, None, "m3/h"),
    ]


def test_shared_timestamps_get_sequences() -> None:
    out = decode(
        ("WF", [tv(1.0), tv(2.0), tv(3.0), tv(4.0, "2026-11-27T10:00:01Z")]),
        ("WI", [tv(1), tv(2)]),
    )
    assert [(r["tag_webid"], r["value"], r["sequence"]) for r in rows(out)] == [
        ("WF", 1.0, 0),
        ("WF", 2.0, 1),
        ("WF", 3.0, 2),
        ("WF", 4.0, 0),
        ("WI", 1.0, 0),
        ("WI", 2.0, 1),
    ]


def test_unordered_and_split_streams_still_number_per_tag() -> None:
    out = decode(("WF", [tv(1.0), tv(2.0, "2026-11-27T09:00:00Z")]), ("WF", [tv(3.0)]))
    assert [(r["value"], r["sequence"]) for r in rows(out)] == [(1.0, 0), (2.0, 0), (3.0, 1)]


def test_page_continuing_a_run_offsets_sequences() -> None:
    start = SequenceStart(to_us(datetime(2026, 11, 27, 10, tzinfo=UTC)), 2)
    out = decode_parsed(
        parse_json(body(("WF", [tv(1.0), tv(2.0), tv(3.0, "2026-11-27T10:00:01Z")])), "test"),
        TAGS,
        "streamsets/recorded",
        continues={"WF": start},
    )
    assert [r["sequence"] for r in rows(out)] == [2, 3, 0]


def test_non_finite_strings_are_floats_on_numeric_points() -> None:
    out = decode(("WF", [tv("NaN"), tv("Infinity"), tv("-Infinity")]), ("WS", [tv("NaN")]))
    values = [r["value"] for r in rows(out)]
    assert math.isnan(values[0])
    assert values[1:3] == [math.inf, -math.inf]
    assert rows(out)[3]["value_string"] == "NaN"
    assert non_finite(out) == 3
    assert out.quarantined == 0


def test_bad_values_are_quarantined_never_raised() -> None:
    bad = [
        tv([1, 2]),
        tv(True),
        {"Timestamp": T0, "Value": None, "Good": True},
        tv("high"),
        tv({"Name": "Open"}),
        tv(1.0, "yesterday"),
        tv(1.0, ts=None),
        tv(1.0, 20261127),
        42,
    ]
    out = decode(("WF", [tv(9.0), *bad]), ("WS", [tv(5)]), ("WD", [tv(1)]))
    assert [r["value"] for r in rows(out)] == [9.0]
    assert out.quarantine.schema == QUARANTINE_SCHEMA
    got = [
        (q["tag_webid"], q["tag_name"], q["reason"], q["raw"]) for q in out.quarantine.to_pylist()
    ]
    flags = '"Good":true,"Questionable":false,"Substituted":false,"Annotated":false'
    assert got == [
        ("WF", "flow", REASON_NOT_AN_OBJECT, "42"),
        ("WF", "flow", REASON_BAD_TIMESTAMP, f'{{"Timestamp":"yesterday","Value":1.0,{flags}}}'),
        ("WF", "flow", REASON_MISSING_TIMESTAMP, f'{{"Value":1.0,{flags}}}'),
        ("WF", "flow", REASON_BAD_TIMESTAMP, f'{{"Timestamp":20261127,"Value":1.0,{flags}}}'),
        ("WF", "flow", REASON_WRONG_VALUE_TYPE, f'{{"Timestamp":"{T0}","Value":[1,2],{flags}}}'),
        ("WF", "flow", REASON_WRONG_VALUE_TYPE, f'{{"Timestamp":"{T0}","Value":true,{flags}}}'),
        ("WF", "flow", REASON_WRONG_VALUE_TYPE, f'{{"Timestamp":"{T0}","Value":null,"Good":true}}'),
        ("WF", "flow", REASON_WRONG_VALUE_TYPE, f'{{"Timestamp":"{T0}","Value":"high",{flags}}}'),
        (
            "WF",
            "flow",
            REASON_BAD_DIGITAL_STATE,
            f'{{"Timestamp":"{T0}","Value":{{"Name":"Open"}},{flags}}}',
        ),
        ("WS", "batch", REASON_WRONG_VALUE_TYPE, f'{{"Timestamp":"{T0}","Value":5,{flags}}}'),
        ("WD", "valve", REASON_WRONG_VALUE_TYPE, f'{{"Timestamp":"{T0}","Value":1,{flags}}}'),
    ]
    assert Counter(out.quarantine.column("reason").to_pylist()) == {
        REASON_NOT_AN_OBJECT: 1,
        REASON_BAD_TIMESTAMP: 2,
        REASON_MISSING_TIMESTAMP: 1,
        REASON_WRONG_VALUE_TYPE: 6,
        REASON_BAD_DIGITAL_STATE: 1,
    }
    assert set(out.quarantine.column("source").to_pylist()) == {"streamsets/recorded"}


def test_a_body_of_values_that_are_not_objects_is_all_quarantine() -> None:
    out = decode(("WF", [42, "x"]), ("WS", []))
    assert out.rows.num_rows == 0
    assert [
        (q["tag_name"], q["reason"], q["raw"], q["timestamp"], q["sequence"])
        for q in out.quarantine.to_pylist()
    ] == [
        ("flow", REASON_NOT_AN_OBJECT, "42", None, None),
        ("flow", REASON_NOT_AN_OBJECT, '"x"', None, None),
    ]


BAD_EVERYWHERE: list[tuple[Any, str]] = [
    (42, REASON_NOT_AN_OBJECT),
    ("text", REASON_NOT_AN_OBJECT),
    (tv(1.0, "yesterday"), REASON_BAD_TIMESTAMP),
    (tv(1.0, ts=None), REASON_MISSING_TIMESTAMP),
    (tv([1, 2]), REASON_WRONG_VALUE_TYPE),
    (tv(True), REASON_WRONG_VALUE_TYPE),
    ({"Timestamp": T0, "Value": None, "Good": True}, REASON_WRONG_VALUE_TYPE),
    (tv({"Name": "Open"}), REASON_BAD_DIGITAL_STATE),
]
GOOD_FOR = {
    "WF": lambda ts: tv(1.5, ts),
    "WI": lambda ts: tv(7, ts),
    "WS": lambda ts: tv("batch-1", ts),
    "WD": lambda ts: tv({"Name": "Open", "Value": 1, "IsSystem": False}, ts),
}


def test_any_mix_of_good_and_bad_values_is_rows_plus_quarantine() -> None:
    """Seeded random bodies, including streams and pages that hold only bad values or none:
    every value is a row or a quarantine row with its reason, and nothing raises."""
    rng = random.Random(20261128)
    stamps = [T0, "2026-11-27T10:00:01Z", "2026-11-27T10:00:01.5Z"]
    for _ in range(300):
        streams, reasons, good = [], Counter[str](), 0
        for _ in range(rng.randrange(1, 5)):
            webid = rng.choice(list(GOOD_FOR))
            values: list[Any] = []
            for _ in range(rng.randrange(0, 6)):
                if rng.random() < 0.5:
                    values.append(GOOD_FOR[webid](rng.choice(stamps)))
                    good += 1
                else:
                    value, reason = rng.choice(BAD_EVERYWHERE)
                    values.append(value)
                    reasons[reason] += 1
            streams.append((webid, values))
        out = decode(*streams)
        assert out.values == good
        assert Counter(out.quarantine.column("reason").to_pylist()) == reasons
        keyed = out.quarantine.filter(out.quarantine.column("timestamp").is_valid())
        assert keyed.column("sequence").null_count == 0


def test_unknown_tag_uses_stream_name_and_json_types() -> None:
    out = decode_streamset(body(("WX", [tv(1.0), tv("text", "2026-11-27T10:00:01Z")])), {})
    assert [(r["tag_name"], r["value"], r["value_string"]) for r in rows(out)] == [
        ("name-WX", 1.0, None),
        ("name-WX", None, "text"),
    ]


def test_batch_content_already_parsed() -> None:
    content = orjson.loads(body(("WF", [tv(1.0)])))
    out = decode_streamset(content, TAGS, source="batch")
    assert out.values == 1


def test_empty_body() -> None:
    out = decode_streamset(b'{"Items":[],"Links":{}}', TAGS)
    assert out.values == 0
    assert out.rows.schema == PI_TIMESERIES_SCHEMA


@pytest.mark.parametrize(
    "raw",
    [b'{"Items":[{"WebId":"WF","Items":[{"Timestamp":"2026-11', b"", b"[1,2]", b'{"Items":[3]}'],
)
def test_broken_bodies_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_streamset(raw, TAGS, source="streamsets/recorded")
    assert "streamsets/recorded" in str(caught.value)


def test_a_body_that_is_not_utf8_is_a_decode_error_to_retry() -> None:
    """msgspec raises UnicodeDecodeError there, which the read path did not retry: the
    worker failed instead. orjson then names the fault."""
    raw = body(("WS", [tv("ok")])).replace(b"ok", b"o\xffk")
    with pytest.raises(DecodeError) as caught:
        decode_streamset(raw, TAGS, source="streamsets/recorded")
    assert str(caught.value) == (
        f"cannot decode streamsets/recorded, {len(raw)} bytes: str is not valid UTF-8: "
        "surrogates not allowed: line 1 column 1 (char 0)"
    )


def value_cols(batch: Any) -> list[tuple[Any, ...]]:
    keys = ("tag_webid", "value", "value_string", "digital_state", "digital_code")
    return [(*(r[k] for k in keys), r["is_system_state"]) for r in rows(batch)]


IO_TIMEOUT = {"Name": "I/O Timeout", "Value": 246, "IsSystem": True}
SHUTDOWN = {"Name": "Shutdown", "Value": 254, "IsSystem": True}


def test_mixed_streams_of_every_kind_keep_exact_values() -> None:
    out = decode(
        ("WF", [tv(1.5), tv(IO_TIMEOUT), tv(2), tv("Infinity"), tv(SHUTDOWN), tv(3.25)]),
        ("WI", [tv(7), tv(SHUTDOWN), tv(-8)]),
        ("WS", [tv("lot-1"), tv(IO_TIMEOUT), tv("NaN")]),
        (
            "WD",
            [
                tv({"Name": "Open", "Value": 1, "IsSystem": False}),
                tv({"Name": "Closed", "Value": 0}),
                tv(IO_TIMEOUT),
                tv({"Name": "Open", "Value": 1, "IsSystem": False, "Extra": [1]}),
            ],
        ),
        ("WX", [tv(4.5), tv("free text"), tv(SHUTDOWN), tv(5)]),
    )
    assert value_cols(out) == [
        ("WF", 1.5, None, None, None, False),
        ("WF", None, None, "I/O Timeout", 246, True),
        ("WF", 2.0, None, None, None, False),
        ("WF", math.inf, None, None, None, False),
        ("WF", None, None, "Shutdown", 254, True),
        ("WF", 3.25, None, None, None, False),
        ("WI", 7.0, None, None, None, False),
        ("WI", None, None, "Shutdown", 254, True),
        ("WI", -8.0, None, None, None, False),
        ("WS", None, "lot-1", None, None, False),
        ("WS", None, None, "I/O Timeout", 246, True),
        ("WS", None, "NaN", None, None, False),
        ("WD", None, None, "Open", 1, False),
        ("WD", None, None, "Closed", 0, False),
        ("WD", None, None, "I/O Timeout", 246, True),
        ("WD", None, None, "Open", 1, False),
        ("WX", 4.5, None, None, None, False),
        ("WX", None, "free text", None, None, False),
        ("WX", None, None, "Shutdown", 254, True),
        ("WX", 5.0, None, None, None, False),
    ]
    assert non_finite(out) == 1
    assert out.quarantined == 0


def test_mixed_streams_quarantine_only_the_odd_values() -> None:
    big = 2**53 + 1
    out = decode(
        (
            "WF",
            [
                tv(1.0),
                tv({"Name": "Huge", "Value": 2**31, "IsSystem": True}),
                tv(IO_TIMEOUT),
                tv({"Name": 5, "Value": 1}),
                tv({"Name": "Open", "Value": 1, "IsSystem": None}),
                tv(big),
                tv(True),
                tv("high"),
                {"Timestamp": T0, "Value": None, "Errors": [{"Message": ["gone"]}]},
                {"Timestamp": T0},
                tv(2.0),
            ],
        ),
        ("WS", [tv("a"), tv(3), tv(SHUTDOWN)]),
        ("WD", [tv(SHUTDOWN), tv("Open"), tv(1.0), tv({"Name": "Open", "Value": 1.5})]),
    )
    assert value_cols(out) == [
        ("WF", 1.0, None, None, None, False),
        ("WF", None, None, "I/O Timeout", 246, True),
        ("WF", float(big), None, None, None, False),
        ("WF", None, None, None, None, None),
        ("WF", 2.0, None, None, None, False),
        ("WS", None, "a", None, None, False),
        ("WS", None, None, "Shutdown", 254, True),
        ("WD", None, None, "Shutdown", 254, True),
    ]
    assert [r["value_error"] for r in rows(out)][3] == "gone"
    assert [(q["tag_webid"], q["reason"]) for q in out.quarantine.to_pylist()] == [
        ("WF", REASON_BAD_DIGITAL_STATE),
        ("WF", REASON_BAD_DIGITAL_STATE),
        ("WF", REASON_BAD_DIGITAL_STATE),
        ("WF", REASON_WRONG_VALUE_TYPE),
        ("WF", REASON_WRONG_VALUE_TYPE),
        ("WF", REASON_WRONG_VALUE_TYPE),  # no Value field and no Errors
        ("WS", REASON_WRONG_VALUE_TYPE),
        ("WD", REASON_WRONG_VALUE_TYPE),
        ("WD", REASON_WRONG_VALUE_TYPE),
        ("WD", REASON_BAD_DIGITAL_STATE),
    ]
    assert '"Value":2147483648' in out.quarantine.to_pylist()[0]["raw"]


def test_many_streams_with_scattered_system_states_match_a_per_value_reading() -> None:
    streams = []
    expected = []
    for s in range(30):
        webid = ("WF", "WI", "WX")[s % 3]
        values: list[Any] = []
        for i in range(50):
            stamp = f"2026-11-27T10:{s:02d}:{i:02d}Z"
            if (s * 50 + i) % 7 == 0:
                values.append(tv({"Name": f"S{i}", "Value": i, "IsSystem": i % 2 == 0}, stamp))
                expected.append((webid, None, None, f"S{i}", i, i % 2 == 0))
            else:
                values.append(tv(s * 1000 + i + 0.5, stamp))
                expected.append((webid, s * 1000 + i + 0.5, None, None, None, False))
        streams.append((webid, values))
    out = decode(*streams)
    assert value_cols(out) == expected
    assert out.quarantined == 0


def test_plain_values_read_into_the_plain_struct_and_the_rest_into_the_full_one() -> None:
    """The usual body (the selected fields, no `Errors`) skips the absent fields; a value
    with `Errors`, its own units or a field PI may add moves the body to the full struct,
    with the same rows as the plain read would give for the same values."""
    plain = body(("WF", [tv(1.5), tv(2.5, "2026-11-27T10:00:01Z")]))
    doc = parse_typed(plain)
    assert doc is not None
    assert {type(v) for v in doc.streams[0].values} == {TimedValue}
    for extra in (
        {"Errors": [{"FieldName": "Value", "Message": ["stale"]}]},
        {"UnitsAbbreviation": "l/s"},
        {"Links": {}},
    ):
        richer = body(("WF", [tv(1.5), tv(2.5, "2026-11-27T10:00:01Z", **extra)]))
        doc = parse_typed(richer)
        assert doc is not None
        assert {type(v) for v in doc.streams[0].values} == {FullTimedValue}
    out = decode_streamset(
        body(("WF", [tv(1.5), tv(2.5, "2026-11-27T10:00:01Z", UnitsAbbreviation="l/s")])),
        TAGS,
        ingestion_time=NOW,
    )
    assert [(r["value"], r["units"], r["value_error"]) for r in rows(out)] == [
        (1.5, "m3/h", None),
        (2.5, "l/s", None),
    ]
    assert rows(decode_streamset(plain, TAGS, ingestion_time=NOW))[0]["units"] == "m3/h"
