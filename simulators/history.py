"""History backfill: the fleet's simulated past, published before the live run.

Learned models are trained on stored history, and a fresh daemon has none. A backfill publishes,
for every device of the fleet, ``duration`` seconds of past telemetry sampled every ``step``
seconds, with explicit timestamps (``{"ts", "values"}``, QoS 1), through the broker as devices that
had buffered their readings would: the same models, the same device traits (drawn from the same
seed as the live devices), the same usage profiles. Each device's retained ``meta`` goes first, so
the daemon knows every device's model before any training selects devices by it.

The past holds no faults but these:

- ``wear_runs`` complete run-to-failure episodes on devices of ``wear_model``: the part wears out
  over a life drawn around ``wear_life`` (x 0.75-1.25), fails (the model's hardware failure, and
  its wear metric crosses the failure condition), and is replaced ``repair_after`` seconds later,
  so the device runs on with a new part. None ends in the last ``clean_tail`` seconds, so no
  failure's after-effects reach the windows of the rules at the start of the live run;
- the earlier part of the live run's ``wear`` faults that start ``worn`` (their part has been
  wearing since before the live run), so the device's stored history shows the rise.

Normal operation stays clean: no ``decorrelate`` fault, nor any other, is ever backfilled, since
it is the training data of the anomaly models. Wear runs are written to the ground truth with
``"history": true``.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from simulators.device import DeviceIdentity, telemetry_payload
from simulators.faults import ActiveFault, FaultKind, FaultSpec, apply_faults, start_fault
from simulators.models import UsageProfile, Values, get_model

__all__ = [
    "DEFAULT_WEAR_LIFE_S",
    "HistoryOptions",
    "PastFault",
    "WearRun",
    "carried_wear",
    "history_messages",
    "history_problems",
    "meta_messages",
    "plan_wear_runs",
    "wear_run_faults",
]

DEFAULT_WEAR_LIFE_S = 2 * 3600.0


@dataclass(frozen=True)
class HistoryOptions:
    """How much past to publish before the live run, and the run-to-failure episodes in it."""

    duration: float
    step: float = 30.0
    wear_runs: int = 0
    wear_model: str | None = None  # default: the model of the scenario's first wear fault
    wear_life: float | None = None  # default: that fault's life, else DEFAULT_WEAR_LIFE_S
    repair_after: float = 1800.0  # a technician replaces the failed part this long after
    clean_tail: float = 7200.0  # no wear run in the last seconds of the history
    seed: int | None = None  # default: the fleet's seed

    def __post_init__(self) -> None:
        """Reject options that could not be simulated, saying which."""
        for name in ("duration", "step"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a time > 0 (got {value})")
        if self.step > 60.0:
            raise ValueError(
                f"step must be at most 60s (got {self.step:g} s): the models integrate their "
                "physics in steps of at most a minute"
            )
        if self.duration < self.step:
            raise ValueError(f"duration ({self.duration:g} s) is shorter than one step")
        if self.wear_runs < 0:
            raise ValueError(f"wear_runs must be >= 0 (got {self.wear_runs})")
        for name in ("repair_after", "clean_tail"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a time >= 0 (got {value})")
        if self.wear_life is not None and not (
            math.isfinite(self.wear_life) and self.wear_life > 0
        ):
            raise ValueError(f"wear_life must be a time > 0 (got {self.wear_life})")
        if self.wear_model is not None:
            get_model(self.wear_model)  # ValueError naming the known models


@dataclass(frozen=True)
class WearRun:
    """One run-to-failure episode of the history: a part fitted new at ``start`` that fails."""

    fault_id: str
    device: str
    start: float  # epoch seconds
    life: float  # seconds until it fails
    repair_after: float

    @property
    def fails_at(self) -> float:
        """Return when the part fails (epoch seconds)."""
        return self.start + self.life

    @property
    def repaired_at(self) -> float:
        """Return when the technician has replaced it (epoch seconds)."""
        return self.fails_at + self.repair_after


@dataclass
class PastFault:
    """A fault active on a device over part of the history, from its start to ``until``."""

    fault: ActiveFault
    until: float  # epoch seconds


def _wear_model(
    history: HistoryOptions, faults: Sequence[FaultSpec], models: dict[str, str]
) -> str:
    """Return the model whose devices wear out in the history (ValueError if none says which)."""
    if history.wear_model is not None:
        return history.wear_model
    for spec in faults:
        if spec.kind is FaultKind.WEAR and spec.device in models:
            return models[spec.device]
    raise ValueError(
        "history.wear_model: name the model whose devices wear out (no wear fault in the "
        "scenario says which)"
    )


def _wear_life(
    history: HistoryOptions, faults: Sequence[FaultSpec], model: str, models: dict[str, str]
) -> float:
    if history.wear_life is not None:
        return history.wear_life
    for spec in faults:
        if spec.kind is FaultKind.WEAR and models.get(spec.device) == model:
            return spec.effective_params["life"]
    return DEFAULT_WEAR_LIFE_S


def plan_wear_runs(
    history: HistoryOptions,
    identities: Sequence[DeviceIdentity],
    faults: Sequence[FaultSpec],
    end: float,
    seed: int,
) -> list[WearRun]:
    """Return the history's wear runs, each ending (repaired) before ``end - clean_tail``.

    Runs go round-robin to the normally used devices of the wear model (a device never used
    would not wear), those with a live wear fault left out (their history shows that fault);
    a device with several runs has them one after another, separated by random healthy spells.
    Raises ValueError when the runs do not fit.
    """
    if history.wear_runs == 0:
        return []
    models = {i.device_id: i.model.name for i in identities}
    model = _wear_model(history, faults, models)
    life = _wear_life(history, faults, model, models)
    live_wear = {spec.device for spec in faults if spec.kind is FaultKind.WEAR}
    eligible = [
        i.device_id
        for i in identities
        if i.model.name == model and i.usage is UsageProfile.NORMAL and i.device_id not in live_wear
    ]
    if not eligible:
        raise ValueError(
            f"history.wear_runs: no normally used {model} without a live wear fault to wear out"
        )
    rng = random.Random(f"{history.seed if history.seed is not None else seed}:history:runs")
    rng.shuffle(eligible)
    lives = [life * rng.uniform(0.75, 1.25) for _ in range(history.wear_runs)]
    per_device: dict[str, list[float]] = {}
    for n, run_life in enumerate(lives):
        per_device.setdefault(eligible[n % len(eligible)], []).append(run_life)
    span_start = end - history.duration
    span = history.duration - history.clean_tail
    runs = []
    for device, device_lives in per_device.items():
        needed = sum(device_lives) + history.repair_after * len(device_lives)
        slack = span - needed
        if slack < 0:
            raise ValueError(
                f"history.wear_runs: {len(device_lives)} run(s) of about {life / 3600:.3g} h on "
                f"{device}, each repaired {history.repair_after / 60:.0f} min after failing, need "
                f"{needed / 3600:.3g} h but the history leaves {max(span, 0) / 3600:.3g} h "
                f"before its clean tail ({history.clean_tail / 3600:.3g} h): lengthen the "
                "history, or shorten wear_life"
            )
        weights = [rng.random() for _ in range(len(device_lives) + 1)]
        gaps = [slack * w / sum(weights) for w in weights]
        cursor = span_start
        for k, run_life in enumerate(device_lives):
            cursor += gaps[k]
            fault_id = f"history-wear-{device}-{k + 1}"
            runs.append(WearRun(fault_id, device, cursor, run_life, history.repair_after))
            cursor += run_life + history.repair_after
    return sorted(runs, key=lambda run: run.start)


def history_problems(
    history: HistoryOptions,
    identities: Sequence[DeviceIdentity],
    faults: Sequence[FaultSpec],
    seed: int,
) -> list[tuple[tuple[str, ...], str]]:
    """Return (scenario location, message) for each reason the history cannot be planned."""
    problems: list[tuple[tuple[str, ...], str]] = []
    model = history.wear_model
    known = {i.model.name for i in identities}
    if model is not None and history.wear_runs > 0 and model not in known:
        problems.append((("history", "wear_model"), f"the fleet has no {model} device"))
        return problems
    try:
        plan_wear_runs(history, identities, faults, end=0.0, seed=seed)
    except ValueError as exc:
        problems.append((("history", "wear_runs"), str(exc).removeprefix("history.wear_runs: ")))
    return problems


def wear_run_faults(
    runs: Sequence[WearRun], identities: Sequence[DeviceIdentity]
) -> list[PastFault]:
    """Return each wear run as a fault on its device, active until its part is replaced."""
    by_id = {i.device_id: i for i in identities}
    past = []
    for run in runs:
        spec = FaultSpec(run.device, FaultKind.WEAR, params={"life": run.life}, id=run.fault_id)
        fault = start_fault(run.fault_id, spec, by_id[run.device].model, run.start)
        past.append(PastFault(fault, run.repaired_at))
    return past


def carried_wear(
    faults: Sequence[tuple[str, FaultSpec]],
    identities: Sequence[DeviceIdentity],
    end: float,
) -> list[PastFault]:
    """Return the history part of the live wear faults that start already ``worn``.

    The live run starts at ``end``; a fault starting ``start`` seconds into it with ``worn`` of
    its ``life`` used began wearing ``worn x life`` seconds before that.
    """
    by_id = {i.device_id: i for i in identities}
    past = []
    for fault_id, spec in faults:
        identity = by_id.get(spec.device)
        if spec.kind is not FaultKind.WEAR or identity is None:
            continue
        params = spec.effective_params
        if params["worn"] <= 0:
            continue
        began = end + spec.start - params["worn"] * params["life"]
        fresh = replace(spec, params={**spec.params, "worn": 0.0})
        past.append(PastFault(start_fault(fault_id, fresh, identity.model, began), end))
    return past


def meta_messages(
    identities: Sequence[DeviceIdentity], topic_prefix: str
) -> list[tuple[str, bytes]]:
    """Return each device's meta message (to publish retained, as the device does on connect)."""
    return [(f"{topic_prefix}/{i.device_id}/meta", orjson.dumps(i.meta)) for i in identities]


class _PastDevice:
    """One device replaying its past: the live device's traits, its own rng for the samples."""

    def __init__(
        self, identity: DeviceIdentity, seed: int, step: float, faults: Sequence[PastFault]
    ) -> None:
        model = identity.model
        traits = random.Random(identity.seed)  # as SimDevice draws them: the same device
        state = model.initial_state(traits, identity.utc_offset_h)
        self.state: Any = model.with_usage(state, identity.usage, traits)
        self.rng = random.Random(f"{identity.seed}:history:{seed}")
        self.phase = self.rng.uniform(0.0, step)
        self.identity = identity
        self.topic = ""
        self.faults = list(faults)

    def sample(self, now: float) -> Values:
        model = self.identity.model
        values, self.state = model.sample(now, self.state, self.rng)
        active = [p.fault for p in self.faults if p.fault.started_at <= now < p.until]
        return apply_faults(values, active, now, self.rng) if active else values


def history_messages(
    identities: Sequence[DeviceIdentity],
    topic_prefix: str,
    history: HistoryOptions,
    end: float,
    seed: int,
    faults: Sequence[PastFault] = (),
    stop: threading.Event | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yield (topic, payload) of every device's past telemetry, in time order, up to ``end``.

    Lazy: a consumer that publishes as it reads holds one step of the fleet in memory. Ends
    early when ``stop`` is set.
    """
    by_device: dict[str, list[PastFault]] = {}
    for past in faults:
        by_device.setdefault(past.fault.spec.device, []).append(past)
    devices = []
    for identity in identities:
        device = _PastDevice(identity, seed, history.step, by_device.get(identity.device_id, ()))
        device.topic = f"{topic_prefix}/{identity.device_id}/telemetry"
        devices.append(device)
    start = end - history.duration
    steps = math.ceil(history.duration / history.step)
    for k in range(steps):
        if stop is not None and stop.is_set():
            return
        base = start + k * history.step
        for device in devices:
            now = base + device.phase
            if now >= end:
                continue
            yield device.topic, telemetry_payload(device.sample(now), now, flat=False)
