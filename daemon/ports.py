"""The ports: what the application needs from storage, as Protocols adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from daemon.core.messages import Message


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
    ) -> None: ...

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


class BatchSource(Protocol):
    """Where ingest takes messages from; `ack` is called once they are durable."""

    def batches(self) -> AsyncIterator[list[Received]]: ...

    def ack(self, items: list[Received]) -> None: ...
