"""Fault kinds, their effect on telemetry, how each can be fixed and when the customer notices.

Everything here is pure: effects take the sample time and the device's rng; the device and the
fleet decide when faults start and end.

The fixability matrix: a fault ends only with its real fix (or at the end of its ``duration``,
standing for a technician's visit or a problem that goes away by itself), and its effect on the
telemetry goes with it, so a rule watching that telemetry resolves.

- ``command``: the device fixes it when it accepts that command with suitable parameters
  (``Fix.fixed_by``); any other command answers ok and changes nothing.
- ``customer``: the customer fixes it by following ``steps``; the scenario says when
  (``customer_fix_after``, counted from the fault's start or from the first notice the daemon
  sends about the device), or the customer never does.
- ``none``: a technician must come.

Two kinds aim at learned models rather than rules. ``decorrelate`` breaks one relation between
metrics of the model (``DeviceModel.decorrelation``) while every metric stays in its normal range,
so no threshold on one metric sees it. ``wear`` wears a part out over ``life`` seconds (its wear
metric rises faster and faster, ``DeviceModel.wear``) and then fails it with the model's hardware
failure; ``worn`` starts the fault with part of the life already used up.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from simulators.models import (
    Decorrelation,
    DeviceModel,
    Fix,
    HardwareFailure,
    Values,
    Wear,
    wear_level,
)

__all__ = [
    "DEFAULT_PARAMS",
    "METRIC_KINDS",
    "TIME_PARAMS",
    "ActiveFault",
    "CustomerFixFrom",
    "FaultKind",
    "FaultSpec",
    "Fix",
    "apply_faults",
    "blocks_telemetry",
    "check_fault_target",
    "customer_impact_after",
    "drift_direction",
    "fix_for",
    "start_fault",
]

CustomerFixFrom = Literal["start", "notice"]


class FaultKind(StrEnum):
    """What goes wrong."""

    DRIFT = "drift"  # a metric moves away linearly by `rate` per minute
    SPIKE = "spike"  # isolated outliers of `magnitude`, with `probability` per message
    STUCK = "stuck"  # the sensor repeats its last value (a reboot fixes it)
    DROPOUT = "dropout"  # telemetry stops, the connection stays up
    OFFLINE = "offline"  # the network drops uncleanly: the broker publishes the LWT
    HARDWARE = "hardware"  # a part fails (model-specific effect); only a technician fixes it
    DECORRELATE = "decorrelate"  # one metric departs from what related metrics imply
    WEAR = "wear"  # a part wears out over `life` seconds, then fails (hardware)


# Parameters each kind accepts, with their defaults.
DEFAULT_PARAMS: Mapping[FaultKind, Mapping[str, float]] = {
    FaultKind.DRIFT: {"rate": 1.0},
    FaultKind.SPIKE: {"magnitude": 10.0, "probability": 0.2},
    FaultKind.STUCK: {},
    FaultKind.DROPOUT: {},
    FaultKind.OFFLINE: {},
    FaultKind.HARDWARE: {},
    FaultKind.DECORRELATE: {"rate": 0.5},  # units of the model's metric per minute
    FaultKind.WEAR: {"life": 3600.0, "worn": 0.0},  # seconds to failure; fraction already used
}
# Parameters given as times (``life: 2h``), in seconds.
TIME_PARAMS = frozenset({"life"})
METRIC_KINDS = frozenset({FaultKind.DRIFT, FaultKind.SPIKE, FaultKind.STUCK})


@dataclass(frozen=True)
class FaultSpec:
    """One fault to inject: on which device, what, from when (seconds after fleet start), how long.

    ``duration=None`` lasts until fixed or until the fleet stops. ``id`` defaults to one the fleet
    derives from the fault's position.

    ``customer_fix_after``: for a fault the customer can fix, the seconds after which they do,
    counted from the fault's start (``customer_fix_from="start"``: they notice it themselves) or
    from the first notice the daemon sends about the device while the fault is active
    (``"notice"``: they follow guidance, and without guidance never act). None: never.
    ``customer_impact_after`` overrides the seconds until the customer notices the fault.
    ``customer_compliance`` overrides the fleet's probability that this fault's customer follows
    guidance whose steps fix it.
    """

    device: str
    kind: FaultKind
    metric: str | None = None
    start: float = 0.0
    duration: float | None = None
    params: Mapping[str, float] = field(default_factory=dict)
    id: str | None = None
    customer_fix_after: float | None = None
    customer_fix_from: CustomerFixFrom = "start"
    customer_impact_after: float | None = None
    customer_compliance: float | None = None

    def __post_init__(self) -> None:
        """Reject a spec that could not run, with a message that says what to change."""
        kind = FaultKind(self.kind)  # ValueError for an unknown kind
        object.__setattr__(self, "kind", kind)
        if not self.device:
            raise ValueError("fault needs a device id")
        if kind in METRIC_KINDS and not self.metric:
            raise ValueError(f"{kind} fault needs a metric")
        if kind not in METRIC_KINDS and self.metric:
            raise ValueError(f"{kind} fault takes no metric (got {self.metric!r})")
        if not (math.isfinite(self.start) and self.start >= 0):
            raise ValueError(f"start must be a time >= 0 (got {self.start})")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration must be a time > 0 (got {self.duration})")
        allowed = DEFAULT_PARAMS[kind]
        for name, value in self.params.items():
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise ValueError(f"{kind} fault has no parameter {name!r} (known: {known})")
            if not math.isfinite(value):
                raise ValueError(f"parameter {name} must be a finite number (got {value})")
        probability = self.params.get("probability")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be between 0 and 1 (got {probability})")
        self._check_kind_params()
        self._check_customer()

    def _check_kind_params(self) -> None:
        params = self.effective_params
        if self.kind is FaultKind.DECORRELATE and params["rate"] <= 0:
            raise ValueError(
                f"decorrelate rate must be > 0 (got {params['rate']}): the model says which way "
                "its metric departs"
            )
        if self.kind is FaultKind.WEAR:
            if params["life"] <= 0:
                raise ValueError(f"life must be a time > 0 (got {params['life']})")
            if not 0.0 <= params["worn"] < 1.0:
                raise ValueError(f"worn must be at least 0 and below 1 (got {params['worn']})")

    def _check_customer(self) -> None:
        for name in ("customer_fix_after", "customer_impact_after"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a time >= 0 (got {value})")
        if self.customer_fix_from not in ("start", "notice"):
            raise ValueError(
                f"customer_fix_from must be 'start' or 'notice' (got {self.customer_fix_from!r})"
            )
        if self.customer_fix_from == "notice" and self.customer_fix_after is None:
            raise ValueError("customer_fix_from 'notice' needs customer_fix_after")
        compliance = self.customer_compliance
        if compliance is not None and not 0.0 <= compliance <= 1.0:
            raise ValueError(f"customer_compliance must be between 0 and 1 (got {compliance})")

    @property
    def effective_params(self) -> dict[str, float]:
        """Return the parameters with the kind's defaults filled in."""
        return {**DEFAULT_PARAMS[self.kind], **self.params}

    @property
    def remaining_life(self) -> float | None:
        """Return the seconds from the start of a ``wear`` fault until the part fails."""
        if self.kind is not FaultKind.WEAR:
            return None
        params = self.effective_params
        return (1.0 - params["worn"]) * params["life"]


def check_fault_target(spec: FaultSpec, model: DeviceModel[Any]) -> None:
    """Raise ValueError unless the fault's metric is a numeric metric of ``model``."""
    if spec.metric is not None and spec.metric not in model.metrics:
        known = ", ".join(model.metrics)
        raise ValueError(
            f"{spec.kind} fault on {spec.device}: {model.name} has no numeric metric "
            f"{spec.metric!r} (choose from {known})"
        )


_REBOOT = Fix("command", method="reboot")
_NETWORK_STEPS = Fix(
    "customer",
    steps=(
        "Check that the internet router is switched on and connected.",
        "Switch the device's power off for 10 seconds and on again.",
    ),
    keywords=(("router",), ("power",)),
)
# The default fix per kind; a model's `fixes` take precedence (see fix_for).
_DEFAULT_FIXES: Mapping[FaultKind, Fix] = {
    FaultKind.DRIFT: Fix("none"),  # a sensor or part wearing out: a technician's job
    FaultKind.SPIKE: Fix("none"),
    FaultKind.STUCK: _REBOOT,
    FaultKind.DROPOUT: _REBOOT,
    FaultKind.OFFLINE: _NETWORK_STEPS,
    FaultKind.HARDWARE: Fix("none"),
    FaultKind.DECORRELATE: Fix("none"),  # a valve, a fan, a charge: a technician's job
    FaultKind.WEAR: Fix("none"),  # a new part, fitted by a technician
}


def drift_direction(spec: FaultSpec) -> Literal["up", "down"] | None:
    """Return which way a drift moves its metric; None for other kinds or a zero rate."""
    if spec.kind is not FaultKind.DRIFT:
        return None
    rate = spec.effective_params["rate"]
    if rate > 0:
        return "up"
    if rate < 0:
        return "down"
    return None


def fix_for(model: DeviceModel[Any], spec: FaultSpec) -> Fix:
    """Return how ``spec`` on a device of ``model`` can be fixed.

    The model's own ``fixes`` come first, by (kind, metric, drift direction), then by (kind,
    metric) for either direction; otherwise the default of the fault's kind.
    """
    kind = spec.kind.value
    for key in ((kind, spec.metric, drift_direction(spec)), (kind, spec.metric, None)):
        fix = model.fixes.get(key)
        if fix is not None:
            return fix
    return _DEFAULT_FIXES[spec.kind]


def customer_impact_after(model: DeviceModel[Any], spec: FaultSpec) -> float | None:
    """Return seconds from onset until the customer would notice if the fault persisted.

    None means the customer never notices (outliers, or monitoring lost while the device works).
    The spec's own ``customer_impact_after`` wins over the model's estimate.
    """
    if spec.customer_impact_after is not None:
        return spec.customer_impact_after
    if spec.kind is FaultKind.DRIFT:
        rate = abs(spec.effective_params["rate"])
        tolerance = model.tolerance.get(spec.metric or "")
        if rate == 0 or tolerance is None:
            return None
        return 60.0 * tolerance / rate
    if spec.kind is FaultKind.DECORRELATE:
        return 60.0 * model.decorrelation.tolerance / spec.effective_params["rate"]
    if spec.kind is FaultKind.WEAR:
        return spec.remaining_life  # the part fails: the customer notices at once
    impacts = {
        FaultKind.STUCK: model.stuck_impact_s,
        FaultKind.OFFLINE: 30 * 60.0,  # remote control in the customer's app is gone
        FaultKind.HARDWARE: model.hardware.impact_s,
    }
    return impacts.get(spec.kind)


@dataclass
class ActiveFault:
    """A fault that has started on a device: its spec and what its effect remembers."""

    fault_id: str
    spec: FaultSpec
    fix: Fix
    started_at: float  # epoch seconds
    frozen: float | None = None  # the value a stuck sensor repeats
    hardware: HardwareFailure | None = None  # what a hardware (or worn-out) part does on failure
    wear: Wear | None = None  # how a wear fault shows on this model
    decorrelation: Decorrelation | None = None  # the relation a decorrelate fault breaks

    @property
    def fails_at(self) -> float | None:
        """Return when (epoch seconds) a wear fault's part fails; None for other kinds."""
        remaining = self.spec.remaining_life
        return None if remaining is None else self.started_at + remaining

    def apply(self, values: Values, now: float, rng: random.Random) -> None:
        """Apply this fault's effect on ``values`` (in place) for a sample taken at ``now``."""
        kind = self.spec.kind
        elapsed = max(now - self.started_at, 0.0)
        if kind is FaultKind.HARDWARE:
            if self.hardware is not None:
                self.hardware.effect(values, elapsed, rng)
            return
        if kind is FaultKind.WEAR:
            self._wear(values, now, rng)
            return
        if kind is FaultKind.DECORRELATE:
            if self.decorrelation is not None:
                departure = self.spec.effective_params["rate"] * elapsed / 60.0
                self.decorrelation.effect(values, min(departure, self.decorrelation.cap))
            return
        metric = self.spec.metric
        if metric is None:
            return
        current = values.get(metric)
        if not isinstance(current, float | int) or isinstance(current, bool):
            return
        params = self.spec.effective_params
        kind = self.spec.kind
        if kind is FaultKind.DRIFT:
            minutes = max(now - self.started_at, 0.0) / 60.0
            values[metric] = round(current + params["rate"] * minutes, 3)
        elif kind is FaultKind.SPIKE:
            if rng.random() < params["probability"]:
                sign = 1.0 if rng.random() < 0.5 else -1.0
                values[metric] = round(current + sign * params["magnitude"], 3)
        elif kind is FaultKind.STUCK:
            if self.frozen is None:
                self.frozen = float(current)
            values[metric] = self.frozen

    def _wear(self, values: Values, now: float, rng: random.Random) -> None:
        """Wear the part (its metric rises), or, past its life, fail it."""
        fails_at = self.fails_at
        if self.wear is None or fails_at is None:
            return
        if now < fails_at:
            params = self.spec.effective_params
            used = params["worn"] + (now - self.started_at) / params["life"]
            self.wear.effect(values, wear_level(used), rng)
            return
        if self.hardware is not None:
            self.hardware.effect(values, now - fails_at, rng)
        self.wear.failed(values, rng)


def start_fault(fault_id: str, spec: FaultSpec, model: DeviceModel[Any], now: float) -> ActiveFault:
    """Return ``spec`` started at ``now`` on a device of ``model``, with its model's effects."""
    kind = spec.kind
    return ActiveFault(
        fault_id,
        spec,
        fix_for(model, spec),
        started_at=now,
        hardware=model.hardware if kind in (FaultKind.HARDWARE, FaultKind.WEAR) else None,
        wear=model.wear if kind is FaultKind.WEAR else None,
        decorrelation=model.decorrelation if kind is FaultKind.DECORRELATE else None,
    )


def apply_faults(
    values: Values, faults: Sequence[ActiveFault], now: float, rng: random.Random
) -> Values:
    """Return ``values`` as the faulty sensors report them at ``now``."""
    result = dict(values)
    for fault in faults:
        fault.apply(result, now, rng)
    return result


def blocks_telemetry(faults: Sequence[ActiveFault]) -> bool:
    """Return True when an active fault keeps the device from publishing telemetry."""
    return any(f.spec.kind in (FaultKind.DROPOUT, FaultKind.OFFLINE) for f in faults)
