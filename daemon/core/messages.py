"""Classify one raw MQTT message into what ingest does with it. Pure: time is an argument."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.core.payloads import (
    DEFAULT_LIMITS,
    Limits,
    Sample,
    parse_meta,
    parse_status,
    parse_telemetry,
)
from daemon.core.topics import TopicKind, parse_topic
from daemon.errors import PayloadRejected


@dataclass(slots=True)  # not frozen: created per message, see payloads.Sample
class Telemetry:
    device: str
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class Status:
    device: str
    status: str | None


@dataclass(frozen=True, slots=True)
class Meta:
    device: str
    meta: dict[str, object]


@dataclass(frozen=True, slots=True)
class Reply:
    device: str
    command_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that was not accepted; `payload` is capped to `Limits`-independent size."""

    topic: str
    device: str | None
    reason: str
    detail: str
    payload: bytes
    size: int


Message = Telemetry | Status | Meta | Reply | Rejected
DEAD_LETTER_BYTES = 64 * 1024


def classify(
    topic: str,
    payload: bytes,
    received_ms: int,
    prefix: str = "devices",
    limits: Limits = DEFAULT_LIMITS,
) -> Message:
    """Return the parsed message, or a Rejected one carrying the reason and the raw bytes."""
    device: str | None = None
    try:
        parsed = parse_topic(topic, prefix)
        device = parsed.device_id
        if parsed.kind is TopicKind.TELEMETRY:
            return Telemetry(device, parse_telemetry(payload, received_ms, limits))
        if parsed.kind is TopicKind.STATUS:
            return Status(device, parse_status(payload))
        if parsed.kind is TopicKind.META:
            return Meta(device, parse_meta(payload, limits))
        assert parsed.command_id is not None
        return Reply(device, parsed.command_id, payload)
    except PayloadRejected as rejected:
        return Rejected(
            topic[:512],
            device,
            rejected.reason,
            rejected.detail[:500],
            payload[:DEAD_LETTER_BYTES],
            len(payload),
        )
