"""Command handling for simulated devices, apart from MQTT so it can be tested as plain calls.

A command arrives on ``{prefix}/{id}/commands/{command_id}`` as
``{"method": "...", "params": {...}, "expires_at": ISO-8601}`` and is answered on
``.../{command_id}/reply`` with
``{"status": "ok"|"error"|"rejected", "message": "...", "result": {...}}``.

The checks run in this order: unparseable payload (``error``), past ``expires_at`` (``rejected``,
saying it expired), a method the model does not accept (``rejected``: each model declares its
allowlist in ``DeviceModel.commands``), a method the device refuses (``rejected``: the scenario's
``rejects``, e.g. a local lock), bad parameters (``error`` saying which), then the handler, which
answers ``ok``. Parameters a method does not know are ignored (``reason`` is common).

An accepted command clears every active fault whose fix it is, with suitable parameters
(``Fix.fixed_by``); a command that fixes nothing still answers ``ok``: the daemon must verify.

To add a method: write a handler (validating its parameters), register it in ``HANDLERS``, list the
method in the ``commands`` of the models that accept it, give the models' ``apply_command`` its
effect on their state, and name it in the ``fixes`` of the faults it clears.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from simulators.faults import ActiveFault

Status = Literal["ok", "error", "rejected"]
# What a command did, as the ground truth records it.
Effect = Literal[
    "fixed", "no_effect", "rejected", "expired", "error", "dropped", "interrupted", "duplicate"
]


@dataclass(frozen=True)
class Command:
    """A parsed, unexpired command."""

    command_id: str
    method: str
    params: Mapping[str, Any]
    expires_at: datetime | None


@dataclass(frozen=True)
class Reply:
    """What the device answers."""

    status: Status
    message: str
    result: Mapping[str, Any] = field(default_factory=dict)

    def to_payload(self) -> bytes:
        """Return the reply as the JSON bytes published on the reply topic."""
        return orjson.dumps({"status": self.status, "message": self.message, "result": self.result})


@dataclass(frozen=True)
class CommandOutcome:
    """The reply plus what the device must do after sending it."""

    reply: Reply
    reboot_s: float | None = None  # go offline for this long, then come back
    clears: tuple[str, ...] = ()  # ids of faults the command fixes
    method: str | None = None  # set for a command the device accepted and carries out
    params: Mapping[str, Any] = field(default_factory=dict)
    expired: bool = False

    @property
    def effect(self) -> Effect:
        """Return what the command does: fixed, no_effect, rejected, expired or error."""
        if self.reply.status == "ok":
            return "fixed" if self.clears else "no_effect"
        if self.expired:
            return "expired"
        return self.reply.status


@dataclass(frozen=True)
class DeviceView:
    """What a handler may look at: the device's model, its commands and its active faults."""

    device_id: str
    model: str
    commands: frozenset[str]
    faults: Sequence[ActiveFault]
    reboot_s: float
    rejects: frozenset[str] = frozenset()  # methods this device refuses (a local lock)


@dataclass(frozen=True)
class Behaviour:
    """How one device treats commands, beyond its model's rules (set per device in a scenario).

    - ``answer_delay``: seconds the device works before it replies (and the effect takes hold);
      commands are handled one at a time, so later ones wait too.
    - ``rejects``: methods the device refuses with ``rejected`` (a local lock, a child lock).
    - ``drop_commands``: probability that a command is never answered (nor carried out).
    """

    answer_delay: float = 0.0
    rejects: frozenset[str] = frozenset()
    drop_commands: float = 0.0

    def __post_init__(self) -> None:
        """Reject values that could not be simulated."""
        object.__setattr__(self, "rejects", frozenset(self.rejects))
        if not (math.isfinite(self.answer_delay) and self.answer_delay >= 0):
            raise ValueError(f"answer_delay must be a time >= 0 (got {self.answer_delay})")
        if not 0.0 <= self.drop_commands <= 1.0:
            raise ValueError(f"drop_commands must be between 0 and 1 (got {self.drop_commands})")


@dataclass(frozen=True)
class AnswerPlan:
    """Whether a device answers a command at all, and after how long."""

    drop: bool
    delay: float


def plan_answer(behaviour: Behaviour, rng: random.Random) -> AnswerPlan:
    """Decide, from the device's behaviour, whether it drops a new command and how late it answers.

    The rng is drawn once per command whatever the behaviour, so one device's draws do not depend
    on its settings.
    """
    draw = rng.random()
    return AnswerPlan(drop=draw < behaviour.drop_commands, delay=behaviour.answer_delay)


Handler = Callable[[Command, DeviceView], CommandOutcome]


def _clears(command: Command, device: DeviceView) -> tuple[str, ...]:
    """Return the ids of active faults this command, with its parameters, fixes."""
    return tuple(
        f.fault_id for f in device.faults if f.fix.fixed_by(command.method, command.params)
    )


def _ok(
    command: Command,
    device: DeviceView,
    message: str,
    result: Mapping[str, Any] | None = None,
    reboot_s: float | None = None,
) -> CommandOutcome:
    return CommandOutcome(
        Reply("ok", message, result or {}),
        reboot_s=reboot_s,
        clears=_clears(command, device),
        method=command.method,
        params=command.params,
    )


def _error(message: str) -> CommandOutcome:
    return CommandOutcome(Reply("error", message))


def _reboot(command: Command, device: DeviceView) -> CommandOutcome:
    """Reply ok, then restart: offline for a few seconds, faults that a restart fixes are gone."""
    return _ok(
        command, device, "rebooting", {"downtime_s": device.reboot_s}, reboot_s=device.reboot_s
    )


def _percent(params: Mapping[str, Any], method: str) -> float | str:
    """Return ``params["percent"]`` (a number from 1 to 100), or the error message."""
    if "percent" not in params:
        return f"{method} needs 'percent', a number from 1 to 100"
    value = params["percent"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"'percent' must be a number from 1 to 100 (got {value!r})"
    if not 1 <= value <= 100:
        return f"'percent' must be between 1 and 100 (got {value})"
    return float(value)


def _reduce_power(command: Command, device: DeviceView) -> CommandOutcome:
    """Lower the burner's maximum power by ``percent`` (1-100)."""
    percent = _percent(command.params, command.method)
    if isinstance(percent, str):
        return _error(percent)
    limit = 100.0 - percent
    return _ok(command, device, f"power reduced by {percent:g} %", {"power_limit": limit})


def _defrost(command: Command, device: DeviceView) -> CommandOutcome:
    """Start a defrost cycle now."""
    return _ok(command, device, "defrost cycle started")


def _reset_valve(command: Command, device: DeviceView) -> CommandOutcome:
    """Reset the pressure (filling) valve."""
    return _ok(command, device, "pressure valve reset")


HANDLERS: Mapping[str, Handler] = {
    "reboot": _reboot,
    "reduce_power": _reduce_power,
    "defrost": _defrost,
    "reset_valve": _reset_valve,
}


def _parse_expiry(raw: object, now: datetime) -> datetime | CommandOutcome | None:
    """Return the expiry time (None: never), or the outcome for a bad or past one."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        return _error("'expires_at' must be an ISO-8601 string")
    try:
        expires_at = datetime.fromisoformat(raw)
    except ValueError:
        return _error(f"'expires_at' is not an ISO-8601 time: {raw!r}")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    if expires_at <= now:
        late = (now - expires_at).total_seconds()
        return CommandOutcome(
            Reply(
                "rejected",
                f"command expired at {expires_at.isoformat()} ({late:.1f} s before it reached "
                "the device); not carried out",
            ),
            expired=True,
        )
    return expires_at


def _parse(command_id: str, payload: bytes, now: datetime) -> Command | CommandOutcome:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _error(f"payload is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error("payload must be a JSON object")
    method = body.get("method")
    params = body.get("params", {})
    if not isinstance(method, str) or not method:
        return _error("'method' must be a non-empty string")
    if not isinstance(params, dict):
        return _error("'params' must be a JSON object")
    expires_at = _parse_expiry(body.get("expires_at"), now)
    if isinstance(expires_at, CommandOutcome):
        return expires_at
    return Command(command_id, method, params, expires_at)


def parse_command(command_id: str, payload: bytes, now: datetime) -> Command | Reply:
    """Return the command in ``payload``, or the error/rejection reply it deserves."""
    parsed = _parse(command_id, payload, now)
    return parsed.reply if isinstance(parsed, CommandOutcome) else parsed


def handle_command(
    command_id: str, payload: bytes, device: DeviceView, now: datetime
) -> CommandOutcome:
    """Decide the reply to a raw command and what the device does next."""
    parsed = _parse(command_id, payload, now)
    if isinstance(parsed, CommandOutcome):
        return parsed
    handler = HANDLERS.get(parsed.method)
    if handler is None or parsed.method not in device.commands:
        supported = ", ".join(sorted(device.commands))
        return CommandOutcome(
            Reply(
                "rejected",
                f"unknown method {parsed.method!r} for {device.model} (supported: {supported})",
            )
        )
    if parsed.method in device.rejects:
        return CommandOutcome(
            Reply(
                "rejected",
                f"{parsed.method} refused: remote {parsed.method} is locked on this device "
                "(local setting)",
            )
        )
    return handler(parsed, device)
