"""The rule runtime: schedules group evaluations, persists alert states, reloads rule files.

Evaluation itself is the pure `daemon.core.engine.evaluate_group`; this module feeds it contexts
built from the in-memory windows and twins, in chunks so that ingest keeps flowing, and stores the
resulting states and transition events in one transaction before anyone is told about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from daemon.config import RulesSettings
from daemon.core.alerts import AlertParams, AlertState, Phase, Transition, resolve
from daemon.core.engine import DeviceContext, UnitRefusal, Watch, evaluate_group, matches
from daemon.core.ratelimit import LogLimiter
from daemon.core.replay import horizons
from daemon.core.rulefmt import Group, Rule
from daemon.core.twin import Twins
from daemon.core.windows import SeriesWindows
from daemon.errors import RuleFileInvalid
from daemon.metrics import Metrics
from daemon.ports import RuleFiles, SeriesStore, StateStore
from daemon.resilience import StoreHealth, persist

log = logging.getLogger(__name__)


def alert_params(settings: RulesSettings, rule: Rule) -> AlertParams:
    return AlertParams(
        for_ms=int(rule.for_s * 1000),
        keep_firing_for_ms=int(rule.keep_firing_for_s * 1000),
        cooldown_ms=int(rule.cooldown_s * 1000),
        resolved_retention_ms=int(settings.resolved_retention * 1000),
        flap_threshold=settings.flap_threshold,
        flap_window_ms=int(settings.flap_window * 1000),
        flap_hold_ms=int(settings.flap_hold * 1000),
    )


def offset_ms(group: Group) -> int:
    """A stable per-group offset inside its interval, so groups do not all run at once."""
    interval = int(group.interval_s * 1000)
    return zlib.crc32(group.name.encode()) % interval


def next_due_ms(group: Group, after_ms: int) -> int:
    interval = int(group.interval_s * 1000)
    offset = offset_ms(group)
    return ((after_ms - offset) // interval + 1) * interval + offset


@dataclass
class ReloadResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    groups: int = 0
    rules: int = 0
    resolved: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "problems": self.problems, "groups": self.groups,
            "rules": self.rules, "resolved_by_removal": self.resolved,
        }  # fmt: skip


class RuleService:
    def __init__(
        self,
        settings: RulesSettings,
        state: StateStore,
        series: SeriesStore,
        twins: Twins,
        windows: SeriesWindows,
        watch: Callable[[], Watch],
        metrics: Metrics,
        default_timeout_s: float,
        health: StoreHealth | None = None,
        *,
        files: RuleFiles,
    ) -> None:
        self.settings = settings
        self._files = files
        self._health = health or StoreHealth("series", "state")
        self._state = state
        self._series = series
        self._twins = twins
        self._windows = windows
        self._watch = watch
        self._metrics = metrics
        self._timeout_s = default_timeout_s
        self.groups: list[Group] = []
        self.states: dict[str, AlertState] = {}
        self.listeners: list[Callable[[list[Transition]], None]] = []
        self._wake = asyncio.Event()
        self._due: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._stamp: object = None
        self.last_reload: ReloadResult | None = None
        self._scheduler: AsyncIOScheduler | None = None
        #: metric -> seconds other consumers of the windows need (learned models' features)
        self._extra_horizons: dict[str, float] = {}
        #: a device a rule cannot read in its units is logged once an hour per device and rule
        self._unit_log = LogLimiter(3600.0)

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    def rule_for(self, group: str, alert: str) -> Rule | None:
        for candidate in self.groups:
            if candidate.name == group:
                return next((r for r in candidate.rules if r.alert == alert), None)
        return None

    def count(self, phase: Phase) -> int:
        return sum(1 for state in self.states.values() if state.phase is phase)

    # -- start-up ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load rules (invalid files stop the start, with every problem) and saved states."""
        groups, problems = self._files.load()
        if problems:
            raise RuleFileInvalid(problems)
        self.groups = groups
        self._stamp = self._files.stamp()
        for data in await self._state.load_alerts():
            state = AlertState.from_json(data)
            self.states[state.key] = state
        # Rules removed while the daemon was stopped resolve now, as on a reload.
        await self._commit(*self._removed(self.groups, int(time.time() * 1000)))
        self._windows.set_horizons(self._needed(self.groups))
        await self._fill_windows(self._windows.horizons)
        self._schedule(int(time.time() * 1000))
        firing = sum(1 for s in self.states.values() if s.phase is Phase.FIRING)
        log.info(
            "rules: %d groups, %d rules; %d alert states restored (%d firing)",
            len(self.groups), sum(len(g.rules) for g in self.groups), len(self.states), firing,
        )  # fmt: skip

    def _needed(self, groups: list[Group]) -> dict[str, float]:
        """What the windows keep: the rules' horizons and the extra ones, the longer of each."""
        needed = horizons(g for g in groups if not g.schedule)
        for metric, seconds in self._extra_horizons.items():
            needed[metric] = max(needed.get(metric, 0.0), seconds)
        return needed

    async def set_extra_horizons(self, extra: dict[str, float]) -> None:
        """Keep `extra` history in the windows too (filled from the store where it grew)."""
        async with self._lock:
            old = self._windows.horizons
            self._extra_horizons = dict(extra)
            new = self._needed(self.groups)
            self._windows.set_horizons(new)
            await self._fill_windows({m: s for m, s in new.items() if s > old.get(m, -1)})

    async def _fill_windows(self, needed: dict[str, float]) -> None:
        """Load recent history from the store into the windows (after start or reload)."""
        now = int(time.time() * 1000)
        for twin in list(self._twins):
            for metric, seconds in needed.items():
                if seconds <= 0 or metric not in twin.metrics:
                    continue
                points = await self._read(twin.id, metric, now - int(seconds * 1000), now)
                for ts, value in points:
                    self._windows.add(twin.id, metric, ts, value)

    def _removed(
        self, groups: list[Group], now_ms: int
    ) -> tuple[dict[str, AlertState | None], list[Transition]]:
        """Resolve the alerts whose rule is gone (an identity ignores the group it sits in)."""
        kept = {(r.alert, tuple(sorted(r.labels.items()))) for g in groups for r in g.rules}
        updates: dict[str, AlertState | None] = {}
        transitions: list[Transition] = []
        for key, state in self.states.items():
            if (state.alert, tuple(sorted(state.labels.items()))) not in kept:
                new, transition = resolve(state, now_ms, "rule removed")
                updates[key] = new
                if transition is not None:
                    transitions.append(transition)
        return updates, transitions

    async def forget(self, devices: list[str], now_ms: int) -> int:
        """Drop the alert states of forgotten devices; a firing one resolves first."""
        gone = set(devices)
        async with self._lock:
            updates: dict[str, AlertState | None] = {}
            transitions: list[Transition] = []
            for key, state in self.states.items():
                if state.device in gone:
                    updates[key] = None  # never evaluated again: nothing would clear it
                    _, transition = resolve(state, now_ms, "device forgotten")
                    if transition is not None:
                        transitions.append(transition)
            await self._commit(updates, transitions)
        return len(updates)

    def _schedule(self, now_ms: int) -> None:
        self._due = {g.name: next_due_ms(g, now_ms) for g in self.groups if not g.schedule}
        self._schedule_jobs()

    # -- evaluation --------------------------------------------------------------------------
    async def run(self) -> None:
        """Evaluate each group on its interval until cancelled."""
        while True:
            now = int(time.time() * 1000)
            due = [g for g in self.groups if not g.schedule and self._due.get(g.name, now) <= now]
            for group in due:
                interval = int(group.interval_s * 1000)
                slot = self._due[group.name]
                slot += max(0, (int(time.time() * 1000) - slot) // interval) * interval
                # Evaluated at its slot time, not the wall clock a few ms later, so that a
                # `for` that is a multiple of the interval fires on the slot it completes.
                await self.evaluate(group, slot)
                after = int(time.time() * 1000)
                missed = max(0, (after - self._due[group.name]) // interval)
                if missed:
                    self._metrics.rule_missed.labels(group.name).inc(missed)
                self._due[group.name] = next_due_ms(group, after)
            if due:
                self._windows.trim(int(time.time() * 1000))
            wait = min(self._due.values(), default=now + 1000) - int(time.time() * 1000)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 10) / 1000)

    async def evaluate(
        self, group: Group, now_ms: int, windows: SeriesWindows | None = None
    ) -> list[Transition]:
        """Evaluate one group for all its devices at `now_ms`; persist, then notify."""
        windows = windows or self._windows
        async with self._lock:
            started = time.perf_counter()
            watch = self._watch()
            devices = [t for t in self._twins if matches(group.match, t)]
            updates: dict[str, AlertState | None] = {}
            transitions: list[Transition] = []
            refusals: list[UnitRefusal] = []
            chunk = self.settings.chunk
            for start in range(0, len(devices), chunk):
                contexts = [
                    DeviceContext(t, windows, now_ms, watch, self._timeout_s)
                    for t in devices[start : start + chunk]
                ]
                part, events = evaluate_group(
                    group, now_ms, contexts, self.states,
                    lambda rule: alert_params(self.settings, rule), refusals,
                )  # fmt: skip
                updates.update(part)
                transitions.extend(events)
                await asyncio.sleep(0)  # let ingest run between chunks
            await self._commit(updates, transitions)
            self._log_refusals(refusals)
            self._metrics.rule_evaluations.labels(group.name).inc()
            self._metrics.rule_seconds.labels(group.name).observe(time.perf_counter() - started)
            return transitions

    def _log_refusals(self, refusals: list[UnitRefusal]) -> None:
        now = time.monotonic()
        for refusal in refusals:
            key = (refusal.device, refusal.group, refusal.alert, refusal.metric)
            if self._unit_log.allow(key, now) is not None:
                log.warning(
                    "rule %s (%s) cannot read %s of %s: %s; it reads unknown there",
                    refusal.alert, refusal.group, refusal.metric, refusal.device, refusal.reason,
                )  # fmt: skip

    async def _commit(
        self, updates: dict[str, AlertState | None], transitions: list[Transition]
    ) -> None:
        if not updates and not transitions:
            return
        states = {k: (None if s is None else s.to_json()) for k, s in updates.items()}
        events = [_event(t) for t in transitions]
        await persist(
            lambda: self._state.save_alerts(states, events),
            "writing alert states",
            "state",
            self._health,
            self._metrics.store_errors.inc,
        )
        for key, state in updates.items():
            if state is None:
                self.states.pop(key, None)
            else:
                self.states[key] = state
        for transition in transitions:
            self._metrics.alert_transitions.labels(transition.to_phase.value).inc()
            log.info(
                "alert %s %s -> %s on %s (value %s)%s",
                transition.alert, transition.from_phase.value, transition.to_phase.value,
                transition.device, transition.value, " [dry-run]" if transition.dry_run else "",
            )  # fmt: skip
        for listener in self.listeners:
            listener(transitions)

    # -- scheduled (usage) groups -------------------------------------------------------------
    def _schedule_jobs(self) -> None:
        if self._scheduler is None:
            return
        self._scheduler.remove_all_jobs()
        for group in self.groups:
            if group.schedule:
                trigger = CronTrigger.from_crontab(group.schedule, timezone=UTC)
                self._scheduler.add_job(
                    self.evaluate_scheduled, trigger, args=[group.name], id=group.name,
                    coalesce=True, max_instances=1, misfire_grace_time=3600,
                )  # fmt: skip

    async def run_schedules(self) -> None:
        """Run the scheduled groups (APScheduler, cron in UTC) until cancelled."""
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._schedule_jobs()
        self._scheduler.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def evaluate_scheduled(self, name: str) -> list[Transition]:
        """Evaluate a scheduled group now, over history read from the store."""
        group = next((g for g in self.groups if g.name == name), None)
        if group is None:
            raise KeyError(name)
        now = int(time.time() * 1000)
        needed = horizons([group])
        windows = SeriesWindows(needed)
        for twin in [t for t in self._twins if matches(group.match, t)]:
            for metric, seconds in needed.items():
                start = now - int(max(seconds, 1.0) * 1000)
                for ts, value in await self._read(twin.id, metric, start, now):
                    windows.add(twin.id, metric, ts, value)
        transitions = await self.evaluate(group, now, windows)
        log.info("scheduled group %s evaluated: %d transitions", name, len(transitions))
        return transitions

    async def _read(
        self, device: str, metric: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, float]]:
        return await persist(
            lambda: self._series.query_range(device, metric, start_ms, end_ms),
            "reading history for rule windows",
            "series",
            self._health,
            write=False,
        )

    # -- reload ------------------------------------------------------------------------------
    async def reload(self, reason: str) -> ReloadResult:
        """Validate everything first; on any problem keep the running rules and say why."""
        groups, problems = self._files.load()
        self._stamp = self._files.stamp()
        if problems:
            result = ReloadResult(False, [str(p) for p in problems])
            self._metrics.rule_reloads.labels("failed").inc()
            log.error(
                "rule reload (%s) rejected, the previous rules keep running:\n%s",
                reason, "\n".join(result.problems),
            )  # fmt: skip
            self.last_reload = result
            return result
        async with self._lock:
            now = int(time.time() * 1000)
            updates, transitions = self._removed(groups, now)
            old_horizons = self._windows.horizons
            self.groups = groups
            new_horizons = self._needed(groups)
            self._windows.set_horizons(new_horizons)
            grown = {m: s for m, s in new_horizons.items() if s > old_horizons.get(m, -1)}
            await self._fill_windows(grown)
            self._schedule(now)
            await self._commit(updates, transitions)
        result = ReloadResult(
            True, [], len(groups), sum(len(g.rules) for g in groups), len(transitions)
        )
        self._metrics.rule_reloads.labels("ok").inc()
        log.info(
            "rules reloaded (%s): %d groups, %d rules, %d alerts resolved by removal",
            reason, result.groups, result.rules, result.resolved,
        )  # fmt: skip
        self.last_reload = result
        self._wake.set()
        return result

    async def watch_files(self) -> None:
        """Reload when a rule file changes (polling: works on every filesystem)."""
        while True:
            await asyncio.sleep(self.settings.watch_interval)
            if self._files.stamp() != self._stamp:
                await self.reload("rule files changed")


def _event(t: Transition) -> dict[str, object]:
    data = t.to_dict()
    data["from_phase"] = t.from_phase.value
    data["to_phase"] = t.to_phase.value
    return data
