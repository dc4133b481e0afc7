"""Integration: urgency from prediction through the real daemon, on the shipped files.

The reported case: an overheating boiler whose firmware refused every command got its ticket in
the general queue at normal priority and reached the customer-impact temperature minutes later.
Here two boilers overheat at once on Mosquitto, with `frontline run` on the shipped
`rules/boilers.yaml`, `rules/service/routing.yaml` and `customers.yaml`: sim-boiler-0001 refuses
every remote command, sim-boiler-0004 takes the burner cap. The first ticket must land in
field-service at P1 with the customer's safety steps; the second must not, and resolves itself
once the fix is verified.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.mosquitto import MosquittoProcess
from daemon.adapters.service_files import runbook_steps
from tests.conftest import ROOT, DaemonProcess, wait_until
from tests.test_actions_integration import notices

pytestmark = pytest.mark.integration

# 30 °C a minute from about 63 °C: the 30-s average passes 75 °C after ~40 s, so the alert fires
# about a minute in, while the flow crosses the 85 °C lockout within the rule's 1-minute fit.
SCENARIO = """
description: Two overheating boilers; the first refuses every remote command
devices: 4
interval: 0.5s
seed: 9
models: [boiler, heat_pump, freezer]
faults:
  - {device: sim-boiler-0001, kind: drift, metric: temperature, start: 2s, params: {rate: 30}}
  - {device: sim-boiler-0004, kind: drift, metric: temperature, start: 2s, params: {rate: 30}}
behaviours:
  sim-boiler-0001: {rejects: [reboot, reduce_power, reset_valve]}
"""
SAFETY_STEPS = runbook_steps(ROOT / "rules" / "runbooks" / "boiler-overheating-safety.md")


def shipped_daemon(broker: MosquittoProcess, tmp_path: Path) -> DaemonProcess:
    """The daemon on the shipped boiler rules and service files."""
    return DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_RULES__PATHS=json.dumps([str(ROOT / "rules" / "boilers.yaml")]),
        FRONTLINE_ACTIONS__ROUTING=str(ROOT / "rules" / "service" / "routing.yaml"),
        FRONTLINE_ACTIONS__CUSTOMERS=str(ROOT / "rules" / "service" / "customers.yaml"),
    )


def overheating(daemon: DaemonProcess, device: str) -> dict[str, Any] | None:
    """The BoilerOverheating ticket of `device`, open or resolved, if there is one."""
    found = [
        t
        for t in daemon.cli_json("tickets", "list", "--all")
        if (t["device"], t["alert"]) == (device, "BoilerOverheating")
    ]
    assert len(found) <= 1, found  # one ticket per episode: a move is never a second ticket
    return found[0] if found else None


@pytest.mark.timeout(300)
def test_a_refusing_boiler_goes_to_field_service_and_an_accepting_one_does_not(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test the reported case end to end, and the same fault on a device that takes the fix."""
    assert SAFETY_STEPS  # the shipped safety runbook has numbered steps
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    daemon = shipped_daemon(broker, tmp_path).start()
    fleet = subprocess.Popen(
        [sys.executable, "-m", "daemon", "simulate", "--scenario", str(scenario)],
        env=daemon.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: (overheating(daemon, "sim-boiler-0001") or {}).get("queue") == "field-service",
            timeout=150,
            what="the refusing boiler's ticket to move to field-service",
        )
        refused = overheating(daemon, "sim-boiler-0001")
        assert refused is not None
        assert (refused["priority"], refused["skill"], refused["status"]) == (
            "P1",
            "heating",
            "open",
        )
        opened, moved, noted = refused["timeline"][:3]
        assert [opened["event"], moved["event"], noted["event"]] == [
            "opened",
            "rerouted",
            "updated",
        ]
        assert moved["at_ms"] - opened["at_ms"] < 30_000  # at the refusal, not after a timeout
        assert noted["detail"].startswith("safety steps sent to the customer")
        urgency = refused["context"]["urgency"]
        assert urgency["remediation"] == "refused"
        assert "the device refused reduce_power" in urgency["remediation_detail"]
        assert urgency["impact_in_s"] is not None
        assert urgency["impact_in_s"] <= 3600
        assert urgency["text"].startswith("Customer impact predicted ")
        assert urgency["safety_steps"] == SAFETY_STEPS
        (safety,) = [n for n in notices(daemon, "sim-boiler-0001") if n["kind"] == "safety"]
        assert safety["steps"] == SAFETY_STEPS
        assert safety["alert"] == "BoilerOverheating"
        shown = daemon.cli("tickets", "show", refused["id"])
        assert "queue field-service" in shown
        assert "urgency: Customer impact predicted " in shown
        assert "Remediation: refused: the device refused reduce_power" in shown

        wait_until(
            lambda: any(n["kind"] == "fixed" for n in notices(daemon, "sim-boiler-0004")),
            timeout=200,
            what="the accepting boiler's fix to be verified",
        )
        accepted = overheating(daemon, "sim-boiler-0004")
        assert accepted is not None
        assert accepted["status"] == "resolved"
        assert accepted["resolution"] == "fixed remotely by reduce_power (verified)"
        assert accepted["queue"] == "heating-l2"
        assert [e["event"] for e in accepted["timeline"]] == ["opened", "resolved"]
        assert accepted["context"]["urgency"]["remediation"] == "verified"
        every = daemon.cli_json("tickets", "list", "--all")
        assert not [
            t for t in every if t["device"] == "sim-boiler-0004" and t["queue"] == "field-service"
        ]
        assert [n for n in notices(daemon, "sim-boiler-0004") if n["kind"] == "safety"] == []
        assert len([n for n in notices(daemon, "sim-boiler-0001") if n["kind"] == "safety"]) == 1
    finally:
        fleet.send_signal(signal.SIGINT)
        fleet.wait(30)
        daemon.kill()
