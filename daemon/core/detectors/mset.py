"""`mset`: similarity-based state estimation (the MSET family, in its auto-associative kernel
regression form): estimate each row from remembered normal states, score the residuals.

How it works: a memory of `m` training rows spanning the normal operating states; a new row `x`
is estimated as the similarity-weighted average of the memory rows,
`x̂ = Σ w_i d_i / Σ w_i` with `w_i = exp(-|x - d_i|² / 2h²)` and `h` a few typical distances
between neighbouring memory rows. The score is the sum of squared residuals `x - x̂`, each
divided by that feature's residual spread on the training rows; the contributions are each
feature's share of it.

Why it suits gradual faults: a slow drift of one metric away from the others it normally
follows leaves every metric inside its own range (z-scores and isolation see nothing), but the
estimate is made of states where the metrics agree, so the residual grows with the drift from
the start and lands on the metrics whose relation broke. A weighted *average* of remembered
states cannot reproduce a state that was never seen (an estimator that can, such as kernel
ridge with a wide kernel, learns the identity and misses exactly these faults).

When it fails: the training history must cover the operating states (a new but normal regime
reads as an anomaly), and it costs `m` distance evaluations per row.

Calibration: a memory row would estimate itself, so the training scores leave each memory row
out of its own estimate, or the threshold would be learned from residuals of zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from daemon.core.detectors.base import (
    BaseDetector,
    FloatArray,
    Param,
    as_rows,
    finite,
    shares,
    take,
)

_CHUNK_CELLS = 1_000_000  # rows x memory distances held at once


def select_memory(rows: FloatArray, size: int) -> NDArray[np.int64]:
    """Pick memory rows: each feature's minimum and maximum row, then rows evenly spread over
    the training rows ordered by their norm (the classic MSET vector ordering), no repeats."""
    n = rows.shape[0]
    if n <= size:
        return np.arange(n, dtype=np.int64)
    chosen = list(dict.fromkeys(int(i) for i in (*rows.argmin(axis=0), *rows.argmax(axis=0))))
    chosen = chosen[:size]
    by_norm = np.argsort(np.linalg.norm(rows, axis=1), kind="stable")
    spread = by_norm[np.linspace(0, n - 1, num=size).round().astype(np.int64)]
    taken = set(chosen)
    for index in (*spread, *by_norm):  # evenly spread first, then fill what repeats left
        if len(chosen) >= size:
            break
        if int(index) not in taken:
            chosen.append(int(index))
            taken.add(int(index))
    return np.asarray(sorted(int(i) for i in chosen), dtype=np.int64)


def _squared_distances(a: FloatArray, b: FloatArray) -> FloatArray:
    d = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2.0 * a @ b.T
    return np.asarray(np.maximum(d, 0.0), dtype=np.float64)


def _estimates(
    rows: FloatArray, memory: FloatArray, width: float, exclude: NDArray[np.int64] | None = None
) -> FloatArray:
    """Kernel-weighted averages of the memory rows; `exclude[i]` (if >= 0) is left out of row
    i's average. Distances are shifted by each row's nearest so the weights never all vanish.
    Rows go a chunk at a time: a batch of devices never holds rows x memory at once."""
    out = np.empty_like(rows)
    chunk = max(1, _CHUNK_CELLS // max(1, len(memory)))
    for lo in range(0, len(rows), chunk):
        hi = min(len(rows), lo + chunk)
        distances = _squared_distances(rows[lo:hi], memory)
        if exclude is not None:
            own = exclude[lo:hi] >= 0
            distances[np.nonzero(own)[0], exclude[lo:hi][own]] = np.inf
        nearest = distances.min(axis=1, keepdims=True)
        weights = np.exp(-(distances - nearest) / (2 * width**2))
        weights /= weights.sum(axis=1, keepdims=True)
        out[lo:hi] = weights @ memory
    return out


class MSET(BaseDetector):
    kind: ClassVar[str] = "mset"
    PARAMS: ClassVar[dict[str, Param]] = {
        "memory": Param("memory", int, 1000, low=2, help="training rows kept as normal states"),
        "bandwidth": Param(
            "bandwidth",
            float,
            2.0,
            low=0.0,
            low_open=True,
            help="kernel width, times the median distance between neighbouring memory rows",
        ),
    }

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.memory: FloatArray | None = None
        self.width = 1.0
        self.spread: FloatArray | None = None
        self._fit_scores: FloatArray | None = None

    def fit(self, rows: FloatArray) -> None:
        x = as_rows(rows)
        if x.shape[0] < 2:
            raise ValueError("mset needs at least 2 rows")
        chosen = select_memory(x, self.params["memory"])
        memory = x[chosen]
        distances = _squared_distances(memory, memory)
        np.fill_diagonal(distances, np.inf)
        neighbour = np.sqrt(distances.min(axis=1))
        neighbour = neighbour[np.isfinite(neighbour) & (neighbour > 0)]
        typical = float(np.median(neighbour)) if neighbour.size else 0.0
        if typical <= 0:  # every memory row identical: any usual spread of 1 will do
            typical = 1.0
        self.width = self.params["bandwidth"] * typical
        self.memory = memory
        exclude = np.full(x.shape[0], -1, dtype=np.int64)
        exclude[chosen] = np.arange(len(chosen))  # leave each memory row out of its own estimate
        residuals = x - _estimates(x, memory, self.width, exclude) if len(memory) > 1 else x * 0
        spread = np.sqrt((residuals**2).mean(axis=0))
        floor = max(1e-3 * float(spread.mean()), 1e-12)
        self.spread = np.maximum(spread, floor)
        self._fit_scores = finite(((residuals / self.spread) ** 2).sum(axis=1))

    def _residuals(self, rows: FloatArray) -> FloatArray:
        if self.memory is None or self.spread is None:
            raise ValueError("mset is not fitted")
        x = finite(as_rows(rows, self.memory.shape[1]))
        return finite((x - _estimates(x, self.memory, self.width)) / self.spread)

    def score(self, rows: FloatArray) -> FloatArray:
        return finite((self._residuals(rows) ** 2).sum(axis=1))

    def training_scores(self, rows: FloatArray) -> FloatArray:
        """Leave-one-out scores of the rows just fitted on (see the module docstring)."""
        if self._fit_scores is not None and len(self._fit_scores) == len(rows):
            return self._fit_scores
        return self.score(rows)

    def contributions(self, rows: FloatArray) -> FloatArray:
        """Each feature's share of the score: its squared normalised residual."""
        return shares(self._residuals(rows) ** 2)

    def state(self) -> dict[str, NDArray[Any]]:
        if self.memory is None or self.spread is None:
            raise ValueError("mset is not fitted")
        return {
            "memory": self.memory.copy(),
            "spread": self.spread.copy(),
            "width": np.asarray(self.width),
        }

    def _restore(self, state: Mapping[str, NDArray[Any]]) -> None:
        self.memory = take(state, "memory", (None, None))
        self.spread = take(state, "spread", (self.memory.shape[1],))
        self.width = float(take(state, "width", ())[()])
        if self.width <= 0 or np.any(self.spread <= 0) or self.memory.shape[0] < 1:
            raise ValueError("state arrays 'width' and 'spread' must be positive, memory not empty")
