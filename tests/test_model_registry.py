"""The model registry: versions, current, rollback, pruning; corrupt artefacts refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from daemon.adapters.model_registry import ModelRegistry
from daemon.core.modeldata import episodes, feature_rows, grid, live_row, series_of
from daemon.core.modelspec import Feature
from daemon.errors import ModelArtefactError

ROOT = Path(__file__).resolve().parent.parent


def _save(registry: ModelRegistry, value: float, keep: int = 5) -> int:
    return registry.save("m", {"rows": int(value)}, {"w": np.full(3, value)}, keep)


def test_versions_count_up_and_the_newest_is_current(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.current("m") is None
    assert [_save(registry, v) for v in (1, 2, 3)] == [1, 2, 3]
    meta, arrays = registry.load("m")
    assert meta["version"] == 3
    assert meta["rows"] == 3
    assert arrays["w"].tolist() == [3.0, 3.0, 3.0]
    assert [v.current for v in registry.versions("m")] == [False, False, True]
    assert registry.names() == ["m"]


def test_rollback_goes_to_the_previous_version_or_a_chosen_one(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    for value in (1, 2, 3):
        _save(registry, value)
    assert registry.rollback("m") == 2
    assert registry.load("m")[0]["version"] == 2
    assert registry.rollback("m", 3) == 3
    with pytest.raises(ModelArtefactError, match="no version 9"):
        registry.rollback("m", 9)


def test_rollback_without_an_older_version_says_so(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    _save(registry, 1)
    with pytest.raises(ModelArtefactError, match="no version older than v1"):
        registry.rollback("m")


def test_old_versions_are_pruned_never_the_current_one(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    for value in range(1, 6):
        _save(registry, value, keep=2)
    assert registry.numbers("m") == [4, 5]
    registry.set_current("m", 4)
    _save(registry, 6, keep=1)  # the new one becomes current; 4 was current before: pruned now
    assert registry.numbers("m") == [6]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda d: (d / "model.npz").write_bytes(b"garbage"), "corrupt", id="npz"),
        pytest.param(lambda d: (d / "model.npz").unlink(), "cannot read", id="npz-missing"),
        pytest.param(lambda d: (d / "meta.json").write_text("{"), "unreadable", id="meta"),
        pytest.param(
            lambda d: (d / "meta.json").write_text(json.dumps({"format": 99})),
            "artefact format 99",
            id="format",
        ),
    ],
)
def test_a_damaged_version_is_refused_with_the_reason(
    tmp_path: Path, damage: object, message: str
) -> None:
    registry = ModelRegistry(tmp_path)
    _save(registry, 1)
    _save(registry, 2)
    damage(tmp_path / "m" / "v0002")  # type: ignore[operator]
    with pytest.raises(ModelArtefactError, match=message):
        registry.load("m")
    assert registry.load("m", 1)[0]["version"] == 1  # the older one is intact
    with pytest.raises(ModelArtefactError):
        registry.rollback("m", 2)  # a damaged version is never made current


def test_a_crash_mid_save_leaves_no_half_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    _save(registry, 1)
    (tmp_path / "m" / ".v0002-partial").mkdir()  # what a crash before the rename leaves
    assert registry.numbers("m") == [1]
    assert _save(registry, 2) == 2


def test_feature_rows_equal_the_live_row_at_the_same_instant() -> None:
    times = np.arange(0, 600_000, 10_000, dtype=np.int64)
    series = {"a": (times, np.sin(times / 1e5)), "b": (times, times / 1e4)}
    features = [Feature("a"), Feature("b", "max"), Feature("a", "std")]
    at = grid(120_000, 590_000, 60_000)
    rows = feature_rows(series, features, 120_000, at)
    for row, t in zip(rows, at.tolist(), strict=True):
        windows = [[v for ts, v in zip(*series[f.metric], strict=True) if t - 120_000 < ts <= t]
                   for f in features]  # fmt: skip
        assert np.allclose(row, live_row(windows, features))


def test_an_empty_window_is_nan_not_zero() -> None:
    times, values = series_of([(0, 1.0)])
    rows = feature_rows({"a": (times, values)}, [Feature("a")], 1000, np.array([500, 5000]))
    assert rows[0, 0] == 1.0
    assert np.isnan(rows[1, 0])


def test_episodes_split_a_history_into_lives_at_each_failure() -> None:
    failed = np.array([0, 0, 0, 1, 1, 0, 0, 1, 0, 0], dtype=bool)
    assert episodes(failed) == [(0, 4, True), (5, 8, True), (8, 10, False)]


def _trained_versions(data_dir: Path, count: int) -> None:
    """`count` real versions of the shipped boiler_health spec, fitted on synthetic rows."""
    from daemon.adapters.model_files import load_models
    from daemon.learning.trainer import Dataset, fit

    spec = next(s for s in load_models([ROOT / "models"])[0] if s.name == "boiler_health")
    rng = np.random.default_rng(3)
    base = rng.normal(size=(400, 1))  # every feature follows one signal, with its own noise
    width = len(spec.features)
    rows = base * np.arange(1, width + 1) + rng.normal(0, 0.1, (400, width)) + 50
    registry = ModelRegistry(data_dir / "models")
    for _ in range(count):
        meta, arrays = fit(spec, Dataset(devices=4, rows=rows), 1_700_000_000_000)
        registry.save(spec.name, meta, arrays)


def test_models_list_show_and_rollback_from_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from daemon.cli import cli

    _trained_versions(tmp_path, 2)
    env = {"FRONTLINE_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    listed = runner.invoke(cli, ["models", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = {m["name"]: m for m in json.loads(listed.output)["models"]}
    assert rows["boiler_health"]["current"] == 2
    assert rows["boiler_health"]["rows"] == 400
    assert rows["heat_pump_wear"]["current"] is None  # a spec without a version: untrained
    shown = runner.invoke(cli, ["models", "show", "boiler_health"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "* v2: trained" in shown.output
    rolled = runner.invoke(cli, ["models", "rollback", "boiler_health"], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert "v1 is current (was v2)" in rolled.output
    assert ModelRegistry(tmp_path / "models").current("boiler_health") == 1
    refused = runner.invoke(cli, ["models", "rollback", "boiler_health"], env=env)
    assert refused.exit_code == 1
    assert "no version older than v1" in refused.output


def test_train_says_why_a_model_cannot_be_trained_yet(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from daemon.cli import cli

    result = CliRunner().invoke(
        cli, ["train", "heat_pump_wear"], env={"FRONTLINE_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert "not trained" in result.output
    assert "run(s) to failure" in result.output
