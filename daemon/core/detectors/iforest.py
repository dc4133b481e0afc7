"""`iforest`: isolation forest, fitted by scikit-learn, scored from plain arrays.

How it works: random axis-aligned splits isolate a row; anomalies sit alone after few splits,
so the score is `2^(-E[path length] / c(n))` (Liu et al., 2008), in (0, 1], about 0.5 for
typical rows. It needs no model of correlations and handles multi-modal data, but a drift that
only breaks a relation between metrics (each staying in its range) isolates no faster than a
normal row: it is weak on gradual and correlation faults, and its scores vary with the seed.

Fitting needs scikit-learn, which the pure core never imports: a `TreeFitter` is injected, and
by default the adapter `daemon.adapters.sklearn_iforest` is imported when a forest is *fitted*
(never when one is loaded and scored). The fitted trees become a `TreeEnsemble` of arrays, so
scoring and save/load are numpy only and no pickle is involved.

Contributions are path-based: each split on a row's path is credited with how much it shrank
the row's cell, `log2(samples in parent / samples in child)`, to the feature it split on. Over
one tree the credits add up to `log2(sample size / leaf size)`: how isolated the row got, split
by feature. A row far out on one metric is cut loose by splits on that metric (each leaves it
in a small side), while splits on metrics where it is typical keep it in the large side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from daemon.core.detectors.base import (
    BaseDetector,
    FloatArray,
    Param,
    as_rows,
    shares,
    take,
)
from daemon.core.trees import TreeEnsemble


class TreeFitter(Protocol):
    """Fit an isolation forest on `rows`; return its trees and the sample size each tree saw."""

    def __call__(
        self,
        rows: FloatArray,
        *,
        trees: int,
        max_samples: int,
        max_features: float,
        seed: int,
    ) -> tuple[TreeEnsemble, int]: ...


def default_fitter() -> TreeFitter:
    """The scikit-learn fitter, imported only now: loading and scoring never need it."""
    from daemon.adapters.sklearn_iforest import fit_isolation_trees

    return fit_isolation_trees


def average_path(samples: NDArray[Any]) -> FloatArray:
    """c(n): the average path length of an unsuccessful search in a binary tree of n samples."""
    n = np.asarray(samples, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IsolationForest(BaseDetector):
    kind: ClassVar[str] = "iforest"
    PARAMS: ClassVar[dict[str, Param]] = {
        "trees": Param("trees", int, 100, low=1, high=2000, help="number of trees"),
        "max_samples": Param(
            "max_samples", int, 256, low=2, help="rows each tree is grown on (at most all)"
        ),
        "max_features": Param(
            "max_features",
            float,
            1.0,
            low=0.0,
            high=1.0,
            low_open=True,
            help="share of the features each tree may split on",
        ),
    }

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        seed: int = 0,
        fitter: TreeFitter | None = None,
    ) -> None:
        super().__init__(params, seed)
        self.fitter = fitter
        self.trees: TreeEnsemble | None = None
        self.sample_size = 0
        self._gains: FloatArray | None = None

    def fit(self, rows: FloatArray) -> None:
        x = as_rows(rows)
        if x.shape[0] < 2:
            raise ValueError("iforest needs at least 2 rows")
        fitter = self.fitter or default_fitter()
        trees, sample_size = fitter(
            x,
            trees=self.params["trees"],
            max_samples=min(self.params["max_samples"], x.shape[0]),
            max_features=self.params["max_features"],
            seed=self.seed,
        )
        self._set(trees, sample_size)

    def _set(self, trees: TreeEnsemble, sample_size: int) -> None:
        self.trees = trees
        self.sample_size = int(sample_size)
        samples = trees.n_node_samples.astype(np.float64)
        parents = trees.parents
        parent_samples = np.take_along_axis(samples, np.maximum(parents, 0), axis=1)
        ratio = np.divide(
            parent_samples, samples, out=np.ones_like(samples), where=(samples > 0) & (parents >= 0)
        )
        self._gains = np.log2(np.maximum(ratio, 1.0))

    def _fitted(self, rows: FloatArray) -> tuple[TreeEnsemble, FloatArray]:
        if self.trees is None:
            raise ValueError("iforest is not fitted")
        return self.trees, as_rows(rows, self.trees.n_features)

    def score(self, rows: FloatArray) -> FloatArray:
        trees, x = self._fitted(rows)
        leaves = trees.leaves(x)
        index = np.arange(trees.n_trees)[None, :]
        depth = trees.node_depths()[index, leaves] + average_path(
            trees.n_node_samples[index, leaves]
        )
        norm = float(average_path(np.asarray([self.sample_size]))[0])
        if norm <= 0:
            return np.ones(x.shape[0])
        return np.asarray(2.0 ** (-depth.mean(axis=1) / norm), dtype=np.float64)

    def contributions(self, rows: FloatArray) -> FloatArray:
        trees, x = self._fitted(rows)
        assert self._gains is not None
        parts = shares(trees.attribute(x, self._gains))
        empty = parts.sum(axis=1) == 0  # no split on any path (trees of one node): no evidence
        parts[empty] = 1.0 / x.shape[1]
        return parts

    def state(self) -> dict[str, NDArray[Any]]:
        if self.trees is None:
            raise ValueError("iforest is not fitted")
        out = self.trees.to_arrays("trees_")
        out["sample_size"] = np.asarray(self.sample_size, dtype=np.int64)
        return out

    def _restore(self, state: Mapping[str, NDArray[Any]]) -> None:
        sample_size = int(take(state, "sample_size", ())[()])
        if sample_size < 1:
            raise ValueError("state array 'sample_size' must be >= 1")
        self._set(TreeEnsemble.from_arrays(state, "trees_"), sample_size)
