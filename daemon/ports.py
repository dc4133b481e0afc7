"""The ports: what the application needs from storage, as Protocols adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from daemon.core.alerts import AlertState
from daemon.core.messages import Message
from daemon.core.modelspec import ModelSpec
from daemon.core.rulefmt import Group, Rule, RuleProblem
from daemon.core.tickets import Routing
from daemon.errors import ConfigProblem


class Point(NamedTuple):
    """One numeric observation of one metric of one device (a tuple: cheap to make in bulk)."""

    device: str
    metric: str
    ts_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message, kept with its raw bytes (capped) for inspection."""

    received_ms: int
    topic: str
    device: str | None
    reason: str
    detail: str
    payload: bytes
    size: int


#: key-value entry holding the id of the last alert event the actions consumed
ACTIONS_CURSOR = "actions:cursor"


class Outgoing(NamedTuple):
    """An MQTT message that a committed action owes the world (published after the commit)."""

    topic: str
    payload: bytes
    retain: bool = False


class SeriesStore(Protocol):
    """Time series of device metrics. Writes are durable when `write` returns.

    Writing the same (device, metric, ts) twice keeps one point (the last value), so a QoS 1
    redelivery after a crash does not duplicate data.
    """

    url: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, points: Sequence[Point]) -> None: ...

    async def query_range(
        self, device: str, metric: str, start_ms: int, end_ms: int, limit: int | None = None
    ) -> list[tuple[int, float]]: ...

    async def query_last(self, device: str, metric: str) -> tuple[int, float] | None: ...

    async def metrics(self, device: str) -> list[str]: ...

    async def delete_before(self, ts_ms: int) -> int: ...

    async def ping(self) -> None: ...


class StateStore(Protocol):
    """The daemon's own state: device twins, dead letters, alert states and their events."""

    url: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save_twins(self, twins: Sequence[dict[str, Any]]) -> None: ...

    async def load_twins(self) -> list[dict[str, Any]]: ...

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Store rejected messages; return how many were dropped (the oldest first) to keep the
        table within its row and byte bounds."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...

    async def delete_dead_letters_before(self, ts_ms: int) -> int: ...

    async def delete_twins(self, devices: Sequence[str]) -> int: ...

    async def prune_history(self, before_ms: int, events_upto_id: int) -> dict[str, int]:
        """Delete history older than `before_ms`: alert events with an id of at most
        `events_upto_id` (never one the actions have not consumed), resolved tickets and their
        events, notices, finished remediations. Return the rows deleted per table."""
        ...

    async def save_alerts(
        self, updates: Mapping[str, bytes | None], events: Sequence[Mapping[str, Any]]
    ) -> None: ...

    async def load_alerts(self) -> list[bytes]: ...

    async def alert_events(
        self, limit: int = 100, device: str | None = None
    ) -> list[dict[str, Any]]: ...

    async def get_value(self, key: str) -> bytes | None: ...

    async def set_value(self, key: str, value: bytes) -> None: ...

    async def save_actions(
        self,
        remediations: Mapping[str, bytes | None],
        tickets: Sequence[tuple[str, str, str, int, bytes]],
        ticket_events: Sequence[tuple[str, int, bytes]],
        notices: Sequence[tuple[str, int, bytes]],
        *,
        decisions: Mapping[str, bytes | None] | None = None,
        outgoing: Sequence[Outgoing] = (),
        cursor: int | None = None,
    ) -> list[int]:
        """Persist one round of actions in one transaction; return the new outgoing row ids.

        `decisions` are pending decisions (guidance deadlines, advisory markers) kept in the
        key-value table (None deletes); `outgoing` are messages to publish once committed;
        `cursor` is the id of the last alert event this round consumed.
        """
        ...

    async def alert_events_after(
        self, after_id: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]: ...

    async def last_alert_event_id(self) -> int: ...

    async def values(self, prefix: str) -> dict[str, bytes]: ...

    async def load_outgoing(self) -> list[tuple[int, Outgoing]]: ...

    async def delete_outgoing(self, ids: Sequence[int]) -> None: ...

    async def ping(self) -> None:
        """Prove the store takes a write now (raises StoreUnavailable otherwise)."""
        ...

    async def receive_stamps(self, keys: Sequence[str]) -> dict[str, int]:
        """The receive times recorded for these messages (see `IngestPipeline`)."""
        ...

    async def save_receive_stamps(
        self, new: Sequence[tuple[str, int]], done: Sequence[str], before_ms: int | None = None
    ) -> None:
        """Record receive times; forget those of acknowledged messages and any older than
        `before_ms`."""
        ...

    async def load_remediations(self) -> list[bytes]: ...

    async def load_tickets(self, open_only: bool = False) -> list[bytes]: ...

    async def ticket_events(self, ticket_id: str) -> list[dict[str, Any]]: ...

    async def notices(
        self, device: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...


@dataclass(slots=True)  # not frozen: created per message on the hot path
class Received:
    """One classified MQTT message and what is needed to acknowledge it to the broker."""

    message: Message
    received_ms: int
    retained: bool
    mid: int
    qos: int
    epoch: int
    size: int = 0  # payload bytes, for the ingest buffer's byte bound
    dup: bool = False  # the broker's DUP flag: a redelivery of a message sent before


class BatchSource(Protocol):
    """Where ingest takes messages from; `ack` is called once they are durable."""

    def batches(self) -> AsyncIterator[list[Received]]: ...

    def ack(self, items: list[Received]) -> None: ...


class Delivery(Protocol):
    """A publication under way; true once the broker acknowledged it (QoS 1)."""

    def is_published(self) -> bool: ...


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Delivery: ...


class TicketSink(Protocol):
    async def enqueue(
        self, ticket_id: str, event: Mapping[str, Any], idempotency_key: str
    ) -> None: ...


class RuleLookup(Protocol):
    """What actions need from the rule runtime: current alert states and the loaded rules."""

    states: dict[str, AlertState]

    def group(self, name: str) -> Group | None: ...

    def rule_for(self, group: str, alert: str) -> Rule | None: ...


class ServiceFiles(Protocol):
    """The operator's service files: routing, customers, runbooks and customer guides."""

    def routing(self) -> Routing: ...

    def customer(self, customer_id: str) -> Mapping[str, Any] | None: ...

    def customer_count(self) -> int: ...

    def steps(self, rule_file: str, path: str) -> list[str]:
        """The numbered steps of a runbook or guide named by a rule (relative to its file)."""
        ...


class ModelFiles(Protocol):
    """The operator's model spec files (`models/*.yaml`), as the model service sees them."""

    def load(self) -> tuple[list[ModelSpec], list[ConfigProblem]]:
        """Every spec and every problem (file:line:col), across all files."""
        ...

    def stamp(self) -> object:
        """A value that changes when any spec file changes (for the watcher)."""
        ...


class ModelLookup(Protocol):
    """What tickets need from the model service: the latest scoring of a device."""

    def explain(self, device: str, model: str) -> dict[str, Any] | None: ...


class RuleFiles(Protocol):
    """The operator's rule files, as the rule runtime sees them."""

    def names(self) -> str:
        """What is read, for log lines."""
        ...

    def load(self) -> tuple[list[Group], list[RuleProblem]]:
        """Every group and every problem (file:line:col), across all files."""
        ...

    def stamp(self) -> object:
        """A value that changes when any rule file changes (for the watcher)."""
        ...
