"""Replay history through the engine: the loop behind `frontline test` and `frontline backtest`.

Pure: samples, status changes and the time range come in; alert transitions and the alert states
at requested checkpoints come out. Each group is evaluated on its own interval from `start_ms`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from daemon.core.alerts import AlertParams, AlertState, Transition
from daemon.core.engine import DeviceContext, Watch, evaluate_group, matches
from daemon.core.expr import referenced_metrics
from daemon.core.modelspec import SCORE_PREFIX
from daemon.core.rulefmt import Group, Rule
from daemon.core.twin import DeviceTwin
from daemon.core.windows import SeriesWindows

Sample = tuple[int, str, str, float]  # ts_ms, device, metric, value
StatusChange = tuple[int, str, str]  # ts_ms, device, "online" | "offline"


def horizons(groups: Iterable[Group]) -> dict[str, float]:
    """Return metric -> seconds of history the rules need in memory."""
    needed: dict[str, float] = {}
    for group in groups:
        for rule in group.rules:  # (the runtime keeps scheduled groups out of memory itself)
            for node in rule.expressions():  # the condition, and the impact it predicts
                for metric, seconds in referenced_metrics(node).items():
                    needed[metric] = max(needed.get(metric, 0.0), seconds)
    return needed


@dataclass
class ReplayResult:
    transitions: list[Transition] = field(default_factory=list)
    snapshots: dict[int, dict[str, AlertState]] = field(default_factory=dict)
    evaluations: int = 0


def replay(
    groups: list[Group],
    twins: Mapping[str, DeviceTwin],
    samples: list[Sample],
    start_ms: int,
    end_ms: int,
    params_of: Callable[[Rule], AlertParams],
    checkpoints: Iterable[int] = (),
    statuses: Iterable[StatusChange] = (),
    default_timeout_s: float = 600.0,
) -> ReplayResult:
    """Evaluate `groups` over [start_ms, end_ms]; `samples` must be sorted by time.

    The twins are updated as time passes (latest values, last seen, status); the daemon is taken
    to have been watching throughout.
    """
    needed = horizons(groups)
    longest = max([*needed.values(), 0.0])
    # A model's output (`model:<name>`) is read as its latest value: kept for a few intervals, as
    # the daemon keeps it for a few scoring intervals (the replay does not know those).
    outputs = max([180.0, *(3 * g.interval_s for g in groups)])
    windows = SeriesWindows({
        m: max(s, outputs if m.startswith(SCORE_PREFIX) else 1.0) for m, s in needed.items()
    })  # fmt: skip
    ticks = sorted({
        t for g in groups for t in range(start_ms, end_ms + 1, int(g.interval_s * 1000))
    })  # fmt: skip
    changes = sorted(statuses)
    wanted = sorted(set(checkpoints))
    watch = Watch(True, start_ms - int(longest * 1000) - 86_400_000, 0)
    states: dict[str, AlertState] = {}
    result = ReplayResult()
    fed = applied = 0
    for count, now in enumerate(ticks):
        while fed < len(samples) and samples[fed][0] <= now:
            ts, device, metric, value = samples[fed]
            windows.add(device, metric, ts, value)
            twin = twins[device]
            known = twin.metrics.get(metric)
            if known is None or ts >= known[0]:
                twin.metrics[metric] = (ts, value)
            twin.last_seen_ms = max(twin.last_seen_ms or 0, ts)
            fed += 1
        while applied < len(changes) and changes[applied][0] <= now:
            ts, device, status = changes[applied]
            twins[device].status, twins[device].status_ms = status, ts
            applied += 1
        for group in groups:
            if (now - start_ms) % int(group.interval_s * 1000):
                continue
            contexts = [
                DeviceContext(t, windows, now, watch, default_timeout_s)
                for t in twins.values()
                if matches(group.match, t)
            ]
            updates, events = evaluate_group(group, now, contexts, states, params_of)
            result.evaluations += 1
            result.transitions.extend(events)
            for key, state in updates.items():
                if state is None:
                    states.pop(key, None)
                else:
                    states[key] = state
        for checkpoint in wanted:
            if now <= checkpoint:
                result.snapshots[checkpoint] = dict(states)
        if count % 256 == 255:
            windows.trim(now)
    return result
