"""The alert state machine: inactive -> pending -> firing -> resolved, per identity.

Pure: `step(state, condition, now_ms, params)` returns the new state and the transition, if any.
Identity = device + alert + labels. Only transitions are events; a restart that reloads the
states emits nothing new, so a firing alert is not announced twice.

`for` and `keep_firing_for` follow Prometheus (rules/alerting.go) where data is present: a pending
alert fires at the first evaluation at least `for` after it went pending, and a firing alert whose
condition turns false resolves at the first evaluation at least `keep_firing_for` after the first
false one. Where Prometheus treats no data as false, an unknown condition here changes no phase:
a pending alert's `for` pauses (the time since the previous evaluation is not counted), and a
firing alert does not resolve (see docs/rules.md, "Coming from Prometheus").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson


class Phase(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class AlertParams:
    """Timing of one rule's alerts, in milliseconds."""

    for_ms: int = 0
    keep_firing_for_ms: int = 0
    cooldown_ms: int = 0
    #: a resolved alert is kept (and shown) this long so that "resolved" is delivered
    resolved_retention_ms: int = 15 * 60_000
    #: this many firings within `flap_window_ms` mark an alert flapping
    flap_threshold: int = 4
    flap_window_ms: int = 3600_000
    #: a flapping alert resolves only after its condition stayed false this long
    flap_hold_ms: int = 15 * 60_000


@dataclass(frozen=True)
class AlertState:
    key: str
    device: str
    alert: str
    labels: Mapping[str, str]
    phase: Phase = Phase.INACTIVE
    active_since_ms: int | None = None
    fired_at_ms: int | None = None
    resolved_at_ms: int | None = None
    last_true_ms: int | None = None
    last_eval_ms: int | None = None
    cooldown_until_ms: int | None = None
    value: float | str | None = None
    firings: tuple[int, ...] = ()
    flapping: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    group: str = ""
    dry_run: bool = False
    #: while pending: time of unknown evaluations since `active_since_ms`, not counted for `for`
    unknown_ms: int = 0
    #: while firing: the first false evaluation since the condition was last true (Prometheus's
    #: KeepFiringSince); `keep_firing_for` and the flap hold count from it
    keep_firing_since_ms: int | None = None
    #: the rule's `impact` at `last_eval_ms`: seconds until the customer feels the fault (None:
    #: no prediction); the actions route tickets on it
    impact_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        return data

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> AlertState:
        raw: dict[str, Any] = orjson.loads(data)
        raw["phase"] = Phase(raw["phase"])
        raw["firings"] = tuple(raw.get("firings", ()))
        return cls(**raw)


@dataclass(frozen=True)
class Transition:
    """A change of phase: the only thing actions and notifications see."""

    key: str
    device: str
    alert: str
    labels: Mapping[str, str]
    from_phase: Phase
    to_phase: Phase
    at_ms: int
    value: float | str | None
    annotations: Mapping[str, str]
    flapping: bool = False
    dry_run: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def identity(device: str, alert: str, labels: Mapping[str, str]) -> str:
    """Return the stable key of an alert identity.

    >>> identity("b1", "Hot", {"severity": "major"}) == identity("b1", "Hot", {"severity": "major"})
    True
    """
    canonical = orjson.dumps([device, alert, sorted(labels.items())])
    return f"{device}/{alert}/{hashlib.sha256(canonical).hexdigest()[:16]}"


def _transition(old: AlertState, new: AlertState, now_ms: int, reason: str = "") -> Transition:
    return Transition(
        key=new.key, device=new.device, alert=new.alert, labels=new.labels,
        from_phase=old.phase, to_phase=new.phase, at_ms=now_ms, value=new.value,
        annotations=new.annotations, flapping=new.flapping, dry_run=new.dry_run, reason=reason,
    )  # fmt: skip


def _fire(state: AlertState, now_ms: int, params: AlertParams) -> AlertState:
    firings = (*(t for t in state.firings if now_ms - t < params.flap_window_ms), now_ms)
    flapping = state.flapping or len(firings) >= params.flap_threshold
    return replace(
        state, phase=Phase.FIRING, fired_at_ms=now_ms, resolved_at_ms=None, last_true_ms=now_ms,
        firings=firings, flapping=flapping, cooldown_until_ms=None, keep_firing_since_ms=None,
    )  # fmt: skip


def _activate(state: AlertState, now_ms: int, params: AlertParams) -> AlertState:
    pending = replace(
        state, phase=Phase.PENDING, active_since_ms=now_ms, last_true_ms=now_ms, unknown_ms=0
    )
    return _fire(pending, now_ms, params) if params.for_ms <= 0 else pending


def pending_ms(state: AlertState, now_ms: int) -> int:
    """Return how much of `for` a pending alert has served if its condition is true at `now_ms`."""
    since = state.active_since_ms if state.active_since_ms is not None else now_ms
    return now_ms - since - state.unknown_ms


Step = tuple[AlertState | None, Transition | None]


def _step_inactive(s: AlertState, condition: bool, now_ms: int, params: AlertParams) -> Step:
    if not condition:
        return None, None
    new = _activate(s, now_ms, params)
    return new, _transition(s, new, now_ms)


def _step_pending(s: AlertState, condition: bool, now_ms: int, params: AlertParams) -> Step:
    if not condition:
        new = replace(s, phase=Phase.INACTIVE, active_since_ms=None)
        return None, _transition(s, new, now_ms, "condition cleared before `for`")
    s = replace(s, last_true_ms=now_ms)
    if pending_ms(s, now_ms) < params.for_ms:
        return s, None
    new = _fire(s, now_ms, params)
    return new, _transition(s, new, now_ms)


def _step_firing(s: AlertState, condition: bool, now_ms: int, params: AlertParams) -> Step:
    if condition:
        return replace(s, last_true_ms=now_ms, keep_firing_since_ms=None), None
    # As in Prometheus, the hold counts from the first false evaluation, not from the last true
    # one: counting from the last true one resolved an interval early, and a hold no longer than
    # the group's interval did nothing at all.
    since = s.keep_firing_since_ms if s.keep_firing_since_ms is not None else now_ms
    hold = max(params.keep_firing_for_ms, params.flap_hold_ms if s.flapping else 0)
    if now_ms - since < hold:
        return replace(s, keep_firing_since_ms=since), None
    new = replace(
        s, phase=Phase.RESOLVED, resolved_at_ms=now_ms, active_since_ms=None,
        cooldown_until_ms=now_ms + params.cooldown_ms, flapping=False, keep_firing_since_ms=None,
    )  # fmt: skip
    return new, _transition(s, new, now_ms)


def _step_resolved(s: AlertState, condition: bool, now_ms: int, params: AlertParams) -> Step:
    if condition:
        if s.cooldown_until_ms is not None and now_ms < s.cooldown_until_ms:
            return s, None
        new = _activate(s, now_ms, params)
        return new, _transition(s, new, now_ms)
    resolved_at = s.resolved_at_ms if s.resolved_at_ms is not None else now_ms
    cooling = s.cooldown_until_ms is not None and now_ms < s.cooldown_until_ms
    recent = [f for f in s.firings if now_ms - f < params.flap_window_ms]
    # Forget the identity only when nothing it remembers still matters: its retention, its
    # cooldown and the firings that count towards flapping.
    if now_ms - resolved_at >= params.resolved_retention_ms and not cooling and not recent:
        return None, None
    return s, None


_STEPS = {
    Phase.INACTIVE: _step_inactive,
    Phase.PENDING: _step_pending,
    Phase.FIRING: _step_firing,
    Phase.RESOLVED: _step_resolved,
}


def step(state: AlertState, condition: bool | None, now_ms: int, params: AlertParams) -> Step:
    """Advance one identity by one evaluation.

    `condition` None means unknown (no data, device not watched): no phase changes, so an alert
    neither fires nor resolves on missing data, and a pending alert does not count the time since
    the previous evaluation towards `for` (it pauses; it does not start over). Returns
    (None, ...) when the identity can be forgotten (inactive, or resolved past its retention).
    """
    current = replace(state, last_eval_ms=now_ms)
    if condition is None:
        if current.phase is Phase.INACTIVE:
            return None, None
        if current.phase is Phase.PENDING:
            previous = state.last_eval_ms if state.last_eval_ms is not None else now_ms
            current = replace(current, unknown_ms=state.unknown_ms + max(0, now_ms - previous))
        return current, None
    return _STEPS[current.phase](current, condition, now_ms, params)


def resolve(
    state: AlertState, now_ms: int, reason: str
) -> tuple[AlertState | None, Transition | None]:
    """Resolve an alert whose rule is gone (removed on reload)."""
    if state.phase is not Phase.FIRING:
        return None, None
    new = replace(state, phase=Phase.RESOLVED, resolved_at_ms=now_ms, last_eval_ms=now_ms)
    return new, _transition(state, new, now_ms, reason)
