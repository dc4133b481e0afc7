"""Telemetry without `ts` redelivered after a crash is stored once, at its first receive time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.core.messages import classify
from daemon.core.twin import Twins
from daemon.metrics import Metrics
from daemon.pipeline import IngestPipeline
from daemon.ports import Received
from daemon.stamps import receive_key
from tests.test_pipeline import ListSource

T0 = 1_700_000_000_000
TOPIC = "devices/flat-1/telemetry"


def flat(value: float, t_ms: int, mid: int, dup: bool = False) -> Received:
    message = classify(TOPIC, b'{"temp": %.1f}' % value, t_ms)
    return Received(message, t_ms, False, mid, 1, 0, 16, dup)


async def run_once(root: Path, batch: list[Received]) -> list[tuple[int, float]]:
    """One daemon life: ingest `batch` (acknowledging it), return every stored temp point."""
    series = SqliteSeriesStore(root / "series.db")
    state = SqliteStateStore(root / "state.db")
    await series.open()
    await state.open()
    try:
        source = ListSource([batch], [])
        await IngestPipeline(source, series, state, Twins(), Metrics()).run()
        return await series.query_range("flat-1", "temp", 0, T0 * 2)
    finally:
        await series.close()
        await state.close()


def test_redelivery_after_a_crash_keeps_the_first_receive_time(tmp_path: Path) -> None:
    """Test that a flat payload stored, then redelivered (DUP), is stored once."""

    async def scenario() -> None:
        # First life: stored, and the daemon dies before the acknowledgement reaches the broker
        # (the stamps of acknowledged messages are forgotten; these never were).
        first = [flat(21.5, T0, mid=7), flat(22.0, T0, mid=8)]
        stored = await run_once(tmp_path, first)
        assert stored == [(T0, 21.5)] or stored == [(T0, 22.0)]  # one point per (device, ts)
        # Second life: the broker redelivers both, 5 s later, with DUP set and the same ids.
        again = [flat(21.5, T0 + 5000, mid=7, dup=True), flat(22.0, T0 + 5000, mid=8, dup=True)]
        assert await run_once(tmp_path, again) == stored
        # A genuinely new message with a reused packet id is a new reading.
        fresh = [flat(23.0, T0 + 9000, mid=7)]
        assert await run_once(tmp_path, fresh) == [*stored, (T0 + 9000, 23.0)]

    asyncio.run(scenario())


def test_a_dup_never_seen_before_takes_its_own_receive_time(tmp_path: Path) -> None:
    """Test that a DUP whose first delivery never reached us is stored at its receive time."""
    stored = asyncio.run(run_once(tmp_path, [flat(20.0, T0 + 3000, mid=3, dup=True)]))
    assert stored == [(T0 + 3000, 20.0)]


def test_the_key_is_device_packet_and_content() -> None:
    """Test that the message identity changes with the device, the packet id and the values."""
    one = flat(21.5, T0, mid=7).message
    assert hasattr(one, "samples")
    base = receive_key("a", 7, one.samples)
    assert base == receive_key("a", 7, [replace(s, ts_ms=T0 + 1) for s in one.samples])
    assert base != receive_key("b", 7, one.samples)
    assert base != receive_key("a", 8, one.samples)
    assert base != receive_key("a", 7, flat(21.6, T0, mid=7).message.samples)  # type: ignore[union-attr]


def test_acknowledged_stamps_are_forgotten_with_the_next_write(tmp_path: Path) -> None:
    """Test that the stamps of acknowledged messages leave the state DB."""
    from daemon.resilience import StoreHealth
    from daemon.stamps import ReceiveStamps

    async def scenario() -> None:
        state = SqliteStateStore(tmp_path / "state.db")
        await state.open()
        stamps = ReceiveStamps(state, StoreHealth("state"), 86400)
        first = await stamps.apply([flat(21.5, T0, mid=1), flat(22.5, T0, mid=2)])
        assert set(await state.receive_stamps(first)) == set(first)
        stamps.acknowledged(first)
        second = await stamps.apply([flat(23.5, T0 + 1000, mid=3)])
        assert await state.receive_stamps(first) == {}
        assert set(await state.receive_stamps(second)) == set(second)
        await state.close()

    asyncio.run(scenario())
