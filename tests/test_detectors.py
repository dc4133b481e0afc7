"""Conformance suite of the anomaly detectors: every kind in KINDS passes the same checks.

A new kind registered in `daemon.core.detectors.KINDS` is picked up by every parametrised test
here. Also: the composite `AnomalyModel` (scaling, calibration, missing values, artefacts),
the registry's errors, and the tree arrays that score isolation forests without scikit-learn.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.core import detectors
from daemon.core.anomaly import AnomalyModel, Calibration
from daemon.core.detectors import KINDS, build, check_params
from daemon.core.trees import TreeEnsemble
from daemon.errors import ModelArtefactError

ALL_KINDS = sorted(KINDS)
FEATURES = ("a", "b", "c", "d")


def correlated(n: int, seed: int, features: int = 4) -> np.ndarray:
    """Rows of `features` metrics driven by two latent factors plus noise, on varied scales."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    mixing = np.array([[1.0, 0.2], [0.8, -0.5], [0.1, 1.0], [-0.6, 0.7], [0.5, 0.5]])[:features]
    noise = 0.3 * rng.normal(size=(n, features))
    scales = np.array([1.0, 10.0, 0.01, 1000.0, 5.0])[:features]
    offsets = np.array([0.0, 50.0, -3.0, 1e5, 7.0])[:features]
    return (latent @ mixing.T + noise) * scales + offsets


TRAIN = correlated(400, seed=1)
TEST = correlated(200, seed=2)


def fit(kind: str, rows: np.ndarray = TRAIN, seed: int = 0, **kwargs: Any) -> AnomalyModel:
    names = [f"f{i}" for i in range(rows.shape[1])]
    return AnomalyModel.fit(
        rows,
        features=names,
        detector=kind,
        params=kwargs.pop("params", {}),
        quantile=kwargs.pop("quantile", 0.99),
        factor=kwargs.pop("factor", 1.0),
        seed=seed,
    )


_FITTED: dict[str, AnomalyModel] = {}


def fitted(kind: str) -> AnomalyModel:
    """One model per kind on the shared training rows (fitting a forest is the slow part)."""
    if kind not in _FITTED:
        _FITTED[kind] = fit(kind)
    return _FITTED[kind]


def auc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Probability that an anomalous row scores above a normal one (ties count half)."""
    greater = (anomalous[:, None] > normal[None, :]).mean()
    ties = (anomalous[:, None] == normal[None, :]).mean()
    return float(greater + ties / 2)


def round_trip(model: AnomalyModel) -> AnomalyModel:
    """Save meta as JSON and arrays with np.savez (no pickle) to memory, and load them back."""
    meta, arrays = model.to_arrays()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        restored = {name: loaded[name] for name in loaded.files}
    return AnomalyModel.from_arrays(json.loads(json.dumps(meta)), restored)


# --- conformance: every kind -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_shapes(kind: str) -> None:
    """Test that scores are (n,), contributions (n, f) and raw scores (n,) for a batch."""
    scored = fitted(kind).score(TEST)
    assert scored.score.shape == (len(TEST),)
    assert scored.raw.shape == (len(TEST),)
    assert scored.contributions.shape == (len(TEST), TEST.shape[1])
    assert fitted(kind).score(TEST[0]).score.shape == (1,)  # one row on its own


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_same_scores(kind: str) -> None:
    """Test that fitting twice with one seed gives identical scores."""
    first = fit(kind, seed=7).score(TEST)
    second = fit(kind, seed=7).score(TEST)
    np.testing.assert_array_equal(first.score, second.score)
    np.testing.assert_array_equal(first.contributions, second.contributions)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_save_and_load_give_identical_scores(kind: str) -> None:
    """Test the artefact round trip (JSON meta + np.savez arrays): the very same scores."""
    model = fitted(kind)
    restored = round_trip(model)
    before, after = model.score(TEST), restored.score(TEST)
    np.testing.assert_array_equal(before.score, after.score)
    np.testing.assert_array_equal(before.raw, after.raw)
    np.testing.assert_array_equal(before.contributions, after.contributions)
    assert restored.features == model.features
    assert restored.threshold == model.threshold


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_calibration_is_monotonic_in_range_and_half_at_the_threshold(kind: str) -> None:
    """Test that calibration keeps the raw order, stays in [0, 1] and puts 0.5 at the threshold."""
    model = fitted(kind)
    rows = np.vstack([TEST, TEST * 3, TEST[:20] + 1e4])
    scored = model.score(rows)
    assert np.all((scored.score >= 0) & (scored.score <= 1))
    order = np.argsort(scored.raw, kind="stable")
    assert np.all(np.diff(scored.score[order]) >= 0)
    assert model.calibration(np.array([model.threshold]))[0] == 0.5
    training = model.score(TRAIN).score
    assert np.median(training) < 0.5
    assert model.is_anomaly(np.array([0.5, 0.5000001, np.nan])).tolist() == [False, True, False]


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize(
    "case",
    ["constant-column", "single-feature", "all-constant", "huge-values", "duplicated-rows"],
)
def test_finite_input_gives_finite_output(kind: str, case: str) -> None:
    """Test that no finite input yields NaN or inf: constant columns, one feature, extremes."""
    rng = np.random.default_rng(3)
    train: np.ndarray = TRAIN[:150].copy()
    test: np.ndarray = TEST[:50].copy()
    if case == "constant-column":
        train[:, 1] = 5.0
        test[:10, 1] = 6.0
    elif case == "single-feature":
        train, test = train[:, :1], test[:, :1]
    elif case == "all-constant":
        train = np.ones((150, 3))
        test = np.vstack([np.ones((5, 3)), rng.normal(size=(5, 3))])
    elif case == "huge-values":
        test = test * 1e150
    elif case == "duplicated-rows":
        train = np.repeat(train[:10], 15, axis=0)
    model = fit(kind, train)
    scored = model.score(test)
    assert np.all(np.isfinite(scored.score))
    assert np.all(np.isfinite(scored.raw))
    assert np.all(np.isfinite(scored.contributions))
    assert np.all(np.isfinite(model.score(train).score))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_contributions_are_shares(kind: str) -> None:
    """Test that contributions are >= 0 and sum to 1 per row (0 only with a zero raw score)."""
    model = fitted(kind)
    scored = model.score(np.vstack([TEST, TRAIN[:50]]))
    assert np.all(scored.contributions >= 0)
    sums = scored.contributions.sum(axis=1)
    zero = sums == 0
    np.testing.assert_allclose(sums[~zero], 1.0, rtol=1e-9)
    assert np.all(scored.raw[zero] == 0)


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("feature", range(len(FEATURES)))
def test_contributions_point_at_the_shifted_feature(kind: str, feature: int) -> None:
    """Test that shifting feature k far out gives k the largest contribution on most rows."""
    model = fitted(kind)
    rows = TEST[:40].copy()
    spread = TRAIN[:, feature].std()
    rows[:, feature] += 8 * spread
    contributions = model.score(rows).contributions
    top = np.argmax(contributions, axis=1)
    assert np.mean(top == feature) >= 0.9, np.bincount(top, minlength=len(FEATURES))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_detects_an_obvious_anomaly(kind: str) -> None:
    """Test that rows shifted 6 sd in random directions outscore normal rows (AUC > 0.97), and
    that rows shifted 12 sd are flagged while few normal rows are."""
    model = fitted(kind)
    rng = np.random.default_rng(4)
    direction = rng.normal(size=TEST.shape)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    normal_scores = model.score(TEST).score
    moderate = model.score(TEST + 6 * direction * TRAIN.std(axis=0)).score
    assert auc(normal_scores, moderate) > 0.97
    far = model.score(TEST + 12 * direction * TRAIN.std(axis=0)).score
    assert model.is_anomaly(far).mean() > 0.9
    assert model.is_anomaly(normal_scores).mean() < 0.1


# --- gradual drift breaking a correlation ----------------------------------------------------


def drift_case(curve: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two metrics that follow one another over a wide range (and a third, independent one);
    then the second drifts slowly away from the first while both stay in their training ranges.
    With `curve`, the second follows half the first's square (a non-linear relation).
    """
    rng = np.random.default_rng(5)
    n = 1300
    level = rng.uniform(-2, 2, size=n)
    follower = level**2 / 2 if curve else level
    rows = np.column_stack(
        [
            level + 0.05 * rng.normal(size=n),
            follower + 0.05 * rng.normal(size=n),
            rng.normal(size=n),
        ]
    )
    train, test = rows[:1000], rows[1000:].copy()
    drift = np.linspace(0.0, 1.0, len(test))  # 20 noise sd at the end
    test[:, 1] += drift
    inside = np.all(
        (test[:, :2] >= train[:, :2].min(axis=0)) & (test[:, :2] <= train[:, :2].max(axis=0)),
        axis=1,
    )
    return train, test[inside], drift[inside]


@pytest.mark.parametrize("curve", [False, True], ids=["linear", "curve"])
def test_the_drift_case_stays_inside_each_metrics_training_range(curve: bool) -> None:
    """Test the test itself: most drifted rows remain inside both metrics' training ranges."""
    _, test, drift = drift_case(curve)
    assert len(test) > 200
    assert drift.max() > 0.9


def flagged_share(kind: str, curve: bool, low: float, high: float = np.inf) -> float:
    """Share of the rows with a drift in [low, high) that the model flags."""
    train, test, drift = drift_case(curve)
    model = fit(kind, train)
    flagged = model.is_anomaly(model.score(test).score)
    return float(flagged[(drift >= low) & (drift < high)].mean())


def test_mset_scores_in_chunks_as_in_one_go() -> None:
    """Test that chunking a large batch (rows x memory) does not change the scores (beyond the
    last bits a matrix product's blocking moves)."""
    model = fitted("mset")
    rows = np.tile(TEST, (30, 1))  # 6,000 rows x 400 memory rows: several chunks
    batched = model.score(rows).raw
    np.testing.assert_allclose(batched[:200], model.score(TEST).raw, rtol=1e-12)
    np.testing.assert_allclose(batched[-200:], model.score(TEST).raw, rtol=1e-12)


@pytest.mark.parametrize("curve", [False, True], ids=["linear", "curve"])
def test_mset_detects_a_slow_drift_that_breaks_a_correlation(curve: bool) -> None:
    """Test that the gradual-fault detector flags the drift once it is large, and points at the
    two metrics whose relation broke rather than at the independent one."""
    assert flagged_share("mset", curve, 0.6) > 0.85
    assert flagged_share("mset", curve, 0.0, 0.05) < 0.15  # before the drift: few alarms
    train, test, drift = drift_case(curve)
    model = fit("mset", train)
    contributions = model.score(test[drift >= 0.6]).contributions
    assert np.mean(contributions[:, :2].sum(axis=1) > 0.8) > 0.9


def test_pca_catches_a_broken_linear_correlation_through_q() -> None:
    """Test (docs/models.md) that PCA catches the linear case, earlier than mset even: the
    residual Q grows as soon as the two metrics part."""
    assert flagged_share("pca", False, 0.6) > 0.9
    assert flagged_share("pca", False, 0.3, 0.6) >= flagged_share("mset", False, 0.3, 0.6)


def test_pca_misses_a_broken_non_linear_relation_that_mset_catches() -> None:
    """Test (docs/models.md) that a curve is two linear components to PCA (no residual left),
    so a drift off the curve inside the usual ranges goes unseen; mset estimates along it."""
    assert flagged_share("pca", True, 0.6) < 0.5
    assert flagged_share("mset", True, 0.6) > flagged_share("pca", True, 0.6) + 0.4


@pytest.mark.parametrize("kind", ["robust_z", "iforest"])
@pytest.mark.parametrize("curve", [False, True], ids=["linear", "curve"])
def test_range_detectors_miss_the_broken_correlation(kind: str, curve: bool) -> None:
    """Test (docs/models.md) that robust_z and iforest are blind to it: each metric stays in
    its usual range, and neither looks at how they relate."""
    assert flagged_share(kind, curve, 0.6) < 0.2


# --- the composite: missing values, errors, artefacts -----------------------------------------


def test_fit_drops_incomplete_rows_and_records_how_many() -> None:
    """Test that rows with NaN or inf are left out of training and counted."""
    rows = TRAIN.copy()
    rows[:7, 0] = np.nan
    rows[7:10, 2] = np.inf
    model = fit("robust_z", rows)
    assert model.quality["dropped_rows"] == 10
    assert model.quality["rows"] == len(rows) - 10
    np.testing.assert_array_equal(
        model.score(TEST).score, fit("robust_z", TRAIN[10:]).score(TEST).score
    )


def test_score_of_an_incomplete_row_is_nan_and_not_an_anomaly() -> None:
    """Test that a row with a missing value gets a NaN score and NaN contributions."""
    rows = TEST[:3].copy()
    rows[1, 2] = np.nan
    scored = fitted("pca").score(rows)
    assert np.isnan(scored.score[1])
    assert np.all(np.isnan(scored.contributions[1]))
    assert np.isfinite(scored.score[[0, 2]]).all()
    assert not AnomalyModel.is_anomaly(scored.score)[1]


def test_too_few_complete_rows_are_refused() -> None:
    """Test that fitting on fewer than two complete rows is a clear ValueError."""
    rows = np.full((5, 2), np.nan)
    rows[0] = 1.0
    with pytest.raises(ValueError, match="at least 2 complete training rows, got 1"):
        fit("pca", rows)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("lstm", {}, "unknown detector 'lstm' (allowed: iforest, mset, pca, robust_z)"),
        ("pca", {"components": 3}, "unknown parameter 'components' for detector pca"),
        ("pca", {"variance": 1.5}, "pca: variance must be > 0 and <= 1, got 1.5"),
        ("pca", {"variance": "high"}, "pca: variance must be a number, got 'high'"),
        ("iforest", {"trees": 2.5}, "iforest: trees must be an integer, got 2.5"),
        ("iforest", {"trees": True}, "iforest: trees must be an integer, got True"),
        ("mset", {"bandwidth": 0}, "mset: bandwidth must be > 0, got 0"),
        ("robust_z", {"window": 3}, "unknown parameter 'window' for detector robust_z (allowed:"),
    ],
)
def test_bad_kind_or_params_are_refused_clearly(
    kind: str, params: dict[str, Any], message: str
) -> None:
    """Test check_params' messages, and that build raises ValueError with the same text."""
    problems = check_params(kind, params)
    assert any(message in problem for problem in problems), problems
    with pytest.raises(ValueError, match="|".join(map(re.escape, problems))):
        build(kind, params)


def test_good_params_have_no_problems() -> None:
    """Test that every kind accepts its defaults and explicit in-range values."""
    for kind, cls in KINDS.items():
        assert check_params(kind, {}) == []
        assert check_params(kind, {name: p.default for name, p in cls.PARAMS.items()}) == []


def _artefact(kind: str = "pca") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta, arrays = fitted(kind).to_arrays()
    return json.loads(json.dumps(meta)), dict(arrays)


CORRUPTIONS: dict[str, Callable[[dict[str, Any], dict[str, np.ndarray]], None]] = {
    "unknown-format": lambda meta, arrays: meta.update(format=99),
    "unknown-detector": lambda meta, arrays: meta.update(detector="lstm"),
    "missing-array": lambda meta, arrays: arrays.pop("detector__metric"),
    "misshapen-array": lambda meta, arrays: arrays.update(detector__mean=np.zeros(3)),
    "scale-missing": lambda meta, arrays: arrays.pop("scale_center"),
    "scale-width": lambda meta, arrays: arrays.update(scale_spread=np.ones(7)),
    "nan-state": lambda meta, arrays: arrays.update(detector__metric=np.full((4, 4), np.nan)),
    "bad-params": lambda meta, arrays: meta.update(params={"variance": 7}),
    "no-features": lambda meta, arrays: meta.update(features=[]),
    "bad-calibration": lambda meta, arrays: meta.update(calibration={"threshold": 1, "width": 0}),
    "strings": lambda meta, arrays: arrays.update(scale_center=np.array(["a"] * 4)),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_artefacts_are_refused_with_model_artefact_error(corruption: str) -> None:
    """Test that a damaged or incompatible artefact never loads (the caller keeps its model)."""
    meta, arrays = _artefact()
    CORRUPTIONS[corruption](meta, arrays)
    with pytest.raises(ModelArtefactError, match="unusable model artefact"):
        AnomalyModel.from_arrays(meta, arrays)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_state_array_is_required(kind: str) -> None:
    """Test that dropping any single detector array is refused, for every kind."""
    meta, arrays = _artefact(kind)
    for name in [n for n in arrays if n.startswith("detector__")]:
        partial = {k: v for k, v in arrays.items() if k != name}
        with pytest.raises(ModelArtefactError):
            AnomalyModel.from_arrays(meta, partial)


def test_meta_is_json_and_names_what_the_registry_shows() -> None:
    """Test that meta carries kind, features, params, threshold, calibration and quality."""
    meta, _ = fitted("pca").to_arrays()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["detector"] == "pca"
    assert meta["features"] == ["f0", "f1", "f2", "f3"]
    assert meta["params"] == {"variance": 0.95}
    assert meta["threshold"]["quantile"] == 0.99
    assert {"rows", "dropped_rows", "train_anomaly_share"} <= set(meta["quality"])


def test_calibration_degenerate_training_scores() -> None:
    """Test that identical training scores still give a monotonic curve with 0.5 at them."""
    calibration = Calibration.from_training(np.zeros(50), 0.99, 1.0)
    out = calibration(np.array([-1.0, 0.0, 1e-3, 1.0]))
    assert out[1] == 0.5
    assert out[0] < 0.5 < out[2] <= out[3]


def test_top_contributors_names_the_metrics() -> None:
    """Test the helper the tickets use: the largest shares, by feature name."""
    model = fitted("robust_z")
    row = TEST[:1].copy()
    row[0, 2] += 10 * TRAIN[:, 2].std()
    top = model.top_contributors(model.score(row).contributions[0], count=2)
    assert top[0][0] == "f2"
    assert len(top) == 2


# --- isolation forest without scikit-learn at scoring time ------------------------------------


def test_scoring_a_loaded_forest_never_imports_sklearn(tmp_path: Path) -> None:
    """Test that the core and a loaded iforest score with numpy only (sklearn stays unloaded)."""
    meta, arrays = fitted("iforest").to_arrays()
    np.savez(tmp_path / "model.npz", **arrays)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    code = f"""
import json, sys
from pathlib import Path
import numpy as np
from daemon.core.anomaly import AnomalyModel
folder = Path({str(tmp_path)!r})
meta = json.loads((folder / "model.json").read_text())
with np.load(folder / "model.npz", allow_pickle=False) as data:
    model = AnomalyModel.from_arrays(meta, {{n: data[n] for n in data.files}})
print(model.score(np.zeros((3, 4))).score.shape, "sklearn" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "(3,) False"


def test_iforest_scores_equal_scikit_learn() -> None:
    """Test that the array-scored forest gives scikit-learn's own score_samples."""
    from sklearn.ensemble import IsolationForest as SkForest

    rows = (TRAIN - TRAIN.mean(axis=0)) / TRAIN.std(axis=0)
    forest = SkForest(n_estimators=50, max_samples=128, max_features=0.75, random_state=3)
    forest.fit(rows)
    trees = TreeEnsemble.from_sklearn(forest.estimators_, forest.estimators_features_, 4)
    detector = detectors.load(
        "iforest",
        {"trees": 50, "max_samples": 128, "max_features": 0.75},
        {**trees.to_arrays("trees_"), "sample_size": np.asarray(forest.max_samples_)},
    )
    probe = np.vstack([rows[:50], rows[:50] * 4])
    np.testing.assert_allclose(detector.score(probe), -forest.score_samples(probe), rtol=1e-12)


def test_a_tree_fitter_can_be_injected() -> None:
    """Test that build() takes the fitter the core is given instead of scikit-learn's."""
    calls: list[int] = []

    def fake(rows: np.ndarray, **kwargs: Any) -> tuple[TreeEnsemble, int]:
        calls.append(len(rows))
        from daemon.adapters.sklearn_iforest import fit_isolation_trees

        return fit_isolation_trees(rows, **kwargs)

    detector = build("iforest", {"trees": 5}, seed=1, tree_fitter=fake)
    detector.fit(TRAIN[:100])
    assert calls == [100]


# --- tree arrays ---------------------------------------------------------------------------


def test_tree_arrays_match_scikit_learn_regression_and_round_trip() -> None:
    """Test leaves and leaf values against scikit-learn's apply/predict, and save/load."""
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 3))
    y = x[:, 0] * 2 + np.sin(3 * x[:, 1])
    forest = RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(forest.estimators_)
    probe = rng.normal(size=(100, 3)) * 2
    np.testing.assert_array_equal(
        trees.leaves(probe),
        np.column_stack([e.apply(probe.astype(np.float32)) for e in forest.estimators_]),
    )
    np.testing.assert_allclose(trees.leaf_values(probe)[..., 0].mean(axis=1), forest.predict(probe))
    # Saabas: root value + contributions = each tree's prediction
    gains = trees.value[..., 0] - np.take_along_axis(
        trees.value[..., 0], np.maximum(trees.parents, 0), axis=1
    )
    gains[trees.parents < 0] = 0.0
    parts = trees.attribute(probe, gains)
    root = trees.value[:, 0, 0].sum()
    np.testing.assert_allclose(
        root + parts.sum(axis=1), trees.leaf_values(probe)[..., 0].sum(axis=1)
    )
    again = TreeEnsemble.from_arrays(trees.to_arrays("rul_"), "rul_")
    np.testing.assert_array_equal(again.leaves(probe), trees.leaves(probe))
    assert again.max_depth == trees.max_depth <= 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("t_threshold"), "tree arrays missing: t_threshold"),
        (lambda a: a.update(t_feature=a["t_feature"][:, :-1]), "feature must have shape"),
        (lambda a: a["t_children_left"].__setitem__((0, 0), 0), "point forward"),
        (lambda a: a.update(t_n_features=np.asarray(0)), "n_features must be >= 1"),
        (lambda a: a.update(t_threshold=a["t_threshold"].astype(str)), "wrong type"),
    ],
)
def test_corrupt_tree_arrays_are_refused(
    change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    """Test that broken tree arrays raise ValueError naming the problem (a cycle cannot load)."""
    _, arrays = fitted("iforest").to_arrays()
    trees = TreeEnsemble.from_arrays(
        {k.removeprefix("detector__"): v for k, v in arrays.items()}, "trees_"
    ).to_arrays("t_")
    copy = {k: np.array(v) for k, v in trees.items()}
    change(copy)
    with pytest.raises(ValueError, match=message):
        TreeEnsemble.from_arrays(copy, "t_")
