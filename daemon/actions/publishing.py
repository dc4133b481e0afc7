"""What committed actions owe the broker: commands, notices, ticket and alert events.

Each message is written to the state DB's `outgoing` table in the same transaction as the action
that owes it, published after the commit, and deleted once the broker acknowledged it (QoS 1).
A crash in between publishes it again on start-up: at least once, never lost. A command repeated
this way carries the same command id, which devices use to act on it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from daemon.actions.work import Work, iso
from daemon.core.mappings import CommandTemplate, MappingSet, render_command
from daemon.core.messages import Origin
from daemon.core.remediation import SendCommand
from daemon.core.sparkplug import command_message
from daemon.core.twin import Twins
from daemon.ports import Delivery, Outgoing, Publisher, StateStore
from daemon.resilience import StoreHealth, persist

log = logging.getLogger(__name__)

SPARKPLUG = "sparkplug"
NOTICES = "frontline/notices"
TICKETS = "frontline/tickets"
ALERTS = "frontline/alerts"


@dataclass(frozen=True, slots=True)
class _Way:
    """How commands reach a device that is not on the native topics."""

    name: str  # the mapping's name, or `sparkplug`
    origin: Origin
    commands: CommandTemplate | None  # None: a Sparkplug metric write
    replies: bool


class CommandRouter:
    """Where a command goes: the native command topic, or the way a mapped device takes it.

    A device that speaks through a mapping with `commands` (docs/devices.md, "Commands back")
    gets the mapping's topic and payload. Where the mapping has no `reply` route, the
    publication counts as the device's acknowledgement; the fix is verified by the alert
    clearing either way.
    """

    def __init__(self, prefix: str, twins: Twins | None = None, mappings: MappingSet | None = None):
        self._prefix = prefix
        self._twins = twins
        self._mappings = mappings

    def _way(self, device: str) -> _Way | None:
        """How commands reach `device`: a mapping with `commands`, Sparkplug B, else None."""
        twin = self._twins.get(device) if self._twins is not None else None
        origin = twin.origin if twin is not None else None
        if origin is None:
            return None
        if origin.mapping == SPARKPLUG:
            # A write is answered by the metric's new value, not by a reply.
            return _Way(SPARKPLUG, origin, None, replies=False)
        mapping = self._mappings.mapping(origin.mapping) if self._mappings is not None else None
        if mapping is None or mapping.commands is None:
            return None
        return _Way(mapping.name, origin, mapping.commands, mapping.replies)

    def mapped(self, device: str) -> str | None:
        """The mapping that carries commands to `device`, or None for the native topics."""
        way = self._way(device)
        return None if way is None else way.name

    def unanswered(self, device: str) -> str | None:
        """The mapping of `device` when its commands get no reply (the publication counts)."""
        way = self._way(device)
        return None if way is None or way.replies else way.name

    def message(self, command: SendCommand) -> Outgoing:
        """The message that carries `command`; TemplateError if its mapping cannot say it."""
        way = self._way(command.device)
        if way is not None and way.commands is None:
            now_ms = time.time_ns() // 1_000_000
            return Outgoing(*command_message(way.origin, command.method, command.params, now_ms))
        if way is not None and way.commands is not None:
            return Outgoing(
                *render_command(
                    way.commands,
                    way.origin,
                    command.device,
                    command.command_id,
                    command.method,
                    command.params,
                )
            )
        payload = {
            "method": command.method,
            "params": dict(command.params),
            "expires_at": iso(command.expires_at_ms),
        }
        topic = f"{self._prefix}/{command.device}/commands/{command.command_id}"
        return Outgoing(topic, orjson.dumps(payload))


class Outbound:
    def __init__(
        self, publisher: Publisher, state: StateStore, health: StoreHealth, router: CommandRouter
    ) -> None:
        self._publisher = publisher
        self._state = state
        self._health = health
        self.router = router
        self._inflight: list[tuple[int, Delivery]] = []

    def messages(self, work: Work) -> list[Outgoing]:
        out = [self.router.message(command) for command in work.commands]
        out.extend(
            Outgoing(f"{NOTICES}/{notice['device']}", orjson.dumps(notice))
            for notice in work.notices
        )
        out.extend(
            Outgoing(f"{TICKETS}/{event['ticket_id']}", orjson.dumps(event))
            for event in work.events
        )
        out.extend(
            Outgoing(f"{ALERTS}/{event['device']}", orjson.dumps(event)) for event in work.alerts
        )
        return out

    def send(self, ids: Sequence[int], messages: Sequence[Outgoing]) -> None:
        for row, message in zip(ids, messages, strict=True):
            delivery = self._publisher.publish(message.topic, message.payload, message.retain)
            self._inflight.append((row, delivery))

    async def resend_leftovers(self) -> int:
        """Publish what a previous run committed but the broker never acknowledged."""
        rows = await persist(
            self._state.load_outgoing, "reading outgoing", "state", self._health, write=False
        )
        self.send([row for row, _ in rows], [message for _, message in rows])
        if rows:
            log.info("publishing %d messages left over from the previous run", len(rows))
        return len(rows)

    async def confirm(self) -> None:
        """Forget the messages the broker acknowledged."""
        done = [row for row, delivery in self._inflight if delivery.is_published()]
        if not done:
            return
        await persist(
            lambda: self._state.delete_outgoing(done), "forgetting delivered", "state", self._health
        )
        finished = set(done)
        self._inflight = [(row, d) for row, d in self._inflight if row not in finished]

    @property
    def pending(self) -> int:
        return len(self._inflight)
