"""Window features: the vectorised `rolling` equals `AGGREGATES` applied to each row's window.

That equality is what keeps offline (CSV, history) and live (the daemon's windows) features the
same, so it is checked on random data, with duplicated times, gaps and missing values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core.features import AGGREGATES, rolling

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values_strategy = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.just(math.nan),
)


def naive(times: np.ndarray, values: np.ndarray, window_ms: int, aggregate: str) -> np.ndarray:
    """The definition, row by row: AGGREGATES over times[i] - window < t <= times[i]."""
    data = values[:, None] if values.ndim == 1 else values
    out = np.full(data.shape, np.nan)
    for i, now in enumerate(times):
        inside = (times > now - window_ms) & (times <= now)
        for column in range(data.shape[1]):
            out[i, column] = AGGREGATES[aggregate](data[inside, column])
    return out[:, 0] if values.ndim == 1 else out


@st.composite
def series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(min_value=0, max_value=40))
    columns = draw(st.integers(min_value=1, max_value=3))
    steps = draw(st.lists(st.integers(min_value=0, max_value=3000), min_size=n, max_size=n))
    times = 1_700_000_000_000 + np.cumsum(np.asarray(steps, dtype=np.int64))
    cells = draw(st.lists(values_strategy, min_size=n * columns, max_size=n * columns))
    return times, np.asarray(cells, dtype=np.float64).reshape(n, columns)


@FAST
@given(
    data=series(),
    window_ms=st.integers(min_value=1, max_value=10_000),
    aggregate=st.sampled_from(sorted(AGGREGATES)),
)
def test_rolling_equals_aggregates_on_each_window(
    data: tuple[np.ndarray, np.ndarray], window_ms: int, aggregate: str
) -> None:
    """Test that rolling() gives, per row and column, AGGREGATES over that row's window."""
    times, values = data
    got = rolling(times, values, window_ms, aggregate)
    want = naive(times, values, window_ms, aggregate)
    assert got.shape == values.shape
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6, equal_nan=True)


def test_window_bounds_exclude_the_start_and_include_the_row() -> None:
    """Test the half-open window: a point exactly window_ms old is out, the row itself is in."""
    times = np.array([0, 1000, 2000, 3000])
    values = np.array([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(rolling(times, values, 1000, "mean"), values)
    np.testing.assert_array_equal(rolling(times, values, 2000, "max"), values)
    np.testing.assert_array_equal(rolling(times, values, 2001, "min"), [1.0, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(rolling(times, values, 3000, "range"), [0, 1, 3, 6])


def test_missing_values_are_ignored_and_an_empty_window_is_nan() -> None:
    """Test that NaN is no value: skipped inside a window, NaN when the window has nothing."""
    times = np.array([0, 1000, 2000, 3000])
    values = np.array([math.nan, 2.0, math.nan, math.nan])
    got = rolling(times, values, 1500, "last")
    np.testing.assert_array_equal(got[1:3], [2.0, 2.0])
    assert math.isnan(got[0])
    assert math.isnan(got[3])
    for aggregate in AGGREGATES:
        assert math.isnan(AGGREGATES[aggregate](np.array([])))
        assert math.isnan(AGGREGATES[aggregate](np.array([math.nan])))


def test_two_dimensional_columns_are_independent() -> None:
    """Test that each column of a 2-D input is aggregated on its own."""
    times = np.arange(5) * 1000
    values = np.column_stack([np.arange(5.0), -np.arange(5.0)])
    got = rolling(times, values, 2500, "mean")
    np.testing.assert_allclose(got[:, 0], [0, 0.5, 1, 2, 3])
    np.testing.assert_allclose(got[:, 1], [0, -0.5, -1, -2, -3])


def test_std_has_no_cancellation_on_large_offsets() -> None:
    """Test that a tiny spread on a large level is not lost (two-pass variance)."""
    times = np.arange(100) * 1000
    values = 1e9 + np.tile([0.0, 1e-3], 50)
    got = rolling(times, values, 10_000, "std")
    np.testing.assert_allclose(got[10:], np.std(values[:10]), rtol=1e-9)
    assert got[10:].min() > 4e-4  # a one-pass E[x^2] - E[x]^2 gives 0 or noise here


def test_many_rows_in_chunks_equal_one_pass() -> None:
    """Test that chunking (long windows over many rows) does not change the result."""
    rng = np.random.default_rng(1)
    times = np.sort(rng.integers(0, 10_000_000, size=3000))
    values = rng.normal(size=(3000, 2))
    got = rolling(times, values, 2_000_000, "median")
    for i in (0, 1, 1500, 2999):
        inside = (times > times[i] - 2_000_000) & (times <= times[i])
        np.testing.assert_allclose(got[i], np.median(values[inside], axis=0))


@pytest.mark.parametrize(
    ("times", "window", "aggregate", "message"),
    [
        ([0, 1], 1000, "mode", "unknown aggregate 'mode'; allowed: last, max, mean"),
        ([0, 1], 0, "mean", "window must be positive"),
        ([1, 0], 1000, "mean", "times must be sorted"),
    ],
)
def test_bad_arguments_are_refused_clearly(
    times: list[int], window: int, aggregate: str, message: str
) -> None:
    """Test that an unknown aggregate, a non-positive window or unsorted times raise ValueError."""
    with pytest.raises(ValueError, match=message):
        rolling(np.array(times), np.array([1.0, 2.0]), window, aggregate)
