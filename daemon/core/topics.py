"""The MQTT topic contract: which device a topic belongs to and what kind of message it carries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from daemon.errors import PayloadRejected

DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    META = "meta"
    REPLY = "reply"


@dataclass(frozen=True, slots=True)
class Topic:
    kind: TopicKind
    device_id: str
    command_id: str | None = None


def is_device_id(text: str) -> bool:
    """Return True if `text` is an acceptable device id.

    >>> is_device_id("boiler-17"), is_device_id("a/b"), is_device_id("")
    (True, False, False)
    """
    return DEVICE_ID.fullmatch(text) is not None


_CACHE: dict[tuple[str, str], Topic] = {}
_CACHE_MAX = 200_000


def parse_topic(topic: str, prefix: str = "devices") -> Topic:
    """Return what `topic` is (memoised: a fleet reuses the same few topics per device)."""
    key = (topic, prefix)
    parsed = _CACHE.get(key)
    if parsed is None:
        parsed = _parse_topic(topic, prefix)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = parsed
    return parsed


def _parse_topic(topic: str, prefix: str) -> Topic:
    """Return what `topic` is, or raise PayloadRejected (`bad_topic`, `bad_device_id`).

    >>> _parse_topic("devices/b1/telemetry", "devices")
    Topic(kind=<TopicKind.TELEMETRY: 'telemetry'>, device_id='b1', command_id=None)
    """
    head = prefix + "/"
    if not topic.startswith(head):
        raise PayloadRejected("bad_topic", f"topic {topic!r} is outside {prefix}/")
    parts = topic[len(head) :].split("/")
    device = parts[0]
    if not is_device_id(device):
        raise PayloadRejected("bad_device_id", f"device id {device[:140]!r} in {topic[:200]!r}")
    rest = parts[1:]
    if rest == ["telemetry"]:
        return Topic(TopicKind.TELEMETRY, device)
    if rest == ["status"]:
        return Topic(TopicKind.STATUS, device)
    if rest == ["meta"]:
        return Topic(TopicKind.META, device)
    if len(rest) == 3 and rest[0] == "commands" and rest[2] == "reply" and rest[1]:
        return Topic(TopicKind.REPLY, device, rest[1])
    raise PayloadRejected("bad_topic", f"unknown topic {topic[:200]!r}")


def subscriptions(prefix: str, shared_group: str | None = None) -> list[str]:
    """Return the topic filters ingest subscribes to (optionally as an MQTT shared subscription).

    >>> subscriptions("devices", "ingest")[0]
    '$share/ingest/devices/+/telemetry'
    """
    filters = [
        f"{prefix}/+/telemetry",
        f"{prefix}/+/status",
        f"{prefix}/+/meta",
        f"{prefix}/+/commands/+/reply",
    ]
    if shared_group:
        # Status and meta are retained and must reach every worker's twin; only telemetry is shared.
        filters[0] = f"$share/{shared_group}/{filters[0]}"
    return filters
