"""M2M: the runtime of the remediation state machine (`daemon.core.remediation`).

It keeps one `Remediation` per alert identity, feeds it the clock, the device's view and its
replies, and turns its effects into work: commands to publish, verified fixes, escalations and
approval requests. The command budget per device is rebuilt from the persisted logs on start-up.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase

import orjson

from daemon.actions.publishing import CommandRouter
from daemon.actions.work import Work
from daemon.core.mappings import TemplateError
from daemon.core.messages import Reply
from daemon.core.remediation import (
    DeviceView,
    Effect,
    Escalate,
    Fixed,
    NeedApproval,
    Policy,
    Remediation,
    RemState,
    SendCommand,
    advance,
    approve,
    on_reply,
    start,
)
from daemon.core.rulefmt import RemediationStep
from daemon.core.twin import Twins

log = logging.getLogger(__name__)
HOUR_MS = 3600_000
KEEP_DONE_MS = 24 * HOUR_MS


class Remediator:
    def __init__(
        self,
        policy: Policy,
        allowlist: Mapping[str, tuple[str, ...]],
        approval_required: frozenset[str],
        twins: Twins,
        firing: Callable[[str], bool],
        timeout_s: float,
        router: CommandRouter | None = None,
    ) -> None:
        self.policy = policy
        self._router = router
        self._allowlist = allowlist
        self._approval = approval_required
        self._twins = twins
        self._firing = firing
        self._timeout_s = timeout_s
        self.remediations: dict[str, Remediation] = {}
        self._sent: dict[str, deque[int]] = {}

    def restore(self, saved: list[bytes]) -> int:
        """Load the persisted remediations; return how many are still under way."""
        for data in saved:
            rem = Remediation.from_json(data)
            self.remediations[rem.key] = rem
            for entry in rem.log:
                if entry.event in {"sent", "no reply: sent again"}:
                    self._sent.setdefault(rem.device, deque()).append(entry.at_ms)
        return sum(1 for r in self.remediations.values() if not r.done)

    def begin(
        self,
        key: str,
        device: str,
        alert: str,
        episode: int,
        steps: tuple[RemediationStep, ...],
        now: int,
        work: Work,
    ) -> None:
        """Start remediating a new firing episode, unless one is already under way."""
        current = self.remediations.get(key)
        if current is None or current.done:
            self._advance(start(key, device, alert, episode, steps, episode), now, work)

    def tick(self, now: int, work: Work) -> None:
        for rem in list(self.remediations.values()):
            if not rem.done:
                self._advance(rem, now, work)
            elif not rem.log or now - rem.log[-1].at_ms > KEEP_DONE_MS:
                # Finished long ago: the state DB keeps it (until history retention); memory
                # keeps only what a new episode or a ticket's context may still need.
                del self.remediations[rem.key]

    def on_reply(self, reply: Reply, received_ms: int, now: int, work: Work) -> bool:
        """Apply a device's reply; False when no remediation waits for that command."""
        try:
            body = orjson.loads(reply.payload)
            status, message = str(body.get("status", "error")), str(body.get("message", ""))
        except (orjson.JSONDecodeError, AttributeError):
            status, message = "error", "unreadable reply"
        for rem in self.remediations.values():
            if rem.device != reply.device:
                continue
            # A mapped device's reply may not name the command: it answers the one in flight.
            in_flight = not reply.command_id and rem.state is RemState.SENT
            if rem.command_id == reply.command_id or in_flight:
                new, effects = on_reply(
                    rem, str(rem.command_id), status, message, received_ms, self.policy
                )
                self._apply(new, effects, now, work)
                return True
        log.info(
            "reply to unknown or finished command %s from %s: %s",
            reply.command_id,
            reply.device,
            status,
        )
        return False

    def approve(self, key: str, now: int, who: str, work: Work) -> None:
        rem = self.remediations.get(key)
        if rem is None:
            raise ValueError("no remediation waits for approval on this ticket")
        self._apply(approve(rem, now, who), [], now, work)

    def log_of(self, key: str) -> list[dict[str, object]]:
        rem = self.remediations.get(key)
        return [dict(e.__dict__) for e in rem.log] if rem else []

    # -- internals ---------------------------------------------------------------------------
    def _view(self, rem: Remediation, now: int) -> DeviceView:
        twin = self._twins.get(rem.device)
        online = twin is not None and twin.online(now, self._timeout_s)
        model = str(twin.meta.get("model", "")) if twin else ""
        sent = self._sent.setdefault(rem.device, deque())
        while sent and now - sent[0] > HOUR_MS:
            sent.popleft()
        return DeviceView(online, self._firing(rem.key), model, len(sent))

    def _allowed(self, model: str) -> frozenset[str] | None:
        for pattern, methods in self._allowlist.items():
            if fnmatchcase(model, pattern):
                return frozenset(methods)
        return None

    def _advance(self, rem: Remediation, now: int, work: Work) -> None:
        view = self._view(rem, now)
        new, effects = advance(
            rem, now, view, self.policy, self._allowed(view.model), self._approval
        )
        self._apply(new, effects, now, work)

    def _send(self, rem: Remediation, command: SendCommand, now: int, work: Work) -> bool:
        """Whether `command` goes out; one a mapping cannot say is refused with the reason.

        A device on a mapping without replies is acknowledged as its command is published.
        """
        if self._router is None or self._router.mapped(command.device) is None:
            return True
        try:
            message = self._router.message(command)
        except TemplateError as exc:
            new, effects = on_reply(rem, command.command_id, "refused", str(exc), now, self.policy)
            self._apply(new, effects, now, work)
            return False
        mapping = self._router.unanswered(command.device)
        if mapping is not None:
            note = f"published on {message.topic} ({mapping} devices do not reply)"
            new, effects = on_reply(rem, command.command_id, "ok", note, now, self.policy)
            self._apply(new, effects, now, work)
        return True

    def _apply(self, rem: Remediation, effects: list[Effect], now: int, work: Work) -> None:
        if rem != self.remediations.get(rem.key):
            self.remediations[rem.key] = rem
            work.remediations[rem.key] = rem.to_json()
        for effect in effects:
            if isinstance(effect, SendCommand):
                if self._send(rem, effect, now, work):
                    work.commands.append(effect)
                    self._sent.setdefault(effect.device, deque()).append(now)
            elif isinstance(effect, Fixed):
                work.fixed.append(effect)
            elif isinstance(effect, Escalate):
                work.opens.append((effect.key, "fault", effect.reason))
            elif isinstance(effect, NeedApproval):
                reason = f"approval needed before sending {effect.method} {dict(effect.params)}"
                work.opens.append((effect.key, "approval", reason))
