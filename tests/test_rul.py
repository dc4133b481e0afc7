"""Failure prediction (daemon.core.rul + daemon.adapters.sklearn_rul) on synthetic wear-out data.

Each synthetic unit lives a random number of cycles; one sensor rises and another falls as
`exp(-(time left) / tau)`, so the level and the slope tell how close failure is, and a third
sensor is noise only. Units differ in length, offset and noise.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from daemon.adapters.sklearn_rul import fit_rul, fit_rul_trees
from daemon.core.rul import (
    FORMAT_VERSION,
    History,
    RulModel,
    feature_names,
    features_at_end,
    resolve_params,
    rolling_features,
    run_to_failure,
    training_rows,
)
from daemon.errors import ModelArtefactError

CAP = 60.0
WINDOW = 10.0
METRICS = ["wear_up", "wear_down", "noise"]
FAST = {"trees": 40, "max_depth": 3, "cv_folds": 0}


def unit(rng: np.random.Generator, life: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One unit's run to failure: (cycles 1..life, values (life, 3)); fails at its last cycle."""
    life = int(rng.integers(80, 200)) if life is None else life
    t = np.arange(1.0, life + 1.0)
    left = life - t
    wear = np.exp(-left / 25.0)
    noise = rng.uniform(0.05, 0.15)
    values = np.column_stack(
        [
            rng.normal(10.0, 0.2) + 5.0 * wear + rng.normal(0, noise, life),
            rng.normal(3.0, 0.1) - 2.0 * wear + rng.normal(0, noise, life),
            rng.normal(0.0, 1.0, life),
        ]
    )
    return t, values


def fleet(seed: int, count: int) -> list[History]:
    rng = np.random.default_rng(seed)
    return [History(*unit(rng), failed=True) for _ in range(count)]


@pytest.fixture(scope="module")
def model() -> RulModel:
    return fit_rul(
        fleet(1, 30), features=METRICS, window=WINDOW, cap=CAP, unit="cycles", params=FAST, seed=3
    )


# -- histories ---------------------------------------------------------------------------------


def test_run_to_failure_cuts_at_first_crossing() -> None:
    t = np.arange(10.0)
    v = np.column_stack([np.arange(10.0), [0, 1, 2, 9, 1, 9, 9, 0, 0, 0]])
    history = run_to_failure(t, v, 1, above=5)
    assert history is not None
    assert history.failed
    assert history.times.tolist() == [0, 1, 2, 3]  # up to and including the first failed row
    assert history.end == 3.0
    np.testing.assert_array_equal(history.values, v[:4])


def test_run_to_failure_below_both_and_separate_series() -> None:
    t = np.arange(6.0)
    v = np.array([[5.0], [4.0], [np.nan], [2.0], [0.5], [9.0]])
    below = run_to_failure(t, v, 0, below=1.0)
    assert below is not None
    assert below.end == 4.0  # NaN never fails
    band = run_to_failure(t, v, 0, above=4.5, below=-1.0)
    assert band is not None
    assert band.end == 0.0
    status = np.array([0, 0, 0, 0, 0, 3.0])
    separate = run_to_failure(t, v, status, above=2)
    assert separate is not None
    assert separate.end == 5.0
    assert separate.values.shape == (6, 1)


def test_run_to_failure_never_failing_is_none() -> None:
    t = np.arange(5.0)
    assert run_to_failure(t, np.zeros((5, 2)), 0, above=1.0) is None
    with pytest.raises(ValueError, match="above"):
        run_to_failure(t, np.zeros((5, 2)), 0)
    with pytest.raises(ValueError, match="failure column"):
        run_to_failure(t, np.zeros((5, 2)), 2, above=1.0)


def test_history_validates() -> None:
    with pytest.raises(ValueError, match="increasing"):
        History(np.array([0.0, 2.0, 1.0]), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="do not match"):
        History(np.arange(3.0), np.zeros((4, 1)))


def test_targets_failed_and_censored() -> None:
    t = np.arange(0.0, 100.0)
    failed, known = History(t, np.zeros((100, 1))).targets(cap=30.0)
    assert known.all()
    assert failed[-1] == 0.0
    assert failed[-10] == 9.0
    assert failed[0] == 30.0
    censored, known = History(t, np.zeros((100, 1)), failed=False).targets(cap=30.0)
    # the unit still worked at t=99, so at t <= 69 at least 30 were left: exactly the cap
    assert known.sum() == 70
    assert np.all(censored[known] == 30.0)
    assert np.all(np.isnan(censored[~known]))


# -- features ----------------------------------------------------------------------------------


def test_rolling_features_known_values() -> None:
    t = np.array([0.0, 1.0, 2.0, 4.0, 5.0])
    v = np.column_stack([2.0 * t + 1.0, [1.0, np.nan, 3.0, 3.0, 3.0]])
    x = rolling_features(t, v, window=3.0)
    assert feature_names(["a", "b"]) == ["mean(a)", "mean(b)", "slope(a)", "slope(b)"]
    # row 3 (t=4): window 1 < t <= 4 holds t=2, 4
    assert x[3, 0] == pytest.approx(7.0)
    assert x[3, 2] == pytest.approx(2.0)
    assert x[3, 3] == pytest.approx(0.0)
    # row 0: one point, slope 0; row 1: column b has only t=0 in (-2, 1]
    assert x[0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert x[1, 1] == 1.0
    assert x[2, 3] == pytest.approx(1.0)  # b: (0, 1) and (2, 3) -> slope 1, NaN ignored
    assert x[4, 2] == pytest.approx(2.0)  # t=4, 5 in (2, 5]


def test_rolling_features_absent_metric_is_nan() -> None:
    t = np.arange(5.0)
    v = np.column_stack([np.arange(5.0), [np.nan, np.nan, np.nan, 1.0, 2.0]])
    x = rolling_features(t, v, window=2.0)
    assert np.isnan(x[:3, [1, 3]]).all()
    assert np.isfinite(x[3:]).all()


def test_features_at_end_equals_last_row_of_rolling() -> None:
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.uniform(0.2, 3.0, 400)) + 1e6  # irregular, far from zero
    v = rng.normal(50.0, 5.0, (400, 3))
    v[rng.random((400, 3)) < 0.1] = np.nan
    full = rolling_features(t, v, window=12.5)
    for end in (1, 2, 7, 60, 399, 400):
        recent = t[:end] > t[end - 1] - 40.0  # the daemon holds a little more than the window
        live = features_at_end(t[:end][recent], v[:end][recent], 12.5)
        np.testing.assert_allclose(live, full[end - 1], rtol=1e-12, atol=1e-12)


# -- fitting and predicting --------------------------------------------------------------------


def test_predictions_fall_as_failure_nears(model: RulModel) -> None:
    held_out = fleet(99, 10)
    for history in held_out:
        x = rolling_features(history.times, history.values, WINDOW)
        predicted = model.predict(x)
        left = history.end - history.times
        near, mid, far = (
            predicted[left <= 5],
            predicted[(left > 20) & (left <= 30)],
            predicted[left > 120],
        )
        assert near.mean() < mid.mean() - 10
        if far.size:
            assert mid.mean() < far.mean() - 10
        assert np.all((predicted >= 0) & (predicted <= CAP))


def test_rmse_well_below_naive_baseline_on_held_out_units(model: RulModel) -> None:
    _, train_targets, _ = training_rows(fleet(1, 30), WINDOW, CAP)
    rows, targets, _ = training_rows(fleet(99, 10), WINDOW, CAP)
    naive = np.sqrt(np.mean((train_targets.mean() - targets) ** 2))
    rmse = np.sqrt(np.mean((model.predict(rows) - targets) ** 2))
    assert rmse < 0.4 * naive
    # predicting at the end of each held-out unit cut at random, as the daemon does live
    rng = np.random.default_rng(5)
    errors = []
    for history in fleet(98, 20):
        cut = int(rng.integers(30, history.times.size))
        live = model.predict_at_end(history.times[:cut], history.values[:cut])
        errors.append(live - min(history.end - history.times[cut - 1], CAP))
    assert np.sqrt(np.mean(np.square(errors))) < 0.4 * naive


def test_fit_is_deterministic_with_a_seed() -> None:
    histories = fleet(2, 12)
    fits = [
        fit_rul(
            histories,
            features=METRICS,
            window=WINDOW,
            cap=CAP,
            unit="cycles",
            params=FAST,
            seed=seed,
        )
        for seed in (4, 4, 5)
    ]
    arrays = [f.to_arrays()[1] for f in fits]
    for name in arrays[0]:
        np.testing.assert_array_equal(arrays[0][name], arrays[1][name])
    assert any(not np.array_equal(arrays[0][n], arrays[2][n]) for n in arrays[0])


@pytest.mark.parametrize("estimator", ["gradient_boosting", "random_forest", "extra_trees"])
def test_exported_trees_predict_as_scikit_learn(estimator: str) -> None:
    from sklearn.ensemble import (
        ExtraTreesRegressor,
        GradientBoostingRegressor,
        RandomForestRegressor,
    )

    rows, targets, _ = training_rows(fleet(3, 8), WINDOW, CAP)
    params, _ = resolve_params({"estimator": estimator, "trees": 15, "max_depth": 5})
    del params["cv_folds"]
    exported = fit_rul_trees(rows, targets, params=params, seed=11)
    if estimator == "gradient_boosting":
        reference: Any = GradientBoostingRegressor(
            n_estimators=15, max_depth=5, subsample=0.5, min_samples_leaf=5, random_state=11
        )
    else:
        kind = RandomForestRegressor if estimator == "random_forest" else ExtraTreesRegressor
        reference = kind(n_estimators=15, max_depth=5, min_samples_leaf=5, random_state=11)
    reference.fit(rows, targets)
    np.testing.assert_allclose(exported.predict(rows), reference.predict(rows), atol=1e-9)


def test_quality_figures_and_cross_validation() -> None:
    histories = fleet(4, 10)
    fitted = fit_rul(
        histories,
        features=METRICS,
        window=WINDOW,
        cap=CAP,
        unit="cycles",
        params={**FAST, "cv_folds": 3},
        seed=0,
    )
    q = fitted.quality
    assert q["histories"] == 10
    assert q["rows"] == sum(h.times.size for h in histories)
    assert 0 < q["train_rmse"] < q["cv_rmse"] < q["baseline_rmse"]


def test_censored_histories_add_only_rows_with_known_targets() -> None:
    rng = np.random.default_rng(6)
    failed = fleet(6, 8)
    t, v = unit(rng, life=150)
    censored = History(t[:100], v[:100], failed=False)  # still working at cycle 100
    fitted = fit_rul(
        [*failed, censored],
        features=METRICS,
        window=WINDOW,
        cap=CAP,
        unit="cycles",
        params=FAST,
        seed=0,
    )
    assert fitted.quality["rows"] == sum(h.times.size for h in failed) + (100 - CAP)
    assert fitted.quality["failed_histories"] == 8
    with pytest.raises(ValueError, match="no history ends in a failure"):
        fit_rul([censored], features=METRICS, window=WINDOW, cap=CAP, unit="cycles", params=FAST)


def test_fit_refuses_bad_inputs() -> None:
    histories = fleet(8, 3)
    with pytest.raises(ValueError, match="unknown parameter 'depth'"):
        fit_rul(
            histories, features=METRICS, window=WINDOW, cap=CAP, unit="cycles", params={"depth": 3}
        )
    with pytest.raises(ValueError, match="estimator must be one of"):
        fit_rul(
            histories,
            features=METRICS,
            window=WINDOW,
            cap=CAP,
            unit="cycles",
            params={"estimator": "svm"},
        )
    with pytest.raises(ValueError, match="expected 2"):
        fit_rul(histories, features=METRICS[:2], window=WINDOW, cap=CAP, unit="cycles")
    with pytest.raises(ValueError, match="unit must be one of"):
        fit_rul(histories, features=METRICS, window=WINDOW, cap=CAP, unit="weeks")


def test_predict_shapes_and_unknown_rows(model: RulModel) -> None:
    rows = rolling_features(*unit(np.random.default_rng(9), life=90), WINDOW)
    assert model.predict(rows).shape == (90,)
    assert model.predict(rows[-1]).shape == (1,)
    rows[5, 2] = np.nan
    predicted = model.predict(rows)
    assert np.isnan(predicted[5])
    assert np.isfinite(np.delete(predicted, 5)).all()
    with pytest.raises(ValueError, match="feature rows must be"):
        model.predict(rows[:, :4])


# -- artefacts ---------------------------------------------------------------------------------


def saved(model: RulModel) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Round trip through JSON and np.savez / np.load(allow_pickle=False), as the registry does."""
    meta, arrays = model.to_arrays()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        loaded = {name: archive[name] for name in archive.files}
    return json.loads(json.dumps(meta)), loaded


def test_save_load_round_trip_predicts_identically(model: RulModel) -> None:
    meta, arrays = saved(model)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["unit"] == "cycles"
    assert meta["cap"] == CAP
    assert meta["features"] == METRICS
    assert set(meta["quality"]) >= {"train_rmse", "cv_rmse", "rows"}
    again = RulModel.from_arrays(meta, arrays)
    rows = np.vstack([rolling_features(h.times, h.values, WINDOW) for h in fleet(12, 5)])
    np.testing.assert_array_equal(again.predict(rows), model.predict(rows))
    assert again.quality["train_rmse"] == model.quality["train_rmse"]


def _missing(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    del arrays["trees_threshold"]


def _misshapen(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["trees_feature"] = arrays["trees_feature"][:, :-1]


def _version(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    meta["format_version"] = FORMAT_VERSION + 1


def _foreign(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    meta["format"] = "frontline-anomaly"


def _features(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    meta["features"] = ["wear_up", "wear_down"]


def _no_unit(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    del meta["cap"]


def _nan_leaf(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["trees_value"] = arrays["trees_value"].copy()
    arrays["trees_value"][0, 0, 0] = np.nan


def _loop(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["trees_children_left"] = arrays["trees_children_left"].copy()
    arrays["trees_children_left"][0, 0] = 0


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_missing, "trees_threshold"),
        (_misshapen, "feature must have shape"),
        (_version, "format version"),
        (_foreign, "not a rul model"),
        (_features, "features"),
        (_no_unit, "metadata is incomplete"),
        (_nan_leaf, "leaf values"),
        (_loop, "point forward"),
    ],
    ids=lambda p: p.__name__.strip("_") if callable(p) else "",
)
def test_corrupt_artefact_is_refused(model: RulModel, corrupt: Any, message: str) -> None:
    meta, arrays = saved(model)
    corrupt(meta, arrays)
    with pytest.raises(ModelArtefactError, match=message):
        RulModel.from_arrays(meta, arrays)
