"""`frontline detect CSV`: try an anomaly model on exported data before deploying its spec.

It reads a CSV (separator detected among `,` `;` and tab), fits an `AnomalyModel` on the first
N rows and writes one line per input row, in order: the time column (or the row number),
`score` (0..1, 6 decimals) and `is_anomaly` (0/1, `score > 0.5`). The model is the very one the
daemon runs (same window features, scaling, detector and calibration), so what an analyst sees
here is what the spec will do live. `benchmarks/skab.py` goes through `read_table`, `plan_for`
and `detect` below, so its figures are what this command gives.

Missing values: features are forward-filled (a window with no value takes the previous row's
feature); a row with nothing to fill from gets an empty score and `is_anomaly` 0. Training
leaves such rows out.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
import numpy as np
from numpy.typing import NDArray

from daemon.cli.output import DURATION, echo
from daemon.core.anomaly import AnomalyModel
from daemon.core.detectors import KINDS, check_params
from daemon.core.features import AGGREGATES, rolling
from daemon.core.modelspec import Feature, ModelSpec, Threshold

DELIMITERS = ",;\t"
TIME_NAMES = ("time", "timestamp", "datetime", "date", "ts")
LABEL_COLUMNS = ("anomaly", "changepoint", "label", "is_anomaly")
DEFAULT_TRAIN_ROWS = 400
DEFAULT_DETECTOR = "pca"
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


class DetectError(click.ClickException):
    """One clear line on stderr, exit status 2 (bad input, not a crash)."""

    exit_code = 2


@dataclass(frozen=True)
class Table:
    """A CSV as text cells: the header and the data rows (padded to the header's width)."""

    header: list[str]
    rows: list[list[str]]
    delimiter: str


@dataclass(frozen=True)
class Plan:
    """What to fit: features (None: every numeric column, with `aggregate`), window, model."""

    detector: str = DEFAULT_DETECTOR
    params: dict[str, Any] = field(default_factory=dict)
    features: tuple[Feature, ...] | None = None
    aggregate: str = "mean"
    window_ms: int | None = None
    quantile: float = Threshold().quantile
    factor: float = Threshold().factor
    seed: int = 0
    train_rows: int = DEFAULT_TRAIN_ROWS
    min_rows: int = 2
    time_column: str | None = None
    exclude: frozenset[str] = frozenset()


@dataclass
class Detection:
    """The outcome: per input row its label (time text or row number), score and flag."""

    label_name: str
    labels: list[str]
    score: NDArray[np.float64]
    is_anomaly: NDArray[np.bool_]
    features: list[str]
    model: AnomalyModel
    notes: list[str]


def sniff_delimiter(sample: str) -> str:
    """The separator of a CSV sample: csv.Sniffer among `,;\\t`, else the most frequent of them
    in the header line, else `,` (a one-column file has none)."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        counts = {d: first.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def read_table(path: Path) -> Table:
    """Read a CSV file; `DetectError` if it is missing, unreadable or has no data rows."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DetectError(f"no such file: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectError(f"cannot read {path}: {exc}") from exc
    delimiter = sniff_delimiter(content[:65536])
    lines = list(csv.reader(io.StringIO(content), delimiter=delimiter))
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DetectError(f"{path} is empty")
    header = [name.strip() for name in lines[0]]
    if len(set(header)) != len(header):
        raise DetectError(f"{path}: repeated column names in the header")
    width = len(header)
    rows = []
    for number, row in enumerate(lines[1:], start=2):
        if not row and width > 1:
            continue  # a blank line between rows; in a one-column file it is a missing value
        if len(row) > width:
            raise DetectError(f"{path}: line {number} has {len(row)} fields, the header {width}")
        rows.append(row + [""] * (width - len(row)))
    if not rows:
        raise DetectError(f"{path} has a header but no data rows")
    return Table(header, rows, delimiter)


def number_cell(cell: str) -> float | None:
    """The cell as a number: NaN when empty or not finite; None when it is not a number."""
    text = cell.strip()
    if not text or text.lower() in {"nan", "na", "n/a", "null", "none", "-"}:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else math.nan


def numeric_columns(table: Table) -> tuple[dict[str, NDArray[np.float64]], list[str]]:
    """Every column whose cells are all numbers or empty (with at least one number), and the
    names of the others."""
    numeric: dict[str, NDArray[np.float64]] = {}
    others = []
    for index, name in enumerate(table.header):
        values = [number_cell(row[index]) for row in table.rows]
        if any(v is None for v in values) or all(v is None or math.isnan(v) for v in values):
            others.append(name)
        else:
            numeric[name] = np.asarray(values, dtype=np.float64)
    return numeric, others


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from ISO 8601 (naive = UTC) or epoch seconds/milliseconds
    (a number above 1e11 is taken as milliseconds)."""
    stripped = text.strip()
    try:
        number = float(stripped)
    except ValueError:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return round(moment.timestamp() * 1000)
    if not math.isfinite(number):
        raise ValueError(f"not a time: {text!r}")
    return round(number if abs(number) >= 1e11 else number * 1000)


def time_column(table: Table, chosen: str | None) -> str | None:
    """The column that holds each row's time: `chosen`, a usual name, or a first column of times."""
    if chosen is not None:
        if chosen not in table.header:
            raise DetectError(
                f"no column {chosen!r} for --time-column (columns: {', '.join(table.header)})"
            )
        return chosen
    for name in table.header:
        if name.lower() in TIME_NAMES:
            return name
    first = table.header[0]
    sample = [row[0] for row in table.rows[:5]]
    if all(number_cell(cell) is None for cell in sample):
        try:
            for cell in sample:
                parse_time(cell)
        except ValueError:
            return None
        return first
    return None


def times_of(table: Table, column: str) -> NDArray[np.int64]:
    index = table.header.index(column)
    out = np.empty(len(table.rows), dtype=np.int64)
    for number, row in enumerate(table.rows):
        try:
            out[number] = parse_time(row[index])
        except (ValueError, OverflowError) as exc:
            raise DetectError(
                f"line {number + 2}: cannot read the time {row[index]!r} in column {column!r}"
            ) from exc
    return out


def _match_column(metric: str, columns: Sequence[str]) -> str | None:
    """A spec's metric names a column exactly, or once characters a metric name cannot hold
    (spaces, dots...) are read as `_` (`Volume_Flow_RateRMS` is `Volume Flow RateRMS`)."""
    if metric in columns:
        return metric
    found = [c for c in columns if _NOT_NAME.sub("_", c) == metric]
    if not found:
        found = [c for c in columns if _NOT_NAME.sub("_", c).lower() == metric.lower()]
    return found[0] if len(found) == 1 else None


def _forward_fill(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each NaN takes the last value above it in its column (leading NaNs stay)."""
    filled = rows.copy()
    index = np.where(np.isnan(filled), 0, np.arange(len(filled))[:, None])
    np.maximum.accumulate(index, axis=0, out=index)
    return filled[index, np.arange(filled.shape[1])[None, :]]


def _choose_features(
    table: Table, plan: Plan, numeric: dict[str, NDArray[np.float64]], skipped: list[str]
) -> tuple[list[Feature], list[str], list[str]]:
    """(features, the column each reads, notes): the spec's, or every numeric column."""
    if plan.features is not None:
        sources = []
        for feature in plan.features:
            column = _match_column(feature.metric, list(numeric))
            if column is None:
                raise DetectError(
                    f"the spec's feature {feature.metric!r} matches no numeric column "
                    f"(numeric columns: {', '.join(numeric) or 'none'})"
                )
            sources.append(column)
        return list(plan.features), sources, []
    notes = []
    unknown = sorted(set(plan.exclude) - set(table.header))
    if unknown:
        raise DetectError(f"--exclude names no column: {', '.join(unknown)}")
    excluded = {name.lower() for name in (*LABEL_COLUMNS, *plan.exclude)}
    dropped = [c for c in numeric if c.lower() in excluded]
    if dropped:
        notes.append(f"not used as features (labels or --exclude): {', '.join(dropped)}")
    if skipped:
        notes.append(f"ignored (not numeric): {', '.join(skipped)}")
    columns = [c for c in numeric if c.lower() not in excluded]
    if not columns:
        raise DetectError("no numeric column to use as a feature")
    return [Feature(c, plan.aggregate) for c in columns], columns, notes


def _feature_rows(
    table: Table,
    features: Sequence[Feature],
    values: NDArray[np.float64],
    window_ms: int | None,
    time_name: str | None,
) -> NDArray[np.float64]:
    """The rows the model sees: window aggregates (in time order) or the values, filled."""
    if window_ms is None:
        return _forward_fill(values)
    if time_name is None:
        raise DetectError("a window needs a time column (name it with --time-column)")
    times = times_of(table, time_name)
    order = np.argsort(times, kind="stable")
    rows = np.empty_like(values)
    for index, feature in enumerate(features):
        rows[order, index] = rolling(
            times[order], values[order, index], window_ms, feature.aggregate
        )
    rows[order] = _forward_fill(rows[order])
    return rows


def detect(table: Table, plan: Plan) -> Detection:
    """Fit on the first `plan.train_rows` rows and score every row (see the module docstring)."""
    time_name = time_column(table, plan.time_column)
    numeric, others = numeric_columns(table)
    numeric.pop(time_name or "", None)
    skipped = [c for c in others if c != time_name]
    features, sources, notes = _choose_features(table, plan, numeric, skipped)
    if len(table.rows) < plan.train_rows:
        raise DetectError(
            f"the file has {len(table.rows)} rows, fewer than the {plan.train_rows} to train on "
            "(use --train-rows)"
        )
    values = np.column_stack([numeric[c] for c in sources])
    rows = _feature_rows(table, features, values, plan.window_ms, time_name)
    if plan.features is not None:
        names = [f.label for f in features]
    elif plan.window_ms is None or plan.aggregate == "mean":
        names = list(sources)
    else:
        names = [f"{plan.aggregate}({c})" for c in sources]
    train = rows[: plan.train_rows]
    usable = int(np.isfinite(train).all(axis=1).sum())
    needed = max(plan.min_rows, 2)
    if usable < needed:
        raise DetectError(
            f"only {usable} of the first {plan.train_rows} rows have every feature; "
            f"at least {needed} are needed to train"
        )
    try:
        model = AnomalyModel.fit(
            train,
            features=names,
            detector=plan.detector,
            params=plan.params,
            quantile=plan.quantile,
            factor=plan.factor,
            seed=plan.seed,
        )
    except ValueError as exc:
        raise DetectError(f"cannot fit the model: {exc}") from exc
    score = model.score(rows).score
    flagged = np.asarray(model.is_anomaly(score), dtype=np.bool_)
    if time_name is not None:
        index = table.header.index(time_name)
        labels = [row[index] for row in table.rows]
    else:
        labels = [str(i) for i in range(1, len(table.rows) + 1)]
    return Detection(time_name or "row", labels, score, flagged, names, model, notes)


def plan_for(
    spec: ModelSpec, train_rows: int | None = None, time_column: str | None = None
) -> Plan:
    """The plan a model spec describes: its features, window, detector and threshold."""
    if spec.kind != "anomaly":
        raise DetectError(f"model {spec.name!r} is a {spec.kind} model; detect runs anomaly models")
    return Plan(
        detector=spec.detector,
        params=dict(spec.params),
        features=spec.features,
        window_ms=round(spec.window_s * 1000),
        quantile=spec.threshold.quantile,
        factor=spec.threshold.factor,
        seed=spec.seed,
        train_rows=DEFAULT_TRAIN_ROWS if train_rows is None else train_rows,
        min_rows=spec.training.min_samples,
        time_column=time_column,
    )


def load_spec(path: Path, name: str | None = None) -> ModelSpec:
    """The one anomaly spec in a model file (or the one named); `DetectError` otherwise."""
    from daemon.adapters.model_files import load_model_file

    if not path.is_file():
        raise DetectError(f"no such spec file: {path}")
    specs, problems = load_model_file(path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DetectError(f"invalid spec: {problems[0]}{more}")
    if name is not None:
        specs = [s for s in specs if s.name == name]
        if not specs:
            raise DetectError(f"no model named {name!r} in {path}")
    anomaly = [s for s in specs if s.kind == "anomaly"]
    if not anomaly:
        raise DetectError(f"{path} holds no anomaly model")
    if len(anomaly) > 1:
        names = ", ".join(s.name for s in anomaly)
        raise DetectError(f"{path} holds several anomaly models ({names}): pick one with --name")
    return anomaly[0]


def write_csv(detection: Detection, out: IO[str]) -> None:
    """One line per input row: label, score (6 decimals, empty if unknown), is_anomaly."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([detection.label_name, "score", "is_anomaly"])
    for label, score, flagged in zip(
        detection.labels, detection.score.tolist(), detection.is_anomaly.tolist(), strict=True
    ):
        writer.writerow([label, "" if math.isnan(score) else f"{score:.6f}", int(flagged)])


def _params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DetectError(f"--param wants NAME=VALUE, got {pair!r}")
        number = number_cell(value)
        if number is None or math.isnan(number):
            raise DetectError(f"--param {key}: {value!r} is not a number")
        params[key] = int(number) if number.is_integer() and "." not in value else number
    return params


@click.command("detect")
@click.argument("csv_path", metavar="CSV", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model",
    "spec_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A model spec (models/*.yaml): its features, window, detector, threshold.",
)
@click.option("--name", "spec_name", help="Which model of the spec file, if it holds several.")
@click.option(
    "--detector",
    type=click.Choice(sorted(KINDS)),
    help=f"Detector without a spec [default: {DEFAULT_DETECTOR}].",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A detector parameter (repeatable), without a spec.",
)
@click.option(
    "--time-column",
    help="The time column [default: one named time, timestamp, "
    "datetime, date or ts, else a first column of dates].",
)
@click.option(
    "--train-rows",
    type=click.IntRange(min=2),
    help=f"Fit on the first N rows [default: {DEFAULT_TRAIN_ROWS}].",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the CSV here [default: stdout].",
)
@click.option(
    "--window",
    type=DURATION,
    help="Each feature is its aggregate over this trailing window (e.g. 30s), without a spec.",
)
@click.option(
    "--aggregate",
    type=click.Choice(sorted(AGGREGATES)),
    help="The window's aggregate [default: mean], without a spec.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="COLUMN",
    help="A numeric column that is not a feature (repeatable); columns named "
    f"{', '.join(LABEL_COLUMNS)} are never features.",
)
@click.option(
    "--quantile",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help=f"Threshold quantile of the training scores [default: {Threshold().quantile}]"
    ", without a spec.",
)
@click.option(
    "--factor",
    type=click.FloatRange(0, min_open=True),
    help=f"Threshold factor [default: {Threshold().factor}], without a spec.",
)
def detect_command(
    csv_path: Path,
    spec_path: Path | None,
    spec_name: str | None,
    detector: str | None,
    params: tuple[str, ...],
    time_column: str | None,
    train_rows: int | None,
    output: Path | None,
    window: float | None,
    aggregate: str | None,
    exclude: tuple[str, ...],
    quantile: float | None,
    factor: float | None,
) -> None:
    """Score every row of a CSV with an anomaly model fitted on its first rows.

    The separator (, ; or tab) is detected. Every numeric column is a feature unless the spec
    lists them; other columns are ignored (noted on stderr), and label columns (anomaly,
    changepoint, label, is_anomaly) and --exclude'd ones are never features. Output: the time
    column (or the row number), score (0..1) and is_anomaly (score > 0.5), one line per input
    row, in order. A row with a missing value is scored on forward-filled features, or left
    with an empty score (is_anomaly 0) when there is nothing to fill from.
    """
    if spec_path is not None:
        spec_only = {"--detector": detector, "--window": window, "--aggregate": aggregate,
                     "--quantile": quantile, "--factor": factor}  # fmt: skip
        clashing = [option for option, value in spec_only.items() if value is not None]
        if params:
            clashing.append("--param")
        if exclude:
            clashing.append("--exclude")
        if clashing:
            raise DetectError(f"{', '.join(clashing)}: the spec decides these with --model")
        plan = plan_for(load_spec(spec_path, spec_name), train_rows, time_column)
    else:
        if spec_name is not None:
            raise DetectError("--name picks a model of a spec file: use it with --model")
        kind = detector or DEFAULT_DETECTOR
        chosen = _params(params)
        problems = check_params(kind, chosen)
        if problems:
            raise DetectError("; ".join(problems))
        if aggregate is not None and window is None:
            raise DetectError("--aggregate needs --window")
        if window is not None and window * 1000 < 1:
            raise DetectError("--window must be at least 1 ms")
        plan = Plan(
            detector=kind,
            params=chosen,
            aggregate=aggregate or "mean",
            window_ms=None if window is None else round(window * 1000),
            quantile=Threshold().quantile if quantile is None else quantile,
            factor=Threshold().factor if factor is None else factor,
            train_rows=DEFAULT_TRAIN_ROWS if train_rows is None else train_rows,
            time_column=time_column,
            exclude=frozenset(exclude),
        )
    detection = detect(read_table(csv_path), plan)
    for note in detection.notes:
        echo(f"note: {note}", err=True)
    flagged = int(detection.is_anomaly.sum())
    unknown = int(np.isnan(detection.score).sum())
    summary = (
        f"{plan.detector} on {detection.model.quality['rows']} training rows, features: "
        f"{', '.join(detection.features)}; {flagged} of {len(detection.labels)} rows anomalous"
    )
    echo(summary + (f", {unknown} without a score" if unknown else ""), err=True)
    if output is None:
        write_csv(detection, sys.stdout)
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as handle:
            write_csv(detection, handle)
    except OSError as exc:
        raise DetectError(f"cannot write {output}: {exc}") from exc
