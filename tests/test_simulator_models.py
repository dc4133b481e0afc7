"""Pure tests of the simulated device models: ranges, daily cycles and correlations."""

from __future__ import annotations

import functools
import random
from typing import Any

import numpy as np
import pytest

from simulators.models import (
    BOILER,
    FREEZER,
    HEAT_PUMP,
    MODELS,
    DeviceModel,
    HeatPumpState,
    Values,
    boiler_setpoint,
    get_model,
    local_hour,
    outdoor_temperature,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86_400


def run_day(model: DeviceModel[Any], seed: int, step: float = 5.0) -> list[tuple[float, Values]]:
    """Return one simulated day of samples taken every ``step`` seconds."""
    rng = random.Random(seed)
    state = model.initial_state(rng, 1.0)
    samples = []
    for k in range(int(DAY / step)):
        now = T0 + k * step
        values, state = model.sample(now, state, rng)
        samples.append((now, values))
    return samples


@functools.cache
def day_of(name: str, seed: int) -> list[tuple[float, Values]]:
    """Return ``run_day`` of the model called ``name``, computed once (callers only read it)."""
    return run_day(MODELS[name], seed)


def column(samples: list[tuple[float, Values]], name: str) -> np.ndarray:
    """Return one metric of ``samples`` as an array."""
    return np.array([values[name] for _, values in samples], dtype=float)


RANGES = [
    (BOILER, "temperature", 50.0, 75.0),
    (BOILER, "pressure", 1.0, 2.0),
    (BOILER, "power", 0.0, 100.0),
    (BOILER, "return_temp", 35.0, 72.0),
    (BOILER, "ignition_time", 1.4, 2.7),
    (HEAT_PUMP, "outdoor_temp", -10.0, 18.0),
    (HEAT_PUMP, "supply_temp", 30.0, 55.0),
    (HEAT_PUMP, "compressor_current", 3.0, 16.0),
    (HEAT_PUMP, "cop", 1.0, 5.0),
    (HEAT_PUMP, "vibration", 1.0, 2.5),
    (FREEZER, "cabinet_temp", -21.0, -14.0),
    (FREEZER, "power_w", 0.0, 140.0),
    (FREEZER, "vibration", 0.0, 1.4),
]


@pytest.mark.parametrize(("model", "metric", "low", "high"), RANGES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_stays_in_plausible_range(
    model: DeviceModel[Any], metric: str, low: float, high: float, seed: int
) -> None:
    """Test that a day of samples stays within the metric's plausible range."""
    values = column(day_of(model.name, seed), metric)
    assert values.min() >= low
    assert values.max() <= high
    assert values.std() > 0  # noise and cycles: never a flat line


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_samples_have_declared_metrics_with_json_types(model: DeviceModel[Any]) -> None:
    """Test that every sample carries the model's metrics as floats, booleans or short strings."""
    for _, values in run_day(model, 0, step=600.0):
        assert set(model.metrics) <= set(values)
        for name in model.metrics:
            assert isinstance(values[name], float)
        for value in values.values():
            assert isinstance(value, float | bool) or (isinstance(value, str) and len(value) < 16)


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_same_seed_gives_same_signals(model: DeviceModel[Any]) -> None:
    """Test that a model's signals are reproducible from the seed and differ across seeds."""
    assert run_day(model, 7, step=60.0) == run_day(model, 7, step=60.0)
    assert run_day(model, 7, step=60.0) != run_day(model, 8, step=60.0)


@pytest.mark.parametrize(
    ("now", "offset", "hour"),
    [(0.0, 0.0, 0.0), (3600.0, 0.0, 1.0), (0.0, 1.0, 1.0), (3600.0, -2.0, 23.0), (DAY, 0.0, 0.0)],
)
def test_local_hour(now: float, offset: float, hour: float) -> None:
    """Test that the local hour wraps around midnight in both directions."""
    assert local_hour(now, offset) == pytest.approx(hour)


@pytest.mark.parametrize(
    ("hour", "setpoint"), [(3.0, 58.0), (7.0, 66.0), (12.0, 62.0), (19.0, 66.0), (23.0, 58.0)]
)
def test_boiler_setpoint_follows_daily_heating_cycle(hour: float, setpoint: float) -> None:
    """Test that the boiler heats more in the morning and evening than at night."""
    assert boiler_setpoint(hour) == setpoint


def test_boiler_burner_drives_temperature_and_power() -> None:
    """Test that temperature rises while the burner is on, falls while off, and power follows."""
    samples = run_day(BOILER, 3)
    temperature = column(samples, "temperature")
    burner = column(samples, "burner_on").astype(bool)
    power = column(samples, "power")
    rise = np.diff(temperature)
    assert rise[burner[:-1] & burner[1:]].mean() > 0.1
    assert rise[~burner[:-1] & ~burner[1:]].mean() < -0.05
    assert (power[burner] >= 20).all()
    assert (power[~burner] == 0).all()
    assert 0.1 < burner.mean() < 0.6


def test_boiler_runs_eco_at_night_and_cooler() -> None:
    """Test that the boiler reports eco mode at night, with lower temperatures than by day."""
    samples = run_day(BOILER, 4)
    temperature = column(samples, "temperature")
    night = np.array([values["mode"] == "eco" for _, values in samples])
    hours = np.array([local_hour(now, 1.0) for now, _ in samples])
    assert (night == ((hours >= 22) | (hours < 6))).all()
    assert temperature[night].mean() < temperature[~night].mean() - 3


def test_heat_pump_outdoor_cycle_peaks_in_afternoon() -> None:
    """Test that outdoor air is coldest around 03:00 and warmest around 15:00."""
    assert outdoor_temperature(15.0, 5.0) == pytest.approx(10.0)
    assert outdoor_temperature(3.0, 5.0) == pytest.approx(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heat_pump_works_harder_when_colder(seed: int) -> None:
    """Test that colder air means more compressor current, lower COP and a hotter supply."""
    samples = run_day(HEAT_PUMP, seed)
    outdoor = column(samples, "outdoor_temp")
    assert np.corrcoef(outdoor, column(samples, "compressor_current"))[0, 1] < -0.8
    assert np.corrcoef(outdoor, column(samples, "cop"))[0, 1] > 0.3
    assert np.corrcoef(outdoor, column(samples, "supply_temp"))[0, 1] < -0.5


@pytest.mark.parametrize(("outdoor_mean", "defrosts"), [(-3.0, True), (20.0, False)])
def test_heat_pump_defrosts_only_in_the_cold(outdoor_mean: float, defrosts: bool) -> None:
    """Test that defrost cycles happen on cold sites, lower the COP, and never on warm sites."""
    rng = random.Random(5)
    state = HeatPumpState(utc_offset_h=0.0, outdoor_mean=outdoor_mean)
    rows = []
    for k in range(0, DAY, 10):
        values, state = HEAT_PUMP.sample(T0 + k, state, rng)
        rows.append(values)
    defrost = np.array([row["defrost"] for row in rows], dtype=bool)
    assert defrost.any() == defrosts
    if defrosts:
        cop = np.array([row["cop"] for row in rows])
        assert cop[defrost].mean() < cop[~defrost].mean()
        assert defrost.mean() < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_freezer_compressor_cycles_and_door_warms(seed: int) -> None:
    """Test the freezer's duty cycle, its power draw, and the warming while the door is open."""
    samples = run_day(FREEZER, seed)
    cabinet = column(samples, "cabinet_temp")
    compressor = column(samples, "compressor_on").astype(bool)
    door = column(samples, "door_open").astype(bool)
    power = column(samples, "power_w")
    assert 0.1 < compressor.mean() < 0.7
    assert 0 < door.mean() < 0.1  # rare
    assert (power[compressor] > 50).all()
    assert (power[~compressor] < 20).all()
    rise = np.diff(cabinet)
    steady = ~door[1:]
    assert rise[compressor[1:] & steady].mean() < 0
    assert rise[~compressor[1:] & steady].mean() > 0
    assert rise[door[1:]].mean() > rise[~compressor[1:] & steady].mean()


def test_get_model_names_known_models_on_error() -> None:
    """Test that an unknown model name is rejected with the list of known ones."""
    assert get_model("freezer") is FREEZER
    with pytest.raises(ValueError, match="boiler, freezer, heat_pump"):
        get_model("toaster")
