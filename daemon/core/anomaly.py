"""`AnomalyModel`: scaling + a detector + calibration to a 0..1 score, saved as arrays.

One composite for every detector kind, used by the daemon (live scoring), `frontline train`
and `frontline detect`, so that a score means the same everywhere:

- **Scaling**, fitted on the training rows: per feature, minus the median, divided by the IQR
  (as a standard deviation: IQR / 1.349); a feature without spread falls back to its standard
  deviation, then to 1. Robust, because training history holds the odd spike.
- **The detector** (`daemon.core.detectors`) gives raw scores, higher = more anomalous.
- **Calibration**, from the training scores only: the threshold is the `quantile` of the raw
  training scores times `factor` (the spec's threshold policy). Raw scores map through a
  logistic curve, monotonic, with the threshold at exactly 0.5 and the median training score
  at 0.1; scores far above the threshold approach 1. So `score > 0.5` is "anomalous" for every
  model, whatever its detector, and two models' scores compare.

Missing values: `fit` drops rows with a NaN or infinite value (and records how many in the
quality figures); `score` gives such rows a NaN score and NaN contributions (unknown: the
caller decides, e.g. the daemon skips the device this round). `is_anomaly(NaN)` is False.

Artefacts: `to_arrays()` gives JSON-able meta and a dict of numpy arrays (saved with
`np.savez`, never pickle); `from_arrays` refuses a missing or misshapen array or an unknown
format version with `ModelArtefactError`, so a corrupt file never scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daemon.core import detectors
from daemon.core.detectors import BaseDetector, TreeFitter
from daemon.errors import ModelArtefactError

FloatArray = NDArray[np.float64]

FORMAT_VERSION = 1
IQR_TO_SIGMA = 1.349  # a normal distribution's IQR / this = its standard deviation
TYPICAL_SCORE = 0.1  # where the median training row lands on the 0..1 scale
_STATE_PREFIX = "detector__"


@dataclass(frozen=True)
class Scored:
    """Scores of a batch: `score` (n,) in [0, 1] (NaN = unknown row), `contributions` (n, f)
    shares summing to 1 per row (NaN for unknown rows), `raw` the detector's own scores."""

    score: FloatArray
    contributions: FloatArray
    raw: FloatArray


@dataclass(frozen=True)
class Calibration:
    """Raw score -> 0..1: `0.5 * (1 + tanh((raw - threshold) / (2 * width)))` (a logistic)."""

    threshold: float
    width: float

    @classmethod
    def from_training(cls, raw: FloatArray, quantile: float, factor: float) -> Calibration:
        threshold = float(np.quantile(raw, quantile)) * factor
        typical = float(np.median(raw))
        gap = threshold - typical
        floor = max(1e-9 * max(abs(threshold), abs(typical)), 1e-12)
        # the median training score maps to TYPICAL_SCORE; a degenerate gap keeps a tiny width
        width = gap / math.log(1 / TYPICAL_SCORE - 1) if gap > floor else floor
        return cls(threshold=threshold, width=width)

    def __call__(self, raw: FloatArray) -> FloatArray:
        with np.errstate(over="ignore"):  # far beyond the threshold is 1, exactly as clipped
            z = (np.asarray(raw, dtype=np.float64) - self.threshold) / (2 * self.width)
        z = np.clip(z, -50, 50)
        return np.asarray(0.5 * (1.0 + np.tanh(z)), dtype=np.float64)


def _scaling(rows: FloatArray) -> tuple[FloatArray, FloatArray]:
    center = np.median(rows, axis=0)
    q75, q25 = np.quantile(rows, [0.75, 0.25], axis=0)
    spread = (q75 - q25) / IQR_TO_SIGMA
    fallback = rows.std(axis=0)
    tiny = 1e-12 * np.maximum(1.0, np.abs(center))
    spread = np.where(spread > tiny, spread, np.where(fallback > tiny, fallback, 1.0))
    return center, spread


def _usable(rows: FloatArray) -> NDArray[np.bool_]:
    return np.asarray(np.isfinite(rows).all(axis=1), dtype=np.bool_)


class AnomalyModel:
    """A fitted model: see the module docstring. Build with `fit` or `from_arrays`."""

    def __init__(
        self,
        *,
        features: Sequence[str],
        detector_kind: str,
        params: Mapping[str, Any],
        detector: BaseDetector,
        center: FloatArray,
        spread: FloatArray,
        calibration: Calibration,
        threshold_policy: tuple[float, float],
        seed: int,
        quality: Mapping[str, Any],
    ) -> None:
        self.features = tuple(features)
        self.detector_kind = detector_kind
        self.params = dict(params)
        self.detector = detector
        self.center = center
        self.spread = spread
        self.calibration = calibration
        self.quantile, self.factor = threshold_policy
        self.seed = seed
        self.quality = dict(quality)

    @classmethod
    def fit(
        cls,
        rows: Any,
        *,
        features: Sequence[str],
        detector: str,
        params: Mapping[str, Any],
        quantile: float,
        factor: float,
        seed: int,
        tree_fitter: TreeFitter | None = None,
    ) -> AnomalyModel:
        """Fit scaling, detector and calibration on `rows` (n, len(features)).

        Rows with a NaN or infinite value are dropped; `ValueError` when fewer than two
        remain, when the width does not match `features`, or when detector or params are bad.
        """
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(features) or not features:
            raise ValueError(f"rows must be (n, {len(features)}) for features {list(features)}")
        if not 0 < quantile < 1 or not (math.isfinite(factor) and factor > 0):
            raise ValueError("threshold quantile must be in (0, 1) and factor > 0")
        resolved = detectors.resolved_params(detector, params)
        keep = _usable(x)
        train = x[keep]
        if train.shape[0] < 2:
            raise ValueError(f"need at least 2 complete training rows, got {train.shape[0]}")
        center, spread = _scaling(train)
        scaled = (train - center) / spread
        model = detectors.build(detector, resolved, seed, tree_fitter=tree_fitter)
        model.fit(scaled)
        raw = model.training_scores(scaled)
        calibration = Calibration.from_training(raw, quantile, factor)
        quality = {
            "rows": int(train.shape[0]),
            "dropped_rows": int((~keep).sum()),
            "raw_median": float(np.median(raw)),
            "raw_quantile": float(np.quantile(raw, quantile)),
            "raw_max": float(raw.max()),
            "train_anomaly_share": float(np.mean(raw > calibration.threshold)),
        }
        return cls(
            features=features,
            detector_kind=detector,
            params=resolved,
            detector=model,
            center=center,
            spread=spread,
            calibration=calibration,
            threshold_policy=(quantile, factor),
            seed=seed,
            quality=quality,
        )

    @property
    def threshold(self) -> float:
        """The raw score that maps to 0.5."""
        return self.calibration.threshold

    def score(self, rows: Any) -> Scored:
        """Score `rows` (n, f): calibrated scores, contributions and raw scores (see `Scored`)."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim == 1 and x.shape[0] == len(self.features):
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"rows must be (n, {len(self.features)}) for {list(self.features)}")
        n = x.shape[0]
        raw = np.full(n, np.nan)
        contributions = np.full((n, len(self.features)), np.nan)
        keep = _usable(x)
        if keep.any():
            scaled = (x[keep] - self.center) / self.spread
            raw[keep] = self.detector.score(scaled)
            contributions[keep] = self.detector.contributions(scaled)
        score = np.full(n, np.nan)
        score[keep] = self.calibration(raw[keep])
        return Scored(score=score, contributions=contributions, raw=raw)

    @staticmethod
    def is_anomaly(score: Any) -> Any:
        """`score > 0.5` (NaN, an unknown row, is not an anomaly)."""
        return np.asarray(score) > 0.5

    def top_contributors(self, contributions: Any, count: int = 3) -> list[tuple[str, float]]:
        """The `count` features with the largest shares in one row's contributions."""
        shares = np.asarray(contributions, dtype=np.float64)
        if shares.shape != (len(self.features),) or not np.all(np.isfinite(shares)):
            return []
        order = np.argsort(-shares, kind="stable")[:count]
        return [(self.features[i], float(shares[i])) for i in order if shares[i] > 0]

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """Return (JSON-able meta, arrays) to save; `from_arrays` rebuilds the model."""
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "kind": "anomaly",
            "detector": self.detector_kind,
            "features": list(self.features),
            "params": dict(self.params),
            "seed": self.seed,
            "threshold": {
                "quantile": self.quantile,
                "factor": self.factor,
                "raw": self.calibration.threshold,
            },
            "calibration": {
                "threshold": self.calibration.threshold,
                "width": self.calibration.width,
            },
            "quality": dict(self.quality),
        }
        arrays: dict[str, NDArray[Any]] = {
            "scale_center": self.center.copy(),
            "scale_spread": self.spread.copy(),
        }
        for name, array in self.detector.state().items():
            arrays[_STATE_PREFIX + name] = np.asarray(array)
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> AnomalyModel:
        """Rebuild a saved model; `ModelArtefactError` says what is wrong with it."""
        try:
            return cls._from_arrays(meta, arrays)
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelArtefactError(f"unusable model artefact: {exc}") from exc

    @classmethod
    def _from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> AnomalyModel:
        version = meta.get("format")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"format version {version!r} is not supported (this version reads {FORMAT_VERSION})"
            )
        kind = meta.get("detector")
        if not isinstance(kind, str) or kind not in detectors.KINDS:
            raise ValueError(f"unknown detector {kind!r}")
        features = meta.get("features")
        if (
            not isinstance(features, list)
            or not features
            or not all(isinstance(f, str) for f in features)
        ):
            raise ValueError("meta 'features' must be a non-empty list of names")
        params = detectors.resolved_params(kind, meta.get("params") or {})
        calibration_meta = meta["calibration"]
        threshold = float(calibration_meta["threshold"])
        width = float(calibration_meta["width"])
        if not (math.isfinite(threshold) and math.isfinite(width) and width > 0):
            raise ValueError("calibration threshold and width must be finite, width > 0")
        policy = meta["threshold"]
        width_f = len(features)
        center = _array(arrays, "scale_center", width_f)
        spread = _array(arrays, "scale_spread", width_f)
        if np.any(spread <= 0):
            raise ValueError("array 'scale_spread' must be positive")
        state = {
            name[len(_STATE_PREFIX) :]: np.asarray(value)
            for name, value in arrays.items()
            if name.startswith(_STATE_PREFIX)
        }
        detector = detectors.load(kind, params, state)
        probe = detector.score(np.zeros((1, width_f)))  # a state for another width fails here
        if probe.shape != (1,):
            raise ValueError("the detector state does not match the features")
        return cls(
            features=features,
            detector_kind=kind,
            params=params,
            detector=detector,
            center=center,
            spread=spread,
            calibration=Calibration(threshold, width),
            threshold_policy=(float(policy["quantile"]), float(policy["factor"])),
            seed=int(meta.get("seed", 0)),
            quality=dict(meta.get("quality") or {}),
        )


def _array(arrays: Mapping[str, Any], name: str, width: int) -> FloatArray:
    if name not in arrays:
        raise ValueError(f"array {name!r} is missing")
    value = np.asarray(arrays[name])
    if value.shape != (width,) or value.dtype.kind not in "fiu":
        raise ValueError(f"array {name!r} must be {width} numbers, got {value.dtype} {value.shape}")
    out = value.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"array {name!r} holds NaN or infinite values")
    return out


__all__ = ["FORMAT_VERSION", "AnomalyModel", "Calibration", "Scored"]
