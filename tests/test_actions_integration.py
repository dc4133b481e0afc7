"""Integration: alerts turned into verified remote fixes, notices and tickets, end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.mosquitto import MosquittoProcess
from tests.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.integration

RULES = """
groups:
  - name: freezers
    interval: 1s
    match: {model: "freezer-*"}
    rules:
      - alert: SensorStuck
        expr: changes(cabinet_temp, 5s) == 0 and count(cabinet_temp, 5s) >= 4
        labels: {severity: minor, category: sensor, skill: refrigeration}
        annotations: {summary: "cabinet sensor of {{ device.id }} is stuck"}
        remediate:
          - command: reboot
            timeout: 10s
            verify: 20s
  - name: boilers
    interval: 1s
    match: {model: "boiler-*"}
    rules:
      - alert: BoilerOverheating
        expr: avg(temperature, 3s) > 90
        labels: {severity: major, category: heating, skill: heating}
        annotations:
          summary: "Boiler {{ device.id }} at {{ value | round(1) }} C"
          runbook: runbook.md
"""
RUNBOOK = (
    "# Overheating\n\n1. Check the flow temperature sensor.\n2. Replace the pump if it is seized.\n"
)
ROUTING = """
queues:
  - {match: {category: heating, severity: "major|critical"}, queue: heating-l2, skill: heating}
default: {queue: service, skill: general}
escalation:
  - {after: 1h, level: 2}
agents:
  - {id: alice, name: Alice, skills: [heating], capacity: 3}
  - {id: bob, name: Bob, skills: [refrigeration], capacity: 3}
"""
CUSTOMERS = "cust-0001: {name: Jane Doe, tier: gold, contact: sms}\n"


def service_daemon(broker: MosquittoProcess, tmp_path: Path) -> DaemonProcess:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES)
    (folder / "runbook.md").write_text(RUNBOOK)
    (tmp_path / "routing.yaml").write_text(ROUTING)
    (tmp_path / "customers.yaml").write_text(CUSTOMERS)
    return DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_RULES__PATHS=json.dumps([str(folder)]),
        FRONTLINE_ACTIONS__ROUTING=str(tmp_path / "routing.yaml"),
        FRONTLINE_ACTIONS__CUSTOMERS=str(tmp_path / "customers.yaml"),
        FRONTLINE_ACTIONS__QUIET_PERIOD="3s",
    )


def fleet(daemon: DaemonProcess, *faults: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "daemon", "simulate", "--devices", "3", "--interval", "0.5s"]
    for fault in faults:
        args += ["--fault", fault]
    return subprocess.Popen(
        args, env=daemon.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def notices(daemon: DaemonProcess, device: str) -> list[dict[str, Any]]:
    return list(daemon.cli_json("notices", device))


def test_stuck_sensor_is_fixed_by_reboot_and_verified_without_a_ticket(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that a reboot-fixable fault gets its command, is verified, and the customer told."""
    daemon = service_daemon(broker, tmp_path).start()
    sim = fleet(daemon, "stuck:sim-freezer-0003:cabinet_temp:start=2s")
    try:
        wait_until(
            lambda: any(n["kind"] == "fixed" for n in notices(daemon, "sim-freezer-0003")),
            timeout=60,
            what="the verified fix notice",
        )
        assert daemon.metric("frontline_commands_sent_total") == 1
        assert daemon.cli_json("tickets", "list", "--all") == []
        (fixed,) = [n for n in notices(daemon, "sim-freezer-0003") if n["kind"] == "fixed"]
        assert "already fixed it remotely (reboot)" in fixed["message"]
        assert "sim-freezer-0003" in fixed["title"]
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        daemon.kill()


def test_unfixable_fault_opens_one_routed_ticket_with_full_context(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that a fault with no remote fix opens one ticket, routed, with every context field."""
    daemon = service_daemon(broker, tmp_path).start()
    sim = fleet(daemon, "drift:sim-boiler-0001:temperature:start=2s:duration=12s:rate=600")
    try:
        wait_until(lambda: daemon.cli_json("tickets", "list") != [], timeout=40, what="a ticket")
        (ticket,) = daemon.cli_json("tickets", "list")
        assert (ticket["device"], ticket["alert"]) == ("sim-boiler-0001", "BoilerOverheating")
        assert (ticket["queue"], ticket["skill"], ticket["assignee"], ticket["priority"]) == (
            "heating-l2",
            "heating",
            "alice",
            "P2",
        )
        context = ticket["context"]
        assert context["device"]["metrics"]["temperature"] > 90
        assert context["device"]["meta"]["model"] == "boiler-x200"
        assert context["live"].endswith("/api/v1/devices/sim-boiler-0001")
        assert len(context["telemetry"]["series"]["temperature"]) >= 3
        assert context["rule"]["expr"] == "avg(temperature, 3s) > 90"
        assert context["trigger"]["value"] > 90
        assert context["customer"]["id"].startswith("cust-")
        assert context["runbook"]["steps"] == [
            "Check the flow temperature sensor.",
            "Replace the pump if it is seized.",
        ]
        assert [e["event"] for e in ticket["timeline"]] == ["opened"]
        status, body = daemon.get("/api/v1/devices/sim-boiler-0001")
        assert status == 200
        assert json.loads(body)["id"] == "sim-boiler-0001"

        wait_until(
            lambda: daemon.cli_json("tickets", "list") == [],
            timeout=60,
            what="the ticket to resolve itself after the quiet period",
        )
        (closed,) = daemon.cli_json("tickets", "list", "--all")
        assert closed["status"] == "resolved"
        assert closed["resolution"].startswith("device healthy for")
        assert any(n["kind"] == "resolved" for n in notices(daemon, "sim-boiler-0001"))
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        daemon.kill()


def test_agent_acknowledges_and_comments_through_the_cli(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that ticket actions from the CLI reach the daemon and land in the timeline."""
    daemon = service_daemon(broker, tmp_path).start()
    sim = fleet(daemon, "drift:sim-boiler-0001:temperature:start=2s:rate=600")
    try:
        wait_until(lambda: daemon.cli_json("tickets", "list") != [], timeout=40, what="a ticket")
        (ticket,) = daemon.cli_json("tickets", "list")
        assert "acknowledged" in daemon.cli("tickets", "ack", ticket["id"], "--by", "bob")
        daemon.cli("tickets", "comment", ticket["id"], "customer called back", "--by", "bob")
        shown = daemon.cli_json("tickets", "show", ticket["id"])
        events = [(e["event"], e["by"]) for e in shown["timeline"]]
        assert events == [("opened", "frontline"), ("acknowledged", "bob"), ("commented", "bob")]
        assert shown["status"] == "acknowledged"
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        daemon.kill()


OFFLINE_RULES = """
groups:
  - name: freezers
    interval: 1s
    match: {model: "freezer-*"}
    rules:
      - alert: NeedsReboot
        expr: last(cabinet_temp) > -100
        for: 5s
        labels: {severity: minor, category: sensor, skill: refrigeration}
        remediate:
          - command: reboot
            timeout: 5s
            verify: 3s
"""


def offline_daemon(broker: MosquittoProcess, tmp_path: Path, **env: str) -> DaemonProcess:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "rules.yaml").write_text(OFFLINE_RULES)
    routing = tmp_path / "routing.yaml"  # one default queue, no agents
    routing.write_text("default: {queue: service, skill: general}\n")
    return DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_RULES__PATHS=json.dumps([str(folder)]),
        FRONTLINE_ACTIONS__ROUTING=str(routing),
        **env,
    )


def remediation_log(daemon: DaemonProcess) -> list[str]:
    (ticket,) = daemon.cli_json("tickets", "list", "--all")
    return [entry["event"] for entry in ticket["context"]["remediation"]]


def test_command_waits_for_an_offline_device_and_is_sent_when_it_returns(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that a command is held while the device is offline and sent once it is back."""
    daemon = offline_daemon(broker, tmp_path).start()
    sim = fleet(daemon, "offline:sim-freezer-0003:start=3s:duration=10s")
    try:
        wait_until(
            lambda: daemon.cli_json("tickets", "list", "--all") != [],
            timeout=60,
            what="the escalation ticket once the fix did not clear the alert",
        )
        events = remediation_log(daemon)
        assert events.index("waiting for device") < events.index("sent")
        assert "acknowledged" in events
        assert daemon.metric("frontline_commands_sent_total") == 1
        (ticket,) = daemon.cli_json("tickets", "list", "--all")
        waited = next(
            e for e in ticket["context"]["remediation"] if e["event"] == "waiting for device"
        )
        sent = next(e for e in ticket["context"]["remediation"] if e["event"] == "sent")
        assert sent["at_ms"] - waited["at_ms"] >= 3000, "sent only after the device came back"
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        daemon.kill()


def test_command_expires_when_the_device_stays_offline(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that a held command expires unsent and the ticket log says so."""
    daemon = offline_daemon(broker, tmp_path, FRONTLINE_ACTIONS__COMMAND_TTL="4s").start()
    sim = fleet(daemon, "offline:sim-freezer-0003:start=3s:duration=60s")
    try:
        wait_until(
            lambda: daemon.cli_json("tickets", "list", "--all") != [],
            timeout=60,
            what="the ticket after the command expired",
        )
        events = remediation_log(daemon)
        assert "sent" not in events
        assert events[-1] == "failed"
        (ticket,) = daemon.cli_json("tickets", "list", "--all")
        assert (
            "expired: the device stayed offline" in ticket["context"]["remediation"][-1]["detail"]
        )
        assert daemon.metric("frontline_commands_sent_total") == 0
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        daemon.kill()


@pytest.mark.parametrize("how", ["sigterm", "kill-9"])
def test_restart_while_a_command_waits_sends_it_once(
    broker: MosquittoProcess, tmp_path: Path, how: str
) -> None:
    """Test that a remediation interrupted by a restart resumes and sends its command once."""
    daemon = offline_daemon(broker, tmp_path).start()
    sim = fleet(daemon, "offline:sim-freezer-0003:start=3s:duration=16s")
    try:
        wait_until(
            lambda: (
                "waiting for device" in str(daemon.get("/api/v1/tickets")[1])
                or daemon.metric("frontline_alerts", {"phase": "firing"}) >= 1
            ),
            timeout=30,
            what="the remediation to wait for the device",
        )
        if how == "sigterm":
            assert daemon.stop(signal.SIGTERM) == 0
        else:
            daemon.kill()
        daemon.start()
        wait_until(
            lambda: daemon.cli_json("tickets", "list", "--all") != [],
            timeout=60,
            what="the escalation after the resumed remediation",
        )
        events = remediation_log(daemon)
        assert events.count("sent") == 1
        assert events.count("started") == 1
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        daemon.kill()


def test_ticket_events_reach_the_helpdesk_webhook_signed(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that the daemon posts each ticket event to the webhook, signed, once per key."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from daemon.adapters.webhook import verify

    received: list[tuple[dict[str, str], bytes]] = []
    failures = {"left": 2}  # the helpdesk fails its first two requests

    class Helpdesk(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if failures["left"] > 0:
                failures["left"] -= 1
                self.send_response(503)
            else:
                received.append((dict(self.headers), body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Helpdesk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    daemon = service_daemon(broker, tmp_path)
    daemon.env.update(
        FRONTLINE_WEBHOOK__ENABLED="true",
        FRONTLINE_WEBHOOK__URL=f"http://127.0.0.1:{server.server_port}/hook",
        FRONTLINE_WEBHOOK__SECRET="s3cret",
        FRONTLINE_WEBHOOK__RETRY_MIN="0.2s",
        FRONTLINE_WEBHOOK__RETRY_MAX="1s",
    )
    daemon.start()
    sim = fleet(daemon, "drift:sim-boiler-0001:temperature:start=2s:duration=8s:rate=600")
    try:
        wait_until(lambda: len(received) >= 2, timeout=60, what="opened and resolved events")
        keys = [h["Idempotency-Key"] for h, _ in received]
        assert len(keys) == len(set(keys))
        events = [json.loads(body)["event"] for _, body in received]
        assert events[:2] == ["opened", "resolved"]
        for headers, body in received:
            assert verify(
                b"s3cret",
                headers["X-Frontline-Timestamp"],
                body,
                headers["X-Frontline-Signature"],
                time.time(),
            )
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        daemon.kill()
        server.shutdown()
        server.server_close()
