"""Model specs: what an operator's `models/*.yaml` says, as plain values (docs/models.md).

A spec names a learned model, the devices it watches (the same `match` as rule groups), the
features it reads (per metric, an aggregate over a window), how it is trained and when it is
retrained, and how its output is scored live. Two kinds:

- `anomaly`: a detector over the feature row; its calibrated score (0..1, 0.5 = at the threshold
  learned from training) feeds `anomaly("name")` in rules.
- `rul`: a regressor of the remaining useful life learned from run-to-failure histories (cut at
  the spec's `failure` condition); its prediction, in the spec's `unit`, feeds `rul("name")`.

The live scores are stored as series named `model:<name>` on each device (SCORE_PREFIX), so they
plot, backtest and feed rule windows like any metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: scores and predictions are stored under this metric prefix on the device
SCORE_PREFIX = "model:"
ModelKind = Literal["anomaly", "rul"]
#: seconds per unit a `rul` model can predict in (`cycles` are the device's own sample steps)
RUL_UNITS: dict[str, float] = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}


def score_metric(name: str) -> str:
    """The series a model's live output is stored under."""
    return f"{SCORE_PREFIX}{name}"


@dataclass(frozen=True)
class Feature:
    """One input of a model: `aggregate` of `metric` over the spec's window."""

    metric: str
    aggregate: str = "mean"

    @property
    def label(self) -> str:
        return self.metric if self.aggregate == "mean" else f"{self.aggregate}({self.metric})"


@dataclass(frozen=True)
class Threshold:
    """Where a score becomes anomalous: `factor` x the `quantile` of the training scores."""

    quantile: float = 0.995
    factor: float = 1.0


@dataclass(frozen=True)
class Training:
    """Which stored history a model learns from: `history` back, one row per device per `step`."""

    history_s: float = 86_400.0
    step_s: float = 60.0
    min_samples: int = 200


@dataclass(frozen=True)
class Failure:
    """When a device counts as failed, for run-to-failure histories: metric above or below."""

    metric: str
    above: float | None = None
    below: float | None = None

    def describe(self) -> str:
        if self.above is not None:
            return f"{self.metric} > {self.above:g}"
        return f"{self.metric} < {self.below:g}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    features: tuple[Feature, ...]
    match: dict[str, str] = field(default_factory=dict)
    window_s: float = 300.0
    interval_s: float = 60.0
    detector: str = "pca"
    params: dict[str, Any] = field(default_factory=dict)
    training: Training = Training()
    retrain: str | None = None  # a cron expression, run by the daemon's scheduler
    threshold: Threshold = Threshold()
    seed: int = 0
    # rul only
    failure: Failure | None = None
    unit: str = "hours"
    cap: float | None = None
    #: where it was read from (file:line:col of its `name`), for messages
    source: str = ""

    @property
    def metric(self) -> str:
        return score_metric(self.name)

    @property
    def metrics(self) -> list[str]:
        """Every metric the model reads (features, then the failure metric), without repeats."""
        names = [f.metric for f in self.features]
        if self.failure is not None:
            names.append(self.failure.metric)
        return list(dict.fromkeys(names))

    def fingerprint(self) -> dict[str, Any]:
        """What a trained artefact depends on: a change here makes the artefact incompatible."""
        return {
            "kind": self.kind,
            "features": [[f.metric, f.aggregate] for f in self.features],
            "window_s": self.window_s,
            "detector": self.detector,
            "unit": self.unit if self.kind == "rul" else None,
        }
