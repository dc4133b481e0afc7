"""The live twin of every device: latest values, attributes, meta, status and liveness.

Pure: every update and every question takes the time as an argument. The fleet is bounded:
`Twins.admit` refuses a new device past `max_devices` and new metric names past `max_names` per
device (a flood of made-up ids or metric names must not grow memory, the state DB and the series
store without end), and `Twins.forgettable` names the devices that never said what they are and
have been silent long enough to be forgotten.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.core.messages import (
    DEAD_LETTER_BYTES,
    Message,
    Meta,
    Origin,
    Rejected,
    Status,
    Telemetry,
)
from daemon.core.payloads import FieldNotes

#: defaults of `devices.max_known` and `devices.max_metrics` (docs/operations.md, "Bounds")
MAX_DEVICES = 100_000
MAX_NAMES = 500
#: dropped fields remembered per device (name, reason, count, last time), newest kept
MAX_DROPPED = 32


@dataclass(slots=True)
class DeviceTwin:
    id: str
    first_seen_ms: int
    metrics: dict[str, tuple[int, float]] = field(default_factory=dict)
    attributes: dict[str, tuple[int, str]] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    status: str | None = None
    status_ms: int | None = None
    last_seen_ms: int | None = None
    #: canonical name -> the name the device sends, where they differ (docs/devices.md)
    names: dict[str, str] = field(default_factory=dict)
    #: canonical name -> unit, as the device or its mapping declared it
    units: dict[str, str] = field(default_factory=dict)
    #: field the device sent -> [reason, times dropped, last time (ms)]
    dropped: dict[str, list[Any]] = field(default_factory=dict)
    #: the mapping the device speaks through, and its topic segments (None: native topics)
    origin: Origin | None = None

    @property
    def announced(self) -> bool:
        """Whether the device said it exists: it sent meta, or a status (its LWT, `online`).

        Devices that follow the topic contract publish both, retained. An id that only ever sent
        telemetry may be a one-off or a made-up id in a flood: its liveness is not watched.
        """
        return bool(self.meta) or self.status is not None

    @property
    def last_activity_ms(self) -> int:
        """The last time anything (telemetry, status, or its first message) came from it."""
        return max(self.first_seen_ms, self.last_seen_ms or 0, self.status_ms or 0)

    def inactivity_timeout(self, default_s: float) -> float:
        """Seconds of silence after which the device counts as offline (meta can override)."""
        raw = self.meta.get("inactivity_timeout")
        if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
            return float(raw)
        return default_s

    def online(self, now_ms: int, default_timeout_s: float) -> bool:
        """Return whether the device is online at `now_ms`.

        An `offline` status (the device's LWT) newer than its last message wins; otherwise the
        device is online while it was heard from within its inactivity timeout. A device only
        known from a retained `online` status counts as online until a timeout can be measured.
        """
        if self.status == "offline" and (
            self.last_seen_ms is None or (self.status_ms or 0) >= self.last_seen_ms
        ):
            return False
        if self.last_seen_ms is None:
            return self.status == "online"
        silence_ms = now_ms - self.last_seen_ms
        return silence_ms <= self.inactivity_timeout(default_timeout_s) * 1000

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_seen_ms": self.first_seen_ms,
            "metrics": {k: list(v) for k, v in self.metrics.items()},
            "attributes": {k: list(v) for k, v in self.attributes.items()},
            "meta": self.meta,
            "status": self.status,
            "status_ms": self.status_ms,
            "last_seen_ms": self.last_seen_ms,
            "names": self.names,
            "units": self.units,
            "dropped": self.dropped,
            "origin": None
            if self.origin is None
            else {"mapping": self.origin.mapping, "segments": dict(self.origin.segments)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceTwin:
        return cls(
            id=data["id"],
            first_seen_ms=data["first_seen_ms"],
            metrics={k: (int(v[0]), float(v[1])) for k, v in data["metrics"].items()},
            attributes={k: (int(v[0]), str(v[1])) for k, v in data["attributes"].items()},
            meta=dict(data["meta"]),
            status=data["status"],
            status_ms=data["status_ms"],
            last_seen_ms=data["last_seen_ms"],
            names=dict(data.get("names") or {}),
            units=dict(data.get("units") or {}),
            dropped={k: list(v) for k, v in (data.get("dropped") or {}).items()},
            origin=_origin(data.get("origin")),
        )

    def note_dropped(self, dropped: list[tuple[str, str]], now_ms: int) -> None:
        """Remember the fields dropped from a message (bounded: the oldest entries go)."""
        for name, reason in dropped:
            entry = self.dropped.pop(name, None)
            count = entry[1] + 1 if entry is not None else 1
            self.dropped[name] = [reason, count, now_ms]  # re-inserted: newest last
        while len(self.dropped) > MAX_DROPPED:
            del self.dropped[next(iter(self.dropped))]


def _merged(old: Origin | None, new: Origin) -> Origin:
    """The device's origin after a message: segments the new message lacks are kept.

    A ThingsBoard `connect` names the device but has no topic segments; it must not forget
    what the telemetry said (docs/devices.md, "Commands back").
    """
    if old is None or old.mapping != new.mapping or old.segments == new.segments:
        return new
    segments = dict(old.segments)
    segments.update(new.segments)
    return Origin(new.mapping, tuple(sorted(segments.items())))


def _origin(raw: object) -> Origin | None:
    if not isinstance(raw, dict):
        return None
    segments = raw.get("segments") or {}
    return Origin(str(raw["mapping"]), tuple((str(k), str(v)) for k, v in segments.items()))


class Twins:
    """All device twins, with a record of which changed since they were last persisted.

    `max_devices` and `max_names` (metric plus attribute names per device) bound what `admit`
    lets in; twins loaded past a lowered bound are kept, and only new ones are refused.
    """

    def __init__(
        self,
        twins: Iterable[DeviceTwin] = (),
        max_devices: int = MAX_DEVICES,
        max_names: int = MAX_NAMES,
    ) -> None:
        self._twins: dict[str, DeviceTwin] = {twin.id: twin for twin in twins}
        self._dirty: set[str] = set()
        self.max_devices = max_devices
        self.max_names = max_names

    def __len__(self) -> int:
        return len(self._twins)

    def __iter__(self) -> Iterator[DeviceTwin]:
        return iter(self._twins.values())

    def get(self, device: str) -> DeviceTwin | None:
        return self._twins.get(device)

    def _twin(self, device: str, now_ms: int) -> DeviceTwin:
        twin = self._twins.get(device)
        if twin is None:
            twin = self._twins[device] = DeviceTwin(device, first_seen_ms=now_ms)
        self._dirty.add(device)
        return twin

    def apply(self, message: Message, received_ms: int, retained: bool = False) -> None:
        """Fold one accepted message into its device's twin.

        A retained message is replayed by the broker on every (re)subscription, so it tells the
        state but not that the device was heard from now.
        """
        if isinstance(message, Telemetry):
            self._apply_telemetry(message, received_ms)
        elif isinstance(message, Status):
            twin = self._twin(message.device, received_ms)
            if message.origin is not None:
                twin.origin = _merged(twin.origin, message.origin)
            if not (retained and message.status == twin.status and twin.status_ms is not None):
                # A replayed retained status that we already knew keeps its original time.
                twin.status_ms = received_ms
            twin.status = message.status
            if message.status == "online" and not retained:
                twin.last_seen_ms = max(twin.last_seen_ms or 0, received_ms)
        elif isinstance(message, Meta):
            self._twin(message.device, received_ms).meta = message.meta

    def _apply_telemetry(self, message: Telemetry, received_ms: int) -> None:
        twin = self._twin(message.device, received_ms)
        if message.origin is not None:
            twin.origin = _merged(twin.origin, message.origin)
        notes = message.notes
        if notes is not None:
            twin.names.update(notes.renamed)
            twin.units.update(notes.units)
            if notes.dropped:
                twin.note_dropped(notes.dropped, received_ms)
        for sample in message.samples:
            for name, value in sample.metrics.items():
                known = twin.metrics.get(name)
                if known is None or sample.ts_ms >= known[0]:
                    twin.metrics[name] = (sample.ts_ms, value)
            for name, text in sample.attributes.items():
                seen = twin.attributes.get(name)
                if seen is None or sample.ts_ms >= seen[0]:
                    twin.attributes[name] = (sample.ts_ms, text)
        twin.last_seen_ms = max(twin.last_seen_ms or 0, received_ms)

    def claim_names(self, message: Telemetry) -> None:
        """Drop the fields of `message` whose canonical name another of the device's names owns.

        Two names that canonicalise alike (`Flow Rate` and `flow_rate`) are reported as a
        `collision` (the later one is dropped, counted and remembered on the twin), never merged
        into one series.
        """
        twin = self._twins.get(message.device)
        if twin is None or not (twin.names or (message.notes and message.notes.renamed)):
            return
        renamed = message.notes.renamed if message.notes is not None else {}
        refused: dict[str, str] = {}
        for canonical, original in renamed.items():
            owner = twin.names.get(canonical)
            if owner is None and (canonical in twin.metrics or canonical in twin.attributes):
                owner = canonical  # sent under its canonical name before
            if owner is not None and owner != original:
                refused[canonical] = original
        for sample in message.samples:
            for names in (sample.metrics, sample.attributes):
                for canonical in names:
                    if canonical not in renamed and canonical in twin.names:
                        refused[canonical] = canonical  # sent plainly; another name owns it
        if not refused:
            return
        if message.notes is None:
            message.notes = FieldNotes()
        for canonical, original in refused.items():
            message.notes.renamed.pop(canonical, None)
            message.notes.drop(original, "collision")
            for sample in message.samples:
                sample.metrics.pop(canonical, None)
                sample.attributes.pop(canonical, None)

    def admit(self, message: Message) -> str | None:
        """Return why `message` may not be applied (it would pass a cardinality bound), or None.

        Only growth is refused: a new device past `max_devices`, or new metric or attribute
        names that would take a device past `max_names`. Known devices and names always pass.

        >>> twins = Twins(max_devices=1, max_names=2)
        >>> twins.admit(Telemetry("a", [])) is None
        True
        >>> twins.apply(Telemetry("a", []), 0)
        >>> twins.admit(Status("b", "online"))
        'new device b past the bound of 1 known devices (devices.max_known)'
        """
        if not isinstance(message, Telemetry | Status | Meta):
            return None  # replies and rejections create no twin
        twin = self._twins.get(message.device)
        if twin is None and len(self._twins) >= self.max_devices:
            return (
                f"new device {message.device} past the bound of {self.max_devices} known devices"
                " (devices.max_known)"
            )
        if not isinstance(message, Telemetry):
            return None
        metrics = twin.metrics if twin is not None else {}
        attributes = twin.attributes if twin is not None else {}
        new: set[str] = set()
        new_attributes: set[str] = set()
        for sample in message.samples:
            new.update(name for name in sample.metrics if name not in metrics)
            new_attributes.update(name for name in sample.attributes if name not in attributes)
        if not new and not new_attributes:
            return None
        count = len(metrics) + len(attributes) + len(new) + len(new_attributes)
        if count <= self.max_names:
            return None
        names = ", ".join(sorted(new | new_attributes)[:5])
        more = len(new) + len(new_attributes) - 5
        return (
            f"new names ({names}{f' and {more} more' if more > 0 else ''}) would take device"
            f" {message.device} to {count} metric and attribute names, past the bound of"
            f" {self.max_names} (devices.max_metrics)"
        )

    def refusal(self, message: Message) -> Rejected | None:
        """Return `message` as a `cardinality` rejection if `admit` refuses it, else None.

        The dead letter keeps what was not stored, as JSON (the raw bytes are gone by now).
        """
        detail = self.admit(message)
        if detail is None:
            return None
        assert isinstance(message, Telemetry | Status | Meta)  # admit refuses nothing else
        content: object
        if isinstance(message, Telemetry):
            kind = "telemetry"
            content = [
                {"ts": s.ts_ms, "values": {**s.metrics, **s.attributes}} for s in message.samples
            ]
        elif isinstance(message, Status):
            kind, content = "status", message.status
        else:
            kind, content = "meta", message.meta
        payload = orjson.dumps(content)
        return Rejected(
            kind, message.device, "cardinality", detail, payload[:DEAD_LETTER_BYTES], len(payload)
        )

    def forgettable(self, silent_since_ms: int) -> list[str]:
        """Return the devices that never sent meta and were not heard from since the given time.

        Their series have gone with the store's retention by then, and nothing says what they
        were: a one-off id (a typo, a test, a flood) is not kept for ever.
        """
        return sorted(
            twin.id
            for twin in self._twins.values()
            if not twin.meta and twin.last_activity_ms < silent_since_ms
        )

    def forget(self, devices: Iterable[str]) -> list[str]:
        """Remove these twins (no longer dirty either); return the ids that were known."""
        gone = []
        for device in devices:
            if self._twins.pop(device, None) is not None:
                gone.append(device)
            self._dirty.discard(device)
        return gone

    def online_count(self, now_ms: int, default_timeout_s: float) -> int:
        return sum(1 for twin in self._twins.values() if twin.online(now_ms, default_timeout_s))

    def mark_dirty(self, devices: Iterable[str]) -> None:
        """Mark twins as changed again (their save did not complete)."""
        self._dirty.update(d for d in devices if d in self._twins)

    def take_dirty(self) -> list[DeviceTwin]:
        """Return the twins changed since the last call, and forget that they changed."""
        dirty, self._dirty = self._dirty, set()
        return [self._twins[device] for device in sorted(dirty)]
