"""Fitted decision-tree ensembles as plain numpy arrays: traversal, depths and leaf values.

Why: scikit-learn fits the trees (isolation forest, regression forests for remaining useful
life), but scoring must run in the daemon's pure core and artefacts must be saved without pickle
(a pickled model is code a file can run). A fitted tree is just six arrays; this module keeps
them, walks rows down every tree at once with vectorised numpy, and saves/loads them as a dict of
arrays (`np.savez`-ready). Nothing here imports scikit-learn: `TreeEnsemble.from_sklearn` only
reads the documented `tree_` attributes of estimators it is handed.

API (stable; the isolation-forest detector and the RUL model build on it):

- `TreeEnsemble(children_left, children_right, feature, threshold, value, n_node_samples,
  n_features)`: per-tree arrays stacked into `(n_trees, max_nodes)` (padding nodes are leaves
  that no row reaches); `value` is `(n_trees, max_nodes, k)` (k = 1 for single-output
  regression: the leaf mean; for classifiers scikit-learn's per-class fractions). Node 0 is the
  root of each tree; a leaf has `children_left == children_right == -1` and `feature == -2`.
  A row goes left when `row[feature] <= threshold`.
- `TreeEnsemble.from_sklearn(estimators, features=None, n_features=None)`: from fitted
  scikit-learn trees (`est.tree_`); `features[i]` maps tree i's column numbers to the rows'
  columns (bagging ensembles such as IsolationForest fit each tree on a column subset:
  pass `estimators_features_`).
- `.leaves(rows) -> (n, n_trees)` node index of the leaf each row reaches in each tree.
- `.node_depths() -> (n_trees, max_nodes)` depth of every node (root 0).
- `.leaf_depths(rows) -> (n, n_trees)` depth of the leaf reached (isolation path length).
- `.leaf_samples(rows) -> (n, n_trees)` training samples in the leaf reached.
- `.leaf_values(rows) -> (n, n_trees, k)` the leaf values (a random forest's regression is
  `leaf_values(rows)[..., 0].mean(axis=1)`; gradient boosting's is
  `init + learning_rate * leaf_values(rows)[..., 0].sum(axis=1)`).
- `.parents -> (n_trees, max_nodes)` each node's parent (-1 for roots).
- `.attribute(rows, gains) -> (n, n_features)` per row, `gains[t, node]` summed over the nodes
  visited, credited to the feature of the split leading into each node (Saabas contributions
  with `gains = value - value[parent]`).
- `.to_arrays(prefix) -> dict[str, np.ndarray]` and `TreeEnsemble.from_arrays(arrays, prefix)`
  (raises `ValueError` naming the missing or misshapen array).

Rows are cast to float32 before comparing, as scikit-learn does when it predicts (its thresholds
were found on float32 data), so leaves match scikit-learn's `apply` exactly. Rows should be
finite; a NaN goes where scikit-learn's `missing_go_to_left` says when that was exported, else
right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

LEAF = -1
LEAF_FEATURE = -2
_CHUNK_ROWS = 4096  # rows walked at once: bounds the (rows x trees) temporaries

_NAMES = (
    "children_left",
    "children_right",
    "feature",
    "threshold",
    "value",
    "n_node_samples",
    "missing_go_to_left",
)


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """Fitted trees as stacked arrays (see the module docstring for the layout)."""

    children_left: NDArray[np.int64]
    children_right: NDArray[np.int64]
    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    value: NDArray[np.float64]
    n_node_samples: NDArray[np.int64]
    n_features: int
    missing_go_to_left: NDArray[np.bool_] = field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.bool_)
    )

    def __post_init__(self) -> None:
        problems = _structure_problems(self)
        if problems:
            raise ValueError("invalid tree arrays: " + "; ".join(problems))

    @property
    def n_trees(self) -> int:
        return int(self.children_left.shape[0])

    @property
    def max_nodes(self) -> int:
        return int(self.children_left.shape[1])

    @classmethod
    def from_sklearn(
        cls,
        estimators: Sequence[Any],
        features: Sequence[Sequence[int]] | None = None,
        n_features: int | None = None,
    ) -> TreeEnsemble:
        """Export fitted scikit-learn trees (anything with a `tree_`) into arrays.

        `features[i]`, when given, maps tree i's column numbers to the caller's columns;
        `n_features` defaults to the widest tree's `n_features_in_`-like extent.
        """
        trees = [getattr(est, "tree_", est) for est in estimators]
        if not trees:
            raise ValueError("no trees to export")
        max_nodes = max(int(t.node_count) for t in trees)
        k = max(int(np.prod(np.asarray(t.value).shape[1:])) for t in trees)
        n = len(trees)
        left = np.full((n, max_nodes), LEAF, dtype=np.int64)
        right = np.full((n, max_nodes), LEAF, dtype=np.int64)
        feat = np.full((n, max_nodes), LEAF_FEATURE, dtype=np.int64)
        thr = np.zeros((n, max_nodes), dtype=np.float64)
        val = np.zeros((n, max_nodes, k), dtype=np.float64)
        samples = np.zeros((n, max_nodes), dtype=np.int64)
        missing = np.zeros((n, max_nodes), dtype=np.bool_)
        widest = 0
        for i, tree in enumerate(trees):
            m = int(tree.node_count)
            left[i, :m] = tree.children_left
            right[i, :m] = tree.children_right
            local = np.asarray(tree.feature, dtype=np.int64)
            is_split = local >= 0
            mapped = local.copy()
            if features is not None:
                mapping = np.asarray(features[i], dtype=np.int64)
                mapped[is_split] = mapping[local[is_split]]
            mapped[~is_split] = LEAF_FEATURE
            feat[i, :m] = mapped
            thr[i, :m] = np.where(is_split, tree.threshold, 0.0)
            tree_value = np.asarray(tree.value, dtype=np.float64).reshape(m, -1)
            val[i, :m, : tree_value.shape[1]] = tree_value
            samples[i, :m] = tree.n_node_samples
            go_left = getattr(tree, "missing_go_to_left", None)
            if go_left is not None:
                missing[i, :m] = np.asarray(go_left, dtype=np.bool_)
            if is_split.any():
                widest = max(widest, int(mapped[is_split].max()) + 1)
        return cls(
            children_left=left,
            children_right=right,
            feature=feat,
            threshold=thr,
            value=val,
            n_node_samples=samples,
            n_features=widest if n_features is None else int(n_features),
            missing_go_to_left=missing,
        )

    @cached_property
    def _flat(self) -> tuple[NDArray[np.int64], ...]:
        offsets = (np.arange(self.n_trees, dtype=np.int64) * self.max_nodes)[:, None]
        left = np.where(self.children_left >= 0, self.children_left + offsets, LEAF).ravel()
        right = np.where(self.children_right >= 0, self.children_right + offsets, LEAF).ravel()
        return left, right, np.where(self.feature >= 0, self.feature, 0).ravel()

    def leaves(self, rows: NDArray[np.float64]) -> NDArray[np.int64]:
        """Return `(n, n_trees)`: the node index (within its tree) of the leaf each row reaches."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < self.n_features:
            raise ValueError(f"rows must be (n, >= {self.n_features}), got {x.shape}")
        x = _as_float32(x)  # what scikit-learn compares
        out = np.empty((x.shape[0], self.n_trees), dtype=np.int64)
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            out[start : start + _CHUNK_ROWS] = self._leaves_flat(x[start : start + _CHUNK_ROWS])
        return out - (np.arange(self.n_trees, dtype=np.int64) * self.max_nodes)[None, :]

    def _leaves_flat(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
        left, right, feature = self._flat
        threshold = self.threshold.ravel()
        has_missing = self.missing_go_to_left.size > 0 and bool(self.missing_go_to_left.any())
        missing_left = self.missing_go_to_left.ravel() if has_missing else None
        n = x.shape[0]
        node = np.broadcast_to(
            np.arange(self.n_trees, dtype=np.int64) * self.max_nodes, (n, self.n_trees)
        ).copy()
        row_index = np.arange(n)[:, None]
        for _ in range(self.max_depth):
            nxt_left = left[node]
            active = nxt_left >= 0
            if not active.any():
                break
            values = x[row_index, feature[node]]
            go_left = values <= threshold[node]
            if missing_left is not None:
                go_left |= np.isnan(values) & missing_left[node]
            node = np.where(active, np.where(go_left, nxt_left, right[node]), node)
        return node

    def node_depths(self) -> NDArray[np.int64]:
        """Return `(n_trees, max_nodes)`: every node's depth, the root at 0 (padding: 0)."""
        return self._depths

    @cached_property
    def _depths(self) -> NDArray[np.int64]:
        left, right, _ = self._flat
        depth = np.zeros(self.n_trees * self.max_nodes, dtype=np.int64)
        frontier = np.arange(self.n_trees, dtype=np.int64) * self.max_nodes
        level = 0
        while frontier.size:
            children = np.concatenate([left[frontier], right[frontier]])
            children = children[children >= 0]
            level += 1
            depth[children] = level
            frontier = children
        return depth.reshape(self.n_trees, self.max_nodes)

    @cached_property
    def max_depth(self) -> int:
        """The deepest leaf's depth: the most steps any row takes."""
        return int(self._depths.max()) if self._depths.size else 0

    def leaf_depths(self, rows: NDArray[np.float64]) -> NDArray[np.int64]:
        """Return `(n, n_trees)`: the depth of the leaf each row reaches in each tree."""
        return self._depths[np.arange(self.n_trees)[None, :], self.leaves(rows)]

    def leaf_samples(self, rows: NDArray[np.float64]) -> NDArray[np.int64]:
        """Return `(n, n_trees)`: how many training samples fell in the leaf each row reaches."""
        return self.n_node_samples[np.arange(self.n_trees)[None, :], self.leaves(rows)]

    def leaf_values(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return `(n, n_trees, k)`: the value stored at the leaf each row reaches."""
        leaves = self.leaves(rows)
        return self.value[np.arange(self.n_trees)[None, :], leaves]

    @cached_property
    def parents(self) -> NDArray[np.int64]:
        """`(n_trees, max_nodes)`: each node's parent (-1 for roots and padding)."""
        parent = np.full((self.n_trees, self.max_nodes), -1, dtype=np.int64)
        trees = np.arange(self.n_trees)[:, None]
        nodes = np.broadcast_to(np.arange(self.max_nodes), parent.shape)
        for child in (self.children_left, self.children_right):
            has = child >= 0
            parent[np.broadcast_to(trees, parent.shape)[has], child[has]] = nodes[has]
        return parent

    def attribute(
        self, rows: NDArray[np.float64], gains: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Return `(n, n_features)`: per row, `gains[t, node]` summed over the nodes its paths
        visit (roots excluded), each credited to the feature of the split that led into it.

        With `gains = value[node] - value[parent]` this is the Saabas decomposition of a
        regression forest's prediction; the isolation forest credits how much each split shrank
        the row's cell.
        """
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < self.n_features:
            raise ValueError(f"rows must be (n, >= {self.n_features}), got {x.shape}")
        if gains.shape != self.children_left.shape:
            raise ValueError(f"gains must have shape {self.children_left.shape}")
        n = x.shape[0]
        out = np.zeros((n, self.n_features))
        x = _as_float32(x)
        left, right, feature = self._flat
        threshold = self.threshold.ravel()
        flat_gains = np.asarray(gains, dtype=np.float64).ravel()
        has_missing = self.missing_go_to_left.size > 0 and bool(self.missing_go_to_left.any())
        missing_left = self.missing_go_to_left.ravel() if has_missing else None
        for lo in range(0, n, _CHUNK_ROWS):
            hi = min(n, lo + _CHUNK_ROWS)
            node = np.broadcast_to(
                np.arange(self.n_trees, dtype=np.int64) * self.max_nodes, (hi - lo, self.n_trees)
            ).copy()
            row_index = np.arange(hi - lo)[:, None]
            chunk = out[lo:hi]
            for _ in range(self.max_depth):
                nxt_left = left[node]
                active = nxt_left >= 0
                if not active.any():
                    break
                split = feature[node]
                values = x[lo:hi][row_index, split]
                go_left = values <= threshold[node]
                if missing_left is not None:
                    go_left |= np.isnan(values) & missing_left[node]
                nxt = np.where(go_left, nxt_left, right[node])
                credit = np.where(active, flat_gains[np.where(active, nxt, 0)], 0.0)
                cells = (row_index * self.n_features + split).ravel()
                chunk += np.bincount(cells, weights=credit.ravel(), minlength=chunk.size).reshape(
                    chunk.shape
                )
                node = np.where(active, nxt, node)
        return out

    def to_arrays(self, prefix: str = "trees_") -> dict[str, NDArray[Any]]:
        """Return the arrays to save (`np.savez(file, **ensemble.to_arrays())`)."""
        out: dict[str, NDArray[Any]] = {
            f"{prefix}{name}": np.asarray(getattr(self, name)) for name in _NAMES
        }
        out[f"{prefix}n_features"] = np.asarray(self.n_features, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], prefix: str = "trees_") -> TreeEnsemble:
        """Rebuild from `to_arrays` output; `ValueError` names what is missing or misshapen."""
        missing = [f"{prefix}{n}" for n in (*_NAMES, "n_features") if f"{prefix}{n}" not in arrays]
        if missing:
            raise ValueError(f"tree arrays missing: {', '.join(missing)}")
        get = {name: np.asarray(arrays[f"{prefix}{name}"]) for name in _NAMES}
        width = np.asarray(arrays[f"{prefix}n_features"])
        if width.shape != () or width.dtype.kind not in "iu":
            raise ValueError(f"{prefix}n_features must be one integer")
        try:
            return cls(
                children_left=get["children_left"].astype(np.int64, casting="same_kind"),
                children_right=get["children_right"].astype(np.int64, casting="same_kind"),
                feature=get["feature"].astype(np.int64, casting="same_kind"),
                threshold=get["threshold"].astype(np.float64, casting="same_kind"),
                value=get["value"].astype(np.float64, casting="same_kind"),
                n_node_samples=get["n_node_samples"].astype(np.int64, casting="same_kind"),
                n_features=int(width),
                missing_go_to_left=get["missing_go_to_left"].astype(np.bool_),
            )
        except TypeError as exc:  # a float array where integers belong, and the like
            raise ValueError(f"tree arrays of the wrong type: {exc}") from exc


def _as_float32(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Round to float32 as scikit-learn does; beyond its range a value becomes +-inf (and still
    goes to the side it belongs)."""
    with np.errstate(over="ignore"):
        return x.astype(np.float32).astype(np.float64)


def _structure_problems(trees: TreeEnsemble) -> list[str]:
    """Check shapes and links, so a corrupt artefact is refused instead of mis-scoring.

    Children must have a higher index than their parent (scikit-learn builds trees that way):
    that makes every walk end, whatever the file says.
    """
    shape = trees.children_left.shape
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        return [f"children_left must be (n_trees >= 1, max_nodes >= 1), got {shape}"]
    problems = [
        f"{name} must have shape {shape}, got {getattr(trees, name).shape}"
        for name in ("children_right", "feature", "threshold", "n_node_samples")
        if getattr(trees, name).shape != shape
    ]
    if trees.value.ndim != 3 or trees.value.shape[:2] != shape:
        problems.append(f"value must have shape {shape} + (k,), got {trees.value.shape}")
    if trees.missing_go_to_left.size and trees.missing_go_to_left.shape != shape:
        problems.append(f"missing_go_to_left must have shape {shape}")
    if trees.n_features < 1:
        problems.append("n_features must be >= 1")
    if problems:
        return problems
    index = np.arange(shape[1])[None, :]
    left, right = trees.children_left, trees.children_right
    split = left != LEAF
    if np.any(split != (right != LEAF)):
        problems.append("a node has exactly one child")
    for name, child in (("children_left", left), ("children_right", right)):
        if np.any(split & ((child <= index) | (child >= shape[1]))):
            problems.append(f"{name} must point forward inside its tree")
    if np.any(split & ((trees.feature < 0) | (trees.feature >= trees.n_features))):
        problems.append(f"a split feature is outside 0..{trees.n_features - 1}")
    if np.any(np.isnan(trees.threshold[split])):
        problems.append("a split threshold is NaN")
    return problems


__all__ = ["LEAF", "LEAF_FEATURE", "TreeEnsemble"]
