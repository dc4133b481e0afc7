"""`pca`: Hotelling's T² inside the principal subspace plus Q (squared prediction error) off it.

Why both: T² measures how unusual a row is *along* the directions the training data varies in
(everything moving together, further than usual); Q measures how far it leaves that subspace
(a relation between metrics broken: a sensor drifting away from the ones it normally follows).
They are combined as `T²/mean(T²) + Q/mean(Q)` over the training rows, so each counts equally.

Contributions say which feature departed. They start from reconstruction (Alcalá & Qin, 2009):
for the combined index `φ = xᵀ M x`, `RBC_j = (M x)_j² / M_jj` is how much φ drops when feature j
alone is moved to its best value. RBC ranks the departed feature first once the departure is
large, but as shares its values smear: the other features' RBC are of the same order (a 4-sd
departure of one of four correlated metrics got 40-70 %), and when a relation among three
metrics breaks with one residual direction left (the boiler's return temperature leaving what
flow temperature and power imply), the Q part of M has rank one, each of the three is
reconstructed equally well and RBC shares are a third each, however large the departure.

So the shares are posterior probabilities. φ is the Mahalanobis distance of the Gaussian with
precision M, so `RBC_j / 2` is the log-likelihood gain of "feature j departed, by any amount"
over "nothing did"; likewise for two features at once (a 2 x 2 reconstruction), each departed
feature costing `PAIR_PRICE / 2`. A feature's share is the weight of the hypotheses it belongs
to, normalised. The ranking stays RBC's (a pair can only tip a near tie). A departure the data
can attribute gets nearly all the share, two metrics that departed together split it, and a
departure one row cannot attribute (flow 4 °C lower explains the boiler row as well as return
4 °C higher, both within their usual spread) stays spread over the features that could explain
it. The scores do not change.

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

# Index units a second departed feature must lower φ by, beyond the first, to be believed: φ
# averages 2 on the training rows, and fitting a second feature to noise lowers it by less than
# 4 in 199 rows of 200 (tests/test_contributions.py measures it).
PAIR_PRICE = 10.0
_CHUNK_CELLS = 1_000_000  # rows x feature pairs held at once


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
        """Posterior shares of the features that departed (see the module docstring)."""
        centered, metric = self._check(rows)
        return departure_shares(centered, metric)

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


def reconstruction_gains(
    centered: FloatArray, metric: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (φ, single, pair) for centred rows `x` and the index `φ = xᵀ M x`.

    `single[:, j]` is how much φ drops when feature j alone is reconstructed to its best value,
    `(M x)_j² / M_jj` (Alcalá & Qin's RBC); `pair[:, p]` the same for the two features of the
    p-th pair of `np.triu_indices(f, 1)` reconstructed together. Both lie in [0, φ], and a pair
    never gains less than either of its features alone.
    """
    f = centered.shape[1]
    diagonal = np.diag(metric)
    usable = diagonal > 1e-300
    with np.errstate(over="ignore", invalid="ignore"):
        pulled = finite(centered @ metric)
        index = finite(np.maximum(np.einsum("ij,jk,ik->i", centered, metric, centered), 0.0))
        single = np.divide(pulled**2, diagonal, out=np.zeros_like(pulled), where=usable)
    single = np.minimum(finite(single), index[:, None])
    first, second = np.triu_indices(f, 1)
    m_ii, m_jj, m_ij = diagonal[first], diagonal[second], metric[first, second]
    det = m_ii * m_jj - m_ij**2
    solvable = usable[first] & usable[second] & (det > 1e-9 * m_ii * m_jj)
    a, b = pulled[:, first], pulled[:, second]
    best = np.maximum(single[:, first], single[:, second])
    with np.errstate(over="ignore", invalid="ignore"):
        pair = (a**2 * m_jj - 2.0 * a * b * m_ij + b**2 * m_ii) / np.where(solvable, det, 1.0)
    pair = np.where(solvable, finite(pair), best)  # parallel columns: no more than one feature
    return index, single, np.clip(pair, best, index[:, None])


def departure_shares(centered: FloatArray, metric: FloatArray) -> FloatArray:
    """Each feature's posterior probability of being among the departed, as shares.

    Hypotheses: one feature departed (log-weight `single / 2`) or two (`pair / 2`), each
    departed feature costing `PAIR_PRICE / 2`; a feature's weight is the sum over the hypotheses
    it belongs to. Rows go a chunk at a time (rows x pairs bounded); φ = 0 gives zeros.
    """
    n, f = centered.shape
    first, second = np.triu_indices(f, 1)
    members = np.zeros((len(first), f))
    members[np.arange(len(first)), first] = 1.0
    members[np.arange(len(first)), second] = 1.0
    out = np.zeros_like(centered)
    chunk = max(1, _CHUNK_CELLS // max(1, len(first)))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        index, single, pair = reconstruction_gains(centered[lo:hi], metric)
        log_single = (single - PAIR_PRICE) / 2
        log_pair = pair / 2 - PAIR_PRICE
        top = log_single.max(axis=1, keepdims=True)
        if len(first):
            top = np.maximum(top, log_pair.max(axis=1, keepdims=True))
        weight = np.exp(log_single - top) + np.exp(log_pair - top) @ members
        weight[index <= 0] = 0.0
        out[lo:hi] = weight
    return shares(out)
