"""Window features for the learned models: one aggregate of each metric over a trailing window.

Why one module for both paths: a model is trained offline (history, a CSV) and scored live (the
daemon's in-memory window of each device). If the two computed features differently, a model
would see values at scoring time it never saw in training. So the daemon applies `AGGREGATES`
to a device's window, and `rolling` computes, for every row of a batch, exactly what
`AGGREGATES` gives on that row's window (tests check the two agree on random data).

Missing values (NaN) are not values: every aggregate ignores them, and a window without any
value gives NaN (the model then treats the row as unknown).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

_CHUNK_CELLS = 4_000_000  # rows x window length x columns materialised at once by `rolling`


def _present(values: FloatArray) -> FloatArray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[~np.isnan(x)]


def _mean(values: FloatArray) -> float:
    x = _present(values)
    return float(x.mean()) if x.size else float("nan")


def _median(values: FloatArray) -> float:
    x = _present(values)
    return float(np.median(x)) if x.size else float("nan")


def _min(values: FloatArray) -> float:
    x = _present(values)
    return float(x.min()) if x.size else float("nan")


def _max(values: FloatArray) -> float:
    x = _present(values)
    return float(x.max()) if x.size else float("nan")


def _last(values: FloatArray) -> float:
    x = _present(values)
    return float(x[-1]) if x.size else float("nan")


def _std(values: FloatArray) -> float:
    """Population standard deviation (ddof 0): one value has spread 0, not NaN."""
    x = _present(values)
    return float(x.std()) if x.size else float("nan")


def _range(values: FloatArray) -> float:
    x = _present(values)
    return float(x.max() - x.min()) if x.size else float("nan")


AGGREGATES: dict[str, Callable[[FloatArray], float]] = {
    "mean": _mean,
    "median": _median,
    "min": _min,
    "max": _max,
    "last": _last,
    "std": _std,
    "range": _range,
}
"""Aggregate name -> function of one window's values (1-D, oldest first) -> float (NaN if none)."""


def rolling(
    times_ms: NDArray[Any], values: NDArray[Any], window_ms: int, aggregate: str
) -> FloatArray:
    """Return, per row i, `aggregate` over the rows with `times[i] - window_ms < t <= times[i]`.

    `times_ms` must be sorted (non-decreasing); `values` is `(n,)` or `(n, columns)` and the
    result has the same shape, each column aggregated on its own. Equal to applying
    `AGGREGATES[aggregate]` to each row's window, computed a chunk of rows at a time.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(
            f"unknown aggregate {aggregate!r}; allowed: {', '.join(sorted(AGGREGATES))}"
        )
    if window_ms <= 0:
        raise ValueError(f"window must be positive, got {window_ms} ms")
    times = np.asarray(times_ms, dtype=np.int64)
    data = np.asarray(values, dtype=np.float64)
    one_column = data.ndim == 1
    if one_column:
        data = data[:, None]
    if times.ndim != 1 or data.ndim != 2 or data.shape[0] != times.shape[0]:
        raise ValueError(f"times {times.shape} and values {np.shape(values)} do not match")
    if times.size > 1 and np.any(np.diff(times) < 0):
        raise ValueError("times must be sorted")
    n, columns = data.shape
    out = np.full((n, columns), np.nan)
    if n:
        start = np.searchsorted(times, times - window_ms, side="right")
        end = np.searchsorted(times, times, side="right")
        width = int((end - start).max())
        chunk = max(1, _CHUNK_CELLS // max(1, width * columns))
        reduce = _REDUCERS[aggregate]
        offsets = np.arange(width)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            index = start[lo:hi, None] + offsets[None, :]
            inside = index < end[lo:hi, None]
            window = data[np.minimum(index, n - 1)]  # (rows, width, columns)
            present = inside[:, :, None] & ~np.isnan(window)
            out[lo:hi] = reduce(window, present)
    return out[:, 0] if one_column else out


def _count(present: NDArray[np.bool_]) -> NDArray[np.int64]:
    return np.asarray(present.sum(axis=1), dtype=np.int64)


def _none_to_nan(result: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    return np.where(_count(present) > 0, result, np.nan)


def _r_mean(window: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    count = _count(present)
    total = np.where(present, window, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _r_std(window: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    """Two passes (mean, then squared deviations): no cancellation on large offsets."""
    count = _count(present)
    mean = _r_mean(window, present)
    deviation = np.where(present, window - mean[:, None, :], 0.0)
    variance = (deviation**2).sum(axis=1) / np.maximum(count, 1)
    return np.where(count > 0, np.sqrt(variance), np.nan)


def _r_min(window: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    return _none_to_nan(np.where(present, window, np.inf).min(axis=1), present)


def _r_max(window: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    return _none_to_nan(np.where(present, window, -np.inf).max(axis=1), present)


def _r_range(window: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    return _r_max(window, present) - _r_min(window, present)


def _r_last(window: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    width = present.shape[1]
    last = width - 1 - np.argmax(present[:, ::-1, :], axis=1)  # last present position
    picked = np.take_along_axis(window, last[:, None, :], axis=1)[:, 0, :]
    return _none_to_nan(picked, present)


def _r_median(window: FloatArray, present: NDArray[np.bool_]) -> FloatArray:
    count = _count(present)
    ordered = np.sort(np.where(present, window, np.inf), axis=1)  # absent values sort last
    low = np.take_along_axis(ordered, (np.maximum(count - 1, 0) // 2)[:, None, :], axis=1)
    high = np.take_along_axis(ordered, (count // 2)[:, None, :], axis=1)
    # np.median of an even count is the mean of the two middle values, computed the same way
    median = np.where(count % 2 == 1, low[:, 0, :], (low[:, 0, :] + high[:, 0, :]) / 2)
    return np.where(count > 0, median, np.nan)


_REDUCERS: dict[str, Callable[[FloatArray, NDArray[np.bool_]], FloatArray]] = {
    "mean": _r_mean,
    "median": _r_median,
    "min": _r_min,
    "max": _r_max,
    "last": _r_last,
    "std": _r_std,
    "range": _r_range,
}

__all__ = ["AGGREGATES", "rolling"]
