"""Classify one raw MQTT message into what ingest does with it. Pure: time is an argument."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.core.payloads import (
    DEFAULT_LIMITS,
    FieldNotes,
    Limits,
    Sample,
    parse_meta,
    parse_status,
    parse_telemetry_fields,
)
from daemon.core.topics import TopicKind, parse_topic
from daemon.errors import PayloadRejected


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a device outside the native topic layout speaks: a mapping and its topic segments.

    Kept in the device's twin so that commands go back the way the device understands
    (docs/devices.md, "Commands back").
    """

    mapping: str
    segments: tuple[tuple[str, str], ...] = ()

    def segment(self, name: str) -> str | None:
        return next((value for key, value in self.segments if key == name), None)


@dataclass(slots=True)  # not frozen: created per message, see payloads.Sample
class Telemetry:
    device: str
    samples: list[Sample]
    #: renamed and dropped fields, units (None when every name was canonical and kept)
    notes: FieldNotes | None = None
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class Status:
    device: str
    status: str | None
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class Meta:
    device: str
    meta: dict[str, object]
    origin: Origin | None = None


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


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message on a topic a mapping ignores (`kind: ignore`): acknowledged, nothing stored."""

    topic: str


Message = Telemetry | Status | Meta | Reply | Rejected | Ignored
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
            samples, notes = parse_telemetry_fields(payload, received_ms, limits)
            return Telemetry(device, samples, notes or None)
        if parsed.kind is TopicKind.STATUS:
            return Status(device, parse_status(payload))
        if parsed.kind is TopicKind.META:
            return Meta(device, parse_meta(payload, limits))
        assert parsed.command_id is not None
        return Reply(device, parsed.command_id, payload)
    except PayloadRejected as rejected:
        return rejection(topic, device, rejected, payload)


def rejection(
    topic: str, device: str | None, rejected: PayloadRejected, payload: bytes
) -> Rejected:
    """Return the dead letter for a message refused with `rejected` (payload and detail capped)."""
    return Rejected(
        topic[:512],
        device,
        rejected.reason,
        rejected.detail[:500],
        payload[:DEAD_LETTER_BYTES],
        len(payload),
    )
