"""The series notation of rule tests, term by term, as promtool (Prometheus 2.42) reads it."""

from __future__ import annotations

import pytest

from daemon.core.notation import expand_series

_ = None

# (notation, values): each row checked against `promtool test rules` by hand; the paired test in
# test_prometheus_parity.py runs the missing-sample terms through promtool itself
CASES = [
    ("60", [60.0]),
    ("60 62 _ 64", [60.0, 62.0, _, 64.0]),
    ("60+2x3", [60.0, 62.0, 64.0, 66.0]),
    ("5-1x2", [5.0, 4.0, 3.0]),
    ("-18.2-0.1x2", [-18.2, pytest.approx(-18.3), pytest.approx(-18.4)]),
    ("1x4", [1.0] * 5),
    ("_", [_]),
    ("_x3", [_, _, _]),
    ("_x1", [_]),
    ("_x0", []),
    ("1 _x3 2x2", [1.0, _, _, _, 2.0, 2.0, 2.0]),
    ("1e1 -1.5", [10.0, -1.5]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_expand_series(text: str, expected: list[float | None]) -> None:
    """Test that each term expands to promtool's values (`_xn` is n samples, `axn` n + 1)."""
    assert expand_series(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("60+2", "a step needs a count"),
        ("_+1x2", "`_` takes no step"),
        ("stale", "no staleness markers"),
        ("abc", "bad series term 'abc'"),
        ("1x100001", "too long"),
        ("_x100001", "too long"),
    ],
)
def test_bad_terms_are_named(text: str, message: str) -> None:
    """Test that a term promtool rejects (or Frontline cannot model) fails with its reason."""
    with pytest.raises(ValueError, match=message):
        expand_series(text)
