"""The outcome benchmark's scoring: ground truth joined with what the daemon did.

The benchmark itself runs for minutes against a real broker and daemon; these tests pin down the
join on small hand-made histories, so a wrong figure in docs/benchmarks.md fails here first.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "service_outcomes", ROOT / "benchmarks" / "service_outcomes.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


so = _load()
T0 = 1_700_000_000_000  # ms


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def started(fault_id: str, device: str, kind: str, fix: dict[str, Any], at: int) -> dict[str, Any]:
    return {
        "event": "fault_started",
        "fault_id": fault_id,
        "device": device,
        "kind": kind,
        "fix": fix,
        "start": iso(at),
    }


def ended(fault_id: str, at: int, reason: str) -> dict[str, Any]:
    return {"event": "fault_ended", "fault_id": fault_id, "end": iso(at), "reason": reason}


def full_ticket(**over: Any) -> dict[str, Any]:
    ticket: dict[str, Any] = {
        "id": "T-1",
        "key": "k1",
        "device": "d1",
        "alert": "A",
        "kind": "fault",
        "status": "open",
        "summary": "s",
        "category": "heating",
        "priority": "P2",
        "skill": "heating",
        "queue": "heating-l1",
        "assignee": "alice",
        "created_ms": T0 + 60_000,
        "timeline": [{"event": "opened"}],
        "context": {
            "device": {"metrics": {"t": 1.0}, "meta": {"model": "m"}, "last_seen": "x"},
            "live": "http://console/api/v1/devices/d1",
            "telemetry": {"series": {"t": [[T0, 1.0]]}},
            "rule": {"expr": "t > 1"},
            "trigger": {"fired_at": "x"},
            "customer": {"name": "Jane", "tier": "gold", "contact": "sms"},
            "runbook": {"steps": ["one"]},
            "remediation": [],
        },
    }
    ticket.update(over)
    return ticket


ROSTER = {"alice": frozenset({"heating"}), "chloe": frozenset({"refrigeration"})}


@pytest.mark.parametrize(
    ("kind", "fix", "rejects", "klass"),
    [
        ("stuck", {"type": "command", "method": "reboot"}, set(), "m2m"),
        ("stuck", {"type": "command", "method": "reboot"}, {"reboot"}, "technician"),
        ("drift", {"type": "customer"}, set(), "h2m"),
        ("hardware", {"type": "none"}, set(), "technician"),
        ("offline", {"type": "none"}, set(), "offline"),
        ("spike", {"type": "none"}, set(), "observe"),
    ],
)
def test_faults_are_classed_by_their_true_fix(
    kind: str, fix: dict[str, Any], rejects: set[str], klass: str
) -> None:
    """Test that a command the device refuses makes its fault a technician's."""
    faults, _ = so.read_truth([started("f", "d1", kind, fix, T0)], {"d1": rejects})
    assert [f.klass for f in faults] == [klass]


def test_a_complete_ticket_misses_nothing_and_each_gap_is_named() -> None:
    """Test the context check, field by field, including empty telemetry and remediation log."""
    assert so.missing_context(full_ticket(), remediated=False) == []
    gappy = full_ticket()
    gappy["context"]["customer"] = {"name": "Jane"}
    gappy["context"]["telemetry"] = {"series": {"t": []}}
    assert so.missing_context(gappy, remediated=True) == [
        "context.telemetry.series",
        "context.customer.tier",
        "context.customer.contact",
        "context.remediation",
    ]


def test_score_joins_truth_and_actions() -> None:
    """Test detection, verified remediation, duplicates, false tickets and routing together."""
    truth = [
        {"event": "usage_profile", "device": "d9", "profile": "unused"},
        started("fix-me", "d1", "stuck", {"type": "command", "method": "reboot"}, T0),
        ended("fix-me", T0 + 90_000, "command:reboot"),
        started("broken", "d2", "hardware", {"type": "none"}, T0),
        started("missed", "d3", "drift", {"type": "customer"}, T0),
    ]
    faults, usage = so.read_truth(truth, {})
    outcome = so.Outcome(
        firings=[
            {"device": "d1", "alert": "S", "at_ms": T0 + 20_000, "labels": {"category": "sensor"}},
            {"device": "d2", "alert": "A", "at_ms": T0 + 30_000, "labels": {"category": "heating"}},
            # An advisory firing is not a detection of d3's fault.
            {"device": "d3", "alert": "U", "at_ms": T0 + 40_000, "labels": {"category": "usage"}},
        ],
        remediations=[
            {
                "key": "k-d1",
                "device": "d1",
                "alert": "S",
                "sends": 1,
                "log": [
                    {"event": "sent", "at_ms": T0 + 25_000},
                    {"event": "cleared", "at_ms": T0 + 120_000},
                ],
            }
        ],
        tickets=[
            full_ticket(id="T-a", key="k-d2-a", device="d2", created_ms=T0 + 40_000),
            # The same fault, a second alert: a duplicate for the agent.
            full_ticket(id="T-b", key="k-d2-b", device="d2", created_ms=T0 + 50_000),
            # Nothing wrong on d4; and the assignee cannot do refrigeration.
            full_ticket(id="T-c", key="k-d4", device="d4", skill="refrigeration"),
            full_ticket(id="T-d", key="k-d9", device="d9", kind="advisory"),
        ],
        notices=[],
    )
    report = so.score(faults, usage, outcome, T0 + 600_000, ROSTER)
    by_id = {s.fault.fault_id: s for s in report.faults}
    assert by_id["fix-me"].detected_ms == T0 + 20_000
    assert by_id["fix-me"].acted_ms == T0 + 25_000
    assert by_id["fix-me"].remediated
    assert by_id["fix-me"].fixed_by_command
    assert by_id["missed"].detected_ms is None
    assert [t["id"] for t in by_id["broken"].tickets] == ["T-a", "T-b"]
    assert report.duplicate_tickets == 1
    assert [t["id"] for t in report.false_tickets] == ["T-c"]
    assert report.misrouted == ["T-c"]
    assert report.advisories == {"d9": ["T-d"]}
    rows = dict(so.table(report))
    assert rows["faults detected"] == "2/3 (67 %)"
    assert rows["m2m faults auto-remediated and verified"] == "1/1 (100 %)"
    assert rows["advisories for unused/misused devices"] == "1/1 (100 %)"
    assert rows["duplicate tickets"] == "1"


def test_docs_table_is_replaced_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a second run replaces the table instead of appending another."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n", encoding="utf-8")
    monkeypatch.setattr(so, "DOCS", doc)
    so.write_docs(so.markdown([("a", "1")], "cmd", "setup"))
    so.write_docs(so.markdown([("a", "2")], "cmd", "setup"))
    text = doc.read_text(encoding="utf-8")
    assert text.count(so.BEGIN) == 1
    assert "| a | 2 |" in text
    assert "| a | 1 |" not in text
    assert text.startswith("# Benchmarks\n\nintro\n")


def test_a_connectivity_alert_answers_the_offline_fault_of_a_device_with_two() -> None:
    """Test attribution when a stuck sensor is followed by an outage on the same device."""
    truth = [
        started("stuck", "d1", "stuck", {"type": "command", "method": "reboot"}, T0),
        started("outage", "d1", "offline", {"type": "customer"}, T0 + 30_000),
    ]
    faults, usage = so.read_truth(truth, {})
    outcome = so.Outcome(
        firings=[
            # The stuck sensor's alert fires after the outage began: still the stuck fault's.
            {
                "device": "d1",
                "alert": "Stuck",
                "at_ms": T0 + 35_000,
                "labels": {"category": "sensor"},
            },
            {
                "device": "d1",
                "alert": "Offline",
                "at_ms": T0 + 50_000,
                "labels": {"category": "connectivity"},
            },
        ],
        remediations=[],
        tickets=[],
        notices=[{"device": "d1", "alert": "Offline", "kind": "guidance", "at_ms": T0 + 51_000}],
    )
    report = so.score(faults, usage, outcome, T0 + 600_000, ROSTER)
    by_id = {s.fault.fault_id: s for s in report.faults}
    assert by_id["stuck"].detected_ms == T0 + 35_000
    assert by_id["outage"].detected_ms == T0 + 50_000
    assert by_id["outage"].guided
    assert not by_id["stuck"].guided
