"""Remaining useful life (RUL): learn time-to-failure from run-to-failure histories.

What it learns from: the stored history of devices that *failed*. A history is cut at the first
row where the spec's failure condition holds (`run_to_failure`); every earlier row is then a
training example whose target is the time left until that moment, capped at `cap`. The cap is
deliberate: far from failure a device shows no wear, so "at least `cap` left" is all the data
can say, and asking a regressor for more only teaches it noise (C-MAPSS practice: 125 cycles).
A device that never failed is *censored*: its rows at least `cap` before the end of its history
have the exact capped target `cap` (its true time to failure is longer than that), so they are
used; its later rows only have a lower bound and are left out.

Features (`rolling_features`): per metric, over a trailing window of `window` time units, the
mean (the level, with noise averaged out) and the least-squares slope (the wear rate, per time
unit). Both are computed per row from that row's window only, so a device scored live on its
recent window (`features_at_end`) gets exactly the numbers training saw for a row like it.

The regressor is a tree ensemble fitted by scikit-learn in `daemon.adapters.sklearn_rul`
(imported only when fitting) and kept as `daemon.core.trees.TreeEnsemble` arrays, so prediction,
save and load are plain numpy and an artefact is a dict of arrays plus JSON metadata (never a
pickle). Prediction = `offset + scale * sum of the leaf values` covers both kinds of ensemble
(gradient boosting: the initial value and the learning rate; a forest: 0 and 1 / trees).

Time is a float in the model's `unit` (cycles, seconds, minutes, hours or days): the caller
converts timestamps before calling, so the same code serves C-MAPSS engines (cycles) and boilers
(hours).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daemon.core.trees import TreeEnsemble
from daemon.errors import ModelArtefactError

FloatArray = NDArray[np.float64]

FORMAT = "frontline-rul"
FORMAT_VERSION = 1
#: units a model can predict in; `cycles` are whatever the history's time column counts
UNITS = ("cycles", "seconds", "minutes", "hours", "days")
#: features computed per metric, in this order (all means first, then all slopes)
PER_METRIC = ("mean", "slope")
ESTIMATORS = ("gradient_boosting", "random_forest", "extra_trees")

_CHUNK_CELLS = 2_000_000  # rows x window length x metrics materialised at once


@dataclass(frozen=True)
class RulParam:
    """One fitting parameter: type, default, bounds (inclusive) and what it means."""

    kind: type[int] | type[float] | type[str]
    default: int | float | str
    low: float = -math.inf
    high: float = math.inf
    help: str = ""

    def problem(self, name: str, value: Any) -> str | None:
        """Return what is wrong with `value`, or None."""
        if self.kind is str:
            if value not in ESTIMATORS:
                return f"{name} must be one of {', '.join(ESTIMATORS)}, got {value!r}"
            return None
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or not math.isfinite(value):
            return f"{name} must be a number, got {value!r}"
        if self.kind is int and not float(value).is_integer():
            return f"{name} must be an integer, got {value!r}"
        if not self.low <= value <= self.high:
            return f"{name} must be between {self.low:g} and {self.high:g}, got {value!r}"
        return None


#: the `params` a rul spec may set; defaults chosen by 5-fold CV by engine on C-MAPSS FD001
#: training data only (`benchmarks/cmapss.py --tune`)
PARAMS: dict[str, RulParam] = {
    "estimator": RulParam(str, "gradient_boosting", help="the kind of tree ensemble"),
    "trees": RulParam(int, 150, 1, 5000, "number of trees"),
    "max_depth": RulParam(int, 4, 0, 64, "depth of each tree (0: unlimited, for forests)"),
    "learning_rate": RulParam(float, 0.1, 1e-4, 1.0, "gradient boosting shrinkage"),
    "subsample": RulParam(float, 0.5, 0.05, 1.0, "share of rows each boosting stage sees"),
    "min_samples_leaf": RulParam(int, 5, 1, 100_000, "rows a leaf must hold"),
    "max_features": RulParam(float, 1.0, 0.01, 1.0, "share of features tried at each split"),
    "cv_folds": RulParam(int, 5, 0, 50, "folds by unit for the cross-validated RMSE (0: none)"),
}


def resolve_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return (params with defaults filled in, problems); usable by `frontline check`."""
    problems = [
        f"unknown parameter {name!r} for a rul model (allowed: {', '.join(PARAMS)})"
        for name in params
        if name not in PARAMS
    ]
    resolved: dict[str, Any] = {}
    for name, param in PARAMS.items():
        value = params.get(name, param.default)
        problem = param.problem(name, value)
        if problem:
            problems.append(problem)
        else:
            resolved[name] = param.kind(value)
    return resolved, problems


# -- histories ---------------------------------------------------------------------------------


def _times_values(times: ArrayLike, values: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate and convert one unit's time column and (n, f) value matrix."""
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if t.ndim != 1 or v.ndim != 2 or v.shape[0] != t.shape[0]:
        raise ValueError(f"times {t.shape} and values {np.shape(values)} do not match")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    return t, v


@dataclass(frozen=True, eq=False)
class History:
    """One unit's history: `times` (n,) in the model's unit, `values` (n, f) over the features.

    `failed`: the history ends at the failure moment (its last row is the first failed one, time
    to failure 0 there). Otherwise it is censored: the unit was still working at its last row.
    NaN values are allowed (a metric not reported yet); features ignore them.
    """

    times: FloatArray
    values: FloatArray
    failed: bool = True

    def __post_init__(self) -> None:
        t, v = _times_values(self.times, self.values)
        if t.size == 0:
            raise ValueError("a history needs at least one row")
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "values", v)

    @property
    def end(self) -> float:
        """The failure moment (failed) or the last time the unit was seen working (censored)."""
        return float(self.times[-1])

    def targets(self, cap: float) -> tuple[FloatArray, NDArray[np.bool_]]:
        """Return (time to failure capped at `cap` per row, which rows have a known target).

        Censored: only rows at least `cap` before the end are known (their target is `cap`).
        """
        left = self.end - self.times
        if self.failed:
            return np.minimum(left, cap), np.ones(left.shape, dtype=np.bool_)
        known = left >= cap
        return np.where(known, cap, np.nan), known


def run_to_failure(
    times: ArrayLike,
    values: ArrayLike,
    failure_column: int | ArrayLike,
    *,
    above: float | None = None,
    below: float | None = None,
) -> History | None:
    """Cut a unit's history at the first row where the failure condition holds.

    `failure_column` is a column index of `values` or a separate (n,) series on the same
    times (a metric that is not a feature, e.g. a status code). The condition is
    `value > above` or `value < below` (either, when both are given; NaN never fails).
    Returns the rows up to and including that first failed row, or None if the unit never
    failed (the caller may keep it as a censored `History(times, values, failed=False)`).
    """
    if above is None and below is None:
        raise ValueError("a failure condition needs `above` or `below`")
    t, v = _times_values(times, values)
    if isinstance(failure_column, int | np.integer):
        if not -v.shape[1] <= int(failure_column) < v.shape[1]:
            raise ValueError(f"failure column {failure_column} outside 0..{v.shape[1] - 1}")
        signal = v[:, int(failure_column)]
    else:
        signal = np.asarray(failure_column, dtype=np.float64)
        if signal.shape != t.shape:
            raise ValueError(f"failure series {signal.shape} does not match times {t.shape}")
    with np.errstate(invalid="ignore"):
        failing = np.zeros(t.shape, dtype=np.bool_)
        if above is not None:
            failing |= signal > above
        if below is not None:
            failing |= signal < below
    hits = np.flatnonzero(failing)
    if hits.size == 0:
        return None
    stop = int(hits[0]) + 1
    return History(t[:stop], v[:stop], failed=True)


# -- features ----------------------------------------------------------------------------------


def feature_names(metrics: Sequence[str]) -> list[str]:
    """Names of the columns `rolling_features` returns for these metrics, in order."""
    return [f"{kind}({metric})" for kind in PER_METRIC for metric in metrics]


def _window_stats(offsets: FloatArray, window: FloatArray, inside: NDArray[np.bool_]) -> FloatArray:
    """Mean and least-squares slope per column of a batch of windows.

    `offsets` (rows, width): each window point's time minus the row's own time (<= 0);
    `window` (rows, width, f) the values; `inside` (rows, width) which points belong to the
    row's window. Returns (rows, 2f): means then slopes. A column without a value in the window
    gives NaN for both; one value (or one distinct time) gives slope 0: no trend seen yet.
    Sums run along the window axis in time order, so a window padded with absent points gives
    the same numbers as the bare window (the live case).
    """
    present = inside[:, :, None] & ~np.isnan(window)
    weight = present.astype(np.float64)
    count = weight.sum(axis=1)
    safe = np.maximum(count, 1.0)
    y = np.where(present, window, 0.0)
    t = offsets[:, :, None] * weight
    mean_y = y.sum(axis=1) / safe
    mean_t = t.sum(axis=1) / safe
    dt = (offsets[:, :, None] - mean_t[:, None, :]) * weight
    dy = (y - mean_y[:, None, :]) * weight
    stt = (dt * dt).sum(axis=1)
    sty = (dt * dy).sum(axis=1)
    slope = np.divide(sty, stt, out=np.zeros_like(sty), where=stt > 0)
    none = count == 0
    mean_y[none] = np.nan
    slope[none] = np.nan
    out: FloatArray = np.concatenate([mean_y, slope], axis=1)
    return out


def _check_window(window: float) -> float:
    w = float(window)
    if not (math.isfinite(w) and w > 0):
        raise ValueError(f"window must be a positive time, got {window!r}")
    return w


def rolling_features(times: ArrayLike, values: ArrayLike, window: float) -> FloatArray:
    """Return (n, 2f): for every row i, the features over rows with `t_i - window < t <= t_i`.

    `times` strictly increasing in the model's unit, `values` (n, f). Columns: the mean of each
    metric, then the slope of each (per time unit); see `feature_names`.
    """
    t, v = _times_values(times, values)
    w = _check_window(window)
    n, f = v.shape
    out = np.empty((n, 2 * f))
    if n == 0:
        return out
    start = np.searchsorted(t, t - w, side="right")
    stop = np.arange(1, n + 1)
    width = int((stop - start).max())
    chunk = max(1, _CHUNK_CELLS // max(1, width * f))
    positions = np.arange(width)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        index = start[lo:hi, None] + positions[None, :]
        inside = index < stop[lo:hi, None]
        index = np.minimum(index, n - 1)
        offsets = np.where(inside, t[index] - t[lo:hi, None], 0.0)
        out[lo:hi] = _window_stats(offsets, v[index], inside)
    return out


def features_at_end(times: ArrayLike, values: ArrayLike, window: float) -> FloatArray:
    """Return (2f,): the features of the last row, from that row's window only (live scoring).

    Give it a device's recent points: `times` strictly increasing in the model's unit covering
    at least the last `window`, `values` (n, f) on those times. Equal to the last row of
    `rolling_features` on any longer history ending the same way.
    """
    t, v = _times_values(times, values)
    w = _check_window(window)
    if t.size == 0:
        return np.full(2 * v.shape[1], np.nan)
    keep = t > t[-1] - w
    tw, vw = t[keep], v[keep]
    inside = np.ones((1, tw.size), dtype=np.bool_)
    row: FloatArray = _window_stats((tw - tw[-1])[None, :], vw[None, :, :], inside)[0]
    return row


# -- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TreeRegressor:
    """A fitted tree ensemble as arrays: `offset + scale * sum of the leaf values` per row."""

    trees: TreeEnsemble
    offset: float
    scale: float

    def predict(self, rows: FloatArray) -> FloatArray:
        leaf = self.trees.leaf_values(rows)[..., 0]
        out: FloatArray = self.offset + self.scale * leaf.sum(axis=1)
        return out


class RulFitter(Protocol):
    """Fit a regressor of `targets` on `rows` (finite) with resolved `params` and `seed`."""

    def __call__(
        self, rows: FloatArray, targets: FloatArray, *, params: Mapping[str, Any], seed: int
    ) -> TreeRegressor: ...


def default_fitter() -> RulFitter:
    """The scikit-learn fitter, imported only now: loading and predicting never need it."""
    from daemon.adapters.sklearn_rul import fit_rul_trees

    return fit_rul_trees


def training_rows(
    histories: Sequence[History], window: float, cap: float
) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """Return (feature rows, capped targets, history index) of every row with a known target.

    Rows whose features are not all known (a metric absent from the whole window) are dropped.
    """
    rows: list[FloatArray] = []
    targets: list[FloatArray] = []
    groups: list[NDArray[np.int64]] = []
    for i, history in enumerate(histories):
        x = rolling_features(history.times, history.values, window)
        y, known = history.targets(cap)
        keep = known & np.all(np.isfinite(x), axis=1)
        rows.append(x[keep])
        targets.append(y[keep])
        groups.append(np.full(int(keep.sum()), i, dtype=np.int64))
    width = 2 * histories[0].values.shape[1] if histories else 0
    if not rows:
        return np.empty((0, width)), np.empty(0), np.empty(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(targets), np.concatenate(groups)


def _rmse(predicted: FloatArray, actual: FloatArray) -> float:
    return float(np.sqrt(np.mean((predicted - actual) ** 2))) if actual.size else float("nan")


def _cross_validated(
    rows: FloatArray,
    targets: FloatArray,
    groups: NDArray[np.int64],
    folds: int,
    fit: RulFitter,
    params: Mapping[str, Any],
    seed: int,
    cap: float,
) -> float:
    """RMSE of predictions on whole units held out from fitting (folds by unit, seeded)."""
    units = np.unique(groups)
    folds = min(folds, units.size)
    if folds < 2:
        return float("nan")
    order = np.random.default_rng(seed).permutation(units)
    predicted = np.empty_like(targets)
    for held in np.array_split(order, folds):
        test = np.isin(groups, held)
        model = fit(rows[~test], targets[~test], params=params, seed=seed)
        predicted[test] = np.clip(model.predict(rows[test]), 0.0, cap)
    return _rmse(predicted, targets)


@dataclass(frozen=True, eq=False)
class RulModel:
    """A fitted RUL regressor over the features of `metrics` (see the module docstring).

    `predict(rows)` takes rows of `rolling_features` / `features_at_end` and returns the time
    left until failure in `unit`, between 0 and `cap` ("`cap` or more" at the top).
    """

    metrics: tuple[str, ...]
    window: float
    cap: float
    unit: str
    regressor: TreeRegressor
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    quality: dict[str, float] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.metrics)

    @classmethod
    def fit(
        cls,
        histories: Sequence[History],
        *,
        features: Sequence[str],
        window: float,
        cap: float,
        unit: str,
        params: Mapping[str, Any] | None = None,
        seed: int = 0,
        fitter: RulFitter | None = None,
    ) -> RulModel:
        """Fit on run-to-failure (and censored) histories whose columns are `features`.

        Raises ValueError with a clear message when the inputs cannot make a model (no failed
        history, mismatched columns, bad parameters).
        """
        resolved, problems = resolve_params(params or {})
        if problems:
            raise ValueError("; ".join(problems))
        metrics = tuple(str(m) for m in features)
        window = _check_window(window)
        _check_meta_values(metrics, window, cap, unit, ValueError)
        for history in histories:
            if history.values.shape[1] != len(metrics):
                raise ValueError(
                    f"a history has {history.values.shape[1]} columns, "
                    f"expected {len(metrics)} (features: {', '.join(metrics)})"
                )
        if not any(h.failed for h in histories):
            raise ValueError("no history ends in a failure: nothing to learn time to failure from")
        rows, targets, groups = training_rows(histories, window, cap)
        if rows.shape[0] < 2:
            raise ValueError(f"only {rows.shape[0]} training rows with a known time to failure")
        fit = fitter or default_fitter()
        fit_params = {k: v for k, v in resolved.items() if k != "cv_folds"}
        regressor = fit(rows, targets, params=fit_params, seed=seed)
        trained = np.clip(regressor.predict(rows), 0.0, cap)
        quality = {
            "rows": float(rows.shape[0]),
            "histories": float(len(histories)),
            "failed_histories": float(sum(h.failed for h in histories)),
            "train_rmse": _rmse(trained, targets),
            "cv_rmse": _cross_validated(
                rows, targets, groups, resolved["cv_folds"], fit, fit_params, seed, cap
            ),
            "baseline_rmse": float(np.std(targets)),  # always predicting the mean target
        }
        return cls(metrics, window, float(cap), unit, regressor, resolved, int(seed), quality)

    def predict(self, feature_rows: ArrayLike) -> FloatArray:
        """Return (n,) time to failure in `unit`, in [0, cap]; NaN for a row with a NaN feature.

        Accepts one row (k,) or many (n, k) with k = `len(feature_names)`.
        """
        rows = np.asarray(feature_rows, dtype=np.float64)
        if rows.ndim == 1:
            rows = rows[None, :]
        width = 2 * len(self.metrics)
        if rows.ndim != 2 or rows.shape[1] != width:
            raise ValueError(f"feature rows must be (n, {width}), got {np.shape(feature_rows)}")
        known = np.all(np.isfinite(rows), axis=1)
        out = np.full(rows.shape[0], np.nan)
        if known.any():
            out[known] = np.clip(self.regressor.predict(rows[known]), 0.0, self.cap)
        return out

    def predict_at_end(self, times: ArrayLike, values: ArrayLike) -> float:
        """Time to failure of one unit from its recent points (`features_at_end` then predict)."""
        return float(self.predict(features_at_end(times, values, self.window))[0])

    # -- artefact ------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """Return (JSON-able meta, arrays) to save with np.savez (no pickle involved)."""
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "rul",
            "unit": self.unit,
            "cap": self.cap,
            "window": self.window,
            "features": list(self.metrics),
            "feature_names": self.feature_names,
            "offset": self.regressor.offset,
            "scale": self.regressor.scale,
            "params": dict(self.params),
            "seed": self.seed,
            "quality": {k: (None if math.isnan(v) else v) for k, v in self.quality.items()},
        }
        return meta, self.regressor.trees.to_arrays("trees_")

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> RulModel:
        """Rebuild a saved model; `ModelArtefactError` says why one is refused."""
        if meta.get("format") != FORMAT or meta.get("kind", "rul") != "rul":
            raise ModelArtefactError(f"not a rul model artefact (format {meta.get('format')!r})")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelArtefactError(
                f"rul artefact format version {version!r}; this Frontline reads {FORMAT_VERSION}"
            )
        try:
            metrics = tuple(meta["features"])
            window, cap = float(meta["window"]), float(meta["cap"])
            unit = meta["unit"]
            offset, scale = float(meta["offset"]), float(meta["scale"])
            params = dict(meta.get("params", {}))
            seed = int(meta.get("seed", 0))
            quality = {
                str(k): float("nan") if v is None else float(v)
                for k, v in dict(meta.get("quality", {})).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelArtefactError(f"rul artefact metadata is incomplete: {exc!r}") from exc
        _check_meta_values(metrics, window, cap, unit, ModelArtefactError)
        if not (math.isfinite(offset) and math.isfinite(scale)):
            raise ModelArtefactError("rul artefact offset/scale are not finite")
        try:
            trees = TreeEnsemble.from_arrays(arrays, "trees_")
        except ValueError as exc:
            raise ModelArtefactError(f"rul artefact trees: {exc}") from exc
        if trees.n_features != 2 * len(metrics):
            raise ModelArtefactError(
                f"rul artefact trees read {trees.n_features} features, "
                f"the metadata lists {2 * len(metrics)}"
            )
        if trees.value.shape[2] != 1 or not np.all(np.isfinite(trees.value)):
            raise ModelArtefactError("rul artefact leaf values must be one finite number each")
        regressor = TreeRegressor(trees, offset, scale)
        return cls(metrics, window, cap, unit, regressor, params, seed, quality)


def _check_meta_values(
    metrics: tuple[Any, ...], window: float, cap: float, unit: Any, error: type[Exception]
) -> None:
    """Raise `error` on values no model can have (shared by fit and load)."""
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise error(f"features must be a non-empty list of metric names, got {list(metrics)}")
    if len(set(metrics)) != len(metrics):
        raise error(f"features repeat a metric: {list(metrics)}")
    if not (math.isfinite(window) and window > 0):
        raise error(f"window must be a positive time, got {window!r}")
    if not (math.isfinite(cap) and cap > 0):
        raise error(f"cap must be a positive time, got {cap!r}")
    if unit not in UNITS:
        raise error(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")


__all__ = [
    "ESTIMATORS",
    "FORMAT_VERSION",
    "PARAMS",
    "PER_METRIC",
    "UNITS",
    "History",
    "RulFitter",
    "RulModel",
    "TreeRegressor",
    "default_fitter",
    "feature_names",
    "features_at_end",
    "resolve_params",
    "rolling_features",
    "run_to_failure",
    "training_rows",
]
