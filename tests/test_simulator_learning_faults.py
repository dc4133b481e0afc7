"""The faults for learned models: a broken relation (decorrelate) and a part wearing out (wear).

Pure: each model is sampled at a fixed step with the fault applied, as the device and the history
backfill do, and the telemetry is checked for what the models are trained and judged on.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from simulators.faults import (
    ActiveFault,
    FaultKind,
    FaultSpec,
    apply_faults,
    customer_impact_after,
    fix_for,
    start_fault,
)
from simulators.groundtruth import fault_started_event
from simulators.models import BOILER, FREEZER, HEAT_PUMP, MODELS, DeviceModel, Values, wear_level

T0 = 1_700_000_000.0
MODEL_IDS = list(MODELS)


def run(
    model: DeviceModel[Any],
    seconds: float,
    step: float,
    fault: ActiveFault | None = None,
    seed: int = 3,
) -> list[tuple[float, Values]]:
    """Return ``seconds`` of samples every ``step`` seconds from T0, with ``fault`` applied."""
    rng = random.Random(seed)
    state = model.initial_state(rng, 1.0)
    samples = []
    for k in range(int(seconds / step)):
        now = T0 + k * step
        values, state = model.sample(now, state, rng)
        if fault is not None:
            values = apply_faults(values, [fault], now, rng)
        samples.append((now, values))
    return samples


def fault(model: DeviceModel[Any], kind: FaultKind, **params: float) -> ActiveFault:
    return start_fault("f1", FaultSpec("d", kind, params=params), model, T0)


def col(samples: list[tuple[float, Values]], name: str) -> np.ndarray:
    return np.array([float(v[name]) for _, v in samples])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rate": 0.0}, "decorrelate rate must be > 0"),
        ({"rate": -1.0}, "decorrelate rate must be > 0"),
        ({"life": 60.0}, "no parameter 'life'"),
    ],
)
def test_decorrelate_spec_checks(params: dict[str, float], message: str) -> None:
    """Test that a decorrelation goes the model's way, at a positive rate, and takes no life."""
    with pytest.raises(ValueError, match=message):
        FaultSpec("d", FaultKind.DECORRELATE, params=params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"life": 0.0}, "life must be a time > 0"),
        ({"worn": 1.0}, "worn must be at least 0 and below 1"),
        ({"worn": -0.1}, "worn must be at least 0 and below 1"),
        ({"rate": 1.0}, "no parameter 'rate'"),
    ],
)
def test_wear_spec_checks(params: dict[str, float], message: str) -> None:
    """Test that a wear fault needs a life, and a worn share below the whole of it."""
    with pytest.raises(ValueError, match=message):
        FaultSpec("d", FaultKind.WEAR, params=params)
    with pytest.raises(ValueError, match="wear fault takes no metric"):
        FaultSpec("d", FaultKind.WEAR, "vibration")


def test_wear_level_accelerates() -> None:
    """Test that wear is slow, then fast: each tenth of the life adds more than the one before."""
    levels = [wear_level(k / 10) for k in range(11)]
    steps = np.diff(levels)
    assert levels[0] == 0.0
    assert levels[-1] == pytest.approx(1.0)
    assert (np.diff(steps) > 0).all()
    assert wear_level(-1.0) == 0.0
    assert wear_level(2.0) == 1.0


# --- decorrelate -----------------------------------------------------------------------------


def test_boiler_return_water_departs_from_flow_and_power() -> None:
    """Test that the return runs warmer than the power implies, never above the flow."""
    healthy = run(BOILER, 1800, 5.0)
    faulty = run(BOILER, 1800, 5.0, fault(BOILER, FaultKind.DECORRELATE, rate=1.0))

    def residual(samples: list[tuple[float, Values]]) -> np.ndarray:
        flow, ret, power = (
            col(samples, "temperature"),
            col(samples, "return_temp"),
            col(samples, "power"),
        )
        return flow - ret - 3.0 - 0.15 * power  # ~0 while the radiators take the heat

    burner = col(healthy, "burner_on").astype(bool)
    assert abs(residual(healthy)[burner].mean()) < 0.1
    assert residual(healthy)[burner].std() < 0.3
    late = col(faulty, "burner_on").astype(bool) & (np.arange(len(faulty)) > len(faulty) // 2)
    assert residual(faulty)[late].mean() < -5.0  # 15-30 min in: far off the relation
    assert (col(faulty, "return_temp") < col(faulty, "temperature")).all()
    # Flow, pressure and power are the healthy run's: only the return water changed.
    for metric in ("temperature", "pressure", "power", "ignition_time"):
        assert (col(faulty, metric) == col(healthy, metric)).all()


def test_heat_pump_current_departs_from_outdoor_and_cop_within_range() -> None:
    """Test that the current rises over what the outdoor air implies, under the overload limit."""
    healthy = run(HEAT_PUMP, 1800, 5.0)
    faulty = run(HEAT_PUMP, 1800, 5.0, fault(HEAT_PUMP, FaultKind.DECORRELATE, rate=0.3))

    def residual(samples: list[tuple[float, Values]]) -> np.ndarray:
        return col(samples, "compressor_current") - (10.5 - 0.3 * col(samples, "outdoor_temp"))

    assert abs(residual(healthy).mean()) < 0.2
    assert residual(faulty)[-60:].mean() > 2.0  # capped at +2.5 A
    assert col(faulty, "compressor_current").max() <= 15.0  # shipped overload: median > 16 A
    for metric in ("cop", "supply_temp", "outdoor_temp", "vibration"):
        assert (col(faulty, metric) == col(healthy, metric)).all()


def test_freezer_power_departs_from_its_cooling() -> None:
    """Test that the running compressor draws more while the cabinet cools as before."""
    healthy = run(FREEZER, 3600, 5.0)
    faulty = run(FREEZER, 3600, 5.0, fault(FREEZER, FaultKind.DECORRELATE, rate=1.0))
    running = col(healthy, "compressor_on").astype(bool)
    late = running & (np.arange(len(healthy)) > len(healthy) // 2)
    gap = col(faulty, "power_w")[late] - col(healthy, "power_w")[late]
    assert gap == pytest.approx(np.full(gap.shape, 9.0), abs=0.11)  # the cap
    assert (col(faulty, "power_w")[~running] == col(healthy, "power_w")[~running]).all()
    assert (col(faulty, "cabinet_temp") == col(healthy, "cabinet_temp")).all()
    closed = running & ~col(faulty, "door_open").astype(bool)
    # In range: a healthy running compressor with the light on draws 118 +/- 9 W.
    assert col(faulty, "power_w")[closed].max() < 130.0
    assert np.median(col(faulty, "power_w")[closed]) < 122.0  # below a cooling failure's


@pytest.mark.parametrize("name", MODEL_IDS)
def test_decorrelation_impact_and_fix(name: str) -> None:
    """Test that the customer notices at the model's tolerance, and a technician must come."""
    model = MODELS[name]
    spec = FaultSpec("d", FaultKind.DECORRELATE, params={"rate": 0.5})
    assert customer_impact_after(model, spec) == pytest.approx(
        120.0 * model.decorrelation.tolerance
    )
    assert fix_for(model, spec).type == "none"
    assert model.decorrelation.tolerance <= model.decorrelation.cap
    assert model.decorrelation.metric in model.metrics
    event = fault_started_event(start_fault("f", spec, model, T0), model.product, 60.0)
    assert event["relation"]["metric"] == model.decorrelation.metric
    assert event["fix"] == {"type": "none"}


# --- wear ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_IDS)
def test_wear_rises_then_the_failure_condition_holds_from_the_failure_on(name: str) -> None:
    """Test that the wear metric rises faster and faster and crosses the failure condition
    exactly when the part fails, never before."""
    model = MODELS[name]
    wear = model.wear
    life = 7200.0
    worn = fault(model, FaultKind.WEAR, life=life)
    samples = run(model, life + 1800, 30.0, worn)
    healthy = run(model, life + 1800, 30.0)
    times = np.array([t for t, _ in samples])
    metric = col(samples, wear.metric)
    before, after = times < T0 + life, times >= T0 + life
    assert metric[before].max() <= wear.failure_above - 1.0  # a margin, not a near miss
    assert (metric[after] > wear.failure_above).all()
    assert col(healthy, wear.metric).max() < wear.failure_above - 5.0
    # Visible early: where the part works (a resting compressor does not vibrate), the metric's
    # mean per fifth of the life rises, each rise larger than the one before.
    working = np.array([bool(v.get("compressor_on", True)) for _, v in samples])
    fifths = [
        metric[working & before & (times >= T0 + k * life / 5) & (times < T0 + (k + 1) * life / 5)]
        for k in range(5)
    ]
    means = np.array([part.mean() for part in fifths])
    assert (np.diff(means) > 0).all()
    assert (np.diff(np.diff(means)) > 0).all()
    new_part = np.array([bool(v.get("compressor_on", True)) for _, v in healthy])
    base = col(healthy, wear.metric)[new_part].mean()
    assert means[-1] - base > 0.4 * wear.rise


def test_a_failed_part_is_the_models_hardware_failure() -> None:
    """Test that after its life the worn part fails as the model's hardware fault does."""
    after = [
        values
        for model in (BOILER, HEAT_PUMP, FREEZER)
        for _, values in run(model, 1200, 30.0, fault(model, FaultKind.WEAR, life=600.0))[-5:]
    ]
    boiler, heat_pump, freezer = after[0:5], after[5:10], after[10:15]
    assert not any(v["burner_on"] for v in boiler)
    assert all(v["ignition_time"] == 10.0 for v in boiler)
    assert all(v["cop"] <= 1.2 for v in heat_pump)
    assert all(v["compressor_on"] for v in freezer)


def test_worn_start_fails_sooner_and_the_truth_says_when() -> None:
    """Test that a part already 90 % worn fails after a tenth of its life, at customer impact."""
    spec = FaultSpec("d", FaultKind.WEAR, params={"life": 7200.0, "worn": 0.9})
    assert spec.remaining_life == pytest.approx(720.0)
    assert customer_impact_after(HEAT_PUMP, spec) == pytest.approx(720.0)
    active = start_fault("f", spec, HEAT_PUMP, T0)
    assert active.fails_at == pytest.approx(T0 + 720.0)
    event = fault_started_event(active, HEAT_PUMP.product, customer_impact_after(HEAT_PUMP, spec))
    assert event["customer_impact_at"] == event["wear"]["fails_at"]
    assert event["wear"]["failure"] == {"metric": "vibration", "above": 10.0}
    assert event["wear"]["wear_started"] < event["start"]
    assert event["fix"] == {"type": "none"}
    samples = run(HEAT_PUMP, 900, 30.0, active)
    vibration = {t - T0: v["vibration"] for t, v in samples}
    assert vibration[690.0] < 10.0 < vibration[720.0]
    assert vibration[0.0] > 4.0  # already well worn
