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
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from simulators.models import DeviceModel, Fix, HardwareFailure, Values

__all__ = [
    "DEFAULT_PARAMS",
    "METRIC_KINDS",
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


# Parameters each kind accepts, with their defaults.
DEFAULT_PARAMS: Mapping[FaultKind, Mapping[str, float]] = {
    FaultKind.DRIFT: {"rate": 1.0},
    FaultKind.SPIKE: {"magnitude": 10.0, "probability": 0.2},
    FaultKind.STUCK: {},
    FaultKind.DROPOUT: {},
    FaultKind.OFFLINE: {},
    FaultKind.HARDWARE: {},
}
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
        self._check_customer()

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

    @property
    def effective_params(self) -> dict[str, float]:
        """Return the parameters with the kind's defaults filled in."""
        return {**DEFAULT_PARAMS[self.kind], **self.params}


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
)
# The default fix per kind; a model's `fixes` take precedence (see fix_for).
_DEFAULT_FIXES: Mapping[FaultKind, Fix] = {
    FaultKind.DRIFT: Fix("none"),  # a sensor or part wearing out: a technician's job
    FaultKind.SPIKE: Fix("none"),
    FaultKind.STUCK: _REBOOT,
    FaultKind.DROPOUT: _REBOOT,
    FaultKind.OFFLINE: _NETWORK_STEPS,
    FaultKind.HARDWARE: Fix("none"),
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
    hardware: HardwareFailure | None = None  # what a hardware fault does on this model

    def apply(self, values: Values, now: float, rng: random.Random) -> None:
        """Apply this fault's effect on ``values`` (in place) for a sample taken at ``now``."""
        if self.spec.kind is FaultKind.HARDWARE:
            if self.hardware is not None:
                self.hardware.effect(values, max(now - self.started_at, 0.0), rng)
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
