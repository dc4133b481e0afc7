"""A trained model version, ready to score: the spec, its registry metadata and the fitted model.

Fitting and restoring dispatch on the spec's kind to the pure models (`AnomalyModel` in
daemon/core/anomaly.py, `RulModel` in daemon/core/rul.py); scikit-learn is only imported by the
fitting adapters, and only when a spec needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.core.anomaly import AnomalyModel
from daemon.core.modelspec import RUL_UNITS, ModelSpec
from daemon.errors import ModelArtefactError

if TYPE_CHECKING:
    from daemon.core.rul import RulModel
    from daemon.learning.trainer import Dataset


@dataclass
class Trained:
    spec: ModelSpec
    version: int
    meta: dict[str, Any]
    anomaly: AnomalyModel | None = None
    rul: RulModel | None = None

    def describe(self) -> str:
        return f"{self.spec.name} v{self.version} (trained {self.meta.get('trained_at', '?')})"


def fit_model(spec: ModelSpec, data: Dataset) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Fit the spec's model: (its own metadata, its arrays)."""
    if spec.kind == "anomaly":
        model = AnomalyModel.fit(
            data.rows,
            features=[f.label for f in spec.features],
            detector=spec.detector,
            params=spec.params,
            quantile=spec.threshold.quantile,
            factor=spec.threshold.factor,
            seed=spec.seed,
        )
        return model.to_arrays()
    from daemon.core.rul import History, RulModel

    unit_s = RUL_UNITS[spec.unit]
    assert spec.cap is not None  # checked with the spec
    rul = RulModel.fit(
        [History(times, values, ended) for times, values, ended in data.lives],
        features=[f.metric for f in spec.features],
        window=spec.window_s / unit_s,
        cap=spec.cap,
        unit=spec.unit,
        params=spec.params,
        seed=spec.seed,
    )
    return rul.to_arrays()


def restore(spec: ModelSpec, version: int, meta: dict[str, Any], arrays: dict[str, Any]) -> Trained:
    """The version as a scoring model; refused when it was trained for another spec shape."""
    trained_for = meta.get("fingerprint")
    if trained_for != spec.fingerprint():
        raise ModelArtefactError(
            f"{spec.name} v{version} was trained for {_shape(trained_for)}, the spec now says "
            f"{_shape(spec.fingerprint())}: retrain with `frontline train {spec.name}`"
        )
    params = meta.get("params")
    if not isinstance(params, dict):
        raise ModelArtefactError(f"{spec.name} v{version}: metadata without model parameters")
    if spec.kind == "anomaly":
        return Trained(spec, version, meta, anomaly=AnomalyModel.from_arrays(params, arrays))
    from daemon.core.rul import RulModel

    return Trained(spec, version, meta, rul=RulModel.from_arrays(params, arrays))


def _shape(fingerprint: object) -> str:
    if not isinstance(fingerprint, dict):
        return "an unknown spec"
    features = ", ".join(
        name if agg == "mean" else f"{agg}({name})"
        for name, agg in fingerprint.get("features") or []
    )
    return f"{fingerprint.get('kind')} {fingerprint.get('detector')} over [{features}]"
