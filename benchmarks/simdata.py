"""Simulated telemetry for the learned-model benchmarks, shaped as the daemon stores it.

Shared by benchmarks/models_live.py (live cost) and benchmarks/models_offline.py (detection on
the simulator's physics): one device's telemetry straight from the simulator's models
(`simulators/models.py`) and faults (`simulators/faults.py`), no broker, no sleeping; and which
simulated device model a spec's `match` selects.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from daemon.core.engine import matches
from daemon.core.modeldata import Series
from daemon.core.modelspec import ModelSpec
from daemon.core.twin import DeviceTwin
from simulators.faults import apply_faults
from simulators.history import PastFault
from simulators.models import MODELS, DeviceModel, UsageProfile

ZONES = (-1.0, 0.0, 1.0, 2.0)  # the devices' UTC offsets (their daily cycles differ)


def simulate(
    model: DeviceModel[Any],
    seed: str,
    start_s: float,
    end_s: float,
    step_s: float,
    faults: Sequence[PastFault] = (),
    usage: UsageProfile = UsageProfile.NORMAL,
    text: dict[str, list[tuple[int, str]]] | None = None,
) -> dict[str, Series]:
    """One device's telemetry from `start_s` to `end_s`, a sample every `step_s`: per metric
    (times in ms, values); booleans are 0/1 as the daemon stores them, text is left out.

    The device's traits and UTC offset (one of `ZONES`) come from `seed`, its usage profile
    from `usage` (`model.with_usage`, as a fleet device gets it); `faults` act between their
    start and `until`. Text values (attributes, such as a boiler's `mode`) are appended to
    `text` when it is given, per name as (time in ms, value)."""
    traits = random.Random(seed)
    state = model.initial_state(traits, traits.choice(ZONES))
    state = model.with_usage(state, usage, traits)
    rng = random.Random(f"{seed}:samples")
    columns: dict[str, tuple[list[int], list[float]]] = {}
    now = start_s + rng.uniform(0.0, step_s)
    while now < end_s:
        values, state = model.sample(now, state, rng)
        active = [p.fault for p in faults if p.fault.started_at <= now < p.until]
        if active:
            values = apply_faults(values, active, now, rng)
        ms = int(now * 1000)
        for name, value in values.items():
            if isinstance(value, bool):
                number = 1.0 if value else 0.0
            elif isinstance(value, int | float):
                number = float(value)
            else:
                if text is not None and isinstance(value, str):
                    text.setdefault(name, []).append((ms, value))
                continue
            times, numbers = columns.setdefault(name, ([], []))
            times.append(ms)
            numbers.append(number)
        now += step_s
    return {
        name: (np.asarray(times, dtype=np.int64), np.asarray(numbers, dtype=np.float64))
        for name, (times, numbers) in columns.items()
    }


def probe(model: DeviceModel[Any]) -> DeviceTwin:
    """A device twin of `model` with the meta a simulated device publishes (for `match`)."""
    return DeviceTwin(f"{model.name}-probe", first_seen_ms=0, meta={"model": model.product})


def kind_of(spec: ModelSpec) -> DeviceModel[Any]:
    """The simulated device model whose devices the spec's `match` selects."""
    for model in MODELS.values():
        if matches(spec.match, probe(model)):
            return model
    sys.exit(f"{spec.name}: its match {spec.match} selects none of the simulated device models")
