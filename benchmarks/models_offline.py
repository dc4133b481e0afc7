"""Offline outcomes of the shipped learned models on the simulator's physics (no broker, no daemon).

What `benchmarks/service_outcomes.py` measures in real time over one 10-minute run, measured here
faster than real time over many devices, times of day and usage profiles, with the daemon's own
code at every step:

1. Training, as `frontline train` does it: the fleet of `simulators/scenarios/service.yaml`
   (24 devices, its usage profiles, its heat-pump wear runs and the carried wear of its live wear
   fault) with the seed replaced by `--seed`; its 12-hour history every 30 s made by the history
   backfill's own generator (`simulators.history.history_messages`, the payloads decoded as the
   daemon stores them: booleans 0/1, text left out) and read back through an in-memory store by
   the trainer's `gather`, then `fit` and `restore` (the registry's round trip minus the files).
   The history ends at a time of day drawn from the seed.
2. Held-out devices (their own seed, never in training), each simulated at the live interval of
   service.yaml (2 s), starting at a time spread over the 24 hours after training ended (a model
   retrained nightly scores a whole day): per device model, healthy devices of every usage
   profile (`--hours` each), devices whose relation breaks (the model's `decorrelate` fault at
   the service scenario's rate, 1 unit/min, and at 0.5/min, from 10 minutes in), and, for a model
   that has a `rul` spec, devices whose part wears out (the `wear` fault, lives of 1.5-2.5 h like
   the history's) and fails 65 minutes in. Each model's held-out devices are the same whatever
   other specs are loaded.
3. Scoring, as `ModelService` does it: every spec's `interval`, each device's row from its
   trailing window (`live_row` over the points with `now - window < ts <= now`; for `rul`,
   `aligned` on the training step and `features_at_end`), scored by the trained model.
4. Alerting: the rules of `rules/learned.yaml` evaluated by the rule engine (`evaluate_group`, the
   alert state machine with `for` and `keep_firing_for`) every group interval, over the model
   outputs (read for three scoring intervals, as in the daemon), the telemetry windows the rules
   read and the device's attributes (`state("mode")`). Not `daemon.core.replay`: it keeps a
   model's output for one second only, so after each of its periodic trims (every 256 ticks)
   `anomaly()` reads unknown until the model's next output.

Reported per model: detections of the decorrelation (how long after the fault's start, and
whether before the customer notices, `customer_impact_at` in the fault's ground truth), false
alerts per 1,000 device-hours (firings on a device with no fault active, its spans before a
fault's start included), and for the `rul` model its prediction against the true time left, and
when its rule fired before the failure.

Usage:

    python benchmarks/models_offline.py [--seed 2] [--hours 3] [--models DIR] [--rules FILE]
                                        [--devices] [--write-docs]

`--seed` 1 was the tuning seed of the shipped specs (3 and 4 the checks), 2 (the default) the
evaluation seed. `--models`/`--rules` try other specs and rules; `--devices` prints every firing
per device; `--write-docs` replaces the block between the models-offline markers in
docs/models.md. About 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.docblock import replace_block  # noqa: E402
from benchmarks.simdata import kind_of, simulate  # noqa: E402
from daemon.adapters.model_files import load_models  # noqa: E402
from daemon.config import RulesSettings  # noqa: E402
from daemon.core.alerts import AlertState, Phase  # noqa: E402
from daemon.core.engine import DeviceContext, Watch, evaluate_group, matches  # noqa: E402
from daemon.core.expr import model_refs  # noqa: E402
from daemon.core.modeldata import Series, aligned, feature_rows, grid, live_row  # noqa: E402
from daemon.core.modelspec import RUL_UNITS, ModelSpec, score_metric  # noqa: E402
from daemon.core.replay import horizons  # noqa: E402
from daemon.core.rul import features_at_end  # noqa: E402
from daemon.core.rulefmt import Group, Rule, parse_rule_file  # noqa: E402
from daemon.core.twin import DeviceTwin  # noqa: E402
from daemon.core.windows import SeriesWindows  # noqa: E402
from daemon.learning.service import STALE_INTERVALS  # noqa: E402
from daemon.learning.trained import Trained, restore  # noqa: E402
from daemon.learning.trainer import Dataset, fit, gather  # noqa: E402
from daemon.rules import alert_params  # noqa: E402
from simulators.faults import FaultKind, FaultSpec, customer_impact_after, start_fault  # noqa: E402
from simulators.fleet import fault_ids, plan_devices  # noqa: E402
from simulators.history import (  # noqa: E402
    PastFault,
    WearRun,
    carried_wear,
    history_messages,
    plan_wear_runs,
    wear_run_faults,
)
from simulators.models import DeviceModel, UsageProfile  # noqa: E402
from simulators.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "simulators" / "scenarios" / "service.yaml"
MODELS_DIR = ROOT / "models"
RULES_FILE = ROOT / "rules" / "learned.yaml"
DOCS = ROOT / "docs" / "models.md"
MARK_START = "<!-- models-offline:start -->"
MARK_END = "<!-- models-offline:end -->"

BASE_S = 1_767_225_600.0  # 2026-01-01 00:00 UTC; the history ends on that day
DAY_S = 86_400.0
# Healthy held-out devices per device model and usage profile, each watched for --hours.
HEALTHY = {
    UsageProfile.NORMAL: 12,
    UsageProfile.UNUSED: 4,
    UsageProfile.BARELY_USED: 8,
    UsageProfile.MISUSED: 8,
}
RATES = (1.0, 0.5)  # decorrelate: the service scenario's rate (units/min), and a slower one
DECORRELATED = 6  # devices per rate
FAULT_AT_S = 600.0  # the decorrelation starts 10 minutes into its device's watch
FAULT_WATCH_S = 2700.0  # and the device is watched for 45 minutes
WORN = 6  # devices whose part wears out (models with a rul spec)
FAILS_AT_S = 3900.0  # their part fails 65 minutes into the watch
WEAR_LIFE_S = (5400.0, 9000.0)  # lives of 1.5-2.5 h, as the history's runs (2 h x 0.75-1.25)
TRUE_LEFT_MIN = (60, 45, 30, 20, 10, 5, 2)  # where the rul prediction is compared with the truth
LEAD_S = 900.0  # telemetry simulated before the first scoring: every window is full
EMPTY: Series = (np.empty(0, dtype=np.int64), np.empty(0))


# -- training -----------------------------------------------------------------------------------
class MemoryStore:
    """The series store's `query_range`, over the decoded history (what `gather` reads)."""

    def __init__(self, series: dict[tuple[str, str], Series]) -> None:
        self.series = series

    async def query_range(
        self, device: str, metric: str, start_ms: int, end_ms: int, limit: int | None = None
    ) -> list[tuple[int, float]]:
        found = self.series.get((device, metric))
        if found is None:
            return []
        times, values = found
        lo = int(np.searchsorted(times, start_ms, side="left"))
        hi = int(np.searchsorted(times, end_ms, side="right"))
        if limit is not None:
            hi = min(hi, lo + limit)
        return list(zip(times[lo:hi].tolist(), values[lo:hi].tolist(), strict=True))


@dataclass
class Training:
    end_s: float
    history_s: float
    history_step_s: float
    live_step_s: float  # the scenario's live telemetry interval: the held-out devices' too
    devices: int
    messages: int
    profiles: dict[str, int]
    runs: list[WearRun]
    trained: dict[str, Trained] = field(default_factory=dict)
    data: dict[str, Dataset] = field(default_factory=dict)
    failed_rows: dict[str, int] = field(default_factory=dict)  # rows seeing a failed part


def fleet_history(seed: int) -> tuple[Training, MemoryStore, list[DeviceTwin]]:
    """The service scenario's fleet and history with `seed`, decoded as the daemon stores it."""
    scenario = load_scenario(SCENARIO)
    options = scenario.options()
    assert options.history is not None, f"{SCENARIO} has no history"
    history = replace(options.history, seed=seed)
    options = replace(options, seed=seed, history=history)
    identities = plan_devices(options)
    end_s = BASE_S + random.Random(f"{seed}:history-end").uniform(0.0, DAY_S)
    runs = plan_wear_runs(history, identities, options.faults, end_s, seed)
    past = wear_run_faults(runs, identities)
    past += carried_wear(
        list(zip(fault_ids(options.faults), options.faults, strict=True)), identities, end_s
    )
    columns: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    messages = 0
    for topic, payload in history_messages(identities, "devices", history, end_s, seed, past):
        device = topic.split("/")[1]
        message = orjson.loads(payload)
        messages += 1
        for name, value in message["values"].items():
            if isinstance(value, bool):
                number = 1.0 if value else 0.0
            elif isinstance(value, int | float):
                number = float(value)
            else:
                continue
            times, numbers = columns.setdefault((device, name), ([], []))
            times.append(int(message["ts"]))
            numbers.append(number)
    series = {
        key: (np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.float64))
        for key, (t, v) in columns.items()
    }
    start_ms = int((end_s - history.duration) * 1000)
    twins = [DeviceTwin(i.device_id, first_seen_ms=start_ms, meta=dict(i.meta)) for i in identities]
    profiles: dict[str, int] = {}
    for identity in identities:
        key = f"{identity.model.name} {identity.usage.value}"
        profiles[key] = profiles.get(key, 0) + 1
    info = Training(
        end_s,
        history.duration,
        history.step,
        scenario.interval,
        len(identities),
        messages,
        profiles,
        runs,
    )
    return info, MemoryStore(series), twins


def train(specs: Sequence[ModelSpec], seed: int) -> Training:
    """Every spec trained on the fleet's history by the trainer's own `gather` and `fit`."""
    info, store, twins = fleet_history(seed)
    now_ms = int(info.end_s * 1000)
    for spec in specs:
        data = asyncio.run(gather(spec, store, twins, now_ms))  # type: ignore[arg-type]
        meta, arrays = fit(spec, data, now_ms)
        info.trained[spec.name] = restore(spec, 1, meta, arrays)
        info.data[spec.name] = data
        if spec.kind == "anomaly":
            info.failed_rows[spec.name] = failed_rows(spec, store, twins, info.runs, now_ms)
    return info


def failed_rows(
    spec: ModelSpec,
    store: MemoryStore,
    twins: Sequence[DeviceTwin],
    runs: Sequence[WearRun],
    now_ms: int,
) -> int:
    """How many of the training rows `gather` keeps have a window that saw a failed part: from
    a wear run's failure until its repair (the ground truth; the trainer cannot tell them)."""
    window_ms = int(spec.window_s * 1000)
    start_ms = now_ms - int(spec.training.history_s * 1000)
    count = 0
    for twin in twins:
        spans = [(r.fails_at * 1000, r.repaired_at * 1000) for r in runs if r.device == twin.id]
        if not spans or not matches(spec.match, twin):
            continue
        history = {m: store.series.get((twin.id, m), EMPTY) for m in spec.metrics}
        first = min((int(t[0]) for t, _ in history.values() if len(t)), default=None)
        if first is None:
            continue
        at = grid(max(start_ms, first), now_ms, int(spec.training.step_s * 1000))
        kept = at[~np.isnan(feature_rows(history, spec.features, window_ms, at)).any(axis=1)]
        for fails, repaired in spans:
            count += int(((kept > fails) & (kept - window_ms < repaired)).sum())
    return count


def training_figures(trained: Trained, data: Dataset, failed: int | None) -> str:
    """What the fit says about itself (the version's metadata), in one line, and how many of
    its rows saw a failed part."""
    meta = trained.meta
    params = meta["params"]
    if trained.anomaly is not None:
        model = trained.anomaly
        extra = ""
        state = model.detector.state()
        if "components" in state:
            extra = f"; {int(state['components'])} of {len(model.features)} components kept"
        if failed:
            extra += (
                f"; {failed:,} rows ({100 * failed / meta['rows']:.1f} %) saw a part that had "
                "failed and was not yet replaced"
            )
        scores = model.score(data.rows).raw
        quantile = float(np.quantile(scores, model.quantile))
        return (
            f"{meta['rows']:,} rows from {meta['devices']} devices ({meta['dropped_rows']:,} "
            f"with a feature missing, left out){extra}; threshold {model.factor:g} x "
            f"{quantile:.3g} (the {100 * model.quantile:g}th percentile of the training scores)"
        )
    quality = params.get("quality", {})
    failed = sum(1 for *_, ended in data.lives if ended)
    return (
        f"{meta['rows']:,} rows in {meta['lives']} lives ({failed} ended in a failure), "
        f"cv RMSE {quality.get('cv_rmse', math.nan):.1f} {trained.spec.unit} "
        f"(baseline {quality.get('baseline_rmse', math.nan):.1f})"
    )


# -- held-out devices ---------------------------------------------------------------------------
@dataclass
class Case:
    device: str
    model: DeviceModel[Any]
    kind: str  # healthy | decorrelate | wear
    usage: UsageProfile
    start_s: float  # the first scoring
    end_s: float
    rate: float | None = None  # decorrelate
    fault_s: float | None = None  # the decorrelation's start; the wear's failure
    impact_s: float | None = None  # when the customer notices (ground truth)
    faults: list[PastFault] = field(default_factory=list)
    life_s: float | None = None
    scores: dict[str, Series] = field(default_factory=dict)  # model -> its output series
    fired: list[tuple[str, int]] = field(default_factory=list)  # (alert, ms) firing transitions


def held_out(
    models: Sequence[DeviceModel[Any]], wear: set[str], seed: int, hours: float, end_s: float
) -> list[Case]:
    """The held-out devices of each model, at times of day spread over the next 24 hours."""
    cases: list[Case] = []
    for model in models:  # each model's devices from its own draws, whatever else is loaded
        rng = random.Random(f"{seed}:held-out:{model.name}")

        def starts(count: int, rng: random.Random = rng) -> list[float]:
            offsets = [end_s + (n + rng.random()) * DAY_S / count for n in range(count)]
            rng.shuffle(offsets)
            return offsets

        prefix = f"eval{seed}-{model.name}"
        for usage, count in HEALTHY.items():
            for n, start in enumerate(starts(count)):
                device = f"{prefix}-{usage.value}-{n}"
                cases.append(Case(device, model, "healthy", usage, start, start + hours * 3600))
        for rate in RATES:
            for n, start in enumerate(starts(DECORRELATED)):
                device = f"{prefix}-decorrelate{rate:g}-{n}"
                at = start + FAULT_AT_S
                spec = FaultSpec(device, FaultKind.DECORRELATE, params={"rate": rate}, id=device)
                impact = customer_impact_after(model, spec)
                assert impact is not None
                fault = PastFault(start_fault(device, spec, model, at), math.inf)
                cases.append(
                    Case(
                        device,
                        model,
                        "decorrelate",
                        UsageProfile.NORMAL,
                        start,
                        start + FAULT_WATCH_S,
                        rate,
                        at,
                        at + impact,
                        [fault],
                    )
                )
        if model.name in wear:
            for n, start in enumerate(starts(WORN)):
                device = f"{prefix}-wear-{n}"
                life = rng.uniform(*WEAR_LIFE_S)
                fails = start + FAILS_AT_S
                spec = FaultSpec(device, FaultKind.WEAR, params={"life": life}, id=device)
                fault = PastFault(start_fault(device, spec, model, fails - life), math.inf)
                cases.append(
                    Case(
                        device,
                        model,
                        "wear",
                        UsageProfile.NORMAL,
                        start,
                        fails + 300.0,
                        None,
                        fails,
                        fails,
                        [fault],
                        life,
                    )
                )
    return cases


def rows_at(spec: ModelSpec, series: dict[str, Series], at_ms: Sequence[int]) -> np.ndarray:
    """The device's row at each scoring instant, exactly as `ModelService._row` builds it from
    the in-memory windows (points with `start < ts <= end`); a NaN row is left unscored."""
    window_ms = int(spec.window_s * 1000)
    out = np.full((len(at_ms), len(spec.features) * (1 if spec.kind == "anomaly" else 2)), np.nan)

    def arrays(metric: str, start_ms: int, end_ms: int) -> Series:
        times, values = series.get(metric, EMPTY)
        lo = int(np.searchsorted(times, start_ms, side="right"))
        hi = int(np.searchsorted(times, end_ms, side="right"))
        return times[lo:hi], values[lo:hi]

    for index, now_ms in enumerate(at_ms):
        if spec.kind == "anomaly":
            # each feature's window values (arrays here, `array` slices in the daemon)
            values: list[Any] = [
                arrays(f.metric, now_ms - window_ms, now_ms)[1] for f in spec.features
            ]
            out[index] = live_row(values, spec.features)
            continue
        step_ms = int(spec.training.step_s * 1000)
        metrics = [f.metric for f in spec.features]
        history = {m: arrays(m, now_ms - window_ms - step_ms, now_ms) for m in metrics}
        at = grid(now_ms - window_ms, now_ms, step_ms)
        matrix = aligned(history, metrics, at, window_ms)
        keep = ~np.isnan(matrix).any(axis=1)
        if keep.sum() < 2:
            continue
        unit_ms = RUL_UNITS[spec.unit] * 1000
        out[index] = features_at_end(at[keep] / unit_ms, matrix[keep], window_ms / unit_ms)
    return out


def watch(
    case: Case,
    specs: Sequence[ModelSpec],
    training: Training,
    groups: Sequence[Group],
    seed: int,
) -> None:
    """Simulate the device's telemetry, score it with every matching model, run the rules."""
    lead = max([LEAD_S, *(s.window_s + s.training.step_s + s.interval_s for s in specs)])
    text: dict[str, list[tuple[int, str]]] = {}
    series = simulate(
        case.model,
        f"{seed}:{case.device}",
        case.start_s - lead,
        case.end_s,
        training.live_step_s,
        case.faults,
        case.usage,
        text,
    )
    rng = random.Random(f"{seed}:{case.device}:phase")
    for spec in specs:
        start_ms = int((case.start_s + rng.uniform(0.0, spec.interval_s)) * 1000)
        at = np.arange(start_ms, int(case.end_s * 1000), int(spec.interval_s * 1000))
        rows = rows_at(spec, series, at.tolist())
        known = ~np.isnan(rows).any(axis=1)
        model = training.trained[spec.name]
        values = np.full(len(at), np.nan)
        if known.any():
            if model.anomaly is not None:
                values[known] = model.anomaly.score(rows[known]).score
            else:
                assert model.rul is not None
                values[known] = model.rul.predict(rows[known])
        keep = ~np.isnan(values)
        case.scores[spec.name] = (at[keep], values[keep])
    alert(case, groups, specs, series, text)


def alert(
    case: Case,
    groups: Sequence[Group],
    specs: Sequence[ModelSpec],
    series: dict[str, Series],
    text: dict[str, list[tuple[int, str]]],
) -> None:
    """The rules over the device's telemetry and model outputs, as the daemon's rule loop runs
    them: each group every `interval`, its windows holding what its rules read (`horizons`), a
    model's outputs for three of its scoring intervals (older reads unknown, as in the daemon),
    the device's latest values and attributes (`state()`) on its twin."""
    settings = RulesSettings()
    needed = horizons(groups)
    outputs = {s.metric: STALE_INTERVALS * s.interval_s for s in specs}
    windows = SeriesWindows({**{m: max(v, 1.0) for m, v in needed.items()}, **outputs})
    points: list[tuple[int, int, str, float | str]] = []  # (ms, 0: value, 1: attribute, ...)
    for name, (times, values) in case.scores.items():
        metric = score_metric(name)
        points += [(t, 0, metric, v) for t, v in zip(times.tolist(), values.tolist(), strict=True)]
    for metric, (times, values) in series.items():
        if metric in needed:
            points += [
                (t, 0, metric, v) for t, v in zip(times.tolist(), values.tolist(), strict=True)
            ]
    for name, found in text.items():
        points += [(t, 1, name, v) for t, v in found]
    points.sort(key=lambda p: (p[0], p[1]))
    start_ms, end_ms = int(case.start_s * 1000), int(case.end_s * 1000)
    twin = DeviceTwin(
        case.device, first_seen_ms=start_ms - 86_400_000, meta={"model": case.model.product}
    )
    watch_state = Watch(True, start_ms - 86_400_000, 0)
    states: dict[str, AlertState] = {}
    fed = 0
    step = int(min(g.interval_s for g in groups) * 1000)
    for now in range(start_ms, end_ms + 1, step):
        while fed < len(points) and points[fed][0] <= now:
            ts, is_text, name, value = points[fed]
            if is_text:
                twin.attributes[name] = (ts, str(value))
            else:
                windows.add(case.device, name, ts, float(value))
                twin.metrics[name] = (ts, float(value))
            twin.last_seen_ms = ts
            fed += 1
        windows.trim(now)
        for group in groups:
            if (now - start_ms) % int(group.interval_s * 1000) or not matches(group.match, twin):
                continue
            context = DeviceContext(twin, windows, now, watch_state, 600.0)
            updates, events = evaluate_group(
                group, now, [context], states, lambda rule: alert_params(settings, rule)
            )
            for key, state in updates.items():
                if state is None:
                    states.pop(key, None)
                else:
                    states[key] = state
            case.fired += [(e.alert, e.at_ms) for e in events if e.to_phase is Phase.FIRING]


# -- report -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    spec: ModelSpec
    rules: list[Rule]
    training: str
    healthy_hours: float = 0.0
    false_alerts: int = 0
    by_profile: dict[str, tuple[float, int]] = field(default_factory=dict)  # hours, alerts
    # rate -> (device, detected how long after the fault's start, impact after the start)
    detections: dict[float, list[tuple[str, float | None, float]]] = field(default_factory=dict)
    wear: list[tuple[Case, float | None, dict[int, float | None]]] = field(default_factory=list)


def outcomes(
    specs: Sequence[ModelSpec], groups: Sequence[Group], cases: Sequence[Case], training: Training
) -> list[Outcome]:
    """Per model: false alerts on healthy spans, detections of its device model's faults."""
    result = []
    for spec in specs:
        rules = [r for g in groups for r in g.rules if spec.name in model_refs(r.expr)]
        alerts = {r.alert for r in rules}
        figures = training_figures(
            training.trained[spec.name],
            training.data[spec.name],
            training.failed_rows.get(spec.name),
        )
        out = Outcome(spec, rules, figures)
        model = kind_of(spec)
        for case in cases:
            if case.model is not model:
                continue
            fired = [at / 1000 for name, at in case.fired if name in alerts]
            # healthy until the fault starts (a wear fault: until its part fails)
            healthy_end = case.end_s if case.kind == "healthy" else case.fault_s
            if case.kind == "wear" and spec.kind == "rul":
                healthy_end = case.start_s  # the part is wearing all along
            assert healthy_end is not None
            hours = (healthy_end - case.start_s) / 3600
            false = sum(1 for at in fired if at < healthy_end)
            out.healthy_hours += hours
            out.false_alerts += false
            label = case.usage.value if case.kind == "healthy" else f"before a {case.kind}"
            h, n = out.by_profile.get(label, (0.0, 0))
            out.by_profile[label] = (h + hours, n + false)
            after = [at for at in fired if at >= healthy_end]
            first = after[0] if after else None
            if case.kind == "decorrelate" and spec.kind == "anomaly":
                assert case.rate is not None
                assert case.fault_s is not None
                assert case.impact_s is not None
                delay = None if first is None else first - case.fault_s
                out.detections.setdefault(case.rate, []).append(
                    (case.device, delay, case.impact_s - case.fault_s)
                )
            if case.kind == "wear" and spec.kind == "rul":
                assert case.fault_s is not None
                times, values = case.scores.get(spec.name, (np.empty(0), np.empty(0)))
                unit = RUL_UNITS[spec.unit]
                at_left: dict[int, float | None] = {}
                for left in TRUE_LEFT_MIN:
                    moment = (case.fault_s - 60 * left) * 1000
                    index = int(np.searchsorted(times, moment, side="right")) - 1
                    fresh = index >= 0 and moment - times[index] <= 1000 * spec.interval_s
                    ok = fresh and moment >= case.start_s * 1000
                    at_left[left] = float(values[index]) * unit / 60 if ok else None
                lead = None if first is None else case.fault_s - first
                out.wear.append((case, lead, at_left))
        result.append(out)
    return result


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def duration(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


def rule_text(rules: Sequence[Rule]) -> str:
    return "; ".join(f"`{' '.join(r.expr_text.split())}` for {duration(r.for_s)}" for r in rules)


def detection_cell(found: list[tuple[str, float | None, float]]) -> str:
    """`detected/n, before the impact/n (impact at); median (max) minutes after the start`."""
    if not found:
        return ""
    delays = [d for _, d, _ in found if d is not None]
    before = sum(1 for _, d, impact in found if d is not None and d < impact)
    impact = statistics.median(i for _, _, i in found)
    text = f"{len(delays)}/{len(found)}, {before}/{len(found)} (impact {minutes(impact)} min)"
    if delays:
        text += f", {minutes(statistics.median(delays))} ({minutes(max(delays))}) min"
    return text


def report(
    results: Sequence[Outcome], training: Training, seed: int, hours: float, command: str
) -> str:
    """The block --write-docs puts in docs/models.md: what ran, the outcomes, the training side."""
    when = time.strftime("%H:%M UTC", time.gmtime(training.end_s))
    fleet = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(training.profiles.items()))
    healthy = ", ".join(f"{n} {u.value.replace('_', ' ')}" for u, n in HEALTHY.items())
    lines = [
        f"```\n{command}\n```",
        "",
        f"Seed {seed}. Training: the fleet of service.yaml ({training.devices} devices: {fleet}), "
        f"{training.history_s / 3600:g} h of history every {training.history_step_s:g} s "
        f"ending at {when}, with {len(training.runs)} heat-pump "
        f"compressors that wore out, failed and were replaced 30 minutes later. Held out, per "
        f"device model: healthy devices ({healthy}) watched {hours:g} h each; "
        f"{DECORRELATED} devices per decorrelation rate watched {FAULT_WATCH_S / 60:g} min, "
        f"the fault from minute {FAULT_AT_S / 60:g}; {WORN} heat pumps whose compressor fails "
        f"{FAILS_AT_S / 60:g} minutes into the watch. Telemetry every "
        f"{training.live_step_s:g} s; the "
        "watches start at times spread over the 24 h after the training.",
        "",
        "| model | rule | healthy device-hours | false alerts | per 1,000 device-hours | "
        + " | ".join(f"decorrelate {r:g}/min" for r in RATES)
        + " |",
        "| --- | --- | ---: | ---: | ---: | " + " | ".join("---" for _ in RATES) + " |",
    ]
    for out in results:
        rate = 1000 * out.false_alerts / out.healthy_hours if out.healthy_hours else math.nan
        cells = " | ".join(detection_cell(out.detections.get(r, [])) for r in RATES)
        lines.append(
            f"| {out.spec.name} | {rule_text(out.rules)} | {out.healthy_hours:.0f} | "
            f"{out.false_alerts} | {rate:.0f} | {cells} |"
        )
    lines += [
        "",
        "Decorrelate cells: detected / devices, detected before the customer notices / devices "
        "(when that is, after the fault's start), and the median (slowest) detection in "
        "minutes after the start. False alerts by usage profile (alerts / device-hours):",
        "",
    ]
    for out in results:
        parts = ", ".join(
            f"{label.replace('_', ' ')} {n}/{h:.0f}"
            for label, (h, n) in out.by_profile.items()
            if h > 0
        )
        lines.append(f"- {out.spec.name}: {parts}")
    for out in results:
        if not out.wear:
            continue
        lefts = " | ".join(f"{m} min" for m in TRUE_LEFT_MIN)
        lines += [
            "",
            f"{out.spec.name}, minutes left predicted at the true time left, and when "
            f"{rule_text(out.rules)} fired:",
            "",
            f"| heat pump (compressor life) | {lefts} | fired before the failure |",
            "| --- | " + " | ".join("---:" for _ in TRUE_LEFT_MIN) + " | ---: |",
        ]
        for case, lead, at_left in out.wear:
            assert case.life_s is not None
            predicted = " | ".join(
                "" if at_left[m] is None else f"{at_left[m]:.0f}" for m in TRUE_LEFT_MIN
            )
            fired = "never" if lead is None else f"{minutes(lead)} min"
            lines.append(
                f"| {case.device.rsplit('-', 1)[-1]} ({case.life_s / 3600:.1f} h) | {predicted} "
                f"| {fired} |"
            )
    lines += ["", "Training side (the fitted versions):", ""]
    lines += [f"- {out.spec.name}: {out.training}" for out in results]
    return "\n".join(lines)


def detections(results: Sequence[Outcome]) -> str:
    """Each decorrelated device: detected or not, when, before or after the impact (stdout)."""
    lines = []
    for out in results:
        for rate, found in out.detections.items():
            for device, delay, impact in found:
                if delay is None:
                    when = "not detected"
                else:
                    side = "before" if delay < impact else "after"
                    when = f"detected {minutes(delay)} min after the start, {side} the impact"
                lines.append(
                    f"  {out.spec.name}, {rate:g}/min, {device}: {when} ({minutes(impact)} min)"
                )
    return "\n".join(lines)


def detail(cases: Sequence[Case]) -> str:
    """Every firing, per device, in minutes after its watch began (stdout only)."""
    lines = []
    for case in cases:
        if not case.fired:
            continue
        marks = []
        for name, at in case.fired:
            offset = at / 1000 - case.start_s
            ref = ""
            if case.fault_s is not None:
                what = "the failure" if case.kind == "wear" else "the fault's start"
                sign = "after" if at / 1000 >= case.fault_s else "before"
                ref = f" ({minutes(abs(at / 1000 - case.fault_s))} min {sign} {what})"
            marks.append(f"{name} at {minutes(offset)}{ref}")
        lines.append(f"  {case.device}: " + "; ".join(marks))
    return "\n".join(lines)


def write_docs(block: str) -> None:
    path = DOCS
    replace_block(path, MARK_START, MARK_END, block)
    print(f"wrote the figures into {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2, help="1: tuning, 2: evaluation (default)")
    parser.add_argument("--hours", type=float, default=3.0, help="watch of each healthy device")
    parser.add_argument("--models", type=Path, default=MODELS_DIR, help="spec file or folder")
    parser.add_argument("--rules", type=Path, default=RULES_FILE, help="the rules on the models")
    parser.add_argument("--devices", action="store_true", help="print every firing per device")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    specs, problems = load_models([args.models])
    if problems:
        sys.exit("\n".join(str(p) for p in problems))
    groups, rule_problems = parse_rule_file(args.rules.read_text(encoding="utf-8"), str(args.rules))
    if rule_problems:
        sys.exit("\n".join(str(p) for p in rule_problems))
    training = train(specs, args.seed)
    trained_s = time.perf_counter() - started
    models = list({kind_of(s).name: kind_of(s) for s in specs}.values())
    wear = {kind_of(s).name for s in specs if s.kind == "rul"}
    cases = held_out(models, wear, args.seed, args.hours, training.end_s)
    for case in cases:
        matching = [s for s in specs if kind_of(s) is case.model]
        watch(case, matching, training, groups, args.seed)
    results = outcomes(specs, groups, cases, training)
    command = "python benchmarks/models_offline.py"
    if args.seed != 2 or args.hours != 3.0:
        command += f" --seed {args.seed} --hours {args.hours:g}"
    for flag, given, default in (
        ("--models", args.models, MODELS_DIR),
        ("--rules", args.rules, RULES_FILE),
    ):
        if given.resolve() != default.resolve():
            command += f" {flag} {given}"
    block = report(results, training, args.seed, args.hours, command)
    print(block)
    print("\nDecorrelated devices:")
    print(detections(results))
    if args.devices:
        print("\nFirings per device (minutes after its watch began):")
        print(detail(cases))
    print(
        f"\n(whole run {time.perf_counter() - started:.0f} s, of which history and training "
        f"{trained_s:.0f} s; {len(cases)} held-out devices)"
    )
    if args.write_docs:
        write_docs(block)


if __name__ == "__main__":
    main()
