"""Device models: plausible telemetry as pure functions of (time, state, rng).

Each model turns ``(now, state, rng)`` into ``(values, new_state)``; ``now`` is epoch seconds and is
passed in, so a test can walk a simulated day without sleeping. Signals follow a daily cycle in the
device's local time, carry noise, and keep their physical correlations (a burner that is on heats
the water; a colder outdoor air makes a heat pump draw more current at a lower COP).

A model also declares what a device of its kind understands and how its faults are fixed: the
command methods it accepts (``commands``), the fix of each fault it knows better than the default
(``fixes``), how its hardware fails (``hardware``), which part wears out and how the telemetry
shows it (``wear``), which relation between two of its metrics a hidden fault can break
(``decorrelation``), how each usage profile changes its behaviour (``with_usage``), and what an
accepted command does to its state (``apply_command``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

Value = float | bool | str
Values = dict[str, Value]
S = TypeVar("S")

# Longest gap integrated in one step: after a reboot or an outage the state resumes, not leaps.
_MAX_STEP_S = 60.0


class UsageProfile(StrEnum):
    """How the customer uses the device; the ground truth for customer-success rules."""

    NORMAL = "normal"
    UNUSED = "unused"  # never used: burner / compressor off for days, flat temperatures
    BARELY_USED = "barely_used"  # rare, short use
    MISUSED = "misused"  # short-cycling, settings far from normal


@dataclass(frozen=True)
class Fix:
    """How a fault can be fixed: a command, steps for the customer, or nothing remote.

    For a command fix, ``params`` is a set of parameters that works and ``requires`` the range
    ``(low, high)`` each numeric parameter must fall in for the command to fix the fault (a
    ``reduce_power`` of 10 % answers ok but leaves a boiler overheating).

    For a customer fix, ``keywords`` says what guidance must ask for before a customer can fix
    the fault by following it: every group must have one of its phrases in the steps sent (case
    ignored). Guidance about something else (the freezer steps for a boiler losing water) leaves
    the fault as it is, whatever the customer does.
    """

    type: Literal["command", "customer", "none"]
    method: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[str, ...] = ()
    requires: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    keywords: tuple[tuple[str, ...], ...] = ()

    def matched_by(self, steps: Sequence[str]) -> bool:
        """Return True if a customer following ``steps`` would fix a fault with this fix."""
        if self.type != "customer" or not self.keywords:
            return False
        text = " ".join(steps).casefold()
        return all(any(phrase.casefold() in text for phrase in group) for group in self.keywords)

    def fixed_by(self, method: str, params: Mapping[str, Any]) -> bool:
        """Return True if the command ``method`` with ``params`` fixes a fault with this fix."""
        if self.type != "command" or method != self.method:
            return False
        for name, (low, high) in self.requires.items():
            value = params.get(name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                return False
            if not low <= value <= high:
                return False
        return True

    def as_json(self) -> dict[str, Any]:
        """Return the ground-truth form of this fix."""
        if self.type == "command":
            out: dict[str, Any] = {
                "type": "command",
                "method": self.method,
                "params": dict(self.params),
            }
            if self.requires:
                out["requires"] = {
                    name: {"min": low, "max": high} for name, (low, high) in self.requires.items()
                }
            return out
        if self.type == "customer":
            return {
                "type": "customer",
                "steps": list(self.steps),
                "keywords": [list(group) for group in self.keywords],
            }
        return {"type": "none"}


# (fault kind, metric, direction of a drift: "up", "down" or None for any) -> fix
FixKey = tuple[str, str | None, str | None]
# (values to change in place, seconds since the failure began, rng)
HardwareEffect = Callable[[Values, float, random.Random], None]


@dataclass(frozen=True)
class HardwareFailure:
    """What a ``hardware`` fault does on this model: a part a technician must replace."""

    description: str
    effect: HardwareEffect
    impact_s: float  # seconds until the customer notices


# (values to change in place, how worn the part is: 0 new .. 1 about to fail, rng)
WearEffect = Callable[[Values, float, random.Random], None]
# (values to change in place, rng): the wear metric once the part has failed
FailedEffect = Callable[[Values, random.Random], None]
# (values to change in place, how far the relation has departed, in the metric's unit)
DepartEffect = Callable[[Values, float], None]


@dataclass(frozen=True)
class Wear:
    """What the ``wear`` fault does on this model: a part wears out, then fails.

    ``metric`` carries the wear: it rises, faster and faster, from its healthy level by up to
    ``rise`` (plus noise) just before the failure. At the failure the model's ``hardware``
    failure takes hold and ``metric`` jumps above ``failure_above``: the condition that marks the
    failure in the telemetry (``metric > failure_above``), never met by a healthy or a merely worn
    part, so that run-to-failure histories can be cut at it.
    """

    part: str
    metric: str
    rise: float
    failure_above: float
    effect: WearEffect
    failed: FailedEffect


@dataclass(frozen=True)
class Decorrelation:
    """What the ``decorrelate`` fault does on this model: one relation between metrics breaks.

    ``metric`` departs, ``rate`` units a minute up to ``cap``, from what ``related`` imply, while
    every metric stays inside its own normal range: no threshold on a single metric sees it. The
    customer notices once the departure reaches ``tolerance``.
    """

    metric: str
    related: tuple[str, ...]
    description: str
    cap: float
    tolerance: float
    effect: DepartEffect


@dataclass(frozen=True)
class DeviceModel(Generic[S]):
    """What the simulator knows about one kind of device."""

    name: str  # short name used in options and ids: "boiler"
    product: str  # model name published in meta: "boiler-x200"
    firmwares: tuple[str, ...]
    metrics: tuple[str, ...]  # numeric metrics that sensor faults can act on
    commands: frozenset[str]  # the command methods the device accepts (its allowlist)
    # How far a metric may drift before the customer notices (comfort lost, food warming).
    tolerance: Mapping[str, float]
    # How long the control can run on a frozen sensor before the customer notices.
    stuck_impact_s: float
    # Fixes that differ from the default of the fault's kind (see simulators.faults.fix_for).
    fixes: Mapping[FixKey, Fix]
    hardware: HardwareFailure
    wear: Wear
    decorrelation: Decorrelation
    initial_state: Callable[[random.Random, float], S]  # (rng, utc_offset_h) -> state
    sample: Callable[[float, S, random.Random], tuple[Values, S]]
    # (state, profile, rng) -> the state of a device used that way (NORMAL returns it unchanged)
    with_usage: Callable[[S, UsageProfile, random.Random], S]
    # (state, method, params, now) -> the state after an accepted command
    apply_command: Callable[[S, str, Mapping[str, Any], float], S]


def local_hour(now: float, utc_offset_h: float) -> float:
    """Return the hour of day (0 <= h < 24) at ``now`` in a zone ``utc_offset_h`` from UTC."""
    return ((now / 3600.0) + utc_offset_h) % 24.0


def _step(last: float | None, now: float) -> float:
    """Return the seconds to integrate since the previous sample (0 for the first one)."""
    if last is None:
        return 0.0
    return min(max(now - last, 0.0), _MAX_STEP_S)


def _episode(
    now: float,
    dt: float,
    until: float,
    mean_gap_s: float,
    length_s: tuple[float, float],
    rng: random.Random,
) -> float:
    """Return when the current use episode ends: a new one starts about every ``mean_gap_s``."""
    if now >= until and rng.random() < dt / mean_gap_s:
        return now + rng.uniform(*length_s)
    return until


def _toward(value: float, target: float, dt: float, tau_s: float) -> float:
    """Return ``value`` moved toward ``target``: a first-order lag of time constant ``tau_s``."""
    return target + (value - target) * math.exp(-dt / tau_s)


def _unchanged(state: S, _method: str, _params: Mapping[str, Any], _now: float) -> S:
    return state


WEAR_SHAPE = 3.0  # how sharply wear accelerates toward the end of the part's life


def wear_level(fraction: float) -> float:
    """Return how far a part's wear metric has risen (0..1) at ``fraction`` of its life.

    Exponential: barely visible for the first half of the life (0.18 at 50 %), then faster and
    faster (0.52 at 80 %, 0.85 at 95 %), as bearings, valves and electrodes wear.

    >>> wear_level(0.0), round(wear_level(0.5), 2), wear_level(1.0)
    (0.0, 0.18, 1.0)
    """
    fraction = min(max(fraction, 0.0), 1.0)
    return (math.exp(WEAR_SHAPE * fraction) - 1.0) / (math.exp(WEAR_SHAPE) - 1.0)


def _worn(values: Values, metric: str, rise: float, level: float, rng: random.Random) -> None:
    """Add ``rise`` x ``level`` to ``metric``, with noise that grows with the wear."""
    value = values.get(metric)
    if isinstance(value, float):
        values[metric] = round(value + rise * level * (1.0 + rng.gauss(0.0, 0.05)), 3)


def _vibration_wear(rise: float) -> WearEffect:
    """Return the wear of a compressor: its vibration rises while it runs."""

    def effect(values: Values, level: float, rng: random.Random) -> None:
        if values.get("compressor_on") is True:
            _worn(values, "vibration", rise, level, rng)

    return effect


def _vibration_failed(values: Values, rng: random.Random) -> None:
    """A failed compressor shakes: 12-16 mm/s, far above any worn one."""
    values["vibration"] = round(12.0 + rng.uniform(0.0, 4.0), 3)


# --- boiler -------------------------------------------------------------------------------------

BOILER_COMFORT = 66.0  # °C, the comfort setpoint
BOILER_MISUSED_BAND = 0.5  # ± °C around the setpoint: the burner toggles about once a minute
BOILER_RETURN_DROP = 3.0  # °C the return water is colder than the flow with the burner idle
BOILER_IGNITION_SAFETY_S = 10.0  # an ignition that takes this long locks the burner out
BOILER_IGNITER_RISE = 5.0  # s a worn electrode adds to the ignition just before it fails


@dataclass(frozen=True)
class BoilerState:
    """Water temperature, burner, settings and the device's fixed traits."""

    utc_offset_h: float
    pressure_base: float
    temperature: float
    burner_on: bool
    last: float | None = None
    usage: UsageProfile = UsageProfile.NORMAL
    ambient: float = 19.0  # the room the boiler stands in: where idle water settles
    in_use_until: float = 0.0  # barely used: end of the current heating episode
    power_limit: float = 100.0  # % of full power; lowered by reduce_power
    ignition_base: float = 2.0  # seconds a healthy ignition of this boiler takes


def boiler_setpoint(hour: float) -> float:
    """Return the flow-temperature setpoint: comfort peaks morning and evening, eco at night."""
    if 6 <= hour < 9 or 17 <= hour < 22:
        return BOILER_COMFORT
    if hour >= 22 or hour < 6:
        return 58.0
    return 62.0


def boiler_initial(rng: random.Random, utc_offset_h: float) -> BoilerState:
    """Return a boiler somewhere inside its normal band."""
    return BoilerState(
        utc_offset_h=utc_offset_h,
        pressure_base=rng.uniform(1.35, 1.65),
        temperature=60.0 + rng.uniform(-3.0, 3.0),
        burner_on=rng.random() < 0.5,
        ignition_base=rng.uniform(1.7, 2.3),
    )


def boiler_with_usage(state: BoilerState, usage: UsageProfile, rng: random.Random) -> BoilerState:
    """Return the boiler as its profile leaves it: idle ones have cooled to the room."""
    if usage is UsageProfile.NORMAL:
        return state
    if usage is UsageProfile.MISUSED:
        return replace(state, usage=usage)
    ambient = rng.uniform(17.0, 21.0)
    return replace(state, usage=usage, ambient=ambient, temperature=ambient + 0.5, burner_on=False)


def boiler_sample(now: float, state: BoilerState, rng: random.Random) -> tuple[Values, BoilerState]:
    """Advance the boiler to ``now``: the burner heats at ~4 °C/min, the loop cools at ~1.5.

    Unused, the heating stays off and the water sits at room temperature; barely used, it heats
    for 5-15 minutes every few hours; misused, the comfort setpoint holds day and night with a
    hysteresis so narrow that the burner short-cycles.

    The radiators take heat in proportion to the burner's power, so the return water is
    3 + 0.15 x power °C colder than the flow (3 °C with the burner off, 18 °C at full power);
    ``ignition_time`` is how long the last ignition took (about 2 s while the igniter is healthy).
    """
    hour = local_hour(now, state.utc_offset_h)
    dt = _step(state.last, now)
    dt_min = dt / 60.0
    usage = state.usage
    in_use_until = state.in_use_until
    if usage is UsageProfile.BARELY_USED:
        in_use_until = _episode(now, dt, in_use_until, 4 * 3600.0, (300.0, 900.0), rng)
    heating = usage is UsageProfile.NORMAL or usage is UsageProfile.MISUSED or now < in_use_until
    if heating:
        misused = usage is UsageProfile.MISUSED
        setpoint = BOILER_COMFORT if misused else boiler_setpoint(hour)
        band = BOILER_MISUSED_BAND if misused else 3.0
        heat = 4.0 if state.power_limit >= 100.0 else 4.0 * state.power_limit / 100.0
        rate = heat if state.burner_on else -1.5
        temperature = state.temperature + rate * dt_min + rng.gauss(0.0, 0.1)
        burner_on = state.burner_on
        if temperature >= setpoint + band:
            burner_on = False
        elif temperature <= setpoint - band:
            burner_on = True
        power = (
            min(100.0, max(20.0, 30.0 + 12.0 * (setpoint + band - temperature)))
            if burner_on
            else 0.0
        )
        power = min(power, state.power_limit)
        mode = "eco" if setpoint < 60.0 else "heating"
        returning = temperature - BOILER_RETURN_DROP - 0.15 * power + rng.gauss(0.0, 0.15)
    else:  # heating off: the water cools to the room and stays there
        temperature = max(state.ambient, state.temperature - 1.5 * dt_min) + rng.gauss(0.0, 0.03)
        burner_on = False
        power = 0.0
        mode = "off"
        returning = temperature - 0.3 + rng.gauss(0.0, 0.05)  # the pump is off: no drop
    pressure = state.pressure_base + 0.01 * (temperature - 60.0) + rng.gauss(0.0, 0.01)
    values: Values = {
        "temperature": round(temperature, 2),
        "return_temp": round(returning, 2),
        "pressure": round(pressure, 3),
        "burner_on": burner_on,
        "power": round(power, 1),
        "ignition_time": round(state.ignition_base + rng.gauss(0.0, 0.08), 3),
        "mode": mode,
    }
    new_state = replace(
        state, temperature=temperature, burner_on=burner_on, last=now, in_use_until=in_use_until
    )
    return values, new_state


def boiler_apply_command(
    state: BoilerState, method: str, params: Mapping[str, Any], _now: float
) -> BoilerState:
    """Return the boiler after a command: ``reduce_power`` caps the burner's power."""
    if method == "reduce_power":
        return replace(state, power_limit=max(0.0, 100.0 - float(params["percent"])))
    return state


def boiler_ignition_failure(values: Values, elapsed_s: float, _rng: random.Random) -> None:
    """The burner no longer lights: no flame, no power, the water cools toward the room."""
    values["burner_on"] = False
    values["power"] = 0.0
    temperature = values.get("temperature")
    if isinstance(temperature, float):
        cooled = round(max(20.0, temperature - 1.5 * elapsed_s / 60.0), 2)
        values["temperature"] = cooled
        if isinstance(values.get("return_temp"), float):
            values["return_temp"] = round(cooled - 0.3, 2)  # no flame: no drop either


def boiler_igniter_wear(values: Values, level: float, rng: random.Random) -> None:
    """A worn ignition electrode: each ignition takes longer, up to ~5 s more before it fails."""
    _worn(values, "ignition_time", BOILER_IGNITER_RISE, level, rng)


def boiler_igniter_failed(values: Values, _rng: random.Random) -> None:
    """Every ignition attempt runs to the safety time, then the burner locks out."""
    values["ignition_time"] = BOILER_IGNITION_SAFETY_S


def boiler_return_departs(values: Values, departure: float) -> None:
    """The return water stays warmer than the burner's power implies: heat no longer reaches the
    radiators (a bypass valve stuck open, a sludged circuit). It never passes the flow."""
    flow, returning = values.get("temperature"), values.get("return_temp")
    if isinstance(flow, float) and isinstance(returning, float):
        ceiling = flow - 1.5
        if returning < ceiling:
            values["return_temp"] = round(min(returning + departure, ceiling), 2)


BOILER: DeviceModel[BoilerState] = DeviceModel(
    name="boiler",
    product="boiler-x200",
    firmwares=("1.4.1", "1.4.2"),
    metrics=("temperature", "return_temp", "pressure", "power", "ignition_time"),
    commands=frozenset({"reboot", "reduce_power", "reset_valve"}),
    tolerance={
        "temperature": 10.0,
        "return_temp": 10.0,
        "pressure": 0.5,
        "power": 40.0,
        "ignition_time": 6.0,
    },
    stuck_impact_s=20 * 60.0,
    fixes={
        # Overheating: lowering the burner's power by at least 20 % brings the flow back.
        ("drift", "temperature", "up"): Fix(
            "command",
            method="reduce_power",
            params={"percent": 30},
            requires={"percent": (20.0, 100.0)},
        ),
        # Pressure creeping up: the filling valve passes; resetting it stops the inflow.
        ("drift", "pressure", "up"): Fix("command", method="reset_valve"),
        # Pressure dropping: the circuit lost water; the customer refills it.
        ("drift", "pressure", "down"): Fix(
            "customer",
            steps=(
                "Check the pressure gauge on the front of the boiler.",
                "If it reads below 1 bar, open the filling loop until it reads 1.5 bar, "
                "then close it.",
                "Reset the boiler with the reset button.",
            ),
            keywords=(("filling loop",), ("1.5 bar",)),
        ),
    },
    hardware=HardwareFailure(
        description="ignition failure: the burner no longer lights, the water cools",
        effect=boiler_ignition_failure,
        impact_s=20 * 60.0,
    ),
    wear=Wear(
        part="ignition electrode",
        metric="ignition_time",
        rise=BOILER_IGNITER_RISE,
        failure_above=9.5,
        effect=boiler_igniter_wear,
        failed=boiler_igniter_failed,
    ),
    decorrelation=Decorrelation(
        metric="return_temp",
        related=("temperature", "power"),
        description=(
            "the return water runs warmer than the burner's power implies: heat no longer "
            "reaches the radiators (bypass valve stuck open)"
        ),
        cap=12.0,
        tolerance=5.0,
        effect=boiler_return_departs,
    ),
    initial_state=boiler_initial,
    sample=boiler_sample,
    with_usage=boiler_with_usage,
    apply_command=boiler_apply_command,
)


# --- heat pump ----------------------------------------------------------------------------------

HEAT_PUMP_DEFROST_S = 120.0  # a defrost cycle asked for by command


@dataclass(frozen=True)
class HeatPumpState:
    """Climate of the site, the compressor and the defrost cycle."""

    utc_offset_h: float
    outdoor_mean: float
    defrost_until: float = 0.0
    last: float | None = None
    usage: UsageProfile = UsageProfile.NORMAL
    ambient: float = 19.0  # where the water of a stopped heat pump settles
    supply: float | None = None  # last supply temperature
    running: bool = True  # compressor
    switch_at: float = 0.0  # misused: when the compressor toggles next; barely used: run end
    vibration_base: float = 1.5  # mm/s of this unit's healthy compressor


def outdoor_temperature(hour: float, mean: float) -> float:
    """Return the outdoor air temperature: coldest around 03:00, warmest around 15:00."""
    return mean + 5.0 * math.sin(2.0 * math.pi * (hour - 9.0) / 24.0)


def heat_pump_initial(rng: random.Random, utc_offset_h: float) -> HeatPumpState:
    """Return a heat pump on a site with its own mean outdoor temperature."""
    return HeatPumpState(
        utc_offset_h=utc_offset_h,
        outdoor_mean=rng.uniform(-2.0, 10.0),
        vibration_base=rng.uniform(1.2, 1.8),
    )


def heat_pump_with_usage(
    state: HeatPumpState, usage: UsageProfile, rng: random.Random
) -> HeatPumpState:
    """Return the heat pump as its profile leaves it: idle ones are stopped and cold."""
    if usage is UsageProfile.NORMAL:
        return state
    if usage is UsageProfile.MISUSED:
        return replace(state, usage=usage)
    ambient = rng.uniform(17.0, 21.0)
    return replace(state, usage=usage, ambient=ambient, supply=ambient + 0.5, running=False)


def _heat_pump_running(
    now: float, dt: float, state: HeatPumpState, rng: random.Random
) -> tuple[bool, float]:
    """Return (compressor running, switch_at) for the state's usage profile."""
    usage = state.usage
    if usage is UsageProfile.NORMAL:
        return True, state.switch_at  # an inverter modulates instead of stopping
    if usage is UsageProfile.UNUSED:
        return False, state.switch_at
    if usage is UsageProfile.BARELY_USED:
        until = _episode(now, dt, state.switch_at, 6 * 3600.0, (600.0, 1200.0), rng)
        return now < until, until
    if now >= state.switch_at:  # misused: a thermostat that stops and starts it every minute
        return not state.running, now + rng.uniform(40.0, 80.0)
    return state.running, state.switch_at


def heat_pump_sample(
    now: float, state: HeatPumpState, rng: random.Random
) -> tuple[Values, HeatPumpState]:
    """Advance the heat pump to ``now``: colder air means more current and a lower COP.

    A stopped compressor draws a standby current, reports no COP, and its water settles to the
    room temperature. A running one vibrates at 1.2-1.8 mm/s (a little more under load).
    """
    dt = _step(state.last, now)
    outdoor = outdoor_temperature(local_hour(now, state.utc_offset_h), state.outdoor_mean)
    outdoor += rng.gauss(0.0, 0.2)
    running, switch_at = _heat_pump_running(now, dt, state, rng)
    defrost_until = state.defrost_until
    if not running:
        last_supply = state.ambient if state.supply is None else state.supply
        supply = _toward(last_supply, state.ambient, dt, 600.0)  # the noise is the sensor's
        values: Values = {
            "supply_temp": round(supply + rng.gauss(0.0, 0.03), 2),
            "outdoor_temp": round(outdoor, 2),
            "compressor_current": round(max(0.0, 0.2 + rng.gauss(0.0, 0.02)), 2),
            "vibration": round(0.05 + abs(rng.gauss(0.0, 0.02)), 3),
            "defrost": False,
            "compressor_on": False,
        }
    else:
        # Below ~3 °C the evaporator ices up: about one four-minute defrost every half hour.
        if now >= defrost_until and outdoor < 3.0 and rng.random() < dt / 1800.0:
            defrost_until = now + 240.0
        defrost = now < defrost_until
        supply = 45.0 - 0.6 * outdoor - (5.0 if defrost else 0.0) + rng.gauss(0.0, 0.3)
        current = max(2.0, 6.0 + 0.3 * (15.0 - outdoor)) + rng.gauss(0.0, 0.2)
        cop = max(1.0, (3.0 + 0.08 * outdoor) * (0.5 if defrost else 1.0) + rng.gauss(0.0, 0.05))
        vibration = state.vibration_base + 0.04 * (current - 6.0) + rng.gauss(0.0, 0.08)
        values = {
            "supply_temp": round(supply, 2),
            "outdoor_temp": round(outdoor, 2),
            "compressor_current": round(current, 2),
            "cop": round(cop, 2),
            "vibration": round(vibration, 3),
            "defrost": defrost,
            "compressor_on": True,
        }
    new_state = replace(
        state,
        defrost_until=defrost_until,
        last=now,
        supply=supply,
        running=running,
        switch_at=switch_at,
    )
    return values, new_state


def heat_pump_apply_command(
    state: HeatPumpState, method: str, _params: Mapping[str, Any], now: float
) -> HeatPumpState:
    """Return the heat pump after a command: ``defrost`` runs a two-minute defrost cycle."""
    if method == "defrost":
        return replace(state, defrost_until=now + HEAT_PUMP_DEFROST_S)
    return state


def heat_pump_compressor_failure(values: Values, elapsed_s: float, rng: random.Random) -> None:
    """The compressor is failing: its current jumps, the COP collapses, the supply cools."""
    current = values.get("compressor_current")
    if isinstance(current, float):
        jump = rng.uniform(4.0, 9.0) if rng.random() < 0.3 else 0.0
        values["compressor_current"] = round(current + 3.0 + jump, 2)
    cop = values.get("cop")
    if isinstance(cop, float):
        collapse = min(1.0, elapsed_s / 180.0)
        values["cop"] = round(max(0.8, cop - (cop - 1.0) * collapse), 2)
    supply = values.get("supply_temp")
    if isinstance(supply, float):
        values["supply_temp"] = round(supply - min(10.0, 0.5 * elapsed_s / 60.0), 2)


HEAT_PUMP_CURRENT_CEILING = 15.0  # A: a departing current stays under the overload threshold


def heat_pump_current_departs(values: Values, departure: float) -> None:
    """The compressor draws more than the outdoor temperature and its COP imply (a refrigerant
    overcharge, a failing fan motor), yet never more than a cold night's current."""
    current = values.get("compressor_current")
    if values.get("compressor_on") is True and isinstance(current, float):
        raised = min(current + departure, max(current, HEAT_PUMP_CURRENT_CEILING))
        values["compressor_current"] = round(raised, 2)


HEAT_PUMP: DeviceModel[HeatPumpState] = DeviceModel(
    name="heat_pump",
    product="heatpump-a7",
    firmwares=("2.0.3", "2.1.0"),
    metrics=("supply_temp", "outdoor_temp", "compressor_current", "cop", "vibration"),
    commands=frozenset({"reboot", "defrost"}),
    tolerance={
        "supply_temp": 8.0,
        "outdoor_temp": 30.0,
        "compressor_current": 10.0,
        "cop": 1.5,
        "vibration": 6.0,
    },
    stuck_impact_s=30 * 60.0,
    fixes={
        # An iced evaporator: efficiency and supply temperature sink until a defrost clears it.
        ("drift", "cop", "down"): Fix("command", method="defrost"),
        ("drift", "supply_temp", "down"): Fix("command", method="defrost"),
    },
    hardware=HardwareFailure(
        description="compressor failing: current spikes, COP collapses, supply cools",
        effect=heat_pump_compressor_failure,
        impact_s=20 * 60.0,
    ),
    wear=Wear(
        part="compressor bearings",
        metric="vibration",
        rise=5.5,
        failure_above=10.0,
        effect=_vibration_wear(5.5),
        failed=_vibration_failed,
    ),
    decorrelation=Decorrelation(
        metric="compressor_current",
        related=("outdoor_temp", "cop", "supply_temp"),
        description=(
            "the compressor draws more current than the outdoor temperature and its COP imply "
            "(refrigerant overcharge, failing fan motor)"
        ),
        cap=2.5,
        tolerance=2.0,
        effect=heat_pump_current_departs,
    ),
    initial_state=heat_pump_initial,
    sample=heat_pump_sample,
    with_usage=heat_pump_with_usage,
    apply_command=heat_pump_apply_command,
)


# --- freezer ------------------------------------------------------------------------------------

FREEZER_DEFROST_S = 180.0  # a defrost cycle asked for by command


@dataclass(frozen=True)
class FreezerState:
    """Cabinet temperature, compressor and door."""

    utc_offset_h: float
    cabinet_temp: float
    compressor_on: bool
    door_open_until: float = 0.0
    last: float | None = None
    usage: UsageProfile = UsageProfile.NORMAL
    defrost_until: float = 0.0
    vibration_base: float = 0.9  # mm/s of this unit's healthy compressor


def freezer_initial(rng: random.Random, utc_offset_h: float) -> FreezerState:
    """Return a freezer near its -18 °C setpoint."""
    return FreezerState(
        utc_offset_h=utc_offset_h,
        cabinet_temp=-18.0 + rng.uniform(-1.0, 1.0),
        compressor_on=rng.random() < 0.4,
        vibration_base=rng.uniform(0.7, 1.1),
    )


def freezer_with_usage(
    state: FreezerState, usage: UsageProfile, _rng: random.Random
) -> FreezerState:
    """Return the freezer with its usage profile."""
    return state if usage is UsageProfile.NORMAL else replace(state, usage=usage)


# Per profile: mean seconds between door openings (day, night), heat gain at rest (°C/min) and
# the thermostat's band (compressor on at, off at).
_FREEZER_USE: Mapping[UsageProfile, tuple[float | None, float | None, float, float, float]] = {
    UsageProfile.NORMAL: (900.0, 7200.0, 0.3, -17.0, -19.5),
    # Switched on, empty, never opened: the compressor starts half as often.
    UsageProfile.UNUSED: (None, None, 0.15, -17.0, -19.5),
    UsageProfile.BARELY_USED: (12 * 3600.0, None, 0.2, -17.0, -19.5),
    # Opened every few minutes, and a thermostat band so narrow that the compressor short-cycles.
    UsageProfile.MISUSED: (180.0, 900.0, 0.3, -17.8, -18.2),
}


def freezer_sample(
    now: float, state: FreezerState, rng: random.Random
) -> tuple[Values, FreezerState]:
    """Advance the freezer to ``now``: duty-cycled compressor, door opened now and then by day.

    During a defrost cycle the compressor rests and a heater warms the evaporator (and a little
    the cabinet). A running compressor vibrates at 0.7-1.1 mm/s, a resting one not at all.
    """
    dt = _step(state.last, now)
    hour = local_hour(now, state.utc_offset_h)
    day_gap, night_gap, rest_gain, on_at, off_at = _FREEZER_USE[state.usage]
    door_open_until = state.door_open_until
    mean_gap_s = day_gap if 7 <= hour < 22 else night_gap
    if mean_gap_s is not None and now >= door_open_until and rng.random() < dt / mean_gap_s:
        door_open_until = now + rng.uniform(5.0, 40.0)
    door_open = now < door_open_until
    defrost = now < state.defrost_until
    compressor_on = state.compressor_on and not defrost
    rate = (-0.8 if compressor_on else rest_gain) + (2.0 if door_open else 0.0)
    rate += 0.5 if defrost else 0.0
    cabinet = state.cabinet_temp + rate * dt / 60.0 + rng.gauss(0.0, 0.03)
    if defrost:
        compressor_on = False
    elif cabinet >= on_at:
        compressor_on = True
    elif cabinet <= off_at:
        compressor_on = False
    power = (110.0 + rng.gauss(0.0, 3.0)) if compressor_on else (2.0 + rng.gauss(0.0, 0.3))
    if door_open:
        power += 8.0  # the cabinet light
    if defrost:
        power += 120.0  # the defrost heater
    if compressor_on:
        vibration = state.vibration_base + rng.gauss(0.0, 0.05)
    else:
        vibration = 0.03 + abs(rng.gauss(0.0, 0.01))
    values: Values = {
        "cabinet_temp": round(cabinet, 2),
        "compressor_on": compressor_on,
        "door_open": door_open,
        "power_w": round(power, 1),
        "vibration": round(vibration, 3),
        "defrost": defrost,
    }
    new_state = replace(
        state,
        cabinet_temp=cabinet,
        compressor_on=compressor_on,
        door_open_until=door_open_until,
        last=now,
    )
    return values, new_state


def freezer_apply_command(
    state: FreezerState, method: str, _params: Mapping[str, Any], now: float
) -> FreezerState:
    """Return the freezer after a command: ``defrost`` runs a three-minute defrost cycle."""
    if method == "defrost":
        return replace(state, defrost_until=now + FREEZER_DEFROST_S)
    return state


def freezer_cooling_failure(values: Values, elapsed_s: float, _rng: random.Random) -> None:
    """The sealed system fails: the compressor runs without a pause and the cabinet warms."""
    values["compressor_on"] = True
    power = values.get("power_w")
    if isinstance(power, float):
        values["power_w"] = round(max(power, 125.0), 1)
    cabinet = values.get("cabinet_temp")
    if isinstance(cabinet, float):
        values["cabinet_temp"] = round(cabinet + 0.4 * elapsed_s / 60.0, 2)


def freezer_power_departs(values: Values, departure: float) -> None:
    """The running compressor draws more power than the cooling it delivers implies (worn
    valves, a condenser fan dragging): the cabinet cools as before, the bill grows."""
    power = values.get("power_w")
    if values.get("compressor_on") is True and isinstance(power, float):
        values["power_w"] = round(power + departure, 1)


FREEZER: DeviceModel[FreezerState] = DeviceModel(
    name="freezer",
    product="freezer-f3",
    firmwares=("3.2.0", "3.2.1"),
    metrics=("cabinet_temp", "power_w", "vibration"),
    commands=frozenset({"reboot", "defrost"}),
    tolerance={"cabinet_temp": 6.0, "power_w": 80.0, "vibration": 6.0},
    stuck_impact_s=45 * 60.0,
    fixes={
        # The cabinet warms: a door left ajar or a bad seal (the door switch may not notice).
        ("drift", "cabinet_temp", "up"): Fix(
            "customer",
            steps=(
                "Close the freezer door firmly and check that nothing keeps it ajar.",
                "Check that the door seal is clean and undamaged all the way round.",
                "Leave 10 cm of free space around the back of the freezer for ventilation.",
                "Do not load more than 5 kg of unfrozen food at once.",
            ),
            keywords=(("door",), ("seal",)),
        ),
    },
    hardware=HardwareFailure(
        description="cooling failure: the compressor runs without a pause, the cabinet warms",
        effect=freezer_cooling_failure,
        impact_s=15 * 60.0,
    ),
    wear=Wear(
        part="compressor",
        metric="vibration",
        rise=5.0,
        failure_above=10.0,
        effect=_vibration_wear(5.0),
        failed=_vibration_failed,
    ),
    decorrelation=Decorrelation(
        metric="power_w",
        related=("compressor_on", "cabinet_temp"),
        description=(
            "the running compressor draws more power than its cooling implies (worn valves, "
            "a dragging condenser fan)"
        ),
        cap=9.0,
        tolerance=6.0,
        effect=freezer_power_departs,
    ),
    initial_state=freezer_initial,
    sample=freezer_sample,
    with_usage=freezer_with_usage,
    apply_command=freezer_apply_command,
)


MODELS: Mapping[str, DeviceModel[Any]] = {m.name: m for m in (BOILER, HEAT_PUMP, FREEZER)}


def get_model(name: str) -> DeviceModel[Any]:
    """Return the model called ``name``; ValueError naming the known ones otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown device model {name!r}; known models: {known}") from None
