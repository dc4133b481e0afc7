"""Model spec files (`models/*.yaml`): the shipped ones load; broken ones give file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.adapters.model_files import is_model_file, load_models, read_model_file
from daemon.cli import cli
from daemon.core.modelspec import Feature

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
models:
  - name: boiler_health
    kind: anomaly
    match: {model: boiler}
    features: [temperature, {metric: power, aggregate: max}]
    window: 5m
    interval: 30s
    detector: pca
    training: {history: 12h, step: 1m, min_samples: 50}
    retrain: "0 3 * * *"
    threshold: {quantile: 0.99, factor: 1.2}
  - name: pump_wear
    kind: rul
    match: {model: heat_pump}
    features: [vibration, compressor_current]
    window: 10m
    failure: {metric: vibration, above: 4}
    unit: minutes
    cap: 60
"""


def _write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_loads_with_every_field(tmp_path: Path) -> None:
    specs, problems = read_model_file(_write(tmp_path, GOOD))
    assert problems == []
    health, wear = specs
    assert health.features == (Feature("temperature"), Feature("power", "max"))
    assert (health.window_s, health.interval_s, health.retrain) == (300, 30, "0 3 * * *")
    assert (health.threshold.quantile, health.threshold.factor) == (0.99, 1.2)
    assert health.training.min_samples == 50
    assert health.metric == "model:boiler_health"
    assert wear.failure is not None
    assert wear.failure.above == 4
    assert (wear.unit, wear.cap, wear.detector) == ("minutes", 60, "gradient_boosting")
    assert wear.metrics == ["vibration", "compressor_current"]
    assert health.source.endswith("m.yaml:2:11")


def test_the_shipped_specs_load() -> None:
    specs, problems = load_models([ROOT / "models"])
    assert problems == []
    assert {s.kind for s in specs} == {"anomaly", "rul"}


def test_frontline_check_passes_on_the_shipped_specs() -> None:
    result = CliRunner().invoke(cli, ["check", str(ROOT / "models")])
    assert result.exit_code == 0, result.output
    assert "model file(s)" in result.output


BROKEN = [
    pytest.param(
        GOOD.replace("detector: pca", "detector: magic"), "8:15", "unknown detector 'magic'",
        id="unknown-detector",
    ),
    pytest.param(
        GOOD.replace("aggregate: max", "aggregate: p99"), "5:56", "unknown aggregate 'p99'",
        id="unknown-aggregate",
    ),
    pytest.param(
        GOOD.replace('"0 3 * * *"', '"0 3 * *"'), "10:14", "cron expression has 5 fields",
        id="bad-cron",
    ),
    pytest.param(GOOD.replace("window: 5m", "window: soon"), "6:13", "duration", id="bad-duration"),
    pytest.param(
        GOOD.replace("quantile: 0.99", "quantile: 1.5"), "11:27", "less than 1", id="bad-quantile"
    ),
    pytest.param(
        GOOD.replace("    failure: {metric: vibration, above: 4}\n", ""), "12:5",
        "a rul model needs `failure", id="rul-without-failure",
    ),
    pytest.param(
        GOOD.replace("interval: 30s", "interval: 30s\n    colour: red"), "8:5", "unknown key",
        id="unknown-key",
    ),
    pytest.param(
        GOOD.replace("name: pump_wear", "name: boiler_health"), "12:11",
        "duplicate model name", id="duplicate-name",
    ),
    pytest.param(
        GOOD.replace("name: boiler_health", "name: Boiler-Health"), "2:11",
        "lower case letters", id="bad-name",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "position", "message"), BROKEN)
def test_broken_specs_are_reported_where_they_are(
    tmp_path: Path, text: str, position: str, message: str
) -> None:
    path = _write(tmp_path, text)
    specs, problems = load_models([path])
    assert specs == []
    assert any(str(p).startswith(f"{path}:{position}") and message in str(p) for p in problems), (
        problems
    )


def test_check_prints_the_positions_and_fails(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("detector: pca", "detector: magic"))
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:8:15" in result.output


def test_check_tells_a_rule_that_reads_a_missing_model(tmp_path: Path) -> None:
    rules = _write(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      - alert: Odd\n"
        '        expr: anomaly("nope") > 0.5\n      - alert: Wrong\n'
        '        expr: anomaly("pump_wear") > 0.5\n',
        "rules.yaml",
    )
    specs = _write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["check", str(rules), str(specs)])
    assert result.exit_code == 1, result.output
    assert "anomaly('nope') names no model spec" in result.output
    assert "anomaly('pump_wear') reads a rul model" in result.output


def test_model_files_are_told_from_rule_files(tmp_path: Path) -> None:
    assert is_model_file(_write(tmp_path, GOOD))
    assert not is_model_file(_write(tmp_path, "groups: []\n", "r.yaml"))
