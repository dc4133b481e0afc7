"""End to end: 21 simulated devices, faults of every kind of fix, through the real daemon.

Runs the outcome benchmark's machinery (Mosquitto from the shipped config, `frontline run` as a
child process, the simulated fleet with its ground truth) on the short scenario
`simulators/scenarios/service-short.yaml`, then checks the service loop against the truth: every
fault a command can fix is remediated and verified without a ticket left open; every fault that
needs a technician gets exactly one ticket, routed to the right skill, with every context field;
the customer who can fix a fault is guided; no duplicate or false tickets. About 4 minutes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.test_service_outcomes import so

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "simulators" / "scenarios" / "service-short.yaml"
EXPECTED_SKILL = {
    "heat-pump-compressor-failing": "heating",
    "freezer-stuck-locked": "refrigeration",
}


@pytest.mark.timeout(420)
def test_service_loop_against_ground_truth(tmp_path: Path) -> None:
    """Test acceptance 1 of the actions issue on 21 devices and 7 faults."""
    require_binary("mosquitto")
    args = so.parse_args(
        ["--scenario", str(SCENARIO), "--settle", "20", "--rules", str(so.RULES), "--no-models"]
    )
    report, _ = asyncio.run(so.run(args, tmp_path))
    summary = "\n".join(so.details(report))
    by_id = {s.fault.fault_id: s for s in report.faults}
    assert len(by_id) == 7, summary

    assert all(s.detected_ms is not None for s in report.faults), summary
    for s in report.by_class("m2m"):
        assert s.remediated, f"{s.fault.fault_id} not remediated and verified\n{summary}"
        assert s.fixed_by_command, f"{s.fault.fault_id} not fixed by the command\n{summary}"
        assert all(t["status"] == "resolved" for t in s.tickets), summary
    technician = report.by_class("technician")
    assert {s.fault.fault_id for s in technician} == set(EXPECTED_SKILL), summary
    for s in technician:
        assert len(s.tickets) == 1, summary
        (ticket,) = s.tickets
        assert ticket["skill"] == EXPECTED_SKILL[s.fault.fault_id], summary
        assert ticket["assignee"], f"{ticket['id']} not assigned\n{summary}"
    guided = by_id["freezer-door-ajar-guided"]
    assert guided.guided, summary
    assert by_id["boiler-offline"].guided, summary  # the network steps
    assert report.missing == {}, summary
    assert report.misrouted == [], summary
    assert report.duplicate_tickets == 0, summary
    assert report.false_tickets == [], summary
