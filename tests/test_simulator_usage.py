"""Pure tests of usage profiles: the signal shape of unused, barely used and misused devices."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from simulators.fleet import FleetOptions, plan_devices
from simulators.models import (
    BOILER,
    FREEZER,
    HEAT_PUMP,
    MODELS,
    DeviceModel,
    UsageProfile,
    Values,
)

T0 = 1_700_000_000.0
DAY = 86_400
HOUR = 3600


def run(
    model: DeviceModel[Any], profile: UsageProfile, seed: int = 0, seconds: int = DAY, step: int = 5
) -> list[Values]:
    """Return samples every ``step`` seconds of a device used as ``profile``."""
    rng = random.Random(seed)
    state = model.with_usage(model.initial_state(rng, 1.0), profile, rng)
    rows = []
    for k in range(0, seconds, step):
        values, state = model.sample(T0 + k, state, rng)
        rows.append(values)
    return rows


def column(rows: list[Values], name: str) -> np.ndarray:
    """Return one metric of ``rows`` as an array."""
    return np.array([row[name] for row in rows], dtype=float)


def changes_per_hour(rows: list[Values], name: str, step: int = 5) -> float:
    """Return how often a boolean changes per hour."""
    flags = column(rows, name).astype(bool)
    return float(np.count_nonzero(flags[1:] != flags[:-1])) / (len(rows) * step / HOUR)


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_normal_profile_leaves_the_model_untouched(model: DeviceModel[Any]) -> None:
    """Test that the normal profile returns the initial state itself and draws nothing."""
    rng = random.Random(4)
    state = model.initial_state(rng, 0.0)
    after = random.Random(4)
    model.initial_state(after, 0.0)
    assert model.with_usage(state, UsageProfile.NORMAL, rng) is state
    assert rng.random() == after.random()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unused_boiler_never_fires_and_stays_flat(seed: int) -> None:
    """Test that an unused boiler's burner never fires and its water sits flat at room level."""
    rows = run(BOILER, UsageProfile.UNUSED, seed)
    temperature = column(rows, "temperature")
    assert not column(rows, "burner_on").any()
    assert (column(rows, "power") == 0).all()
    assert {row["mode"] for row in rows} == {"off"}
    assert temperature.min() > 15
    assert temperature.max() < 24
    assert 0 < temperature.std() < 0.1  # flat, but a live sensor (never exactly constant)
    assert (column(rows, "pressure") > 0.8).all()  # cold water, not a leak


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unused_heat_pump_never_runs_and_stays_flat(seed: int) -> None:
    """Test that an unused heat pump keeps its compressor off, reports no COP, and stays flat."""
    rows = run(HEAT_PUMP, UsageProfile.UNUSED, seed)
    assert not column(rows, "compressor_on").any()
    assert all("cop" not in row for row in rows)
    assert column(rows, "compressor_current").max() < 0.5
    supply = column(rows, "supply_temp")
    assert 0 < supply.std() < 0.1
    assert column(rows, "outdoor_temp").std() > 1  # the weather still changes


def test_unused_freezer_is_never_opened_and_starts_less() -> None:
    """Test that an unused (empty, never opened) freezer cools with fewer compressor starts."""
    unused = run(FREEZER, UsageProfile.UNUSED)
    normal = run(FREEZER, UsageProfile.NORMAL)
    assert not column(unused, "door_open").any()
    assert changes_per_hour(unused, "compressor_on") < 0.7 * changes_per_hour(
        normal, "compressor_on"
    )
    assert -21 < column(unused, "cabinet_temp").min() < column(unused, "cabinet_temp").max() < -16


@pytest.mark.parametrize(
    ("model", "flag", "low", "high"),
    [(BOILER, "burner_on", 0.001, 0.1), (HEAT_PUMP, "compressor_on", 0.005, 0.2)],
)
def test_barely_used_runs_rarely_and_briefly(
    model: DeviceModel[Any], flag: str, low: float, high: float
) -> None:
    """Test that a barely used appliance runs in a few short episodes over three days."""
    rows = run(model, UsageProfile.BARELY_USED, seed=3, seconds=3 * DAY, step=10)
    running = column(rows, flag).astype(bool)
    assert low < running.mean() < high
    starts = np.count_nonzero(running[1:] & ~running[:-1])
    assert starts >= 1


def test_barely_used_freezer_is_opened_rarely() -> None:
    """Test that a barely used freezer's door opens far less often than a normal one's."""
    rows = run(FREEZER, UsageProfile.BARELY_USED, seconds=3 * DAY, step=10)
    normal = run(FREEZER, UsageProfile.NORMAL, seconds=3 * DAY, step=10)
    assert column(rows, "door_open").mean() < 0.2 * column(normal, "door_open").mean()


@pytest.mark.parametrize(
    ("model", "flag", "normal_max", "misused_min"),
    [
        (BOILER, "burner_on", 30.0, 60.0),  # toggling about every minute
        (HEAT_PUMP, "compressor_on", 0.0, 50.0),
        (FREEZER, "compressor_on", 16.0, 30.0),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_misused_appliance_short_cycles(
    model: DeviceModel[Any], flag: str, normal_max: float, misused_min: float, seed: int
) -> None:
    """Test that a misused appliance toggles its burner or compressor about once a minute."""
    misused = changes_per_hour(run(model, UsageProfile.MISUSED, seed), flag)
    normal = changes_per_hour(run(model, UsageProfile.NORMAL, seed), flag)
    assert normal <= normal_max
    assert misused >= misused_min


def test_misused_boiler_holds_comfort_day_and_night() -> None:
    """Test that a misused boiler never drops to eco at night and stays below overheating."""
    rows = run(BOILER, UsageProfile.MISUSED)
    assert {row["mode"] for row in rows} == {"heating"}
    temperature = column(rows, "temperature")
    assert 64 < temperature.mean() < 68
    assert temperature.max() < 70


def test_plan_gives_named_profiles_and_draws_the_rest_from_weights() -> None:
    """Test that `usage` names profiles and `profiles` weights the others, seeded."""
    options = FleetOptions(
        devices=60,
        usage={"sim-boiler-0001": UsageProfile.MISUSED},
        profiles={UsageProfile.NORMAL: 3, UsageProfile.UNUSED: 1, UsageProfile.MISUSED: 0},
    )
    plan = plan_devices(options)
    assert plan[0].usage is UsageProfile.MISUSED
    rest = [identity.usage for identity in plan[1:]]
    assert set(rest) == {UsageProfile.NORMAL, UsageProfile.UNUSED}
    assert 5 <= rest.count(UsageProfile.UNUSED) <= 25
    assert [i.usage for i in plan_devices(options)] == [i.usage for i in plan]
    assert {i.usage for i in plan_devices(FleetOptions(devices=10))} == {UsageProfile.NORMAL}
