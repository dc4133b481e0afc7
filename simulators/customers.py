"""The simulated customers: what they do with the guidance the daemon sends them.

A real customer fixes a fault by following steps only if the steps are about that fault, and
only if they bother. So a notice starts a customer's fix when all of these hold:

1. the fault is one a customer can fix (its ``Fix`` is ``customer``);
2. the steps sent fit it (``Fix.matched_by``: the freezer's door steps do nothing for a boiler
   that loses water, and nothing for a freezer whose compressor failed);
3. the scenario makes this customer one who follows guidance (``customer_fix_from: notice``,
   acting ``customer_fix_after`` the notice) rather than one who acts on their own or never;
4. they comply: drawn once per fault, seeded, with the fault's ``customer_compliance`` or the
   fleet's ``compliance`` as the probability.

Every guidance notice is written to the ground truth with the decision and why, whether or not
anything happens. Notices without steps (``fixed``, ``resolved``) ask nothing of the customer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from simulators.faults import ActiveFault
from simulators.groundtruth import GroundTruthLog, isoformat

if TYPE_CHECKING:
    from simulators.device import SimDevice

__all__ = ["Customers", "Decision", "Notice", "customer_guided_event", "decide", "parse_notice"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    """What a customer's app shows: a notice from the daemon about one device."""

    kind: str
    title: str
    steps: tuple[str, ...]
    alert: str | None = None

    @property
    def asks(self) -> bool:
        """Return True when the notice asks the customer to do something (it has steps)."""
        return bool(self.steps)


def parse_notice(payload: bytes) -> Notice | None:
    """Return the notice in ``payload`` (the daemon's JSON), or None if it is not one.

    Steps that are not a list of strings count as none: a customer cannot follow them.
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    raw_steps = body.get("steps")
    steps: tuple[str, ...] = ()
    if isinstance(raw_steps, list) and all(isinstance(step, str) for step in raw_steps):
        steps = tuple(raw_steps)
    alert = body.get("alert")
    return Notice(
        kind=str(body.get("kind") or ""),
        title=str(body.get("title") or ""),
        steps=steps,
        alert=alert if isinstance(alert, str) else None,
    )


@dataclass(frozen=True)
class Decision:
    """What a customer does about one fault after one notice, and why."""

    steps_matched: bool
    complied: bool | None  # None when the question did not arise
    acts_after: float | None  # seconds after the notice; None: they do nothing
    why: str


def decide(fault: ActiveFault, notice: Notice, complies: Callable[[], bool]) -> Decision:
    """Return what the customer does about ``fault`` after reading ``notice``.

    ``complies`` is asked only when the steps fit and the customer is one who follows guidance,
    so that a fault's draw does not depend on notices that could not fix it.
    """
    fix, spec = fault.fix, fault.spec
    if fix.type != "customer":
        needs = f"command {fix.method}" if fix.type == "command" else "a technician"
        return Decision(False, None, None, f"no steps fix this {spec.kind} fault: it needs {needs}")
    if not fix.matched_by(notice.steps):
        missing = [group[0] for group in fix.keywords if not _mentions(notice.steps, group)]
        return Decision(
            False,
            None,
            None,
            f"the steps sent do not fix this fault (nothing about {', '.join(missing)})",
        )
    if spec.customer_fix_after is None:
        return Decision(True, None, None, "this customer never acts")
    if spec.customer_fix_from != "notice":
        return Decision(True, None, None, "this customer acts on their own, not on guidance")
    if not complies():
        return Decision(True, False, None, "the customer ignores the guidance")
    return Decision(True, True, spec.customer_fix_after, "the customer follows the steps")


def _mentions(steps: Sequence[str], group: Sequence[str]) -> bool:
    text = " ".join(steps).casefold()
    return any(phrase.casefold() in text for phrase in group)


def customer_guided_event(
    device: str,
    notice: Notice,
    at: float,
    fault: ActiveFault | None,
    decision: Decision | None,
) -> dict[str, Any]:
    """Return the ground-truth line for a guidance notice a customer read about ``device``.

    One line per active fault of the device (``fault`` None: the device had none).
    """
    acts_at = None
    if decision is not None and decision.acts_after is not None:
        acts_at = isoformat(at + decision.acts_after)
    return {
        "event": "customer_guided",
        "fault_id": None if fault is None else fault.fault_id,
        "device": device,
        "notice_at": isoformat(at),
        "alert": notice.alert,
        "title": notice.title,
        "steps": list(notice.steps),
        "steps_matched": False if decision is None else decision.steps_matched,
        "complied": None if decision is None else decision.complied,
        "acts_at": acts_at,
        "why": "no fault on the device" if decision is None else decision.why,
    }


class Cancellable(Protocol):
    """What scheduling a callback returns (an ``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]


class Customers:
    """The customers of a fleet's devices, reading the daemon's notices.

    ``compliance`` is the probability that a customer who follows guidance does so this time
    (a fault's ``customer_compliance`` overrides it); the draw is seeded by ``seed`` and the
    fault's id, made once per fault. Once a customer acts on a fault, later notices about it
    change nothing.
    """

    def __init__(
        self,
        devices: Mapping[str, SimDevice],
        log: GroundTruthLog,
        schedule: Schedule,
        *,
        compliance: float = 1.0,
        seed: int = 0,
    ) -> None:
        self._devices = devices
        self._log = log
        self._schedule = schedule
        self._compliance = compliance
        self._seed = seed
        self._acting: set[str] = set()
        self._complies: dict[str, bool] = {}
        self._pending: list[Cancellable] = []

    def notice(self, device_id: str, now: float, notice: Notice) -> list[tuple[str, float]]:
        """Handle ``notice`` about ``device_id`` at ``now``; return (fault id, acts at) planned."""
        device = self._devices.get(device_id)
        if device is None or not notice.asks:
            return []
        faults = [f for f in device.faults if f.fault_id not in self._acting]
        if not device.faults:
            self._log.write(customer_guided_event(device_id, notice, now, None, None))
        scheduled = []
        for fault in faults:
            decision = decide(fault, notice, partial(self._draw, fault))
            self._log.write(customer_guided_event(device_id, notice, now, fault, decision))
            if decision.acts_after is None:
                continue
            self._acting.add(fault.fault_id)
            fix = self._fixer(device, fault.fault_id)
            self._pending.append(self._schedule(decision.acts_after, fix))
            scheduled.append((fault.fault_id, now + decision.acts_after))
        return scheduled

    def _draw(self, fault: ActiveFault) -> bool:
        """Return whether this fault's customer complies: drawn once, from the seed."""
        if fault.fault_id not in self._complies:
            probability = fault.spec.customer_compliance
            if probability is None:
                probability = self._compliance
            rng = random.Random(f"{self._seed}:{fault.fault_id}:compliance")
            self._complies[fault.fault_id] = rng.random() < probability
        return self._complies[fault.fault_id]

    @staticmethod
    def _fixer(device: SimDevice, fault_id: str) -> Callable[[], None]:
        def fix() -> None:
            if device.end_fault(fault_id, "customer", time.time()):
                logger.info("customer fixed %s on %s", fault_id, device.identity.device_id)

        return fix

    def cancel(self) -> None:
        """Forget the fixes still to come."""
        for pending in self._pending:
            pending.cancel()
        self._pending.clear()
