"""Which decoder a received message goes to: the native topics, Sparkplug B, or a mapping.

Called on the MQTT network thread for every message, in receive order (the Sparkplug decoder
keeps per-node state). Pure: time is an argument.
"""

from __future__ import annotations

from typing import Protocol

from daemon.core.mappings import MappingSet
from daemon.core.messages import Message, classify, rejection
from daemon.core.payloads import DEFAULT_LIMITS, Limits
from daemon.core.topics import subscriptions
from daemon.errors import PayloadRejected


class Dialect(Protocol):
    """A decoder with topics of its own (Sparkplug B): it gets every message its filters match."""

    #: protocol events by name (gaps, refusals...), exported on /metrics
    counters: dict[str, int]

    def filters(self) -> list[str]: ...

    def decode(self, topic: str, payload: bytes, received_ms: int) -> list[Message]: ...

    def take_requests(self) -> list[tuple[str, bytes]]:
        """Messages the dialect asks to publish (a Sparkplug rebirth request), QoS 0."""
        ...


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` matches the MQTT subscription `topic_filter` (`+`, `#`).

    >>> topic_matches("spBv1.0/#", "spBv1.0/g/NDATA/n"), topic_matches("a/+/c", "a/b/d")
    (True, False)
    """
    parts = topic.split("/")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            return True
        if index >= len(parts) or (level != "+" and level != parts[index]):
            return False
    return len(parts) == len(levels)


class Ingress:
    def __init__(
        self,
        prefix: str = "devices",
        limits: Limits = DEFAULT_LIMITS,
        mappings: MappingSet | None = None,
        dialects: tuple[Dialect, ...] = (),
    ) -> None:
        self.prefix = prefix
        self.limits = limits
        self.mappings = mappings or MappingSet(limits=limits)
        self.dialects = dialects
        self._head = prefix + "/"
        self._dialect_filters = [(d, d.filters()) for d in dialects]

    def filters(self, shared_group: str | None = None) -> list[str]:
        """Every subscription ingest needs: native topics, dialects', mappings' routes."""
        out = subscriptions(self.prefix, shared_group)
        for dialect in self.dialects:
            out.extend(f for f in dialect.filters() if f not in out)
        out.extend(f for f in self.mappings.filters(shared_group) if f not in out)
        return out

    def classify(self, topic: str, payload: bytes, received_ms: int) -> list[Message]:
        """Return what the message means: usually one message, none for an ignored topic."""
        if topic.startswith(self._head):
            return [classify(topic, payload, received_ms, self.prefix, self.limits)]
        for dialect, filters in self._dialect_filters:
            if any(topic_matches(f, topic) for f in filters):
                return dialect.decode(topic, payload, received_ms)
        decoded = self.mappings.decode(topic, payload, received_ms)
        if decoded is not None:
            return decoded
        detail = f"no mapping has a route for {topic[:200]!r}"
        return [rejection(topic, None, PayloadRejected("bad_topic", detail), payload)]
