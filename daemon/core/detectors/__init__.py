"""Anomaly detectors behind one small protocol (`base.Detector`), and their registry.

`KINDS` maps a spec's `detector:` to its class; `check_params` lists what is wrong with a
spec's `params:` (for `frontline check`), `build` makes an unfitted detector and `load` a fitted
one from its saved arrays. A new kind registered here gets the conformance suite
(tests/test_detectors.py) for free.

Kinds (docs/models.md compares them):

- `pca`: Hotelling T² + Q (squared prediction error): correlated metrics, linear relations.
- `robust_z`: median/MAD z-score per metric: the baseline; blind to broken correlations.
- `iforest`: isolation forest (fitted by scikit-learn, scored as numpy arrays).
- `mset`: similarity-based state estimation: gradual drifts and broken relations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from numpy.typing import NDArray

from daemon.core.detectors.base import BaseDetector, Detector, Param, resolve
from daemon.core.detectors.iforest import IsolationForest, TreeFitter
from daemon.core.detectors.mset import MSET
from daemon.core.detectors.pca import PCA
from daemon.core.detectors.robust_z import RobustZ

KINDS: dict[str, type[BaseDetector]] = {
    cls.kind: cls for cls in (PCA, RobustZ, IsolationForest, MSET)
}


def _unknown(kind: str) -> str:
    return f"unknown detector {kind!r} (allowed: {', '.join(sorted(KINDS))})"


def check_params(kind: str, params: Mapping[str, Any]) -> list[str]:
    """Return every problem with `params` for detector `kind` (empty: they are fine)."""
    if kind not in KINDS:
        return [_unknown(kind)]
    return resolve(kind, KINDS[kind].PARAMS, params)[1]


def resolved_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Return `params` with every default filled in (what an artefact records)."""
    if kind not in KINDS:
        raise ValueError(_unknown(kind))
    resolved, problems = resolve(kind, KINDS[kind].PARAMS, params)
    if problems:
        raise ValueError("; ".join(problems))
    return resolved


def build(
    kind: str, params: Mapping[str, Any], seed: int = 0, *, tree_fitter: TreeFitter | None = None
) -> BaseDetector:
    """Return an unfitted detector; `ValueError` lists what is wrong with kind or params.

    `tree_fitter` replaces the scikit-learn fitter of `iforest` (tests; other kinds ignore it).
    """
    if kind not in KINDS:
        raise ValueError(_unknown(kind))
    if kind == IsolationForest.kind:
        return IsolationForest(params, seed, fitter=tree_fitter)
    return KINDS[kind](params, seed)


def load(kind: str, params: Mapping[str, Any], state: Mapping[str, NDArray[Any]]) -> BaseDetector:
    """Return a fitted detector from its saved state; `ValueError` says what is wrong."""
    if kind not in KINDS:
        raise ValueError(_unknown(kind))
    return KINDS[kind].load(params, state)


__all__ = [
    "KINDS",
    "BaseDetector",
    "Detector",
    "Param",
    "TreeFitter",
    "build",
    "check_params",
    "load",
    "resolved_params",
]
