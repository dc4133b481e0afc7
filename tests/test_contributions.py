"""Contributions name the metric that departed (docs/models.md, Detectors).

The case that motivated them: three correlated metrics tied by one linear relation, plus an
independent fourth, and one of the three leaves the relation while every metric stays in its
usual range. `boiler_rows` is the boiler of models/boilers.yaml: flow temperature ~ N(65, 3),
burner power 0 half of the time and ~ N(60, 20) otherwise, return = flow - 3 - 0.15 x power
(+- 0.3), pressure independent; optionally as means over `window` samples (2-minute means of
30-s samples mix burner-on and burner-off periods). `linear_rows` is the plain Gaussian version.

What each detector can say, and why (each line is asserted below):

- `pca` ranks the features by reconstruction (RBC) and shares by the posterior of which one
  departed. It names the departed metric once the departure is larger than what the relation's
  other metrics could have moved by within their own spread; plain RBC shares gave each of the
  three a third, however large the departure. A 4 °C return departure on this boiler is *not*
  attributable from one row: flow 4 °C lower, or power 27 points higher, explains the row about
  as well (temperature's spread is 3 °C), so the shares stay spread over the three.
- `mset` puts the residual on the metric the others imply (the return) and names it (at 4 °C
  too, on the few rows it flags), but when a metric that drives the relation departs (flow
  temperature, power), its estimate moves with the departed metric and the residual splits
  between it and the return.
- `robust_z` and `iforest` model no relation: they do not flag these rows (tests/
  test_detectors.py), and their shares only say which metric sits furthest out in its own range,
  which at the 4 °C departure is not the return.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from daemon.core.anomaly import AnomalyModel
from daemon.core.detectors import pca
from tests.test_detectors import correlated

Rows = Callable[[], np.ndarray]
TEMPERATURE, RETURN, POWER, PRESSURE = range(4)


def boiler_rows(
    n: int, seed: int, window: int = 1, departs: int | None = None, by: float = 0.0
) -> np.ndarray:
    """`n` rows of (flow temperature, return, power, pressure), each the mean of `window`
    samples; `departs` (a column) moved by `by` in every sample."""
    rng = np.random.default_rng(seed)
    m = n * window
    temperature = rng.normal(65.0, 3.0, m)
    power = np.where(rng.random(m) < 0.5, rng.normal(60.0, 20.0, m), 0.0)
    returning = temperature - 3.0 - 0.15 * power + rng.normal(0.0, 0.3, m)
    rows = np.column_stack([temperature, returning, power, rng.normal(1.55, 0.05, m)])
    if departs is not None:
        rows[:, departs] += by
    return rows.reshape(n, window, 4).mean(axis=1)


def linear_rows(n: int, seed: int, departs: int | None = None, by: float = 0.0) -> np.ndarray:
    """`n` rows of (10 + 2a, 5 + b, c = a - b/2, d): a, b and d independent standard normals."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    c = a - 0.5 * b + rng.normal(0.0, 0.05, n)
    rows = np.column_stack([10 + 2 * a, 5 + b, c, rng.normal(size=n)])
    if departs is not None:
        rows[:, departs] += by
    return rows


# name: (training rows, rows where one metric departed, the departed column)
CASES: dict[str, tuple[Rows, Rows, int]] = {
    "boiler-return+8": (
        lambda: boiler_rows(2000, 1, 4),
        lambda: boiler_rows(300, 2, 4, RETURN, 8.0),
        RETURN,
    ),
    "boiler-temperature-8": (
        lambda: boiler_rows(2000, 1, 4),
        lambda: boiler_rows(300, 2, 4, TEMPERATURE, -8.0),
        TEMPERATURE,
    ),
    "boiler-power+60": (
        lambda: boiler_rows(2000, 1, 4),
        lambda: boiler_rows(300, 2, 4, POWER, 60.0),
        POWER,
    ),
    "boiler-samples-return+16": (
        lambda: boiler_rows(2000, 1),
        lambda: boiler_rows(300, 2, 1, RETURN, 16.0),
        RETURN,
    ),
    "linear-c+3": (lambda: linear_rows(1000, 1), lambda: linear_rows(300, 2, 2, 3.0), 2),
    "linear-a+4": (lambda: linear_rows(1000, 1), lambda: linear_rows(300, 2, 0, 4.0), 0),
    "linear-b+4": (lambda: linear_rows(1000, 1), lambda: linear_rows(300, 2, 1, 4.0), 1),
}
# The 4 °C departure of the live demo, on 30-s samples and on 2-minute means.
DEMO_CASES: dict[str, tuple[Rows, Rows, int]] = {
    "samples": (
        lambda: boiler_rows(2000, 1),
        lambda: boiler_rows(300, 2, 1, RETURN, 4.0),
        RETURN,
    ),
    "2-minute-means": (
        lambda: boiler_rows(2000, 1, 4),
        lambda: boiler_rows(300, 2, 4, RETURN, 4.0),
        RETURN,
    ),
}

_MODELS: dict[tuple[str, str], AnomalyModel] = {}


def model(kind: str, train: Rows, key: str) -> AnomalyModel:
    """The model of `kind` on `train` (fitted once per training set and kind)."""
    if (kind, key) not in _MODELS:
        _MODELS[(kind, key)] = AnomalyModel.fit(
            train(),
            features=["f0", "f1", "f2", "f3"],
            detector=kind,
            params={},
            quantile=0.995,
            factor=1.5,
            seed=0,
        )
    return _MODELS[(kind, key)]


def training_key(name: str) -> str:
    return name.split("-", maxsplit=1)[0] + ("-samples" if "samples" in name else "")


def scored(kind: str, case: tuple[Rows, Rows, int], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated scores, contributions) of the departed rows."""
    train, rows, _ = case
    result = model(kind, train, key).score(rows())
    return result.score, result.contributions


def centred(fitted: AnomalyModel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows as the pca detector sees them, scaled and centred; its index matrix M)."""
    detector = fitted.detector
    assert isinstance(detector, pca.PCA)
    assert detector.mean is not None
    assert detector.metric is not None
    return (rows - fitted.center) / fitted.spread - detector.mean, detector.metric


def plain_rbc_shares(fitted: AnomalyModel, rows: np.ndarray) -> np.ndarray:
    """What pca's contributions were: RBC_j = (M x)_j² / M_jj as shares of their sum."""
    x, metric = centred(fitted, rows)
    parts = (x @ metric) ** 2 / np.diag(metric)
    out: np.ndarray = parts / parts.sum(axis=1, keepdims=True)
    return out


# --- pca ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_pca_names_the_departed_metric_of_a_broken_relation(name: str) -> None:
    """Test that pca flags the rows and gives the departed metric the largest share on >= 80 %
    of them and most of the share on average, where plain RBC shares gave it a third."""
    case = CASES[name]
    departed = case[2]
    score, contributions = scored("pca", case, training_key(name))
    assert np.mean(score > 0.5) > 0.95
    assert np.mean(contributions.argmax(axis=1) == departed) >= 0.8
    assert contributions[:, departed].mean() >= 0.55
    before = plain_rbc_shares(model("pca", case[0], training_key(name)), case[1]())
    np.testing.assert_allclose(before[:, departed].mean(), 1 / 3, atol=0.01)
    # the ranking is RBC's (a pair of features can tip a near tie): the shares are what changed
    assert np.mean(before.argmax(axis=1) == contributions.argmax(axis=1)) >= 0.98


@pytest.mark.parametrize("name", sorted(DEMO_CASES))
def test_pca_spreads_a_departure_one_row_cannot_attribute(name: str) -> None:
    """Test the live demo's 4 °C return departure: flagged on every row, but flow 4 °C lower or
    power 27 points higher explains a row about as well (both within their usual spread), so no
    linear model can tell from one row which of the three moved. The shares stay spread over the
    three (none above 0.6 on average) and leave the independent pressure out."""
    case = DEMO_CASES[name]
    score, contributions = scored("pca", case, training_key(f"boiler-{name}"))
    assert np.mean(score > 0.5) > 0.95
    mean = contributions.mean(axis=0)
    assert np.all(mean[[TEMPERATURE, RETURN, POWER]] > 0.15), mean
    assert np.all(mean[[TEMPERATURE, RETURN, POWER]] < 0.6), mean
    assert mean[PRESSURE] < 0.03
    assert mean[RETURN] == mean.max()  # a slight lead, not a verdict


def test_pca_gives_a_single_departed_metric_nearly_all_the_share() -> None:
    """Test that one metric of tests/test_detectors.py's correlated rows moved 4 sd on its own
    gets >= 90 % of the share on average (plain RBC shares gave it 40 to 70 %)."""
    train = correlated(400, seed=1)
    fitted = model("pca", lambda: train, "correlated")
    for column in range(4):
        rows = correlated(100, seed=9)
        rows[:, column] += 4 * train[:, column].std()
        contributions = fitted.score(rows).contributions
        assert contributions[:, column].mean() >= 0.9, (column, contributions.mean(axis=0))
        assert np.mean(contributions.argmax(axis=1) == column) >= 0.95
        assert plain_rbc_shares(fitted, rows)[:, column].mean() < 0.75


def test_pca_shares_two_metrics_that_departed_together() -> None:
    """Test that two metrics moved 6 sd at once both get a large share (a single-departure
    posterior would give one of them nearly all)."""
    fitted = model("pca", lambda: linear_rows(1000, 1), "linear")
    train = linear_rows(1000, 1)
    for first, second in [(0, 3), (1, 2), (0, 1)]:
        rows = linear_rows(100, 3)
        rows[:, first] += 6 * train[:, first].std()
        rows[:, second] += 6 * train[:, second].std()
        contributions = fitted.score(rows).contributions
        assert np.minimum(contributions[:, first], contributions[:, second]).mean() > 0.3
        assert contributions[:, [first, second]].sum(axis=1).mean() > 0.9


@pytest.mark.parametrize("rows", [lambda: linear_rows(1000, 1), lambda: boiler_rows(2000, 1, 4)])
def test_the_price_of_a_second_departed_metric_is_above_noise(rows: Rows) -> None:
    """Test pca.PAIR_PRICE's comment: on training rows the index averages 2, and fitting a
    second feature to noise lowers it by less than 4 in 199 rows of 200 (never by half the
    price)."""
    fitted = model("pca", rows, f"price-{rows().shape[0]}")
    index, single, pair = pca.reconstruction_gains(*centred(fitted, rows()))
    assert index.mean() == pytest.approx(2.0, rel=0.01)
    extra = pair.max(axis=1) - single.max(axis=1)
    assert np.quantile(extra, 0.995) < 4.0
    assert extra.max() < pca.PAIR_PRICE / 2


def test_reconstruction_gains_are_exact_minimisations() -> None:
    """Test single and pair gains against a direct least-squares reconstruction."""
    fitted = model("pca", lambda: linear_rows(1000, 1), "linear")
    x, metric = centred(fitted, linear_rows(5, 4, 2, 2.0))
    index, single, pair = pca.reconstruction_gains(x, metric)
    root = np.linalg.cholesky(metric).T  # φ = |root x|²

    def remaining(row: np.ndarray, columns: list[int]) -> float:
        basis = root[:, columns]
        move, *_ = np.linalg.lstsq(basis, root @ row, rcond=None)
        return float(np.sum((root @ row - basis @ move) ** 2))

    first, second = np.triu_indices(4, 1)
    for i, row in enumerate(x):
        assert index[i] == pytest.approx(row @ metric @ row)
        for j in range(4):
            assert single[i, j] == pytest.approx(index[i] - remaining(row, [j]), abs=1e-9)
        for p, (a, b) in enumerate(zip(first, second, strict=True)):
            assert pair[i, p] == pytest.approx(index[i] - remaining(row, [a, b]), abs=1e-9)


def test_departure_shares_in_chunks_equal_one_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that scoring a batch a few rows at a time gives the same shares."""
    fitted = model("pca", lambda: boiler_rows(2000, 1, 4), "boiler")
    rows = boiler_rows(50, 5, 4, RETURN, 8.0)
    whole = fitted.score(rows).contributions
    monkeypatch.setattr(pca, "_CHUNK_CELLS", 7)  # 6 pairs: one row at a time
    np.testing.assert_allclose(fitted.score(rows).contributions, whole, rtol=0, atol=1e-9)


# --- mset --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["boiler-return+8", "linear-c+3"])
def test_mset_names_the_metric_the_others_imply(name: str) -> None:
    """Test that when the metric the relation's others imply departs (the return), mset flags
    the rows and its residual puts the largest share on it on >= 90 % of them."""
    case = CASES[name]
    score, contributions = scored("mset", case, training_key(name))
    assert np.mean(score > 0.5) > 0.95
    assert np.mean(contributions.argmax(axis=1) == case[2]) >= 0.9
    assert contributions[:, case[2]].mean() >= 0.6


@pytest.mark.parametrize("name", ["boiler-temperature-8", "boiler-power+60", "linear-a+4"])
def test_mset_splits_a_departed_driver_with_the_metric_it_drives(name: str) -> None:
    """Test mset's limit: when a metric that drives the relation departs, the estimate follows
    it part of the way and the residual splits between it and the driven metric (column 1 or 2:
    the return, or c), so the departed metric is top on barely more than half of the rows, where
    pca names it on >= 80 %."""
    case = CASES[name]
    departed = case[2]
    driven = RETURN if name.startswith("boiler") else 2
    score, contributions = scored("mset", case, training_key(name))
    assert np.mean(score > 0.5) > 0.95
    assert np.mean(contributions.argmax(axis=1) == departed) < 0.7
    assert contributions[:, driven].mean() > 0.3
    assert contributions[:, [departed, driven]].sum(axis=1).mean() > 0.8


@pytest.mark.parametrize("name", sorted(DEMO_CASES))
def test_mset_names_the_demo_return_on_the_rows_it_hardly_flags(name: str) -> None:
    """Test the 4 °C return departure with mset: its residual puts the return first on most
    rows (it is the metric the others imply), but the departure is inside what the kernel
    estimate's residuals usually are, so it flags few of them (pca flags all)."""
    case = DEMO_CASES[name]
    score, contributions = scored("mset", case, training_key(f"boiler-{name}"))
    assert np.mean(contributions.argmax(axis=1) == RETURN) >= 0.7
    assert np.mean(score > 0.5) < 0.5


# --- robust_z and iforest: no relation, no attribution of a broken one ---------------------


@pytest.mark.parametrize("kind", ["robust_z", "iforest"])
def test_range_detectors_neither_flag_nor_name_the_demo_departure(kind: str) -> None:
    """Test that robust_z and iforest, which model no relation, do not flag the 4 °C return
    departure and do not single out the return: their shares only say which metric sits
    furthest out in its own range."""
    case = DEMO_CASES["samples"]
    score, contributions = scored(kind, case, training_key("boiler-samples"))
    assert np.mean(score > 0.5) < 0.05
    assert np.mean(contributions.argmax(axis=1) == RETURN) < 0.5
