"""Integration: scheduled usage rules over stored history open customer-success advisories."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from daemon.adapters.mosquitto import MosquittoProcess
from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.core.twin import DeviceTwin
from daemon.ports import Point
from tests.conftest import DaemonProcess

pytestmark = pytest.mark.integration
HOUR = 3600_000

RULES = """
groups:
  - name: usage
    schedule: "0 3 * * *"
    advisory_period: 30d
    match: {model: "boiler-*"}
    rules:
      - alert: BoilerNotUsed
        expr: max(burner_on, 2d) == 0 and count(burner_on, 2d) > 10
        labels: {severity: info, category: usage}
        annotations: {summary: "Boiler {{ device.id }} has not fired for 2 days"}
"""
ROUTING = """
queues:
  - {match: {kind: advisory}, queue: customer-success, skill: customer-success}
agents:
  - {id: carol, skills: [customer-success]}
"""


def seed(data: Path) -> None:
    """Three days of hourly burner_on: `idle` never fires, `busy` fires every other hour."""
    now = int(time.time() * 1000)

    async def write() -> None:
        series, state = SqliteSeriesStore(data / "series.db"), SqliteStateStore(data / "state.db")
        await series.open()
        await state.open()
        points = []
        for device, pattern in (("idle", lambda i: 0.0), ("busy", lambda i: float(i % 2))):
            points += [Point(device, "burner_on", now - i * HOUR, pattern(i)) for i in range(72)]
            twin = DeviceTwin(
                device, now - 72 * HOUR, meta={"model": "boiler-x200"}, last_seen_ms=now
            )
            await state.save_twins([twin.to_dict()])
        await series.write(points)
        await series.close()
        await state.close()

    asyncio.run(write())


def test_unused_device_gets_one_advisory_ticket(broker: MosquittoProcess, tmp_path: Path) -> None:
    """Test that a scheduled usage rule opens an advisory for the unused boiler only."""
    seed(tmp_path / "data")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "usage.yaml").write_text(RULES)
    (tmp_path / "routing.yaml").write_text(ROUTING)
    daemon = DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_RULES__PATHS=json.dumps([str(tmp_path / "rules")]),
        FRONTLINE_ACTIONS__ROUTING=str(tmp_path / "routing.yaml"),
    ).start()
    try:
        out = daemon.cli("evaluate", "usage")
        assert "BoilerNotUsed on idle: inactive -> firing" in out
        assert "busy" not in out
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not daemon.cli_json("tickets", "list"):
            time.sleep(0.2)
        (ticket,) = daemon.cli_json("tickets", "list")
        assert (ticket["device"], ticket["kind"], ticket["queue"], ticket["assignee"]) == (
            "idle",
            "advisory",
            "customer-success",
            "carol",
        )
        assert "0 transition(s)" in daemon.cli("evaluate", "usage")  # still firing: no repeat
        assert len(daemon.cli_json("tickets", "list", "--all")) == 1
    finally:
        daemon.kill()
