"""Tests of the ingest pipeline on real SQLite stores with an in-memory batch source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

import daemon.resilience
from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.core.messages import Telemetry, classify
from daemon.core.twin import Twins
from daemon.errors import StoreUnavailable
from daemon.metrics import Metrics
from daemon.pipeline import IngestPipeline
from daemon.ports import DeadLetter, Point, Received

T0 = 1_700_000_000_000
Event = tuple[str, Any]


def received(topic: str, payload: bytes, t_ms: int, mid: int, retained: bool = False) -> Received:
    return Received(classify(topic, payload, t_ms), t_ms, retained, mid, 1, 0)


class ListSource:
    """A BatchSource over a fixed list of batches that records what it acknowledged, and when."""

    def __init__(self, batches: list[list[Received]], events: list[Event]) -> None:
        self._batches = batches
        self.events = events
        self.acked: list[int] = []

    async def batches(self) -> AsyncIterator[list[Received]]:
        for batch in self._batches:
            yield batch

    def ack(self, items: list[Received]) -> None:
        mids = [item.mid for item in items]
        self.acked.extend(mids)
        self.events.append(("ack", mids))


class FlakySeries:
    """A series store that raises StoreUnavailable on the chosen write calls (0-based)."""

    def __init__(self, inner: SqliteSeriesStore, events: list[Event], fail: set[int]) -> None:
        self.inner = inner
        self.url = inner.url
        self.events = events
        self.fail = fail
        self.calls = 0

    async def write(self, points: Sequence[Point]) -> None:
        call, self.calls = self.calls, self.calls + 1
        if call in self.fail:
            self.events.append(("fail", len(points)))
            raise StoreUnavailable(self.url, "simulated outage")
        await self.inner.write(points)
        self.events.append(("write", [tuple(p) for p in points]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakyState:
    """A state store whose first `failures` dead-letter writes raise StoreUnavailable."""

    def __init__(self, inner: SqliteStateStore, events: list[Event], failures: int) -> None:
        self.inner = inner
        self.url = inner.url
        self.events = events
        self.failures = failures

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if self.failures:
            self.failures -= 1
            self.events.append(("fail-letters", len(letters)))
            raise StoreUnavailable(self.url, "simulated outage")
        await self.inner.add_dead_letters(letters)
        self.events.append(("letters", len(letters)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the pipeline's retry attempts and make its backoff instant (no real sleeping)."""
    seen: list[int] = []

    def instant(attempt: int, base: float, cap: float, draw: float) -> float:
        seen.append(attempt)
        return 0.0

    monkeypatch.setattr(daemon.resilience, "backoff_delay", instant)
    return seen


class Rig:
    """The pipeline with its real stores; `run` drives it over the given batches."""

    def __init__(self, tmp_path: Path) -> None:
        self.series = SqliteSeriesStore(tmp_path / "series.db")
        self.state = SqliteStateStore(tmp_path / "state.db")
        self.twins = Twins()
        self.metrics = Metrics()
        self.events: list[Event] = []
        self.source: ListSource | None = None
        self.pipeline: IngestPipeline | None = None

    async def run(
        self,
        batches: list[list[Received]],
        fail_writes: Collection[int] = (),
        fail_letters: int = 0,
        batch_points: int = 5000,
    ) -> None:
        await self.series.open()
        await self.state.open()
        try:
            self.source = ListSource(batches, self.events)
            self.pipeline = IngestPipeline(
                self.source,
                FlakySeries(self.series, self.events, set(fail_writes)),
                FlakyState(self.state, self.events, fail_letters),
                self.twins,
                self.metrics,
                batch_points=batch_points,
            )
            await asyncio.wait_for(self.pipeline.run(), timeout=30)
        finally:
            await self.series.close()
            await self.state.close()

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


def reopen(rig: Rig, query: Any) -> Any:
    """Run `query(series, state)` on freshly opened stores (what survives the pipeline)."""

    async def main() -> Any:
        await rig.series.open()
        await rig.state.open()
        try:
            return await query(rig.series, rig.state)
        finally:
            await rig.series.close()
            await rig.state.close()

    return asyncio.run(main())


def test_valid_telemetry_is_stored_and_twins_updated(tmp_path: Path, attempts: list[int]) -> None:
    """Test that telemetry becomes points, twins follow every message kind, all is acked."""
    rig = Rig(tmp_path)
    batches = [
        [
            received(
                "devices/b1/telemetry",
                b'{"ts": 1699999999000, "values": {"temp": 21.5, "on": true, "mode": "eco"}}',
                T0,
                1,
            ),
            received(
                "devices/b2/telemetry", b'[{"p": 1.5}, {"ts": 1699999998000, "p": 1.0}]', T0, 2
            ),
        ],
        [
            received("devices/b1/meta", b'{"model": "boiler-x"}', T0 + 10, 3, retained=True),
            received("devices/b1/status", b"online", T0 + 11, 4),
            received("devices/b1/commands/c1/reply", b'{"status": "ok"}', T0 + 12, 5),
            received("devices/b1/telemetry", b'{"temp": 22.0}', T0 + 13, 6),
        ],
    ]
    asyncio.run(rig.run(batches))

    async def query(series: SqliteSeriesStore, state: SqliteStateStore) -> Any:
        return (
            await series.query_range("b1", "temp", 0, T0 + 100),
            await series.query_range("b1", "on", 0, T0 + 100),
            await series.query_range("b2", "p", 0, T0 + 100),
            await series.metrics("b1"),
            await state.load_twins(),
            await state.dead_letters(),
        )

    temp, on, pressure, names, saved, letters = reopen(rig, query)
    assert temp == [(T0 - 1000, 21.5), (T0 + 13, 22.0)]
    assert on == [(T0 - 1000, 1.0)]
    assert pressure == [(T0 - 2000, 1.0), (T0, 1.5)]
    assert names == ["on", "temp"]  # attributes are not series
    assert letters == []
    assert rig.source is not None
    assert rig.source.acked == [1, 2, 3, 4, 5, 6]
    assert attempts == []

    b1 = rig.twins.get("b1")
    assert b1 is not None
    assert b1.metrics == {"temp": (T0 + 13, 22.0), "on": (T0 - 1000, 1.0)}
    assert b1.attributes == {"mode": (T0 - 1000, "eco")}
    assert (b1.meta, b1.status, b1.last_seen_ms) == ({"model": "boiler-x"}, "online", T0 + 13)
    assert sorted(twin["id"] for twin in saved) == ["b1", "b2"]
    assert next(t for t in saved if t["id"] == "b1") == b1.to_dict()

    assert rig.pipeline is not None
    assert rig.pipeline.stored_points == 5
    assert rig.sample("frontline_points_written_total") == 5
    for kind, count in {"telemetry": 3, "meta": 1, "status": 1, "reply": 1}.items():
        assert rig.sample("frontline_messages_received_total", {"kind": kind}) == count


def test_rejected_messages_become_dead_letters(tmp_path: Path, attempts: list[int]) -> None:
    """Test that rejected messages are dead-lettered with raw bytes and counted per reason."""
    rig = Rig(tmp_path)
    bad = [
        ("devices/d1/telemetry", b"\xffnot json", "not_json"),
        ("devices/d1/telemetry", b'{"t": NaN}', "non_finite"),
        ("devices/d1/telemetry", b'{"t": NaN}', "non_finite"),
        ("devices/d/2/telemetry", b'{"t": 1}', "bad_topic"),
        ("devices/d9/telemetry", b'{"ts": 1700000000, "t": 1}', "bad_ts"),
        ("devices/d1/status", b"sleepy", "bad_status"),
    ]
    batch = [received(topic, payload, T0 + i, i) for i, (topic, payload, _) in enumerate(bad)]
    batch.append(received("devices/d1/telemetry", b'{"t": 7}', T0 + 50, 99))
    asyncio.run(rig.run([batch]))

    async def query(series: SqliteSeriesStore, state: SqliteStateStore) -> Any:
        return await state.dead_letters(), await series.query_range("d1", "t", 0, T0 + 100)

    letters, points = reopen(rig, query)
    assert [(x.topic, x.payload, x.reason) for x in reversed(letters)] == bad
    assert [x.received_ms for x in reversed(letters)] == [T0 + i for i in range(len(bad))]
    assert letters[-1].device == "d1"
    assert next(x for x in letters if x.reason == "bad_topic").device is None
    assert all(x.size == len(x.payload) for x in letters)
    assert points == [(T0 + 50, 7.0)]
    assert rig.source is not None
    assert rig.source.acked == [*range(len(bad)), 99]
    assert rig.twins.get("d9") is None
    for reason in ("not_json", "bad_topic", "bad_ts", "bad_status"):
        assert rig.sample("frontline_messages_rejected_total", {"reason": reason}) == 1
    assert rig.sample("frontline_messages_rejected_total", {"reason": "non_finite"}) == 2
    assert rig.sample("frontline_messages_received_total", {"kind": "rejected"}) == len(bad)
    assert rig.sample("frontline_messages_received_total", {"kind": "telemetry"}) == 1
    assert rig.pipeline is not None
    assert rig.pipeline.rejected == len(bad)


def telemetry_batches(count: int, per_batch: int) -> list[list[Received]]:
    """Return `count` batches of one-point telemetry messages with increasing ids and times."""
    return [
        [
            received(f"devices/d{mid % 3}/telemetry", f'{{"v": {mid}}}'.encode(), T0 + mid, mid)
            for mid in range(b * per_batch, (b + 1) * per_batch)
        ]
        for b in range(count)
    ]


def assert_acked_only_after_write(events: list[Event], batches: list[list[Received]]) -> None:
    """Check that every acked telemetry item's points were written before its ack event."""
    written: set[tuple[Any, ...]] = set()
    acked: list[int] = []
    by_mid = {item.mid: item for batch in batches for item in batch}
    for kind, data in events:
        if kind == "write":
            written.update(data)
        elif kind == "ack":
            for mid in data:
                message = by_mid[mid].message
                if isinstance(message, Telemetry):
                    for sample in message.samples:
                        for metric, value in sample.metrics.items():
                            point = (message.device, metric, sample.ts_ms, value)
                            assert point in written, f"message {mid} acked before its write"
            acked.extend(data)
    assert acked == sorted(by_mid)


def consecutive_runs(numbers: list[int]) -> list[int]:
    """Return the lengths of the runs of consecutive numbers in a sorted list."""
    runs: list[int] = []
    for i, n in enumerate(numbers):
        if i and n == numbers[i - 1] + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


@pytest.mark.parametrize(
    ("fail", "batch_points"),
    [
        pytest.param({0}, 5000, id="first-write-fails-once"),
        pytest.param({0, 1, 2}, 5000, id="first-write-fails-three-times"),
        pytest.param({1, 2}, 5000, id="second-batch-fails"),
        pytest.param({2, 3}, 2, id="middle-chunk-fails"),
        pytest.param({0, 1, 2, 3, 4, 5}, 3, id="long-outage-over-chunks"),
        pytest.param({0, 2, 3, 5}, 3, id="repeated-outages"),
    ],
)
def test_store_outage_is_retried_and_acks_wait(
    tmp_path: Path, attempts: list[int], fail: set[int], batch_points: int
) -> None:
    """Test that StoreUnavailable is retried with backoff, nothing is lost, acks follow writes."""
    rig = Rig(tmp_path)
    batches = telemetry_batches(3, 5)
    asyncio.run(rig.run(batches, fail_writes=fail, batch_points=batch_points))

    async def query(series: SqliteSeriesStore, state: SqliteStateStore) -> Any:
        return await series.count()

    assert reopen(rig, query) == 15
    assert_acked_only_after_write(rig.events, batches)
    assert [kind for kind, _ in rig.events].count("fail") == len(fail)
    # each run of consecutive failed calls is one write retried: attempts 0, 1, 2, ...
    expected = [n for run in consecutive_runs(sorted(fail)) for n in range(run)]
    assert attempts == expected
    assert rig.sample("frontline_store_errors_total") == len(fail)
    assert rig.sample("frontline_points_written_total") == 15
    assert rig.pipeline is not None
    assert rig.pipeline.store_healthy


def test_ack_waits_for_failed_write_before_it(tmp_path: Path, attempts: list[int]) -> None:
    """Test that while a write keeps failing, its batch (and later ones) stay unacknowledged."""
    rig = Rig(tmp_path)
    batches = telemetry_batches(2, 2)
    asyncio.run(rig.run(batches, fail_writes={0, 1}))
    kinds = [kind for kind, _ in rig.events]
    assert kinds[:5] == ["fail", "fail", "write", "ack", "write"]
    assert rig.events[3] == ("ack", [0, 1])
    assert attempts == [0, 1]


def test_points_are_written_in_chunks(tmp_path: Path, attempts: list[int]) -> None:
    """Test that a batch is written in chunks of at most `batch_points`, then acked once."""
    rig = Rig(tmp_path)
    batches = telemetry_batches(1, 10)
    asyncio.run(rig.run(batches, batch_points=3))
    sizes = [len(data) for kind, data in rig.events if kind == "write"]
    assert sizes == [3, 3, 3, 1]
    assert [kind for kind, _ in rig.events][-1] == "ack"
    assert rig.sample("frontline_store_batch_points_count") == 4


def test_dead_letter_outage_is_retried(tmp_path: Path, attempts: list[int]) -> None:
    """Test that failing dead-letter writes are retried and the batch is acked only after them."""
    rig = Rig(tmp_path)
    batch = [received("devices/d1/telemetry", b"oops", T0, 1)]
    asyncio.run(rig.run([batch], fail_letters=2))
    assert [kind for kind, _ in rig.events] == ["fail-letters", "fail-letters", "letters", "ack"]

    async def query(series: SqliteSeriesStore, state: SqliteStateStore) -> Any:
        return await state.dead_letters()

    [letter] = reopen(rig, query)
    assert (letter.payload, letter.reason) == (b"oops", "not_json")


def test_twins_flushed_to_state_store(tmp_path: Path, attempts: list[int]) -> None:
    """Test that every twin changed during the run is in the state store afterwards."""
    rig = Rig(tmp_path)
    batches = [
        [received("devices/a/telemetry", b'{"x": 1}', T0, 1)],
        [received("devices/b/status", b"offline", T0 + 1, 2, retained=True)],
        [received("devices/c/meta", b'{"model": "m"}', T0 + 2, 3)],
        [received("devices/a/telemetry", b'{"x": 2}', T0 + 3, 4)],
    ]
    asyncio.run(rig.run(batches))

    async def query(series: SqliteSeriesStore, state: SqliteStateStore) -> Any:
        return await state.load_twins()

    saved = reopen(rig, query)
    assert saved == [twin.to_dict() for twin in sorted(rig.twins, key=lambda t: t.id)]
    assert [twin["id"] for twin in saved] == ["a", "b", "c"]
    assert saved[0]["metrics"] == {"x": [T0 + 3, 2.0]}
    assert rig.twins.take_dirty() == []
