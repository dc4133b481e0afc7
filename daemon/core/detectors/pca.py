"""`pca`: Hotelling's T² inside the principal subspace plus Q (squared prediction error) off it.

Why both: T² measures how unusual a row is *along* the directions the training data varies in
(everything moving together, further than usual); Q measures how far it leaves that subspace
(a relation between metrics broken: a sensor drifting away from the ones it normally follows).
They are combined as `T²/mean(T²) + Q/mean(Q)` over the training rows, so each counts equally.

Contributions are reconstruction-based (Alcalá & Qin, 2009): for the combined index
`φ = xᵀ M x`, feature j's contribution is `(M x)_j² / M_jj`, the amount φ drops when feature
j alone is reconstructed to its best value. Unlike `x_j (M x)_j` these are never negative, and
for a large fault along one feature that feature gets the largest share.

When it fails: a non-linear relation (a curve) needs many components or shows as Q everywhere;
fewer rows than about ten per feature give an unstable subspace.
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


class PCA(BaseDetector):
    kind: ClassVar[str] = "pca"
    PARAMS: ClassVar[dict[str, Param]] = {
        "variance": Param(
            "variance",
            float,
            0.95,
            low=0.0,
            high=1.0,
            low_open=True,
            help="share of the training variance the kept components explain",
        ),
    }

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.mean: FloatArray | None = None
        self.metric: FloatArray | None = None  # M of the combined index, (f, f)
        self.components = 0

    def fit(self, rows: FloatArray) -> None:
        x = as_rows(rows)
        n, f = x.shape
        if n < 2:
            raise ValueError("pca needs at least 2 rows")
        self.mean = x.mean(axis=0)
        centered = x - self.mean
        _, singular, vt = np.linalg.svd(centered, full_matrices=False)
        eigen = singular**2 / (n - 1)
        total = float(eigen.sum())
        usable = int(np.sum(eigen > max(1e-10 * (eigen[0] if eigen.size else 0.0), 1e-300)))
        if usable == 0:  # every column constant: only Q, around the constant
            k = 0
        else:
            explained = np.cumsum(eigen[:usable]) / total
            k = int(np.searchsorted(explained, self.params["variance"] - 1e-12) + 1)
            k = min(k, usable)
        self.components = k
        loadings = vt[:k].T  # (f, k)
        t2_part = loadings @ np.diag(1.0 / eigen[:k]) @ loadings.T
        q_part = np.eye(f) - loadings @ loadings.T
        t2 = np.einsum("ij,jk,ik->i", centered, t2_part, centered) if k else np.zeros(n)
        q = np.einsum("ij,jk,ik->i", centered, q_part, centered)
        t2_scale = max(float(t2.mean()), 1e-12) if k else 1.0
        q_scale = max(float(q.mean()), 1e-9 * max(total / max(f, 1), 1e-12))
        metric = (t2_part / t2_scale if k else 0.0) + (q_part / q_scale if k < f else 0.0)
        self.metric = np.asarray(metric, dtype=np.float64)
        self.metric = (self.metric + self.metric.T) / 2  # symmetric to the last bit

    def _check(self, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        if self.mean is None or self.metric is None:
            raise ValueError("pca is not fitted")
        centered = finite(as_rows(rows, self.mean.shape[0]) - self.mean)
        return centered, self.metric

    def score(self, rows: FloatArray) -> FloatArray:
        centered, metric = self._check(rows)
        return finite(np.maximum(np.einsum("ij,jk,ik->i", centered, metric, centered), 0.0))

    def contributions(self, rows: FloatArray) -> FloatArray:
        """Reconstruction-based contributions `(M x)_j² / M_jj`, as shares of their sum."""
        centered, metric = self._check(rows)
        diagonal = np.diag(metric)
        pulled = finite(centered @ metric)
        parts = np.divide(pulled**2, diagonal, out=np.zeros_like(pulled), where=diagonal > 1e-300)
        return shares(parts)

    def state(self) -> dict[str, NDArray[Any]]:
        if self.mean is None or self.metric is None:
            raise ValueError("pca is not fitted")
        return {
            "mean": self.mean.copy(),
            "metric": self.metric.copy(),
            "components": np.asarray(self.components, dtype=np.int64),
        }

    def _restore(self, state: Mapping[str, NDArray[Any]]) -> None:
        self.mean = take(state, "mean", (None,))
        f = self.mean.shape[0]
        self.metric = take(state, "metric", (f, f))
        self.components = int(take(state, "components", ())[()])
