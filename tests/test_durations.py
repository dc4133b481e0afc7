"""Table-driven tests of operator durations (`30s 5m 2h 7d 250ms`) and their short form."""

from __future__ import annotations

import math

import pytest

from daemon.core.durations import format_duration, parse_duration

PARSED = [
    pytest.param("30s", 30.0, id="seconds"),
    pytest.param("5m", 300.0, id="minutes"),
    pytest.param("2h", 7200.0, id="hours"),
    pytest.param("7d", 604800.0, id="days"),
    pytest.param("1w", 604800.0, id="weeks"),
    pytest.param("250ms", 0.25, id="millis"),
    pytest.param("1h30m", 5400.0, id="compound"),
    pytest.param("1d2h3m4s5ms", 93784.005, id="all-units"),
    pytest.param("1.5h", 5400.0, id="decimal-part"),
    pytest.param("0s", 0.0, id="zero-unit"),
    pytest.param("90", 90.0, id="plain-number-text"),
    pytest.param("2.5", 2.5, id="decimal-number-text"),
    pytest.param(" 5m ", 300.0, id="surrounding-space"),
    pytest.param(90, 90.0, id="int"),
    pytest.param(0.5, 0.5, id="float"),
    pytest.param(0, 0.0, id="zero"),
]


@pytest.mark.parametrize(("text", "seconds"), PARSED)
def test_parse_duration(text: str | float, seconds: float) -> None:
    """Test that each duration form is parsed to the right number of seconds."""
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-9)
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("  ", id="blank"),
        pytest.param("5x", id="bad-unit"),
        pytest.param("m", id="unit-only"),
        pytest.param("5 m", id="space-inside"),
        pytest.param("1h 30m", id="space-between-parts"),
        pytest.param("1h30", id="trailing-number"),
        pytest.param("h1", id="unit-first"),
        pytest.param("-5s", id="negative-unit"),
        pytest.param("-5", id="negative-number-text"),
        pytest.param(-1, id="negative-number"),
        pytest.param(-0.001, id="negative-float"),
        pytest.param("5M", id="uppercase-unit"),
        pytest.param("1e3s", id="exponent-with-unit"),
        pytest.param("nan", id="nan-text"),
        pytest.param("inf", id="inf-text"),
        pytest.param("Infinity", id="infinity-text"),
        pytest.param(math.nan, id="nan-float"),
        pytest.param(math.inf, id="inf-float"),
        pytest.param(10**400, id="int-beyond-float"),
        pytest.param("9" * 400, id="number-text-beyond-float"),
        pytest.param("9" * 400 + "s", id="unit-text-beyond-float"),
    ],
)
def test_parse_duration_rejects(text: str | float) -> None:
    """Test that malformed, negative and non-finite durations raise ValueError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(None, id="none"),
        pytest.param([1], id="list"),
    ],
)
def test_parse_duration_rejects_other_types(value: object) -> None:
    """Test that a YAML boolean, null or list is an error, not silently 1 or 0 seconds."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)  # type: ignore[arg-type]


FORMATTED = [
    pytest.param(0, "0ms", id="zero"),
    pytest.param(0.25, "250ms", id="millis"),
    pytest.param(0.9994, "999ms", id="just-under-a-second"),
    pytest.param(1, "1s", id="one-second"),
    pytest.param(59, "59s", id="seconds"),
    pytest.param(60, "1m", id="minute"),
    pytest.param(90, "1m30s", id="minute-and-a-half"),
    pytest.param(3600, "1h", id="hour"),
    pytest.param(3661, "1h1m1s", id="hms"),
    pytest.param(86400 * 2, "2d", id="days"),
    pytest.param(86400 * 8 + 1, "8d1s", id="days-not-weeks"),
    pytest.param(89.6, "1m30s", id="rounds-to-second"),
]


@pytest.mark.parametrize(("seconds", "text"), FORMATTED)
def test_format_duration(seconds: float, text: str) -> None:
    """Test that durations are shown in the short form operators write."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), FORMATTED)
def test_format_then_parse(seconds: float, text: str) -> None:
    """Test that every short form parses back to the (rounded) duration it shows."""
    assert parse_duration(text) == pytest.approx(seconds, abs=0.5)
