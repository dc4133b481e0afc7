"""SKAB (Skoltech Anomaly Benchmark) outlier detection, through `frontline detect`'s own code.

Protocol (the SKAB README's leaderboard): for every file of `data/valve1`, `data/valve2` and
`data/other`, fit on the first 400 rows and score the rest; pool every scored row of every
file; F1, FAR = FP / (FP + TN) and MAR = FN / (FN + TP) against the `anomaly` column. Labels
are read only to score; one configuration for all files.

Each configuration runs exactly what a user gets: `read_table`, `plan_for` (or the plan of
`--detector` options) and `detect` from daemon/cli/detect.py, the functions behind

    frontline detect FILE --model benchmarks/skab/skab.yaml      # the recommended row
    frontline detect FILE --model benchmarks/skab/skab_KIND.yaml # each other detector's row
    frontline detect FILE --detector KIND                         # the "plain" rows (defaults)

so window features come from `features.rolling`, the model is `AnomalyModel` with its
calibration, and a row is anomalous when its score is above 0.5. The recommended configuration
lives in benchmarks/skab/skab.yaml; its hyper-parameters were chosen on SKAB itself (as the
published entries' were), never per file.

Usage:

    python benchmarks/skab.py [--data DIR] [--detector KIND ...] [--write-docs]

`--data` is a copy of the public SKAB repository's `data` folder, or its parent (default
$FRONTLINE_DATASETS/skab, else the data sets folder the development machines keep beside the
repository; pass --data on any other machine).
`--write-docs` replaces the table between the skab-table markers in docs/models.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.docblock import replace_block  # noqa: E402
from daemon.cli.detect import (  # noqa: E402
    DetectError,
    Plan,
    detect,
    load_spec,
    plan_for,
    read_table,
)
from daemon.core.detectors import KINDS  # noqa: E402

SPEC = ROOT / "benchmarks" / "skab" / "skab.yaml"  # the recommended configuration
#: one spec per other detector: the same features and window, its own parameters and threshold
SPECS = [SPEC, *(SPEC.parent / f"skab_{kind}.yaml" for kind in ("mset", "robust_z", "iforest"))]
FOLDERS = ("valve1", "valve2", "other")
TRAIN_ROWS = 400
MARK_START = "<!-- skab-table:start -->"
MARK_END = "<!-- skab-table:end -->"
DOCS = ROOT / "docs" / "models.md"
#: the SKAB README's outlier-detection leaderboard: F1, FAR %, MAR %
PUBLISHED = [
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T²+Q (PCA-based)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.6),
    ("Isolation forest", 0.29, 2.56, 82.89),
]
GOAL = "F1 >= 0.80 with FAR <= 13.5 %"


@dataclass(frozen=True)
class Result:
    name: str
    f1: float
    far: float
    mar: float
    rows: int
    seconds: float


def data_dir(given: str | None) -> Path:
    if given:
        path = Path(given)
    elif os.environ.get("FRONTLINE_DATASETS"):
        path = Path(os.environ["FRONTLINE_DATASETS"]) / "skab"
    else:
        path = ROOT.parent / "shared" / "datasets" / "skab"
    return path / "data" if (path / "data" / FOLDERS[0]).is_dir() else path


def files(folder: Path) -> list[Path]:
    found = sorted(p for name in FOLDERS for p in (folder / name).glob("*.csv"))
    if not found:
        sys.exit(f"no SKAB files in {folder}/{{{','.join(FOLDERS)}}} (give --data)")
    return found


def labels(path: Path) -> np.ndarray:
    """The `anomaly` column (read only to score)."""
    table = read_table(path)
    index = table.header.index("anomaly")
    return np.asarray([float(row[index]) > 0 for row in table.rows])


def evaluate(name: str, plan: Plan, paths: list[Path]) -> Result:
    """Run `plan` on every file the way `frontline detect` does; pool the scored rows."""
    truth, flagged = [], []
    started = time.perf_counter()
    rows = 0
    for path in paths:
        detection = detect(read_table(path), plan)
        flagged.append(detection.is_anomaly[TRAIN_ROWS:])
        rows += len(detection.labels)
        truth.append(labels(path)[TRAIN_ROWS:])
    seconds = time.perf_counter() - started
    y, p = np.concatenate(truth), np.concatenate(flagged)
    tp, fp = int(np.sum(y & p)), int(np.sum(~y & p))
    fn, tn = int(np.sum(y & ~p)), int(np.sum(~y & ~p))
    f1 = 2 * tp / (2 * tp + fp + fn)
    return Result(name, f1, 100 * fp / (fp + tn), 100 * fn / (fn + tp), rows, seconds)


def table(results: list[Result]) -> str:
    lines = [
        "| Configuration | F1 | FAR, % | MAR, % | rows/s |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.f1:.2f} | {r.far:.2f} | {r.mar:.2f} | {r.rows / r.seconds:,.0f} |"
        )
    for name, f1, far, mar in PUBLISHED:
        lines.append(f"| published: {name} | {f1:.2f} | {far:.2f} | {mar:.2f} | |")
    return "\n".join(lines)


def write_docs(block: str) -> None:
    path = DOCS
    replace_block(path, MARK_START, MARK_END, block)
    print(f"wrote the table into {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="SKAB's data folder (or the repository holding it)")
    parser.add_argument(
        "--detector",
        action="append",
        choices=sorted(KINDS),
        help="only these detectors (repeatable; default: every one)",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/models.md")
    args = parser.parse_args()
    paths = files(data_dir(args.data))
    kinds = args.detector or sorted(KINDS)
    results = []
    print(f"SKAB: {len(paths)} files, fit on the first {TRAIN_ROWS} rows of each, the rest pooled")
    try:
        for path in SPECS:
            plan = plan_for(load_spec(path), TRAIN_ROWS)
            if plan.detector in kinds:
                label = "**recommended**: " if path == SPEC else ""
                name = f"{label}{plan.detector}, `--model {path.relative_to(ROOT)}`"
                results.append(evaluate(name, plan, paths))
        for kind in kinds:
            name = f"{kind}, plain: `--detector {kind}`"
            results.append(evaluate(name, Plan(detector=kind, train_rows=TRAIN_ROWS), paths))
    except DetectError as exc:
        sys.exit(f"error: {exc.message}")
    block = table(results)
    print(block)
    for result in results:
        if result.name.startswith("**recommended"):
            met = result.f1 >= 0.80 and result.far <= 13.5
            print(f"goal ({GOAL}) for the recommended configuration: {'met' if met else 'NOT met'}")
    if args.write_docs:
        write_docs(block)


if __name__ == "__main__":
    main()
