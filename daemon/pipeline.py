"""Ingest pipeline: MQTT batches -> device twins, series store, dead letters -> acknowledgement.

One task consumes batches in order, so acknowledgements reach the broker in receive order and only
after the data they cover is durable. A store outage stops acknowledgements (the broker holds the
messages) and is retried with backoff; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from daemon.core.messages import Meta, Rejected, Reply, Status, Telemetry
from daemon.core.ratelimit import LogLimiter
from daemon.core.twin import Twins
from daemon.metrics import Metrics
from daemon.ports import BatchSource, DeadLetter, Point, Received, SeriesStore, StateStore
from daemon.resilience import StoreHealth, persist
from daemon.stamps import ReceiveStamps

log = logging.getLogger(__name__)

TWIN_FLUSH_S = 1.0


class IngestPipeline:
    def __init__(
        self,
        source: BatchSource,
        series: SeriesStore,
        state: StateStore,
        twins: Twins,
        metrics: Metrics,
        batch_points: int = 5000,
        on_points: Callable[[list[Point]], None] | None = None,
        on_reply: Callable[[Reply, int], Awaitable[None]] | None = None,
        health: StoreHealth | None = None,
        stamp_horizon_s: float = 7 * 86400,
    ) -> None:
        self._source = source
        self._series = series
        self._state = state
        self._twins = twins
        self._metrics = metrics
        self._batch_points = batch_points
        self._on_points = on_points
        self.on_reply = on_reply
        self._limiter = LogLimiter(60.0)
        self._last_twin_flush = 0.0
        self.health = health or StoreHealth("series", "state")
        self._stamps = ReceiveStamps(state, self.health, stamp_horizon_s)
        self.stored_points = 0
        self.rejected = 0

    async def run(self) -> None:
        """Consume batches until the source is drained, then persist the twins one last time."""
        async for items in self._source.batches():
            await self._handle(items)
        await self.flush_twins()

    async def _handle(self, items: list[Received]) -> None:
        stamped = await self._stamps.apply(items)  # before any point of theirs is written
        points: list[Point] = []
        letters: list[DeadLetter] = []
        counts: dict[str, int] = {}
        replies: list[tuple[Reply, int]] = []
        for item in items:
            message = item.message
            # Refused too: a new device or new metric names past the cardinality bounds.
            rejected = message if isinstance(message, Rejected) else self._twins.refusal(message)
            if rejected is not None:
                letters.append(self._dead_letter(rejected, item.received_ms))
                continue
            if isinstance(message, Telemetry):
                counts["telemetry"] = counts.get("telemetry", 0) + 1
                device = message.device
                self._twins.claim_names(message)
                if message.notes is not None:
                    self._count_notes(message)
                for sample in message.samples:
                    ts = sample.ts_ms
                    points.extend(Point(device, m, ts, v) for m, v in sample.metrics.items())
            elif isinstance(message, Status):
                counts["status"] = counts.get("status", 0) + 1
            elif isinstance(message, Meta):
                counts["meta"] = counts.get("meta", 0) + 1
            elif isinstance(message, Reply):
                counts["reply"] = counts.get("reply", 0) + 1
                replies.append((message, item.received_ms))
            self._twins.apply(message, item.received_ms, item.retained)
        for kind, count in counts.items():
            self._metrics.received.labels(kind).inc(count)
        await self._persist(points, letters, replies, "status" in counts or "meta" in counts)
        # paho's acknowledgements contend with its network thread for its locks: 5,000 of them
        # took up to 2.3 s during a burst (measured), which the event loop must not wait for.
        await asyncio.to_thread(self._source.ack, items)
        self._stamps.acknowledged(stamped)

    def _count_notes(self, message: Telemetry) -> None:
        notes = message.notes
        assert notes is not None
        if notes.renamed:
            self._metrics.fields_renamed.inc(len(notes.renamed))
        for name, reason in notes.dropped:
            self._metrics.fields_dropped.labels(reason).inc()
            if self._limiter.allow((message.device, "field:" + reason), time.time()) is not None:
                log.info("dropped field %r of %s: %s", name, message.device, reason)

    async def _persist(
        self,
        points: list[Point],
        letters: list[DeadLetter],
        replies: list[tuple[Reply, int]],
        twin_only: bool,
    ) -> None:
        """Make everything a batch carries durable; the caller acknowledges it afterwards."""
        for start in range(0, len(points), self._batch_points):
            await self._write_points(points[start : start + self._batch_points])
        if letters:
            await self._retry(
                lambda: self._add_dead_letters(letters), "writing dead letters", "state"
            )
        if self.on_reply is not None:
            for reply, received_ms in replies:
                await self.on_reply(reply, received_ms)  # committed by the actions
        if twin_only or time.monotonic() - self._last_twin_flush >= TWIN_FLUSH_S:
            # A status or meta message lives only in the twin: durable before acknowledged.
            await self.flush_twins()

    async def _add_dead_letters(self, letters: list[DeadLetter]) -> None:
        dropped = await self._state.add_dead_letters(letters)
        if dropped:  # the oldest went to keep the table within its bounds
            self._metrics.dead_letters_dropped.inc(dropped)

    def _dead_letter(self, message: Rejected, received_ms: int) -> DeadLetter:
        self.rejected += 1
        self._metrics.received.labels("rejected").inc()
        self._metrics.rejected.labels(message.reason).inc()
        suppressed = self._limiter.allow((message.device, message.reason), received_ms / 1000)
        if suppressed is not None:
            more = (
                f" ({suppressed} more from this device since the last report)" if suppressed else ""
            )
            log.warning(
                "rejected message on %s: %s: %s%s",
                message.topic,
                message.reason,
                message.detail,
                more,
            )
        return DeadLetter(
            received_ms,
            message.topic,
            message.device,
            message.reason,
            message.detail,
            message.payload,
            message.size,
        )

    async def _write_points(self, points: list[Point]) -> None:
        started = time.perf_counter()
        await self._retry(lambda: self._series.write(points), "writing points", "series")
        self._metrics.store_write_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_points.observe(len(points))
        self._metrics.points_written.inc(len(points))
        self.stored_points += len(points)
        if self._on_points is not None:
            self._on_points(points)

    @property
    def store_healthy(self) -> bool:
        return self.health.healthy("series") and self.health.healthy("state")

    async def _retry(self, write: Callable[[], Awaitable[None]], what: str, store: str) -> None:
        await persist(write, what, store, self.health, self._metrics.store_errors.inc)

    async def flush_twins(self) -> None:
        dirty = self._twins.take_dirty()
        self._last_twin_flush = time.monotonic()
        if dirty:
            data = [twin.to_dict() for twin in dirty]
            try:
                await self._retry(lambda: self._state.save_twins(data), "writing twins", "state")
            except BaseException:
                self._twins.mark_dirty(twin.id for twin in dirty)  # saved next time instead
                raise
