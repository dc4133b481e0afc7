"""M2M remediation: send the rule's commands in order, wait for the device, verify the fix.

A pure state machine per alert episode. `advance` (on every tick) and `on_reply` (when the
device answers) return the new state and the effects for the runtime to carry out: send a
command, report a verified fix, escalate to a person, ask an agent for approval. Every step is
logged, and the log travels into the ticket if one is needed.

A command is never counted as delivered while the device is offline: it waits (up to its time to
live) and is sent when the device is back. A retry after a missing reply reuses the command id, so
a device that did get the first copy does not act twice; a new attempt after a failed
verification gets a new id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson

from daemon.core.backoff import backoff_delay
from daemon.core.rulefmt import RemediationStep


class RemState(StrEnum):
    WAITING = "waiting"  # for its turn, for the device to be online, or for a retry backoff
    SENT = "sent"  # published, no reply yet
    VERIFYING = "verifying"  # acknowledged; waiting for the alert to clear
    AWAITING_APPROVAL = "awaiting_approval"
    CLEARED = "cleared"  # verified fixed
    FAILED = "failed"  # every step tried: a person is needed
    NOT_NEEDED = "not_needed"  # the alert cleared before any command was needed


DONE = {RemState.CLEARED, RemState.FAILED, RemState.NOT_NEEDED}


@dataclass(frozen=True)
class Policy:
    """Limits that keep remediation safe (no command storms, nothing unapproved)."""

    max_sends: int = 3  # copies of one command when no reply comes
    command_ttl_ms: int = 3600_000  # how long a command may wait for an offline device
    retry_base_ms: int = 5_000
    retry_cap_ms: int = 300_000
    budget_per_hour: int = 6  # commands per device per hour


@dataclass(frozen=True)
class LogEntry:
    at_ms: int
    event: str
    detail: str = ""
    step: int = 0
    attempt: int = 0
    command_id: str | None = None
    method: str | None = None


@dataclass(frozen=True)
class Remediation:
    key: str
    device: str
    alert: str
    episode: int  # when the alert fired: one remediation per firing episode
    steps: tuple[RemediationStep, ...]
    state: RemState = RemState.WAITING
    step: int = 0
    attempt: int = 1
    sends: int = 0
    command_id: str | None = None
    not_before_ms: int = 0
    deadline_ms: int | None = None
    expires_at_ms: int | None = None
    approved: bool = False
    log: tuple[LogEntry, ...] = ()

    @property
    def done(self) -> bool:
        return self.state in DONE

    @property
    def current(self) -> RemediationStep | None:
        return self.steps[self.step] if self.step < len(self.steps) else None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Remediation:
        raw: dict[str, Any] = orjson.loads(data)
        raw["state"] = RemState(raw["state"])
        raw["steps"] = tuple(RemediationStep(**s) for s in raw["steps"])
        raw["log"] = tuple(LogEntry(**e) for e in raw["log"])
        return cls(**raw)


@dataclass(frozen=True)
class SendCommand:
    device: str
    command_id: str
    method: str
    params: Mapping[str, Any]
    expires_at_ms: int


@dataclass(frozen=True)
class Fixed:
    key: str
    device: str
    alert: str
    method: str


@dataclass(frozen=True)
class Escalate:
    key: str
    device: str
    alert: str
    reason: str


@dataclass(frozen=True)
class NeedApproval:
    key: str
    device: str
    alert: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)


Effect = SendCommand | Fixed | Escalate | NeedApproval
Step = tuple["Remediation", list[Effect]]  # the new state and what to do about it


@dataclass(frozen=True)
class DeviceView:
    """What remediation needs to know about the device and its alert right now."""

    online: bool
    firing: bool
    model: str = ""
    commands_last_hour: int = 0


def command_id(rem: Remediation) -> str:
    digest = hashlib.sha256(rem.key.encode()).hexdigest()[:8]
    return f"fl-{digest}-{rem.episode}-{rem.step + 1}-{rem.attempt}"


def start(
    key: str, device: str, alert: str, episode: int, steps: tuple[RemediationStep, ...], now_ms: int
) -> Remediation:
    rem = Remediation(key, device, alert, episode, steps)
    rem = replace(rem, command_id=command_id(rem))
    return _log(
        rem, now_ms, "started", f"{len(steps)} step(s): " + ", ".join(s.command for s in steps)
    )


def _log(rem: Remediation, now_ms: int, event: str, detail: str = "") -> Remediation:
    step = rem.current
    entry = LogEntry(
        now_ms,
        event,
        detail,
        rem.step + 1,
        rem.attempt,
        rem.command_id,
        step.command if step else None,
    )
    return replace(rem, log=(*rem.log, entry))


def _next(
    rem: Remediation, now_ms: int, policy: Policy, reason: str, *, skip_step: bool = False
) -> Step:
    """Move to the next attempt of this step, or the next step, or give up."""
    step = _step(rem)
    if not skip_step and rem.attempt < step.max_attempts:
        delay = backoff_delay(rem.attempt - 1, policy.retry_base_ms, policy.retry_cap_ms, 1.0)
        rem = replace(
            rem,
            attempt=rem.attempt + 1,
            sends=0,
            state=RemState.WAITING,
            not_before_ms=now_ms + int(delay),
            deadline_ms=None,
            expires_at_ms=None,
        )
        rem = replace(rem, command_id=command_id(rem))
        return _log(
            rem,
            now_ms,
            "retry scheduled",
            f"{reason}; attempt {rem.attempt} in {int(delay / 1000)}s",
        ), []
    if rem.step + 1 < len(rem.steps):
        rem = replace(
            rem,
            step=rem.step + 1,
            attempt=1,
            sends=0,
            state=RemState.WAITING,
            not_before_ms=now_ms,
            deadline_ms=None,
            expires_at_ms=None,
            approved=False,
        )
        rem = replace(rem, command_id=command_id(rem))
        return _log(rem, now_ms, "next step", reason), []
    rem = replace(rem, state=RemState.FAILED, deadline_ms=None)
    rem = _log(rem, now_ms, "failed", f"{reason}; no step left")
    return rem, [Escalate(rem.key, rem.device, rem.alert, f"remediation failed: {reason}")]


def advance(
    rem: Remediation,
    now_ms: int,
    view: DeviceView,
    policy: Policy,
    allowed: frozenset[str] | None = None,
    approval: frozenset[str] = frozenset(),
) -> Step:
    """Move `rem` on by time and the device's state. `allowed` None means any method."""
    if rem.done:
        return rem, []
    if rem.state is RemState.VERIFYING:
        return _verifying(rem, now_ms, view, policy)
    if rem.state is RemState.SENT:
        return _sent(rem, now_ms, view, policy)
    if rem.state is RemState.AWAITING_APPROVAL and not rem.approved:
        return rem, []
    return _waiting(rem, now_ms, view, policy, allowed, approval)


def _verifying(rem: Remediation, now_ms: int, view: DeviceView, policy: Policy) -> Step:
    step = _step(rem)
    if not view.firing:
        rem = replace(rem, state=RemState.CLEARED, deadline_ms=None)
        rem = _log(rem, now_ms, "cleared", f"alert cleared after {step.command}")
        return rem, [Fixed(rem.key, rem.device, rem.alert, step.command)]
    if rem.deadline_ms is not None and now_ms >= rem.deadline_ms:
        return _next(
            rem, now_ms, policy, f"still firing {int(step.verify_s)}s after {step.command}"
        )
    return rem, []


def _sent(rem: Remediation, now_ms: int, view: DeviceView, policy: Policy) -> Step:
    if rem.deadline_ms is None or now_ms < rem.deadline_ms:
        return rem, []
    if not view.online:
        rem = replace(rem, state=RemState.WAITING, deadline_ms=None)
        return _log(rem, now_ms, "no reply", "device went offline; the command waits for it"), []
    if rem.sends < policy.max_sends:
        return _send(rem, now_ms, _step(rem), policy, "no reply: sent again")
    return _next(rem, now_ms, policy, f"no reply to {rem.sends} sends")


def _waiting(  # noqa: PLR0911  one early answer per guard, in the order they apply
    rem: Remediation,
    now_ms: int,
    view: DeviceView,
    policy: Policy,
    allowed: frozenset[str] | None,
    approval: frozenset[str],
) -> Step:
    step = _step(rem)
    if not view.firing:
        if rem.sends == 0 and rem.step == 0 and rem.attempt == 1:
            rem = replace(rem, state=RemState.NOT_NEEDED)
            return _log(rem, now_ms, "not needed", "alert cleared before any command"), []
        rem = _log(replace(rem, state=RemState.CLEARED), now_ms, "cleared", "alert cleared")
        return rem, [Fixed(rem.key, rem.device, rem.alert, step.command)]
    if now_ms < rem.not_before_ms:
        return rem, []
    if allowed is not None and step.command not in allowed:
        reason = f"{step.command} is not allowed for model {view.model or '?'}"
        return _next(rem, now_ms, policy, reason, skip_step=True)
    if step.command in approval and not rem.approved:
        rem = replace(rem, state=RemState.AWAITING_APPROVAL)
        rem = _log(rem, now_ms, "approval requested", step.command)
        return rem, [NeedApproval(rem.key, rem.device, rem.alert, step.command, step.params)]
    if rem.expires_at_ms is None:
        rem = replace(rem, expires_at_ms=now_ms + policy.command_ttl_ms)
    assert rem.expires_at_ms is not None
    if not view.online:
        if now_ms >= rem.expires_at_ms:
            return _next(rem, now_ms, policy, f"{step.command} expired: the device stayed offline")
        if not rem.log or rem.log[-1].event != "waiting for device":
            rem = _log(rem, now_ms, "waiting for device", "offline: the command is held, not sent")
        return rem, []
    if view.commands_last_hour >= policy.budget_per_hour:
        rem = replace(rem, state=RemState.FAILED)
        rem = _log(rem, now_ms, "budget exhausted", f"{view.commands_last_hour} in the last hour")
        return rem, [Escalate(rem.key, rem.device, rem.alert, "command budget exhausted")]
    return _send(rem, now_ms, step, policy, "sent")


def _step(rem: Remediation) -> RemediationStep:
    step = rem.current
    assert step is not None
    return step


def _send(
    rem: Remediation, now_ms: int, step: RemediationStep, policy: Policy, event: str
) -> tuple[Remediation, list[Effect]]:
    assert rem.command_id is not None
    expires = rem.expires_at_ms if rem.expires_at_ms is not None else now_ms + policy.command_ttl_ms
    rem = replace(
        rem,
        state=RemState.SENT,
        sends=rem.sends + 1,
        deadline_ms=now_ms + int(step.timeout_s * 1000),
        expires_at_ms=expires,
    )
    rem = _log(rem, now_ms, event, f"{step.command} {dict(step.params) or ''}".strip())
    sent = SendCommand(rem.device, str(rem.command_id), step.command, step.params, expires)
    return rem, [sent]


def on_reply(
    rem: Remediation, command: str, status: str, message: str, now_ms: int, policy: Policy
) -> Step:
    """Fold the device's reply to `command` into the remediation."""
    if rem.done or command != rem.command_id or rem.state not in {RemState.SENT, RemState.WAITING}:
        return (
            rem,
            [],
        )  # a late or duplicate reply: nothing to do (it is still logged by the caller)
    step = _step(rem)
    if status == "ok":
        rem = replace(rem, state=RemState.VERIFYING, deadline_ms=now_ms + int(step.verify_s * 1000))
        return _log(rem, now_ms, "acknowledged", message), []
    rem = _log(rem, now_ms, f"device answered {status}", message)
    return _next(rem, now_ms, policy, f"{step.command} {status}: {message}", skip_step=True)


def approve(rem: Remediation, now_ms: int, who: str) -> Remediation:
    if rem.state is not RemState.AWAITING_APPROVAL:
        return rem
    rem = replace(rem, approved=True, state=RemState.WAITING)
    return _log(rem, now_ms, "approved", f"by {who}")
