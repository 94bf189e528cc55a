"""The simulator's own reading of PI time strings, case by case, with exact ticks."""

from __future__ import annotations

import pytest

from mock_pi.pitime import (
    TICKS_PER_SECOND,
    PiTimeError,
    format_time,
    parse_span,
    parse_time,
    ticks_of_seconds,
)

S = TICKS_PER_SECOND
MINUTE, HOUR, DAY = 60 * S, 3600 * S, 86_400 * S
# 2026-03-15T13:45:30.1234567Z, the reference instant of every relative case.
MIDNIGHT = 20_527 * DAY  # 2026-03-15T00:00:00Z
NOW = MIDNIGHT + 13 * HOUR + 45 * MINUTE + 30 * S + 1_234_567


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the bases
        ("*", NOW),
        ("", NOW),
        ("  *  ", NOW),
        ("t", MIDNIGHT),
        ("T", MIDNIGHT),
        ("today", MIDNIGHT),
        ("Today", MIDNIGHT),
        ("y", MIDNIGHT - DAY),
        ("yesterday", MIDNIGHT - DAY),
        ("YESTERDAY", MIDNIGHT - DAY),
        ("08:30", MIDNIGHT + 8 * HOUR + 30 * MINUTE),
        ("08:30:15.5", MIDNIGHT + 8 * HOUR + 30 * MINUTE + 15 * S + S // 2),
        # offsets alone are from now
        ("-1h", NOW - HOUR),
        ("+30s", NOW + 30 * S),
        # every unit name
        ("*-2s", NOW - 2 * S),
        ("*-2sec", NOW - 2 * S),
        ("*-2second", NOW - 2 * S),
        ("*-2seconds", NOW - 2 * S),
        ("*-2m", NOW - 2 * MINUTE),
        ("*-2min", NOW - 2 * MINUTE),
        ("*-2minute", NOW - 2 * MINUTE),
        ("*-2minutes", NOW - 2 * MINUTE),
        ("*-2h", NOW - 2 * HOUR),
        ("*-2hr", NOW - 2 * HOUR),
        ("*-2hour", NOW - 2 * HOUR),
        ("*-2hours", NOW - 2 * HOUR),
        ("*-2d", NOW - 2 * DAY),
        ("*-2day", NOW - 2 * DAY),
        ("*-2days", NOW - 2 * DAY),
        ("*-2w", NOW - 14 * DAY),
        ("*-2week", NOW - 14 * DAY),
        ("*-2weeks", NOW - 14 * DAY),
        ("*-2H", NOW - 2 * HOUR),
        ("* - 2 h", NOW - 2 * HOUR),
        # offsets combined, applied left to right; a missing sign repeats the one before
        ("*-1d+2h", NOW - DAY + 2 * HOUR),
        ("t+8h-15m", MIDNIGHT + 8 * HOUR - 15 * MINUTE),
        ("y+16h30m", MIDNIGHT - DAY + 16 * HOUR + 30 * MINUTE),
        ("*-1h30m", NOW - HOUR - 30 * MINUTE),
        ("*-1h+30m", NOW - 30 * MINUTE),
        # fractions: exact where they can be, else the nearest tick, halves to even
        ("*-1.5h", NOW - 90 * MINUTE),
        ("*+.25d", NOW + 6 * HOUR),
        ("*+3.s", NOW + 3 * S),
        ("*+0.0000001s", NOW + 1),
        ("*+0.00000014s", NOW + 1),
        ("*+0.00000016s", NOW + 2),
        ("*+0.00000005s", NOW),
        ("*+0.00000015s", NOW + 2),
        ("*-0.00000015s", NOW - 2),
        ("*+0.1m", NOW + 6 * S),
        # months and years: calendar steps, the day clamped to the month's end
        ("t-1mo", MIDNIGHT - 28 * DAY),  # 2026-02-15
        ("2026-01-31+1mo", 20_512 * DAY),  # 2026-02-28
        ("2024-01-31T06:00:00Z+1month", 19_782 * DAY + 6 * HOUR),  # 2024-02-29T06:00
        ("2024-02-29+1y", 20_147 * DAY),  # 2025-02-28
        ("2026-03-15-2years", MIDNIGHT - 730 * DAY),  # 2024-03-15 (2024 is a leap year)
        ("t+1mo-1d", MIDNIGHT + 30 * DAY),  # 2026-04-14
        ("y-1y", MIDNIGHT - 366 * DAY),  # 2025-03-14
        # ISO 8601
        ("2026-03-15", MIDNIGHT),
        ("2026-03-15T00:00:00Z", MIDNIGHT),
        ("2026-03-15t13:45:30.1234567z", NOW),
        ("2026-03-15T13:45:30.1234567", NOW),
        ("2026-03-15 13:45:30.1234567Z", NOW),
        ("2026-03-15T13:45Z", MIDNIGHT + 13 * HOUR + 45 * MINUTE),
        ("2026-03-15T13:45:30.5Z", MIDNIGHT + 13 * HOUR + 45 * MINUTE + 30 * S + S // 2),
        ("2026-03-15T13:45:30.000001Z", NOW - 1_234_567 + 10),
        ("2026-03-15T02:00:00+02:00", MIDNIGHT),
        ("2026-03-15T02:00:00+0200", MIDNIGHT),
        ("2026-03-14T18:30:00-05:30", MIDNIGHT),
        ("2026-03-15T00:00:00Z+1h", MIDNIGHT + HOUR),
        ("2026-03-15T00:00:00+1000s", MIDNIGHT + 1000 * S),
        ("2026-03-15-1d", MIDNIGHT - DAY),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.9999999Z", -1),
        ("0001-01-01", -62_135_596_800 * S),
        ("9999-12-31T23:59:59.9999999Z", 253_402_300_800 * S - 1),
    ],
)
def test_a_time_string_names_one_tick(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    "text",
    [
        "now",
        "tomorrow",
        "1h",  # an offset needs its sign
        "*1h",
        "*-1x",
        "*-1",
        "*--1h",
        "+-1h",
        "*-h",
        "*-1.5mo",  # months and years are whole
        "*-0.5y",
        "*-1ms",
        "2026-13-01",
        "2026-02-29",
        "2026-3-15",
        "2026-03-15T24:00:00Z",
        "2026-03-15T13:60:00Z",
        "2026-03-15T13:45:61Z",
        "2026-03-15T13Z",
        "2026-03-15T13:45:30.12345678Z",  # finer than a tick
        "2026-03-15T13:45:30.Z",
        "2026-03-15T13:45:30+15:00",
        "2026-03-15T13:45:30+02:60",
        "20260315T134530Z",
        "08:30Z",
        "*-10000000d",  # before the year 1
        "9999-12-31+1d",
        "9999-12-31+1y",
        "0001-01-01-1mo",
    ],
)
def test_what_is_not_a_time_string_is_refused_with_the_servers_message(text: str) -> None:
    with pytest.raises(PiTimeError) as caught:
        parse_time(text, NOW)
    assert str(caught.value) == f"Cannot parse time string '{text}'."
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "ticks"),
    [
        ("10m", 10 * MINUTE),
        ("+10m", 10 * MINUTE),
        ("1.5h", 90 * MINUTE),
        ("1h30m", 90 * MINUTE),
        ("1d-2h", 22 * HOUR),
        ("2 weeks", 14 * DAY),
        ("0.0000001s", 1),
        ("0s", 0),
        ("-1h", -HOUR),
    ],
)
def test_an_interval_is_a_fixed_length(text: str, ticks: int) -> None:
    assert parse_span(text) == ticks


@pytest.mark.parametrize("text", ["", "soon", "h", "1", "1mo", "1y", "*", "*+1h", "1h 2"])
def test_an_interval_of_no_fixed_length_is_refused(text: str) -> None:
    with pytest.raises(PiTimeError):
        parse_span(text)


@pytest.mark.parametrize(
    ("ticks", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:00.0000001Z"),
        (10, "1970-01-01T00:00:00.0000010Z"),
        (S // 2, "1970-01-01T00:00:00.5000000Z"),
        (S, "1970-01-01T00:00:01Z"),
        (-1, "1969-12-31T23:59:59.9999999Z"),
        (-S, "1969-12-31T23:59:59Z"),
        (NOW, "2026-03-15T13:45:30.1234567Z"),
        (MIDNIGHT + 2_000_000 * S, "2026-04-07T03:33:20Z"),
        (20_788 * DAY, "2026-12-01T00:00:00Z"),
        (253_402_300_800 * S - 1, "9999-12-31T23:59:59.9999999Z"),
        (-62_135_596_800 * S, "0001-01-01T00:00:00Z"),
    ],
)
def test_timestamps_are_written_as_pi_writes_them(ticks: int, text: str) -> None:
    assert format_time(ticks) == text
    assert parse_time(text, 0) == ticks


def test_now_in_seconds_is_cut_to_whole_microseconds() -> None:
    assert ticks_of_seconds(1.5) == 15_000_000
    assert ticks_of_seconds(1_773_582_330.123456) == 17_735_823_301_234_560
    assert ticks_of_seconds(0.0000019) == 10
