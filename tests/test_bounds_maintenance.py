"""The daemon's maintenance round applies the retention bounds: history up to the actions' cursor,
forgotten devices in memory and in the state DB, and counts both."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.app import App
from daemon.config import Settings
from daemon.core.twin import DeviceTwin, Twins
from daemon.ports import ACTIONS_CURSOR

DAY = 86_400_000


def test_maintenance_prunes_up_to_the_cursor_and_forgets_silent_unknown_devices(
    tmp_path: Path,
) -> None:
    """Test that one round deletes consumed old events only and forgets old devices without meta."""
    now = time.time_ns() // 1_000_000
    old, recent = now - 100 * DAY, now - DAY  # past store.history_retention and store.retention
    twins = [
        DeviceTwin("one-off", old, last_seen_ms=old),
        DeviceTwin("described", old, meta={"model": "m"}, last_seen_ms=old),
        DeviceTwin("recent", old, last_seen_ms=recent),
    ]
    event = {"key": "k", "device": "d", "alert": "A", "from_phase": "a", "to_phase": "b"}
    app = App(Settings(data_dir=tmp_path))
    app.twins = Twins(twins)

    async def main() -> tuple[list[int], list[str]]:
        series = SqliteSeriesStore(tmp_path / "series.db")
        state = SqliteStateStore(tmp_path / "state.db")
        await series.open()
        await state.open()
        try:
            await state.save_twins([t.to_dict() for t in twins])
            await state.save_alerts({}, [{**event, "at_ms": old} for _ in range(3)])
            await state.set_value(ACTIONS_CURSOR, b"2")  # the actions consumed events 1 and 2
            await app._maintain(series, state)
            left: list[dict[str, Any]] = await state.alert_events(limit=10)
            return [e["at_ms"] for e in left], [t["id"] for t in await state.load_twins()]
        finally:
            await series.close()
            await state.close()

    events, saved = asyncio.run(main())
    assert events == [old]  # event 3, not yet acted on, stays however old
    assert saved == ["described", "recent"]
    assert sorted(t.id for t in app.twins) == ["described", "recent"]
    sample = app.metrics.registry.get_sample_value
    assert sample("frontline_history_pruned_total", {"table": "alert_events"}) == 2
    assert sample("frontline_devices_forgotten_total") == 1
