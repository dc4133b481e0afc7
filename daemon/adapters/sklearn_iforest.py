"""Isolation forests fitted by scikit-learn, handed back as plain arrays (`TreeEnsemble`).

The only place scikit-learn is imported for anomaly detection, and only when an `iforest`
detector is fitted: the core scores the exported trees with numpy, and artefacts hold arrays,
never a pickled estimator.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import IsolationForest

from daemon.core.trees import TreeEnsemble


def fit_isolation_trees(
    rows: NDArray[np.float64],
    *,
    trees: int,
    max_samples: int,
    max_features: float,
    seed: int,
) -> tuple[TreeEnsemble, int]:
    """Fit scikit-learn's IsolationForest; return its trees as arrays and the sample size.

    Bagging fits each tree on a column subset when `max_features < 1`: the subset maps the
    tree's column numbers back to the rows' columns, so the arrays score full rows.
    """
    n, features = rows.shape
    forest = IsolationForest(
        n_estimators=trees,
        max_samples=min(max_samples, n),
        max_features=max_features,
        random_state=seed,
    ).fit(rows)
    ensemble = TreeEnsemble.from_sklearn(
        forest.estimators_, forest.estimators_features_, n_features=features
    )
    return ensemble, int(forest.max_samples_)
