"""Quarantine rows of the read path: why a value (or a stream) was not stored, and its raw
text, in the `_pidelta_quarantine` schema (app id and batch id null: the sink sets them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from workers.errors import NeedsRawValues
from workers.lake.schemas import QUARANTINE_SCHEMA, UTC_US
from workers.timeseries.body import TimedValue

REASON_NOT_AN_OBJECT = "not_an_object"
REASON_MISSING_TIMESTAMP = "missing_timestamp"
REASON_BAD_TIMESTAMP = "bad_timestamp"
REASON_WRONG_VALUE_TYPE = "wrong_value_type"
REASON_BAD_DIGITAL_STATE = "bad_digital_state"
# A stream with more values at one timestamp than one call may return (see recorded.py).
REASON_UNPAGEABLE = "unpageable"
# A stream whose answer could not be read after retries: set aside, read again later.
REASON_UNREADABLE_ANSWER = "unreadable_answer"


# The raw text kept of one value: enough to see what it was, bounded whatever a server sends.
MAX_RAW_CHARS = 64 * 1024
_CUT = "...(cut)"


def raw_text(value: Any) -> str:
    """`value` as compact JSON, at most MAX_RAW_CHARS characters. orjson writes 254 levels of
    nesting at most; deeper values (a server may send 1000) are written without recursion."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = _iterative_json(value)
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - len(_CUT)] + _CUT


def _iterative_json(value: Any) -> str:
    """Compact JSON of lists, dicts and scalars with an explicit stack, stopping once past
    MAX_RAW_CHARS (the caller cuts there)."""
    out: list[str] = []
    size = 0
    stack: list[tuple[bool, Any]] = [(False, value)]  # (is literal text, item)
    while stack and size <= MAX_RAW_CHARS:
        literal, item = stack.pop()
        if literal:
            piece = item
        elif isinstance(item, list):
            piece = "["
            stack.append((True, "]"))
            for n, element in enumerate(reversed(item)):
                stack.append((False, element))
                if n < len(item) - 1:
                    stack.append((True, ","))
        elif isinstance(item, dict):
            piece = "{"
            stack.append((True, "}"))
            entries = list(item.items())
            for n, (key, element) in enumerate(reversed(entries)):
                stack.append((False, element))
                stack.append((True, orjson.dumps(str(key)).decode() + ":"))
                if n < len(entries) - 1:
                    stack.append((True, ","))
        else:
            piece = orjson.dumps(item, default=str).decode()
        out.append(piece)
        size += len(piece)
    return "".join(out)


class QuarantineRows:
    """Collects rejected values; rare, so plain lists are fine here."""

    def __init__(self, source: str, ingested: datetime) -> None:
        self.source = source
        self.ingested = ingested
        self.webids: list[str | None] = []
        self.names: list[str | None] = []
        self.raw: list[str] = []
        self.reasons: list[str] = []
        self.at: list[int] = []

    def add(
        self, webid: str | None, name: str | None, value: Any, reason: str, at: int | None
    ) -> None:
        """`value` as compact JSON; `at`: its position among the decoded values when its
        timestamp parsed. A struct has lost the value's raw text: NeedsRawValues."""
        if isinstance(value, TimedValue):
            raise NeedsRawValues(reason)
        self.add_text(webid, name, raw_text(value), reason, at)

    def add_text(
        self, webid: str | None, name: str | None, raw: str, reason: str, at: int | None = None
    ) -> None:
        """A row whose raw text is `raw` as is (e.g. what the server did not let us read)."""
        self.webids.append(webid)
        self.names.append(name)
        self.raw.append(raw)
        self.reasons.append(reason)
        self.at.append(-1 if at is None else at)

    def table(
        self,
        ts_us: np.ndarray | None = None,
        sequence: np.ndarray | None = None,
    ) -> pa.Table:
        """The rows, with the key (timestamp, sequence) `ts_us[at]`, `sequence[at]` of those
        whose timestamp parsed (none without the decoded values' keys)."""
        n = len(self.raw)
        at = np.array(self.at, dtype=np.int64)
        stamps, sequences = np.zeros(n, np.int64), np.zeros(n, np.int32)
        keyed = np.zeros(n, dtype=bool)
        if ts_us is not None and sequence is not None:
            keyed = at >= 0
            stamps[keyed], sequences[keyed] = ts_us[at[keyed]], sequence[at[keyed]]
        return pa.Table.from_arrays(
            [
                pa.array(self.webids, pa.string()),
                pa.array(self.names, pa.string()),
                pa.array(self.raw, pa.string()),
                pa.array(self.reasons, pa.string()),
                pa.array([self.source] * n, pa.string()),
                pa.nulls(n, pa.string()),
                pa.nulls(n, pa.int64()),
                pa.array([self.ingested] * n, UTC_US),
                pa.array(stamps, mask=~keyed).cast(UTC_US),
                pa.array(sequences, mask=~keyed),
            ],
            schema=QUARANTINE_SCHEMA,
        )
