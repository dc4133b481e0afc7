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


def test_docs_table_keeps_one_column_per_rule_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that a run replaces its own column in place and keeps the other rule set's."""
    doc = tmp_path / "benchmarks.md"
    old_format = f"{so.BEGIN}\n\n| outcome | figure |\n|---|---|\n| a | 0 |\n\n{so.END}"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{old_format}\n\nafter\n", encoding="utf-8")
    monkeypatch.setattr(so, "DOCS", doc)
    so.write_docs(so.Column("rules/", "cmd one", "setup one", {"a": "1", "b": "2"}))
    so.write_docs(so.Column("bench/", "cmd two", "setup two", {"a": "3", "c": "4"}))
    so.write_docs(so.Column("rules/", "cmd one", "setup one", {"a": "5", "b": "6"}))
    text = doc.read_text(encoding="utf-8")
    assert text.count(so.BEGIN) == 1
    assert "| figure |" not in text  # the older single-column table is gone
    assert "| outcome | rules/ | bench/ |" in text
    assert "| a | 5 | 3 |" in text
    assert "| b | 6 | — |" in text
    assert "| c | — | 4 |" in text
    assert "- **bench/**: `cmd two` (setup two)." in text
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert text.endswith("after\n")
    columns = so.parse_columns(text)
    assert [(c.label, c.command, c.values) for c in columns] == [
        ("rules/", "cmd one", {"a": "5", "b": "6"}),
        ("bench/", "cmd two", {"a": "3", "c": "4"}),
    ]


def impacted(fault_id: str, device: str, kind: str, at: int, impact: int) -> dict[str, Any]:
    line = started(fault_id, device, kind, {"type": "none"}, at)
    line["customer_impact_at"] = iso(impact)
    return line


def firing(device: str, alert: str, at: int, category: str = "heating") -> dict[str, Any]:
    return {"device": device, "alert": alert, "at_ms": at, "labels": {"category": category}}


def test_detection_before_the_impact_and_the_lead_time() -> None:
    """Test that only a detection before customer_impact_at counts early, with its lead."""
    truth = [
        impacted("early", "d1", "decorrelate", T0, T0 + 600_000),
        impacted("late", "d2", "wear", T0, T0 + 60_000),
        impacted("missed", "d3", "drift", T0, T0 + 300_000),
        started("no-impact", "d4", "spike", {"type": "none"}, T0),
    ]
    faults, usage = so.read_truth(truth, {})
    outcome = so.Outcome(
        firings=[
            firing("d1", "BoilerAnomaly", T0 + 240_000),  # 360 s before the impact
            firing("d2", "CompressorFailed", T0 + 90_000),  # 30 s after the failure
            firing("d4", "Noisy", T0 + 10_000),
        ],
        remediations=[],
        tickets=[],
        notices=[],
    )
    report = so.score(faults, usage, outcome, T0 + 900_000, ROSTER)
    by_id = {s.fault.fault_id: s for s in report.faults}
    assert by_id["early"].lead_ms == 360_000
    assert by_id["late"].detected_ms is not None
    assert by_id["late"].lead_ms is None
    assert by_id["missed"].lead_ms is None
    assert by_id["no-impact"].lead_ms is None
    rows = dict(so.table(report))
    assert rows["faults detected"] == "3/4 (75 %)"
    assert rows["faults detected before the customer-visible impact"] == "1/3 (33 %)"
    assert rows["lead time before the impact, median / shortest"] == "360 s / 360 s"
    assert rows["detected: decorrelate (no rule targets it)"] == "1/1 (100 %), 1/1 before impact"
    assert rows["detected: wear (no rule targets it)"] == "1/1 (100 %), 0/1 before impact"
    assert rows["detected: drift"] == "0/1 (0 %), 0/1 before impact"
    assert rows["detected: spike"] == "1/1 (100 %)"
    # Faults no rule targets need a technician: one ticket each is the target.
    assert {s.fault.klass for s in report.faults if s.fault.kind in so.MODEL_KINDS} == {
        "technician"
    }


def test_false_alerts_per_thousand_device_hours() -> None:
    """Test that firings with no fault active (nor just ended) count, advisories do not."""
    truth = [{"event": "usage_profile", "device": d, "profile": "normal"} for d in ("d1", "d2")]
    truth += [
        started("f", "d1", "stuck", {"type": "command", "method": "reboot"}, T0 + 60_000),
        ended("f", T0 + 120_000, "command:reboot"),
    ]
    faults, usage = so.read_truth(truth, {})
    grace = int(so.ATTRIBUTION_S * 1000)
    outcome = so.Outcome(
        firings=[
            firing("d1", "Stuck", T0 + 70_000, "sensor"),  # the fault's
            firing("d1", "Stuck", T0 + 120_000 + grace - 1, "sensor"),  # its verification
            firing("d1", "Stuck", T0 + 120_000 + grace + 1, "sensor"),  # false: long after
            firing("d2", "Hot", T0 + 30_000),  # false: nothing ever wrong on d2
            firing("d2", "NotUsed", T0 + 40_000, "usage"),  # an advisory: not an alert
        ],
        remediations=[],
        tickets=[],
        notices=[],
    )
    report = so.score(faults, usage, outcome, T0 + 3_600_000, ROSTER, run_start_ms=T0)
    assert [(e["device"], e["at_ms"]) for e in report.false_alerts] == [
        ("d1", T0 + 120_000 + grace + 1),
        ("d2", T0 + 30_000),
    ]
    assert report.device_hours == pytest.approx(2.0)
    rows = dict(so.table(report))
    key = "false alerts (firing, no fault on the device) per 1,000 device-hours"
    assert rows[key] == "1000 (2 in 2.0 device-hours)"


def test_history_faults_are_not_the_live_runs() -> None:
    """Test that the backfill's wear runs (history: true) are left out of the scoring."""
    past = impacted("history-wear-1", "d1", "wear", T0 - 7_200_000, T0 - 3_600_000)
    past["history"] = True
    gone = ended("history-wear-1", T0 - 1_800_000, "repaired")
    gone["history"] = True
    faults, _ = so.read_truth([past, gone, impacted("live", "d1", "wear", T0, T0 + 1)], {})
    assert [f.fault_id for f in faults] == ["live"]


def test_guidance_whose_steps_fit_the_fault() -> None:
    """Test the customers' side: what they received, whether the steps fit, who complied."""
    lines = [
        {"event": "customer_guided", "fault_id": "leak", "device": "d1", "alert": "Low",
         "steps_matched": True, "complied": True, "why": "the customer follows the steps"},
        {"event": "customer_guided", "fault_id": "ignition", "device": "d2", "alert": "Cold",
         "steps_matched": False, "complied": None, "why": "no steps fix this hardware fault"},
        {"event": "customer_guided", "fault_id": None, "device": "d3", "alert": "Cold",
         "steps_matched": False, "complied": None, "why": "no fault on the device"},
    ]  # fmt: skip
    guidance = so.read_guidance(lines)
    assert [g["fault_id"] for g in guidance] == ["leak", "ignition"]
    report = so.score([], {}, so.Outcome([], [], [], []), T0, ROSTER, guidance=guidance)
    rows = dict(so.table(report))
    assert rows["guidance that reached a faulty device with steps that fit its fault"] == (
        "1/2 (50 %)"
    )
    assert any("steps fit=n" in line for line in so.details(report))


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
