"""`frontline detect CSV`: one output line per input row, in order, on SKAB-shaped and one-column
files; missing values, specs and bad input (one clear line, exit status 2)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from daemon.cli import cli

START = datetime(2020, 3, 9, 10, 14, 33, tzinfo=UTC)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["detect", *map(str, args)])


def output_rows(result: Result) -> list[list[str]]:
    assert result.exit_code == 0, result.output
    return list(csv.reader(io.StringIO(result.stdout)))


def skab_like(path: Path, rows: int = 700, fault: tuple[int, int] = (500, 600)) -> list[str]:
    """A `;`-separated file shaped like SKAB's: datetime, three correlated metrics, a metric
    with a space in its name, and the anomaly/changepoint labels; a fault between `fault`."""
    rng = np.random.default_rng(0)
    level = rng.normal(size=rows).cumsum() * 0.05
    times = [(START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(rows)]
    anomaly = np.zeros(rows)
    anomaly[fault[0] : fault[1]] = 1
    a = level + 0.1 * rng.normal(size=rows)
    b = 2 * level + 0.1 * rng.normal(size=rows) + 3 * anomaly  # the fault breaks b's relation
    c = 230 + rng.normal(size=rows)
    flow = 32 + 0.2 * rng.normal(size=rows)
    with path.open("w", newline="") as handle:
        out = csv.writer(handle, delimiter=";")
        out.writerow(["datetime", "Acc1", "Acc2", "Voltage", "Volume Flow RateRMS", "anomaly",
                      "changepoint"])  # fmt: skip
        for i in range(rows):
            out.writerow([times[i], f"{a[i]:.5f}", f"{b[i]:.5f}", f"{c[i]:.3f}",
                          f"{flow[i]:.3f}", anomaly[i], 0.0])  # fmt: skip
    return times


def test_a_skab_shaped_file_gets_one_line_per_row_in_order(tmp_path: Path) -> None:
    """Test the SKAB case: `;` detected, labels not features, every row scored in order, and
    the injected fault flagged far more than the normal rows."""
    path = tmp_path / "skab.csv"
    times = skab_like(path)
    result = run(path)
    lines = output_rows(result)
    assert lines[0] == ["datetime", "score", "is_anomaly"]
    assert [line[0] for line in lines[1:]] == times
    scores = np.array([float(line[1]) for line in lines[1:]])
    flags = np.array([int(line[2]) for line in lines[1:]])
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(flags, scores > 0.5)
    assert flags[500:600].mean() > 0.9
    assert flags[400:500].mean() < 0.2
    assert "not used as features (labels or --exclude): anomaly, changepoint" in result.stderr
    assert "Acc1, Acc2, Voltage, Volume Flow RateRMS;" in result.stderr


def test_a_one_column_series_with_timestamps(tmp_path: Path) -> None:
    """Test `timestamp,value`: the time column is found, a spike is flagged, nothing else is."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=450)
    values[430] = 12.0
    path = tmp_path / "series.csv"
    path.write_text(
        "timestamp,value\n"
        + "".join(f"{1_700_000_000 + i},{v:.4f}\n" for i, v in enumerate(values))
    )
    lines = output_rows(run(path))
    assert lines[0] == ["timestamp", "score", "is_anomaly"]
    assert len(lines) == 451
    assert [line[0] for line in lines[1:]] == [str(1_700_000_000 + i) for i in range(450)]
    flagged = [i for i, line in enumerate(lines[1:]) if line[2] == "1"]
    assert 430 in flagged
    assert len(flagged) < 10


def test_without_a_time_column_rows_are_numbered(tmp_path: Path) -> None:
    """Test a bare `value` column: the output's first column is the row number."""
    path = tmp_path / "values.csv"
    path.write_text("value\n" + "".join(f"{i % 7}\n" for i in range(30)))
    lines = output_rows(run(path, "--train-rows", "20"))
    assert lines[0] == ["row", "score", "is_anomaly"]
    assert [line[0] for line in lines[1:]] == [str(i) for i in range(1, 31)]


def test_missing_values_are_forward_filled_or_left_empty(tmp_path: Path) -> None:
    """Test that a gap takes the row above's value (same score) and a leading gap gets an
    empty score and is_anomaly 0, while every row still gets its line."""
    rows = ["t\ta\tb"] + [
        f"{i}\t\t" if i == 0 else f"{i}\t{i % 5}\t{(i * 3) % 7}" for i in range(40)
    ]
    rows[11] = "10\t\t"  # a gap after row 9 (time 9)
    path = tmp_path / "gaps.tsv"
    path.write_text("\n".join(rows) + "\n")
    lines = output_rows(run(path, "--train-rows", "30", "--time-column", "t"))
    assert len(lines) == 41
    assert lines[1][1:] == ["", "0"]
    assert lines[11][1] == lines[10][1] != ""


def test_window_features_keep_input_order_when_times_are_not_sorted(tmp_path: Path) -> None:
    """Test that windows are computed in time order but the output follows the input order."""
    rng = np.random.default_rng(2)
    values = rng.normal(size=60)
    order = rng.permutation(60)
    path = tmp_path / "shuffled.csv"
    path.write_text("time,x\n" + "".join(f"{order[i]},{values[i]:.4f}\n" for i in range(60)))
    sorted_path = tmp_path / "sorted.csv"
    by_time = np.argsort(order)
    sorted_path.write_text("time,x\n" + "".join(f"{order[i]},{values[i]:.4f}\n" for i in by_time))
    shuffled = output_rows(run(path, "--window", "5s", "--train-rows", "60"))
    ordered = output_rows(run(sorted_path, "--window", "5s", "--train-rows", "60"))
    assert [line[0] for line in shuffled[1:]] == [str(t) for t in order]
    by_label = {line[0]: line[1] for line in ordered[1:]}
    # the same rows trained in another order give the same model (scaling and PCA ignore order)
    assert [line[1] for line in shuffled[1:]] == [by_label[str(t)] for t in order]


def test_a_spec_picks_features_window_and_threshold(tmp_path: Path) -> None:
    """Test --model: the spec's features (a `_` name reads a column with spaces), window and
    detector; other numeric columns are not used."""
    path = tmp_path / "skab.csv"
    skab_like(path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n"
        "  - name: pump\n"
        "    features: [Acc1, {metric: Acc2, aggregate: max}, Volume_Flow_RateRMS]\n"
        "    window: 10s\n"
        "    detector: pca\n"
        "    training: {min_samples: 100}\n"
        "    threshold: {quantile: 0.99, factor: 2}\n"
    )
    result = run(path, "--model", spec)
    lines = output_rows(result)
    assert len(lines) == 701
    assert "pca on 400 training rows, features: Acc1, max(Acc2), Volume_Flow_RateRMS;" in (
        result.stderr
    )
    flags = np.array([int(line[2]) for line in lines[1:]])
    assert flags[510:600].mean() > 0.9


def test_output_file(tmp_path: Path) -> None:
    """Test --output: the CSV goes to the file, nothing to stdout."""
    path = tmp_path / "values.csv"
    path.write_text("value\n" + "".join(f"{i % 3}\n" for i in range(10)))
    out = tmp_path / "scores.csv"
    result = run(path, "--train-rows", "10", "--output", out)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert len(out.read_text().splitlines()) == 11


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        pytest.param(None, (), "no such file: ", id="no-file"),
        pytest.param("name,city\nann,paris\nbob,rome\n", ("--train-rows", "2"),
                     "no numeric column to use as a feature", id="no-numeric"),
        pytest.param("value\n1\n2\n3\n", (), "the file has 3 rows, fewer than the 400 to train on",
                     id="too-few-rows"),
        pytest.param("value\nNA\n\n1\n", ("--train-rows", "3"),
                     "only 1 of the first 3 rows have every feature", id="too-few-usable"),
        pytest.param("value\n1\n2\n", ("--train-rows", "2", "--window", "5s"),
                     "a window needs a time column", id="window-without-time"),
        pytest.param("value\n1\n2\n", ("--time-column", "when", "--train-rows", "2"),
                     "no column 'when' for --time-column", id="unknown-time-column"),
        pytest.param("value\n1\n2\n", ("--param", "variance=2", "--train-rows", "2"),
                     "pca: variance must be > 0 and <= 1, got 2", id="bad-param"),
        pytest.param("value\n1\n2\n", ("--detector", "pca", "--model", "x.yaml"),
                     "--detector: the spec decides these with --model", id="model-and-detector"),
        pytest.param("time,v\n2020-01-01,1\nlater,2\n", ("--train-rows", "2", "--window", "1d"),
                     "line 3: cannot read the time 'later'", id="bad-time"),
        pytest.param("value\n1\n2\n", ("--exclude", "nope", "--train-rows", "2"),
                     "--exclude names no column: nope", id="bad-exclude"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line_and_exit_status_2(
    tmp_path: Path, content: str | None, args: tuple[str, ...], message: str
) -> None:
    """Test each kind of bad input: exit status 2, one line on stderr, no traceback."""
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content)
    result = run(path, *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("models:\n  - name: pump\n    features: [a]\n    detector: lstm\n",
         "unknown detector 'lstm'"),
        ("models:\n  - name: pump\n    features: [nope]\n", "matches no numeric column"),
        ("models: [", "invalid spec: "),
        ("models:\n  - name: p\n    kind: rul\n    features: [a]\n"
         "    failure: {metric: a, above: 1}\n    cap: 10\n", "holds no anomaly model"),
    ],
)  # fmt: skip
def test_a_bad_spec_is_one_clear_line(tmp_path: Path, spec: str, message: str) -> None:
    """Test that a spec the loader refuses, or that does not fit the file, is one line, exit 2."""
    path = tmp_path / "in.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(10)))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(spec)
    result = run(path, "--model", spec_path, "--train-rows", "10")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]


def test_help_names_the_label_columns() -> None:
    """Test that --help says which columns are never features."""
    result = CliRunner().invoke(cli, ["detect", "--help"])
    assert result.exit_code == 0
    assert "anomaly, changepoint, label, is_anomaly" in " ".join(result.output.split())
