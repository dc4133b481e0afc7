"""The ground-truth log (JSONL) that the outcome benchmark joins with what the daemon did.

Lines, each with an ``event``:

- ``usage_profile``: one per device when the fleet starts (normal, unused, barely_used, misused);
- ``fault_started`` and ``fault_ended`` (reason ``duration``, ``command:<method>``, ``customer``
  or ``fleet_stopped``);
- ``command_received``: one per command a device received, with what it did (``effect``);
- ``customer_guided``: a guidance notice reached the customer: per active fault, whether its
  steps fit the fault, whether the customer complied, when they act (``acts_at``) and why
  (``simulators.customers``).

Faults of a history backfill (``simulators.history``) carry ``"history": true``.

Every line is flushed as soon as it is written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

from simulators.faults import ActiveFault
from simulators.models import UsageProfile


def isoformat(epoch_s: float) -> str:
    """Return ``epoch_s`` as an ISO-8601 UTC time with milliseconds."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _iso_after(start: datetime, seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return (start + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def fault_started_event(
    fault: ActiveFault,
    model: str,
    customer_impact_after: float | None,
    *,
    history: bool = False,
) -> dict[str, Any]:
    """Return the ground-truth line for a fault that has just started.

    ``history``: the fault belongs to the simulated past that a backfill published (a wear run
    of the training data), not to the live run; its times are in the past.
    """
    spec = fault.spec
    start = datetime.fromtimestamp(fault.started_at, UTC)
    event: dict[str, Any] = {
        "event": "fault_started",
        "fault_id": fault.fault_id,
        "device": spec.device,
        "model": model,
        "kind": spec.kind.value,
        "metric": spec.metric,
        "params": spec.effective_params,
        "start": start.isoformat(timespec="milliseconds"),
        "planned_end": _iso_after(start, spec.duration),
        "customer_impact_at": _iso_after(start, customer_impact_after),
        "fix": fault.fix.as_json(),
        "customer_fix": _customer_fix(fault, start),
    }
    if fault.wear is not None and fault.hardware is not None:
        wear = fault.wear
        params = spec.effective_params
        event["detail"] = (
            f"{wear.part} wears out ({wear.metric} rises), then fails: {fault.hardware.description}"
        )
        event["wear"] = {
            "metric": wear.metric,
            "life_s": params["life"],
            "worn": params["worn"],
            "wear_started": isoformat(fault.started_at - params["worn"] * params["life"]),
            "fails_at": _iso_after(start, spec.remaining_life),
            "failure": {"metric": wear.metric, "above": wear.failure_above},
        }
    elif fault.hardware is not None:
        event["detail"] = fault.hardware.description
    if fault.decorrelation is not None:
        relation = fault.decorrelation
        event["detail"] = relation.description
        event["relation"] = {
            "metric": relation.metric,
            "related": list(relation.related),
            "cap": relation.cap,
        }
    if history:
        event["history"] = True
    return event


def _customer_fix(fault: ActiveFault, start: datetime) -> dict[str, Any] | None:
    """Return when the simulated customer fixes the fault, or None if they never do."""
    spec = fault.spec
    if fault.fix.type != "customer" or spec.customer_fix_after is None:
        return None
    return {
        "after_s": spec.customer_fix_after,
        "from": spec.customer_fix_from,
        # Known in advance only when the clock starts at the fault's start.
        "at": _iso_after(start, spec.customer_fix_after)
        if spec.customer_fix_from == "start"
        else None,
    }


def fault_ended_event(
    fault: ActiveFault, end: float, reason: str, *, history: bool = False
) -> dict[str, Any]:
    """Return the ground-truth line for a fault that has ended (reason: duration, command:...)."""
    event: dict[str, Any] = {
        "event": "fault_ended",
        "fault_id": fault.fault_id,
        "device": fault.spec.device,
        "kind": fault.spec.kind.value,
        "end": isoformat(end),
        "reason": reason,
    }
    if history:
        event["history"] = True
    return event


def usage_profile_event(
    device: str, model: str, profile: UsageProfile, at: float
) -> dict[str, Any]:
    """Return the line that says how the customer uses ``device`` for the whole run."""
    return {
        "event": "usage_profile",
        "device": device,
        "model": model,
        "profile": profile.value,
        "at": isoformat(at),
    }


def command_event(
    device: str,
    command_id: str,
    *,
    received: float,
    method: str | None,
    params: Any,
    effect: str,
    status: str | None,
    message: str | None,
    replied: float | None = None,
    fixed: tuple[str, ...] = (),
    active: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Return the line for a command the device received and what it did with it.

    ``effect``: fixed (the faults in ``fixed`` ended), no_effect (ok, nothing fixed), rejected,
    expired, error, dropped (never answered), interrupted (the device went away before replying)
    or duplicate (a redelivered command id, answered again but not carried out again).
    ``active`` lists the faults active when it arrived.
    """
    return {
        "event": "command_received",
        "device": device,
        "command_id": command_id,
        "method": method,
        "params": params,
        "received_at": isoformat(received),
        "replied_at": None if replied is None else isoformat(replied),
        "status": status,
        "message": message,
        "effect": effect,
        "fixed": list(fixed),
        "active_faults": list(active),
    }


class GroundTruthLog:
    """Append-only JSONL file; a log without a path writes nothing."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._file: IO[bytes] | None = None

    def __enter__(self) -> Self:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("ab")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, event: dict[str, Any]) -> None:
        """Append one line and flush it.

        A blocking write in the event loop: lines are rare (a few per fault, one per command)
        and short.
        """
        if self._file is not None:
            self._file.write(orjson.dumps(event) + b"\n")
            self._file.flush()
