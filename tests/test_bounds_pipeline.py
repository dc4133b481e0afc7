"""The ingest pipeline applies the bounds: cardinality refusals become dead letters, and letters
dropped to keep the table bounded are counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.core.twin import Twins
from daemon.metrics import Metrics
from daemon.pipeline import IngestPipeline
from tests.test_pipeline import ListSource, received

T0 = 1_700_000_000_000

BATCH = [
    ("devices/a/telemetry", b'{"x": 1}'),
    ("devices/b/telemetry", b'{"x": 1}'),
    ("devices/c/telemetry", b'{"x": 1}'),  # a third device: past max_devices=2
    ("devices/a/telemetry", b'{"y": 2}'),  # a second name: at max_names=2, fine
    ("devices/a/telemetry", b'{"x": 3, "z": 3}'),  # a third name: the whole message is refused
    ("devices/b/status", b"online"),  # a known device
    ("devices/d/meta", b'{"model": "m"}'),  # a new device announcing itself: refused too
    ("devices/a/telemetry", b"{not json"),
]


def run(tmp_path: Path) -> tuple[Metrics, Twins, ListSource, Any]:
    metrics, twins = Metrics(), Twins(max_devices=2, max_names=2)
    series = SqliteSeriesStore(tmp_path / "series.db")
    state = SqliteStateStore(tmp_path / "state.db", dead_letter_max_rows=3)
    source = ListSource(
        [[received(topic, payload, T0 + i, i) for i, (topic, payload) in enumerate(BATCH)]], []
    )

    async def main() -> Any:
        await series.open()
        await state.open()
        try:
            await IngestPipeline(source, series, state, twins, metrics).run()
            return (
                {d: await series.metrics(d) for d in "abc"},
                await series.query_range("a", "x", 0, T0 + 100),
                await state.dead_letters(),
                sorted(t["id"] for t in await state.load_twins()),
            )
        finally:
            await series.close()
            await state.close()

    return metrics, twins, source, asyncio.run(main())


def test_new_devices_and_names_past_the_caps_are_dead_lettered(tmp_path: Path) -> None:
    """Test that refused messages store nothing, are counted as cardinality, known ones flow."""
    metrics, twins, source, (names, xs, letters, saved) = run(tmp_path)
    sample = metrics.registry.get_sample_value
    assert names == {"a": ["x", "y"], "b": ["x"], "c": []}
    assert xs == [(T0, 1.0)]  # the refused {"x": 3, "z": 3} stored neither x nor z
    assert saved == ["a", "b"]
    assert sorted(t.id for t in twins) == ["a", "b"]
    assert sample("frontline_messages_rejected_total", {"reason": "cardinality"}) == 3
    assert sample("frontline_messages_rejected_total", {"reason": "not_json"}) == 1
    assert sample("frontline_messages_received_total", {"kind": "rejected"}) == 4
    assert sample("frontline_messages_received_total", {"kind": "telemetry"}) == 3
    assert source.acked == list(range(len(BATCH)))
    # four letters, a table of three: the oldest (device c's) was dropped, and counted
    assert sample("frontline_dead_letters_dropped_total") == 1
    assert [(x.device, x.reason, x.topic) for x in letters] == [
        ("a", "not_json", "devices/a/telemetry"),
        ("d", "cardinality", "meta"),
        ("a", "cardinality", "telemetry"),
    ]
    refused = letters[2]
    assert "devices.max_metrics" in refused.detail
    assert orjson.loads(refused.payload) == [{"ts": T0 + 4, "values": {"x": 3, "z": 3}}]
    assert "devices.max_known" in letters[1].detail
