"""`robust_z`: each feature's robust z-score (median / MAD), combined as their Euclidean norm.

The baseline: no model of how features relate, so it catches a metric leaving its own usual
range and nothing else. A drift that breaks a correlation while each metric stays inside its
range goes unseen (tests/test_detectors.py shows it). Robust statistics because training
history holds the odd spike: a mean and standard deviation would be dragged by it, a median and
MAD are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from daemon.core.detectors.base import BaseDetector, FloatArray, as_rows, finite, shares, take

MAD_TO_SIGMA = 1.4826  # a normal distribution's MAD x this = its standard deviation


def robust_spread(rows: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return per-column (median, spread): MAD as sigma, else std, else 1 (a constant column).

    A column constant in training gets spread 1: any later change counts in its own units
    rather than dividing by zero.
    """
    center = np.median(rows, axis=0)
    spread = MAD_TO_SIGMA * np.median(np.abs(rows - center), axis=0)
    fallback = rows.std(axis=0)
    tiny = 1e-12 * np.maximum(1.0, np.abs(center))
    spread = np.where(spread > tiny, spread, np.where(fallback > tiny, fallback, 1.0))
    return center, spread


class RobustZ(BaseDetector):
    kind: ClassVar[str] = "robust_z"

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.center: FloatArray | None = None
        self.spread: FloatArray | None = None

    def fit(self, rows: FloatArray) -> None:
        self.center, self.spread = robust_spread(as_rows(rows))

    def _z(self, rows: FloatArray) -> FloatArray:
        if self.center is None or self.spread is None:
            raise ValueError("robust_z is not fitted")
        x = as_rows(rows, self.center.shape[0])
        return finite((x - self.center) / self.spread)

    def score(self, rows: FloatArray) -> FloatArray:
        return finite(np.sqrt((self._z(rows) ** 2).sum(axis=1)))

    def contributions(self, rows: FloatArray) -> FloatArray:
        """Each feature's share of the squared score (z_j^2 / sum z^2)."""
        return shares(self._z(rows) ** 2)

    def state(self) -> dict[str, NDArray[Any]]:
        if self.center is None or self.spread is None:
            raise ValueError("robust_z is not fitted")
        return {"center": self.center.copy(), "spread": self.spread.copy()}

    def _restore(self, state: Mapping[str, NDArray[Any]]) -> None:
        self.center = take(state, "center", (None,))
        self.spread = take(state, "spread", (self.center.shape[0],))
        if np.any(self.spread <= 0):
            raise ValueError("state array 'spread' must be positive")
