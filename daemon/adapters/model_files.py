"""Read the operator's model specs (`models/*.yaml`) with file:line:col problems (docs/models.md).

    models:
      - name: boiler_health          # the model's name: anomaly("boiler_health") in rules
        kind: anomaly                # anomaly | rul
        match: {model: boiler}       # which devices, as a rule group's match
        features: [temperature, pressure, {metric: power, aggregate: max}]
        window: 5m                   # each feature is its aggregate over this window
        interval: 30s                # how often matching devices are scored
        detector: pca                # pca | robust_z | iforest | mset ...
        params: {variance: 0.95}
        training: {history: 24h, step: 1m, min_samples: 200}
        retrain: "0 3 * * *"         # cron, run by the daemon
        threshold: {quantile: 0.995, factor: 1.0}

Pydantic checks the shape; the detector's own parameters, the aggregates, the cron expression,
the names and duplicates across files are checked here, so every problem of every file is
reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.adapters.rule_files import fingerprint, rule_paths
from daemon.adapters.yaml_source import (
    Loc,
    YamlSource,
    file_order,
    first_of_each_name,
    read_yaml_source,
    validation_problems,
)
from daemon.config import Seconds
from daemon.core.detectors import KINDS, check_params
from daemon.core.features import AGGREGATES
from daemon.core.modelspec import (
    RUL_UNITS,
    Failure,
    Feature,
    ModelSpec,
    Threshold,
    Training,
)
from daemon.core.rul import resolve_params
from daemon.errors import ConfigProblem

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MATCH_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Feature(_Model):
    metric: str
    aggregate: str = "mean"


class _Training(_Model):
    history: Seconds = 86_400.0
    step: Seconds = Field(60.0, gt=0)
    min_samples: int = Field(200, ge=2)


class _Threshold(_Model):
    quantile: float = Field(0.995, gt=0, lt=1)
    factor: float = Field(1.0, gt=0)


class _Failure(_Model):
    metric: str
    above: float | None = None
    below: float | None = None


class _Spec(_Model):
    name: str
    kind: Literal["anomaly", "rul"] = "anomaly"
    match: dict[str, str] = Field(default_factory=dict)
    features: list[str | _Feature] = Field(min_length=1)
    window: Seconds = Field(300.0, gt=0)
    interval: Seconds = Field(60.0, gt=0)
    detector: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    training: _Training = _Training()
    retrain: str | None = None
    threshold: _Threshold = _Threshold()
    seed: int = 0
    failure: _Failure | None = None
    unit: str = "hours"
    cap: float | None = Field(None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if NAME.fullmatch(value) is None:
            raise ValueError("must be lower case letters, digits and _ (starting with a letter)")
        return value


class _File(_Model):
    models: list[_Spec] = Field(default_factory=list)


def model_paths(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to the spec files directly in them (as for rule files)."""
    return rule_paths(paths)


def is_model_file(path: Path) -> bool:
    """Whether `path` holds model specs (a top-level `models:` key) rather than rules."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"^models\s*:", head, re.MULTILINE) is not None


def _cron_problem(text: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    fields = text.split()
    if len(fields) != 5:
        return f"a cron expression has 5 fields (minute hour day month weekday), not {len(fields)}"
    try:
        CronTrigger.from_crontab(text)
    except ValueError as exc:
        return f"not a valid cron expression: {exc}"
    return None


def _features(
    spec: _Spec, loc: Loc, source: YamlSource
) -> tuple[list[Feature], list[ConfigProblem]]:
    features: list[Feature] = []
    problems: list[ConfigProblem] = []
    for index, item in enumerate(spec.features):
        feature = Feature(item) if isinstance(item, str) else Feature(item.metric, item.aggregate)
        at: Loc = (*loc, "features", index)
        if METRIC.fullmatch(feature.metric) is None:
            problems.append(source.problem(at, f"not a metric name: {feature.metric!r}"))
        if feature.aggregate not in AGGREGATES:
            known = ", ".join(sorted(AGGREGATES))
            message = f"unknown aggregate {feature.aggregate!r} (expected one of: {known})"
            problems.append(source.problem((*at, "aggregate"), message))
        if feature in features:
            problems.append(source.problem(at, f"feature {feature.label} listed twice"))
        features.append(feature)
    return features, problems


def _check_spec(
    spec: _Spec, loc: Loc, source: YamlSource, max_window: float
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for key in spec.match:
        if MATCH_KEY.fullmatch(key) is None:
            problems.append(source.problem((*loc, "match", key), "not a match key", key=True))
    if spec.window > max_window:
        message = f"longer than rules.max_window ({max_window:g} s): the daemon keeps no more"
        problems.append(source.problem((*loc, "window"), message))
    if spec.retrain is not None and (cron := _cron_problem(spec.retrain)):
        problems.append(source.problem((*loc, "retrain"), cron))
    if spec.kind == "anomaly":
        detector = spec.detector or "pca"
        if detector not in KINDS:
            message = f"unknown detector {detector!r} (expected one of: {', '.join(sorted(KINDS))})"
            problems.append(source.problem((*loc, "detector"), message))
        else:
            problems += [
                source.problem((*loc, "params"), message)
                for message in check_params(detector, spec.params)
            ]
        for key in ("failure", "cap"):
            if getattr(spec, key) is not None:
                message = "only for kind: rul"
                problems.append(source.problem((*loc, key), message, key=True))
        return problems
    return problems + _check_rul(spec, loc, source)


def _check_rul(spec: _Spec, loc: Loc, source: YamlSource) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if spec.detector is not None:
        message = "only for kind: anomaly (a rul model picks its estimator in `params`)"
        problems.append(source.problem((*loc, "detector"), message, key=True))
    problems += [
        source.problem((*loc, "params"), message) for message in resolve_params(spec.params)[1]
    ]
    if spec.unit not in RUL_UNITS:
        message = f"unknown unit {spec.unit!r} (expected one of: {', '.join(RUL_UNITS)})"
        problems.append(source.problem((*loc, "unit"), message))
    if spec.cap is None:
        message = "a rul model needs `cap`: the most time left it predicts, in `unit`s"
        problems.append(source.problem(loc, message))
    failure = spec.failure
    if failure is None:
        message = "a rul model needs `failure: {metric: NAME, above: N}` (or below)"
        problems.append(source.problem(loc, message))
    elif (failure.above is None) == (failure.below is None):
        message = "give exactly one of `above` and `below`"
        problems.append(source.problem((*loc, "failure"), message))
    elif METRIC.fullmatch(failure.metric) is None:
        message = f"not a metric name: {failure.metric!r}"
        problems.append(source.problem((*loc, "failure", "metric"), message))
    return problems


def _spec(spec: _Spec, features: list[Feature], where: str) -> ModelSpec:
    failure = spec.failure
    default_detector = "pca"
    if spec.kind == "rul":
        default_detector = str(resolve_params(spec.params)[0]["estimator"])
    return ModelSpec(
        name=spec.name,
        kind=spec.kind,
        features=tuple(features),
        match=dict(spec.match),
        window_s=spec.window,
        interval_s=spec.interval,
        detector=spec.detector or default_detector,
        params=dict(spec.params),
        training=Training(spec.training.history, spec.training.step, spec.training.min_samples),
        retrain=spec.retrain,
        threshold=Threshold(spec.threshold.quantile, spec.threshold.factor),
        seed=spec.seed,
        failure=None if failure is None else Failure(failure.metric, failure.above, failure.below),
        unit=spec.unit,
        cap=spec.cap,
        source=where,
    )


def read_model_file(
    path: Path, max_window: float = float("inf")
) -> tuple[list[ModelSpec], list[ConfigProblem]]:
    """Return the specs in `path` and every problem in it (with problems, no specs)."""
    source, problems = read_yaml_source(path)
    if source is None:
        return [], problems
    try:
        data = _File.model_validate(source.data)
    except ValidationError as exc:
        return [], sorted(validation_problems(exc, _File, source), key=file_order)
    specs: list[ModelSpec] = []
    for index, raw in enumerate(data.models):
        loc: Loc = ("models", index)
        features, found = _features(raw, loc, source)
        found += _check_spec(raw, loc, source, max_window)
        problems += found
        if not found:
            specs.append(_spec(raw, features, source.where((*loc, "name"))))
    problems.sort(key=file_order)
    return ([] if problems else specs), problems


def load_model_file(path: Path) -> tuple[list[ModelSpec], list[ConfigProblem]]:
    """One spec file on its own (for `frontline detect --model`)."""
    return read_model_file(path)


def load_models(
    paths: Iterable[Path], max_window: float = float("inf")
) -> tuple[list[ModelSpec], list[ConfigProblem]]:
    """Every spec in `paths` (files or folders), names unique across all of them."""
    found: list[ModelSpec] = []
    problems: list[ConfigProblem] = []
    for path in model_paths(paths):
        specs, file_problems = read_model_file(path, max_window)
        found += specs
        problems += file_problems
    specs, duplicates = first_of_each_name(found, "model")
    problems += duplicates
    return ([] if problems else specs), problems


class ModelFileSet:
    """The `ModelFiles` port over files and directories on disk.

    With `skip_missing` (the default `models.paths`), a path that does not exist holds no specs
    until it appears (like an empty folder); without (a path the operator set), it is a problem
    (`cannot read`).
    """

    def __init__(
        self,
        paths: Iterable[Path],
        max_window_s: float = float("inf"),
        *,
        skip_missing: bool = True,
    ) -> None:
        self._paths = tuple(paths)
        self._max_window_s = max_window_s
        self._skip_missing = skip_missing

    def load(self) -> tuple[list[ModelSpec], list[ConfigProblem]]:
        """Every spec and every problem, across all files."""
        paths = [p for p in self._paths if not self._skip_missing or p.exists()]
        return load_models(paths, self._max_window_s)

    def stamp(self) -> object:
        return fingerprint(self._paths)
