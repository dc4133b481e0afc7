"""The detector protocol, declared parameters and the small helpers every detector shares.

Why a protocol this small: the daemon scores many devices in one batch, trains in a separate
process and saves artefacts without pickle. A detector therefore only fits on a batch of rows,
scores a batch, explains a batch (per-feature contributions) and hands back its state as plain
arrays; everything else (scaling, calibration to 0..1, missing values) is the composite
`daemon.core.anomaly.AnomalyModel`, written once for all kinds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class Detector(Protocol):
    """A fitted or fittable anomaly detector over rows of `f` features.

    Rows are `(n, f)` float64, finite and already scaled (the composite scales them). Scores
    are raw: higher is more anomalous, finite, and for the detectors shipped here >= 0.
    """

    kind: ClassVar[str]

    def fit(self, rows: FloatArray) -> None: ...

    def score(self, rows: FloatArray) -> FloatArray:
        """Return `(n,)` raw scores, higher = more anomalous."""
        ...

    def contributions(self, rows: FloatArray) -> FloatArray:
        """Return `(n, f)` shares >= 0 summing to 1 per row (all zero only for a zero score)."""
        ...

    def state(self) -> dict[str, NDArray[Any]]:
        """Return the fitted state as arrays only (saved with np.savez, never pickle)."""
        ...

    @classmethod
    def load(cls, params: Mapping[str, Any], state: Mapping[str, NDArray[Any]]) -> Self:
        """Rebuild a fitted detector; `ValueError` names a missing or misshapen array."""
        ...


@dataclass(frozen=True)
class Param:
    """One parameter a detector accepts: its type, default, bounds and what it means."""

    name: str
    kind: type[int] | type[float]
    default: float
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # low itself excluded
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """Return what is wrong with `value`, or None."""
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if self.kind is int and not (numeric and float(value).is_integer()):
            return f"{self.name} must be an integer, got {value!r}"
        if not numeric or not math.isfinite(value):
            return f"{self.name} must be a number, got {value!r}"
        if value < self.low or (self.low_open and value == self.low) or value > self.high:
            return f"{self.name} must be {self.bounds()}, got {value!r}"
        return None

    def bounds(self) -> str:
        low = "" if self.low == -math.inf else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if self.high == math.inf else f"<= {self.high:g}"
        return " and ".join(part for part in (low, high) if part) or "a number"


class BaseDetector:
    """What the shipped detectors share: declared parameters checked on construction, `load`.

    Subclasses set `kind` and `PARAMS`, implement fit/score/contributions/state and
    `_restore(state)` (raise ValueError on a missing or misshapen array).
    """

    kind: ClassVar[str]
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        resolved, problems = resolve(self.kind, self.PARAMS, params or {})
        if problems:
            raise ValueError("; ".join(problems))
        self.params: dict[str, Any] = resolved
        self.seed = int(seed)

    def fit(self, rows: FloatArray) -> None:
        raise NotImplementedError

    def score(self, rows: FloatArray) -> FloatArray:
        raise NotImplementedError

    def contributions(self, rows: FloatArray) -> FloatArray:
        raise NotImplementedError

    def state(self) -> dict[str, NDArray[Any]]:
        raise NotImplementedError

    def training_scores(self, rows: FloatArray) -> FloatArray:
        """Scores of the rows it was just fitted on, as if they were new (for calibration).

        The same as `score` for most detectors; a detector that memorises rows (MSET) returns
        leave-one-out scores instead, or its threshold would sit at zero.
        """
        return self.score(rows)

    def _restore(self, state: Mapping[str, NDArray[Any]]) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, params: Mapping[str, Any], state: Mapping[str, NDArray[Any]]) -> Self:
        detector = cls(params)
        detector._restore(state)
        return detector


def resolve(
    kind: str, declared: Mapping[str, Param], params: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Return (params with defaults filled in, problems) for a detector's declared parameters."""
    problems = []
    for name in params:
        if name not in declared:
            allowed = ", ".join(sorted(declared)) or "none"
            problems.append(f"unknown parameter {name!r} for detector {kind} (allowed: {allowed})")
    resolved: dict[str, Any] = {}
    for name, param in declared.items():
        value = params.get(name, param.default)
        problem = param.problem(value)
        if problem:
            problems.append(f"{kind}: {problem}")
        else:
            resolved[name] = param.kind(value)
    return resolved, problems


def as_rows(rows: Any, features: int | None = None) -> FloatArray:
    """Return `rows` as a 2-D float64 array, checking the width when it is known."""
    out = np.asarray(rows, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"rows must be 2-D (n, features), got shape {out.shape}")
    if features is not None and out.shape[1] != features:
        raise ValueError(
            f"rows have {out.shape[1]} features, the detector was fitted on {features}"
        )
    return out


def shares(parts: FloatArray) -> FloatArray:
    """Normalise non-negative per-feature parts to rows summing to 1 (all-zero rows stay 0)."""
    parts = np.maximum(np.nan_to_num(parts, nan=0.0, posinf=0.0), 0.0)
    total = parts.sum(axis=1, keepdims=True)
    out: FloatArray = np.divide(parts, total, out=np.zeros_like(parts), where=total > 0)
    return out


BIG = 1e100  # bound of any intermediate value: its square, summed over features, stays finite


def finite(values: FloatArray) -> FloatArray:
    """Clip to +-BIG: a huge deviation stays huge, never inf or NaN (nor an overflow warning)."""
    return np.clip(np.nan_to_num(values, nan=BIG, posinf=BIG, neginf=-BIG), -BIG, BIG)


def take(state: Mapping[str, NDArray[Any]], name: str, shape: tuple[int | None, ...]) -> FloatArray:
    """Return `state[name]` as float64 with the expected shape (None: any size)."""
    if name not in state:
        raise ValueError(f"state array {name!r} is missing")
    array = np.asarray(state[name])
    if array.dtype.kind not in "fiub":
        raise ValueError(f"state array {name!r} is not numeric ({array.dtype})")
    if len(array.shape) != len(shape) or any(
        want is not None and have != want for have, want in zip(array.shape, shape, strict=True)
    ):
        raise ValueError(f"state array {name!r} has shape {array.shape}, expected {shape}")
    out = array.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"state array {name!r} holds NaN or infinite values")
    return out


__all__ = [
    "BIG",
    "BaseDetector",
    "Detector",
    "FloatArray",
    "Param",
    "as_rows",
    "finite",
    "resolve",
    "shares",
    "take",
]
