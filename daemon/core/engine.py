"""Rule evaluation: a pure function of (group, now, device contexts, states).

`evaluate_group` is the whole engine: a test is a loop over times. The runtime (daemon/rules.py)
builds the contexts from the in-memory windows and twins, persists the states and hands the
transitions to the action layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from daemon.core.alerts import (
    AlertParams,
    AlertState,
    Phase,
    Transition,
    identity,
    pending_ms,
    step,
)
from daemon.core.durations import format_duration
from daemon.core.expr import Binary, Node
from daemon.core.expr_eval import Value, evaluate, explain, summarize
from daemon.core.modelspec import score_metric
from daemon.core.rulefmt import Group, Rule
from daemon.core.templates import render_template
from daemon.core.twin import DeviceTwin
from daemon.core.units import Conversion, UnitError, conversion
from daemon.core.urgency import predicted_impact
from daemon.core.windows import SeriesWindows

_COMPARISONS = {">", ">=", "<", "<=", "==", "!="}


@dataclass(frozen=True)
class Watch:
    """Whether the daemon is watching the fleet, and since when (own outage != device outage)."""

    connected: bool = True
    resumed_at_ms: int | None = None
    grace_ms: int = 120_000


class DeviceContext:
    """What an expression can see of one device at one instant (implements EvalContext)."""

    __slots__ = ("_timeout_s", "_windows", "now_ms", "twin", "watch")

    def __init__(
        self,
        twin: DeviceTwin,
        windows: SeriesWindows,
        now_ms: int,
        watch: Watch,
        default_timeout_s: float,
    ) -> None:
        self.twin = twin
        self._windows = windows
        self.now_ms = now_ms
        self.watch = watch
        self._timeout_s = default_timeout_s

    def window(self, metric: str, seconds: float) -> list[tuple[int, float]]:
        now = self.now_ms
        return self._windows.window(self.twin.id, metric, now - int(seconds * 1000), now)

    def last(self, metric: str) -> tuple[int, float] | None:
        found = self._windows.last(self.twin.id, metric, self.now_ms)
        known = self.twin.metrics.get(metric)
        if known is not None and known[0] <= self.now_ms and (found is None or known[0] > found[0]):
            return known
        return found

    def state(self, name: str) -> str | None:
        found = self.twin.attributes.get(name)
        return None if found is None else found[1]

    def attr(self, name: str) -> float | str | bool | None:
        head, _, rest = name.partition(".")
        value = self.twin.meta.get(head)
        if rest:
            value = value.get(rest) if isinstance(value, dict) else None
        if value is None or isinstance(value, str | bool):
            return value
        if isinstance(value, int | float):
            return float(value)
        return None

    def _silence_start(self, heard_ms: int | None) -> int | None:
        """When the current silence began, as far as the daemon could see; None if unknown.

        Silence that began before the daemon (re)gained its broker connection is counted only from
        then plus a grace period: the daemon's or the broker's outage is not the devices'.
        """
        watch = self.watch
        if not watch.connected or watch.resumed_at_ms is None:
            return None
        settled = watch.resumed_at_ms + watch.grace_ms
        if heard_ms is not None and heard_ms >= settled:
            return heard_ms
        # Anything from before or just after the outage (stale silence, a burst of LWTs while
        # the fleet reconnects) counts only once the grace period has passed.
        return None if self.now_ms < settled else settled

    def offline_for(self) -> float | None:
        twin, now = self.twin, self.now_ms
        if not twin.announced:
            # Never sent meta or a status: a one-off or made-up id (a flood of them must not
            # become an alert storm) whose liveness nobody asked us to watch.
            return None
        heard, by_lwt = self._last_heard()
        start = self._silence_start(heard)
        if start is None:
            return None
        if by_lwt:  # the LWT: offline since it arrived
            return max(0.0, (now - start) / 1000)
        timeout = twin.inactivity_timeout(self._timeout_s)
        return max(0.0, (now - start) / 1000 - timeout)

    def _last_heard(self) -> tuple[int | None, bool]:
        """When the device was last heard of, and whether that was its LWT (`offline`)."""
        twin = self.twin
        last_seen = twin.last_seen_ms or twin.first_seen_ms
        if twin.status == "offline" and (twin.status_ms or 0) >= last_seen:
            return twin.status_ms, True
        return last_seen, False

    def silence_clamped(self, metric: str | None = None) -> bool:
        """True when the silence counted began when the daemon's outage grace ended, not when
        the device (or `metric`) fell silent: below a threshold it then says nothing either way,
        so an alert that was firing before a restart does not resolve for it."""
        watch = self.watch
        if not watch.connected or watch.resumed_at_ms is None:
            return False
        settled = watch.resumed_at_ms + watch.grace_ms
        if metric is None:
            heard = self._last_heard()[0]
        else:
            found = self.last(metric)
            heard = None if found is None else found[0]
        return self.now_ms >= settled and (heard is None or heard < settled)

    def absent_for(self, metric: str) -> float | None:
        if not self.twin.announced:
            return None  # as offline_for: liveness of unannounced devices is unknown
        found = self.last(metric)
        start = self._silence_start(None if found is None else found[0])
        return None if start is None else max(0.0, (self.now_ms - start) / 1000)

    @property
    def default_timeout_s(self) -> float:
        return self._timeout_s

    def anomaly(self, model: str) -> float | None:
        return self._model_output(model)

    def rul(self, model: str) -> float | None:
        return self._model_output(model)

    def _model_output(self, model: str) -> float | None:
        """The model's latest output for the device, from its series (`model:<name>`).

        The windows keep it for a few scoring intervals only (daemon/learning), so a device the
        model stopped scoring (offline, too few points) reads unknown rather than a stale value.
        """
        found = self._windows.last(self.twin.id, score_metric(model), self.now_ms)
        return None if found is None else found[1]


class ConvertedContext(DeviceContext):
    """A device's context in a rule's units: metrics converted on read, or refused (unknown)."""

    __slots__ = ("conversions", "refused")

    def __init__(
        self, ctx: DeviceContext, conversions: dict[str, Conversion], refused: dict[str, str]
    ) -> None:
        super().__init__(ctx.twin, ctx._windows, ctx.now_ms, ctx.watch, ctx._timeout_s)
        #: metric -> how its values become the rule's unit
        self.conversions = conversions
        #: metric -> why it cannot be read in the rule's unit
        self.refused = refused

    def window(self, metric: str, seconds: float) -> list[tuple[int, float]]:
        if metric in self.refused:
            return []
        points = super().window(metric, seconds)
        convert = self.conversions.get(metric)
        return points if convert is None else [(ts, convert(v)) for ts, v in points]

    def last(self, metric: str) -> tuple[int, float] | None:
        if metric in self.refused:
            return None
        found = super().last(metric)
        convert = self.conversions.get(metric)
        return found if found is None or convert is None else (found[0], convert(found[1]))

    def absent_for(self, metric: str) -> float | None:
        return None if metric in self.refused else super().absent_for(metric)


@dataclass(frozen=True)
class UnitRefusal:
    """A rule that could not read a device's metric in its unit (logged by the runtime)."""

    group: str
    alert: str
    device: str
    metric: str
    reason: str


def in_rule_units(rule: Rule, ctx: DeviceContext) -> DeviceContext:
    """Return `ctx` as `rule` reads it: in its `units` (docs/devices.md, "Units").

    A metric whose unit the device did not declare is taken as already in the rule's unit; one
    that cannot be converted reads unknown, and the returned ConvertedContext says why.
    """
    declared = ctx.twin.units
    conversions: dict[str, Conversion] = {}
    refused: dict[str, str] = {}
    for metric, wanted in rule.units.items():
        unit = declared.get(metric)
        if unit is None or unit == wanted:
            continue
        try:
            convert = conversion(unit, wanted)
        except UnitError as exc:
            why = "" if exc.kind == "incompatible" else f" ({exc})"
            refused[metric] = (
                f"{metric} is in {unit} on this device; the rule expects {wanted}{why}"
            )
            continue
        if not convert.identity:
            conversions[metric] = convert
    if not conversions and not refused:
        return ctx
    return ConvertedContext(ctx, conversions, refused)


def matches(match: Mapping[str, str], twin: DeviceTwin) -> bool:
    """Return whether a device is selected by a group's `match`.

    Keys are globs on meta (`model`, `labels.X`), `id`, and `mapping` (the mapping a device
    speaks through, docs/devices.md).
    """
    for key, pattern in match.items():
        if key == "id":
            value: object = twin.id
        elif key == "mapping":
            value = twin.origin.mapping if twin.origin is not None else None
        else:
            head, _, rest = key.partition(".")
            value = twin.meta.get(head)
            if rest:
                value = value.get(rest) if isinstance(value, dict) else None
        if value is None or not fnmatchcase(str(value), pattern):
            return False
    return True


def primary(node: Node) -> Node:
    """Return the sub-expression whose value an alert reports: the first comparison's left side."""
    if isinstance(node, Binary):
        if node.op in _COMPARISONS:
            return node.left
        if node.op in {"and", "or"}:
            return primary(node.left)
    return node


def condition_of(value: Value) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return bool(value)
    return value != 0


def _reported(value: Value) -> float | str | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return value


def template_context(twin: DeviceTwin, rule: Rule, value: object) -> dict[str, object]:
    device = {
        "id": twin.id,
        "meta": twin.meta,
        "metrics": {name: v for name, (_, v) in twin.metrics.items()},
        "attributes": {name: v for name, (_, v) in twin.attributes.items()},
    }
    return {"device": device, "value": value, "labels": dict(rule.labels), "alert": rule.alert}


def evaluate_group(
    group: Group,
    now_ms: int,
    contexts: Iterable[DeviceContext],
    states: Mapping[str, AlertState],
    params_of: Callable[[Rule], AlertParams],
    refusals: list[UnitRefusal] | None = None,
) -> tuple[dict[str, AlertState | None], list[Transition]]:
    """Evaluate every rule of `group` for every device context; return changed states and events.

    In the returned mapping None means "forget this identity". A rule with `units` reads each
    device in them; the metrics it cannot convert are appended to `refusals`, if given.
    """
    updates: dict[str, AlertState | None] = {}
    transitions: list[Transition] = []
    rules = [(rule, params_of(rule), primary(rule.expr)) for rule in group.rules]
    for device_ctx in contexts:
        device = device_ctx.twin.id
        for rule, params, value_node in rules:
            ctx = device_ctx
            if rule.units:  # the common case (no units) costs this test only
                ctx = in_rule_units(rule, device_ctx)
                if refusals is not None and isinstance(ctx, ConvertedContext):
                    refusals.extend(
                        UnitRefusal(group.name, rule.alert, device, metric, reason)
                        for metric, reason in ctx.refused.items()
                    )
            key = identity(device, rule.alert, rule.labels)
            old = states.get(key)
            condition = condition_of(evaluate(rule.expr, ctx))
            if old is None:
                if not condition:
                    continue
                old = AlertState(key, device, rule.alert, dict(rule.labels), group=group.name)
            old = replace(old, dry_run=rule.mode == "dry-run", group=group.name)
            new, transition = step(old, condition, now_ms, params)
            active = new is not None and new.phase in {Phase.PENDING, Phase.FIRING}
            if transition is not None or active:
                # Every transition carries the value of the evaluation that made it (a pending
                # alert that clears reports the clearing value, not the one it went pending on).
                value = _reported(evaluate(value_node, ctx))
                if new is not None:
                    new = replace(new, value=value, impact_s=predicted_impact(rule.impact, ctx))
                if transition is not None:
                    transition = replace(transition, value=value)
                if transition is not None and new is not None and active:
                    context = template_context(ctx.twin, rule, value)
                    annotations = {
                        k: render_template(t, context) for k, t in rule.annotations.items()
                    }
                    new = replace(new, annotations=annotations)
                    transition = replace(transition, annotations=annotations)
            if transition is not None:
                transitions.append(transition)
            if new != states.get(key):
                updates[key] = new
    return updates, transitions


@dataclass(frozen=True)
class Verdict:
    """Why one rule fires or not for one device, in words."""

    group: str
    alert: str
    device: str
    phase: str
    condition: bool | None
    value: float | str | None
    reason: str
    details: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "group": self.group, "alert": self.alert, "device": self.device, "phase": self.phase,
            "condition": self.condition, "value": self.value, "reason": self.reason,
            "details": list(self.details),
        }  # fmt: skip


def explain_rule(
    group: Group, rule: Rule, ctx: DeviceContext, state: AlertState | None, params: AlertParams
) -> Verdict:
    """Say why `rule` fires or does not for the device of `ctx` right now."""
    now = ctx.now_ms
    if rule.units:
        ctx = in_rule_units(rule, ctx)
    tree = explain(rule.expr, ctx, rule.expr_text)
    condition = condition_of(tree.value)
    details: list[str] = [f"expression {summarize(tree)}"]
    if isinstance(ctx, ConvertedContext):
        details += ctx.refused.values()
        details += [
            f"{metric} converted from {ctx.twin.units[metric]} to {rule.units[metric]}"
            for metric in ctx.conversions
        ]
    phase = state.phase.value if state else Phase.INACTIVE.value
    if state is not None and state.phase is Phase.PENDING and state.active_since_ms is not None:
        # With no data now, `for` is paused where the last evaluation left it.
        at = now if condition is not None or state.last_eval_ms is None else state.last_eval_ms
        waited = max(0, pending_ms(state, at)) / 1000
        paused = "" if condition is not None else " (paused: no data)"
        details.append(
            f"pending for {format_duration(waited)} of {format_duration(params.for_ms / 1000)}"
            f"{paused}"
        )
    if state is not None and state.phase is Phase.FIRING and state.fired_at_ms is not None:
        details.append(f"firing since {format_duration((now - state.fired_at_ms) / 1000)} ago")
        if condition is False:
            since = state.keep_firing_since_ms if state.keep_firing_since_ms is not None else now
            held = (now - since) / 1000
            details.append(
                f"condition false for {format_duration(held)}; kept firing for "
                f"{format_duration(params.keep_firing_for_ms / 1000)}"
            )
    if state is not None and state.flapping:
        details.append("flapping: resolves only after a quiet period")
    if state is not None and state.cooldown_until_ms is not None and now < state.cooldown_until_ms:
        left = (state.cooldown_until_ms - now) / 1000
        details.append(f"in cooldown for another {format_duration(left)}")
    if not ctx.twin.online(now, ctx.default_timeout_s):
        details.append("device offline")
    if not ctx.watch.connected:
        details.append("daemon not connected to the broker: liveness unknown")
    if rule.mode == "dry-run":
        details.append("dry-run: no actions")
    reason = details[0] if condition is not True else f"fires: {details[0]}"
    if isinstance(ctx, ConvertedContext) and ctx.refused and condition is None:
        reason = next(iter(ctx.refused.values()))
    return Verdict(
        group.name, rule.alert, ctx.twin.id, phase, condition,
        _reported(evaluate(primary(rule.expr), ctx)), reason, tuple(details),
    )  # fmt: skip
