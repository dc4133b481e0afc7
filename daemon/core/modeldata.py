"""Rows for the learned models, from a device's series: for training (history) and live (windows).

Both paths use `AGGREGATES` (daemon/core/features.py) on the same trailing window, so a model
scores live exactly the kind of row it was trained on. A row with a feature whose window holds
no point is NaN there: training drops it, live scoring leaves the device unscored (unknown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from daemon.core.features import AGGREGATES
from daemon.core.modelspec import Failure, Feature

FloatArray = NDArray[np.float64]
#: one metric's history: times in ms (ascending) and values
Series = tuple[NDArray[np.int64], FloatArray]


def series_of(points: Sequence[tuple[int, float]]) -> Series:
    if not points:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    times, values = zip(*points, strict=True)
    return np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64)


def grid(start_ms: int, end_ms: int, step_ms: int) -> NDArray[np.int64]:
    """Sample instants from `end_ms` back to `start_ms`, `step_ms` apart, ascending."""
    if step_ms <= 0 or end_ms < start_ms:
        return np.empty(0, dtype=np.int64)
    count = (end_ms - start_ms) // step_ms + 1
    return end_ms - step_ms * np.arange(count - 1, -1, -1, dtype=np.int64)


def feature_rows(
    series: Mapping[str, Series],
    features: Sequence[Feature],
    window_ms: int,
    at_ms: NDArray[np.int64],
) -> FloatArray:
    """Row i holds each feature's aggregate over `(at_ms[i] - window_ms, at_ms[i]]`."""
    rows = np.full((len(at_ms), len(features)), np.nan)
    for column, feature in enumerate(features):
        times, values = series.get(feature.metric, series_of([]))
        if not len(times):
            continue
        aggregate = AGGREGATES[feature.aggregate]
        lo = np.searchsorted(times, at_ms - window_ms, side="right")
        hi = np.searchsorted(times, at_ms, side="right")
        for row, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            if b > a:
                rows[row, column] = aggregate(values[a:b])
    return rows


def live_row(windows: Sequence[Sequence[float]], features: Sequence[Feature]) -> FloatArray:
    """One device's row from the values of each feature's window (in feature order)."""
    row = np.full(len(features), np.nan)
    for column, (feature, values) in enumerate(zip(features, windows, strict=True)):
        if len(values):
            row[column] = AGGREGATES[feature.aggregate](np.asarray(values, dtype=np.float64))
    return row


def aligned(series: Mapping[str, Series], metrics: Sequence[str], at_ms: NDArray[np.int64],
            max_age_ms: int) -> FloatArray:  # fmt: skip
    """Each metric's latest value at or before each instant (NaN if older than `max_age_ms`)."""
    out = np.full((len(at_ms), len(metrics)), np.nan)
    for column, metric in enumerate(metrics):
        times, values = series.get(metric, series_of([]))
        if not len(times):
            continue
        index = np.searchsorted(times, at_ms, side="right") - 1
        ok = index >= 0
        fresh = ok.copy()
        fresh[ok] = at_ms[ok] - times[index[ok]] <= max_age_ms
        out[fresh, column] = values[index[fresh]]
    return out


def failed(values: FloatArray, failure: Failure) -> NDArray[np.bool_]:
    """Where the failure condition holds (NaN never fails)."""
    with np.errstate(invalid="ignore"):
        if failure.above is not None:
            return np.asarray(values > failure.above)
        assert failure.below is not None
        return np.asarray(values < failure.below)


def episodes(is_failed: NDArray[np.bool_]) -> list[tuple[int, int, bool]]:
    """Split a device's history into lives: (start, end) row slices, and whether it ended failed.

    A life runs from a healthy row to the first failed row (included: the failure moment); the
    rows that stay failed after it are skipped (the device is broken, then repaired), and the
    next life starts at the next healthy row. The last life may be censored (never failed).
    """
    found: list[tuple[int, int, bool]] = []
    start: int | None = None
    for index, bad in enumerate(is_failed.tolist()):
        if bad:
            if start is not None:
                found.append((start, index + 1, True))
                start = None
        elif start is None:
            start = index
    if start is not None:
        found.append((start, len(is_failed), False))
    return found
