"""Remaining-useful-life regressors fitted by scikit-learn, handed back as plain arrays.

The only place scikit-learn is imported for failure prediction, and only when a `rul` model is
*fitted* (`daemon.core.rul.default_fitter` imports this module lazily): the fitted trees become
a `TreeEnsemble`, and `daemon.core.rul.RulModel` predicts, saves and loads them with numpy
alone, never a pickled estimator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    RandomForestRegressor,
)

from daemon.core.rul import History, RulModel, TreeRegressor, resolve_params
from daemon.core.trees import TreeEnsemble


def fit_rul_trees(
    rows: NDArray[np.float64],
    targets: NDArray[np.float64],
    *,
    params: Mapping[str, Any],
    seed: int,
) -> TreeRegressor:
    """Fit the ensemble `params["estimator"]` names; return it as `offset + scale * sum(leaves)`.

    Gradient boosting (squared error): offset = its initial constant (the mean target), scale =
    the learning rate. Forests: offset 0, scale 1 / trees (the mean of the trees' leaf means).
    Single-threaded on purpose: the daemon trains beside live scoring on a small machine.
    """
    resolved, problems = resolve_params({k: v for k, v in params.items() if k != "cv_folds"})
    if problems:
        raise ValueError("; ".join(problems))
    n_features = rows.shape[1]
    estimator = resolved["estimator"]
    if estimator == "gradient_boosting":
        boost = GradientBoostingRegressor(
            n_estimators=resolved["trees"],
            max_depth=resolved["max_depth"] or None,
            learning_rate=resolved["learning_rate"],
            subsample=resolved["subsample"],
            min_samples_leaf=resolved["min_samples_leaf"],
            max_features=resolved["max_features"],
            random_state=seed,
        ).fit(rows, targets)
        trees = TreeEnsemble.from_sklearn(boost.estimators_[:, 0], n_features=n_features)
        offset = float(np.asarray(boost.init_.constant_, dtype=np.float64).ravel()[0])
        return TreeRegressor(trees, offset, float(resolved["learning_rate"]))
    kind = RandomForestRegressor if estimator == "random_forest" else ExtraTreesRegressor
    forest = kind(
        n_estimators=resolved["trees"],
        max_depth=resolved["max_depth"] or None,
        min_samples_leaf=resolved["min_samples_leaf"],
        max_features=resolved["max_features"],
        random_state=seed,
        n_jobs=1,
    ).fit(rows, targets)
    trees = TreeEnsemble.from_sklearn(forest.estimators_, n_features=n_features)
    return TreeRegressor(trees, 0.0, 1.0 / trees.n_trees)


def fit_rul(
    histories: Sequence[History],
    *,
    features: Sequence[str],
    window: float,
    cap: float,
    unit: str,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> RulModel:
    """`RulModel.fit` with this module's fitter (the same as the core's default)."""
    return RulModel.fit(
        histories,
        features=features,
        window=window,
        cap=cap,
        unit=unit,
        params=params,
        seed=seed,
        fitter=fit_rul_trees,
    )


__all__ = ["fit_rul", "fit_rul_trees"]
