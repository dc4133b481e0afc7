"""One receive time per message, across redeliveries, for telemetry that carries no `ts`.

A flat payload (`{"temp": 21.5}`) is stored at its receive time. If the daemon dies after storing
it and before acknowledging it, the broker delivers it again (QoS 1, DUP flag set, same packet id)
and a new receive time would store it a second time. So the receive time of every such message
is recorded in the state DB before its points are written, found again on a redelivery, and
forgotten once the message is acknowledged (in the next write, or after the session's expiry).
A message's identity is its device, packet id and content.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import orjson

from daemon.core.messages import Telemetry
from daemon.core.payloads import Sample
from daemon.ports import Received, StateStore
from daemon.resilience import StoreHealth, persist

#: acknowledged stamps forgotten together once this many have gathered (or with new ones)
FLUSH = 1000
PRUNE_S = 3600.0


def receive_key(device: str, mid: int, samples: Sequence[Sample]) -> str:
    """Identify one message across redeliveries: its device, packet id and content."""
    body = orjson.dumps([[s.metrics, s.attributes] for s in samples], option=orjson.OPT_SORT_KEYS)
    return f"{device}|{mid}|{hashlib.blake2b(body, digest_size=8).hexdigest()}"


def _stamped(item: Received) -> bool:
    message = item.message
    return (
        item.qos > 0
        and isinstance(message, Telemetry)
        and any(s.ts_ms == item.received_ms for s in message.samples)
    )


class ReceiveStamps:
    def __init__(self, state: StateStore, health: StoreHealth, horizon_s: float) -> None:
        self._state = state
        self._health = health
        self._horizon_ms = int(horizon_s * 1000)
        self._done: list[str] = []
        self._pruned = time.monotonic()

    async def apply(self, items: list[Received]) -> list[str]:
        """Give redelivered messages their first receive time; make new ones durable.

        Returns the keys of the batch, to hand to `acknowledged` once it is acknowledged.
        """
        stamped = []
        for item in items:
            message = item.message
            if _stamped(item) and isinstance(message, Telemetry):
                stamped.append((item, receive_key(message.device, item.mid, message.samples)))
        dups = [key for item, key in stamped if item.dup]
        first = (
            await persist(
                lambda: self._state.receive_stamps(dups),
                "reading receive stamps",
                "state",
                self._health,
                write=False,
            )
            if dups
            else {}
        )
        new = []
        for item, key in stamped:
            earlier = first.get(key)
            if earlier is None:
                new.append((key, item.received_ms))
                continue
            assert isinstance(item.message, Telemetry)
            for sample in item.message.samples:
                if sample.ts_ms == item.received_ms:
                    sample.ts_ms = earlier
        prune = time.monotonic() - self._pruned >= PRUNE_S
        if new or len(self._done) >= FLUSH or prune:
            done = self._done
            before = time.time_ns() // 1_000_000 - self._horizon_ms if prune else None
            await persist(
                lambda: self._state.save_receive_stamps(new, done, before),
                "writing receive stamps",
                "state",
                self._health,
            )
            self._done = []
            if prune:
                self._pruned = time.monotonic()
        return [key for _, key in stamped]

    def acknowledged(self, keys: list[str]) -> None:
        # A batch split by a reconnect is acknowledged only in part; the rest comes again within
        # the same session, and its stamps may be gone by then (stored twice, at worst).
        self._done.extend(keys)
