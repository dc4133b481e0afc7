"""C-MAPSS FD001 remaining-useful-life benchmark, through the daemon's own RUL code.

Protocol (NASA's turbofan data, Saxena et al., PHM08): fit on `train_FD001.txt` only (100
engines run to failure); for each of the 100 engines of `test_FD001.txt` (cut before failure),
predict the remaining cycles at its last cycle; compare with `RUL_FD001.txt`. Reports the RMSE
and the PHM08 score (late predictions cost more than early ones). The training target is capped
at 125 cycles, common practice.

It uses exactly what the daemon uses: `History` per engine, `RulModel.fit` with the
scikit-learn fitter, and for each test engine `RulModel.predict_at_end` (the live path:
features from the engine's last window only), with cycles as the time unit.

Feature choice is a rule computed on the training data, not on test results: the 21 sensors
minus those whose training standard deviation is below their own resolution (the smallest step
between two distinct values: such a column never moves by a step it can show); the three
operating settings are inputs, not health signals, and are not used. `--tune` prints the 5-fold
cross-validation by engine (inside train_FD001) that chose the window and the ensemble; the
test set is read only to score the chosen configuration.

Usage:

    python benchmarks/cmapss.py [--data DIR] [--tune] [--write-docs]

`--data` is a folder with train_FD001.txt, test_FD001.txt and RUL_FD001.txt (default
$FRONTLINE_DATASETS/cmapss, else the data sets folder the development machines keep beside the
repository; pass --data on any other machine).
`--write-docs` replaces the table between the cmapss-table markers in docs/models.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.docblock import replace_block  # noqa: E402
from daemon.adapters.sklearn_rul import fit_rul  # noqa: E402
from daemon.core.rul import History, RulModel, rolling_features  # noqa: E402

CAP = 125.0
SENSORS = [f"s{i}" for i in range(1, 22)]
COLUMNS = ["unit", "cycle", "setting1", "setting2", "setting3", *SENSORS]
GRID_WINDOWS = (30.0, 45.0, 60.0, 90.0)
GRID_PARAMS: list[dict[str, Any]] = [
    {"estimator": "gradient_boosting", "trees": 150, "max_depth": 4, "learning_rate": 0.1},
    {
        "estimator": "random_forest",
        "trees": 100,
        "max_depth": 0,
        "min_samples_leaf": 10,
        "max_features": 0.33,
    },
]
#: chosen by `--tune`: the lowest 5-fold CV RMSE by engine on train_FD001 (11.13)
WINDOW = 60.0
PARAMS: dict[str, Any] = GRID_PARAMS[0]
PUBLISHED = [
    ("simple scikit-learn regressors (published)", "about 18-19", ""),
    ("best published deep models", "about 11", ""),
]
MARK_START = "<!-- cmapss-table:start -->"
MARK_END = "<!-- cmapss-table:end -->"


def default_data() -> Path:
    env = os.environ.get("FRONTLINE_DATASETS")
    if env:
        return Path(env) / "cmapss"
    return ROOT.parent / "shared" / "datasets" / "cmapss"


def load(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.float64, ndmin=2)


def engines(table: np.ndarray, columns: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a C-MAPSS table into (cycles, sensor values) per engine, in engine order."""
    out = []
    for unit in np.unique(table[:, 0]):
        rows = table[table[:, 0] == unit]
        rows = rows[np.argsort(rows[:, 1])]
        out.append((rows[:, 1], rows[:, columns]))
    return out


def informative_sensors(train: np.ndarray) -> tuple[list[int], list[str]]:
    """Sensors whose training std reaches their resolution (the smallest step between values)."""
    keep, dropped = [], []
    for name in SENSORS:
        column = train[:, COLUMNS.index(name)]
        distinct = np.unique(column)
        step = float(np.diff(distinct).min()) if distinct.size > 1 else 0.0
        if distinct.size > 1 and float(column.std()) >= step:
            keep.append(COLUMNS.index(name))
        else:
            dropped.append(name)
    return keep, dropped


def phm08(d: np.ndarray) -> float:
    """PHM08 score of errors d = predicted - true: late (d > 0) costs more than early."""
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def tune(histories: list[History], names: list[str]) -> None:
    """Print the cross-validated RMSE (by engine, train_FD001 only) of each grid point."""
    print("5-fold CV by engine on train_FD001 (RMSE of the capped target, all rows):")
    print(f"{'window':>6}  {'cv RMSE':>7}  {'fit s':>6}  params")
    best: tuple[float, float, dict[str, Any]] | None = None
    for window in GRID_WINDOWS:
        for params in GRID_PARAMS:
            started = time.perf_counter()
            model = fit_rul(
                histories,
                features=names,
                window=window,
                cap=CAP,
                unit="cycles",
                params={**params, "cv_folds": 5},
                seed=0,
            )
            cv = model.quality["cv_rmse"]
            print(f"{window:6g}  {cv:7.2f}  {time.perf_counter() - started:6.1f}  {params}")
            if best is None or cv < best[0]:
                best = (cv, window, params)
    assert best is not None
    print(f"best: window {best[1]:g}, {best[2]} (CV RMSE {best[0]:.2f})")


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| model | RMSE | PHM08 score |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {rmse} | {score} |" for name, rmse, score in rows]
    return "\n".join(lines)


def write_docs(block: str) -> None:
    path = ROOT / "docs" / "models.md"
    replace_block(path, MARK_START, MARK_END, block)
    print(f"wrote the table into {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--tune", action="store_true", help="print the CV grid and stop")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = [args.data / f for f in ("train_FD001.txt", "test_FD001.txt", "RUL_FD001.txt")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"C-MAPSS files not found: {', '.join(missing)} (use --data DIR)")
    train, test, truth = load(files[0]), load(files[1]), load(files[2])[:, 0]

    columns, dropped = informative_sensors(train)
    names = [COLUMNS[c] for c in columns]
    print(f"sensors used ({len(names)}): {' '.join(names)}; dropped (flat): {' '.join(dropped)}")
    histories = [History(t, v, failed=True) for t, v in engines(train, columns)]
    if args.tune:
        tune(histories, names)
        return

    started = time.perf_counter()
    model = fit_rul(
        histories,
        features=names,
        window=WINDOW,
        cap=CAP,
        unit="cycles",
        params={**PARAMS, "cv_folds": 0},
        seed=args.seed,
    )
    fit_s = time.perf_counter() - started

    test_engines = engines(test, columns)
    if len(test_engines) != truth.size:
        sys.exit(f"{len(test_engines)} test engines but {truth.size} true RUL values")
    started = time.perf_counter()
    predicted = np.array([model.predict_at_end(t, v) for t, v in test_engines])
    live_s = time.perf_counter() - started
    started = time.perf_counter()
    every_row = np.vstack([rolling_features(t, v, model.window) for t, v in test_engines])
    model.predict(every_row)
    batch_s = time.perf_counter() - started

    error = predicted - truth
    rmse = float(np.sqrt(np.mean(error**2)))
    score = phm08(error)
    meta, arrays = model.to_arrays()
    again = RulModel.from_arrays(meta, arrays)
    assert np.array_equal(again.predict(every_row[:500]), model.predict(every_row[:500]))

    print(
        f"training: {len(histories)} engines, {int(model.quality['rows'])} rows, "
        f"window {model.window:g} cycles, cap {CAP:g}, {PARAMS}"
    )
    print(f"fit time: {fit_s:.1f} s; training RMSE {model.quality['train_rmse']:.2f}")
    print(
        f"prediction: {truth.size / live_s:,.0f} engines/s one at a time "
        f"(features_at_end + predict), {every_row.shape[0] / batch_s:,.0f} rows/s batched"
    )
    print(
        f"late predictions: {int((error > 0).sum())}, early: {int((error < 0).sum())}, "
        f"mean error {error.mean():+.2f} cycles, worst {error[np.argmax(np.abs(error))]:+.1f}"
    )
    rows = [
        (
            f"Frontline `rul` ({PARAMS['estimator'].replace('_', ' ')}, window {WINDOW:g})",
            f"{rmse:.2f}",
            f"{score:.0f}",
        ),
        *PUBLISHED,
    ]
    block = (
        table(rows)
        + f"\n\nFit: {fit_s:.0f} s ({len(histories)} engines, {int(model.quality['rows']):,} rows,"
        f" one core). Prediction: {truth.size / live_s:,.0f} engines/s one at a time"
        f" (`features_at_end` + `predict`), {every_row.shape[0] / batch_s:,.0f} rows/s batched."
    )
    print()
    print(block)
    if args.write_docs:
        write_docs(block)


if __name__ == "__main__":
    main()
