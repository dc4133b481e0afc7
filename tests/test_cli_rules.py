"""Rule commands on stored data: backtest, explain, alerts; and the shipped rules themselves."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from click.testing import CliRunner

from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.cli import cli
from daemon.core.twin import DeviceTwin
from daemon.ports import Point
from daemon.ruletest import run_test_files
from tests.conftest import ROOT

RULES = """
groups:
  - name: boilers
    interval: 30s
    match: {model: "boiler-*"}
    rules:
      - alert: Hot
        expr: avg(temp, 1m) > 80
        for: 2m
"""
MINUTE = 60_000


def seed(data: Path, onset_ago_ms: int) -> int:
    """Store 40 minutes of `temp` for b1 (60, then 95 from the onset); return now."""
    now = int(time.time() * 1000)

    async def write() -> None:
        series, state = SqliteSeriesStore(data / "series.db"), SqliteStateStore(data / "state.db")
        await series.open()
        await state.open()
        points = [
            Point("b1", "temp", ts, 95.0 if ts >= now - onset_ago_ms else 60.0)
            for ts in range(now - 40 * MINUTE, now, 10_000)
        ]
        await series.write(points)
        twin = DeviceTwin("b1", now - 40 * MINUTE, meta={"model": "boiler-x200"})
        twin.metrics["temp"] = (points[-1].ts_ms, points[-1].value)
        twin.last_seen_ms = points[-1].ts_ms
        await state.save_twins([twin.to_dict()])
        await series.close()
        await state.close()

    asyncio.run(write())
    return now


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES)
    env = {
        "FRONTLINE_DATA_DIR": str(tmp_path / "data"),
        "FRONTLINE_RULES__PATHS": json.dumps([str(rules)]),
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def test_backtest_replays_history_through_the_rules(tmp_path: Path) -> None:
    """Test that backtest reports pending then firing for the onset in stored history."""
    now = seed(tmp_path / "data", onset_ago_ms=20 * MINUTE)
    code, output = invoke(tmp_path, "backtest", "--since", "35m", "--json")
    assert code == 0, output
    rows = json.loads(output)
    assert [(r["alert"], r["device"], r["to"]) for r in rows] == [
        ("Hot", "b1", "pending"),
        ("Hot", "b1", "firing"),
    ]
    del now


def test_backtest_on_quiet_history_fires_nothing(tmp_path: Path) -> None:
    """Test that history that never crosses the threshold yields no transition."""
    seed(tmp_path / "data", onset_ago_ms=0)
    code, output = invoke(tmp_path, "backtest", "--since", "35m", "--json")
    assert code == 0, output
    assert json.loads(output) == []


def test_explain_reads_stored_windows(tmp_path: Path) -> None:
    """Test that explain evaluates against stored data and says why the rule is true."""
    seed(tmp_path / "data", onset_ago_ms=20 * MINUTE)
    code, output = invoke(tmp_path, "explain", "b1", "--json")
    assert code == 0, output
    (verdict,) = json.loads(output)
    assert verdict["alert"] == "Hot"
    assert verdict["condition"] is True
    assert verdict["value"] == 95.0
    assert verdict["reason"].startswith("fires: expression true")


def test_explain_unknown_device_is_an_error(tmp_path: Path) -> None:
    """Test that explaining a device nobody has seen is a clear error."""
    seed(tmp_path / "data", onset_ago_ms=0)
    code, output = invoke(tmp_path, "explain", "nobody")
    assert code == 1
    assert "unknown device 'nobody'" in output


def test_shipped_rules_are_valid() -> None:
    """Test that `frontline check rules/` passes on the shipped rule files."""
    result = CliRunner().invoke(cli, ["check", str(ROOT / "rules")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK:")


def test_shipped_rule_tests_pass() -> None:
    """Test that every operator test under rules/tests passes."""
    results = run_test_files([ROOT / "rules" / "tests"])
    assert results, "rules/tests has no tests"
    failures = [f"{r.file}: {r.name}: {r.failures}" for r in results if not r.ok]
    assert failures == []


def test_rule_test_failure_is_readable(tmp_path: Path) -> None:
    """Test that a wrong expectation fails with expected and actual in the output."""
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text(
        "rule_files: [r.yaml]\n"
        "tests:\n"
        "  - name: wrong\n"
        "    interval: 30s\n"
        "    devices:\n"
        "      b1:\n"
        "        meta: {model: boiler-x200}\n"
        "        series: {temp: '95x20'}\n"
        "    alerts:\n"
        "      - at: 5m\n"
        "        firing: []\n"
        "      - at: 5m\n"
        "        firing: [{alert: Hot, device: b2}]\n"
    )
    result = CliRunner().invoke(cli, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert "unexpected firing Hot on b1" in result.output
    assert "expected firing Hot on b2, but it is not" in result.output
    assert "0 passed, 1 failed" in result.output
