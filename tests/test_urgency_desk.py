"""Urgency from prediction through the real rule and action services (in process, SQLite).

The rule predicts the boiler's lockout 7 minutes ahead (`impact`) and sends `reduce_power`; the
routing file sends refused-or-failed fixes with impact within the hour to field-service at P1 with
the customer's safety steps. Times are explicit (no sleeping); the broker is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import pytest

import daemon.resilience
from daemon.actions import ActionService
from daemon.adapters.rule_files import RuleFileSet
from daemon.adapters.service_catalog import ServiceFileSet
from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.config import ActionsSettings, RulesSettings
from daemon.core.engine import Watch
from daemon.core.messages import Meta, Reply, Status
from daemon.core.twin import Twins
from daemon.core.windows import SeriesWindows
from daemon.metrics import Metrics
from daemon.resilience import StoreHealth
from daemon.rules import RuleService
from tests.test_action_outbox import Broker

T0 = 1_700_000_000_000
S = 1000
RULES = """
groups:
  - name: boilers
    interval: 5s
    rules:
      - alert: BoilerOverheating
        expr: last(temp) > 75
        labels: {severity: major, category: heating, skill: heating}
        annotations: {summary: "{{ device.id }} at {{ value }} C"}
        impact: (85 - last(temp)) * 60   # one degree a minute towards the lockout at 85
        remediate:
          - command: reduce_power
            params: {percent: 30}
            timeout: 30s
            verify: 2m
        safety: safety.md
        ticket: always
"""
SAFETY = "# Stay safe\n\n1. Turn the heating down.\n2. Do not touch the radiators.\n"
ROUTING = """
queues:
  - match: {kind: fault, remediation: "refused|failed|unverified", impact_within: 1h}
    queue: field-service
    skill: general
    priority: P1
    safety_steps: true
  - {match: {category: heating}, queue: heating-l2, skill: heating}
agents:
  - {id: alice, skills: [heating], capacity: 5}
"""


class Rig:
    """One daemon run's rule and action services over the files in `root`."""

    def __init__(self, root: Path, now: list[int], broker: Broker) -> None:
        self.root, self.now, self.broker = root, now, broker
        self.series = SqliteSeriesStore(root / "series.db")
        self.state = SqliteStateStore(root / "state.db")
        self.twins = Twins()
        self.windows = SeriesWindows()
        self.health = StoreHealth("series", "state")
        self.metrics = Metrics()

    async def open(self) -> Rig:
        await self.series.open()
        await self.state.open()
        for device in ("b1", "b2"):
            self.twins.apply(Meta(device, {"model": "boiler-x200"}), self.now[0] - S)
        rules = self.root / "rules.yaml"
        self.rules = RuleService(
            RulesSettings(paths=(rules,), outage_grace=0),
            self.state,
            self.series,
            self.twins,
            self.windows,
            lambda: Watch(True, T0 - 3600 * S, 0),
            self.metrics,
            600.0,
            self.health,
            files=RuleFileSet((rules,)),
        )
        self.actions = ActionService(
            ActionsSettings(routing=None, customers=None),
            self.rules,
            self.twins,
            self.series,
            self.state,
            self.broker,
            self.metrics,
            600.0,
            ServiceFileSet(self.root / "routing.yaml", None),
            self.health,
            clock=lambda: self.now[0],
        )
        await self.actions.start()
        await self.rules.start()
        return self

    async def evaluate(self, temps: dict[str, float]) -> None:
        """Evaluate the group with these latest temperatures, and let the actions act."""
        for device, value in temps.items():
            self.windows.add(device, "temp", self.now[0] - S, value)
            self.twins.apply(Status(device, "online"), self.now[0] - S)  # heard from: online
        await self.rules.evaluate(self.rules.groups[0], self.now[0])
        await self.actions.catch_up()
        await self.actions.tick()

    async def reply(self, device: str, status: str, message: str = "") -> None:
        """The device answers the last command it was sent."""
        topic = self.broker.topics(f"devices/{device}/commands/")[-1]
        body = orjson.dumps({"status": status, "message": message})
        await self.actions.handle_reply(Reply(device, topic.rsplit("/", 1)[1], body), self.now[0])
        await self.actions.tick()

    async def ticket(self, device: str) -> dict[str, Any]:
        (found,) = [
            t for t in map(orjson.loads, await self.state.load_tickets()) if t["device"] == device
        ]
        return dict(found)

    async def notices(self, device: str) -> list[dict[str, Any]]:
        return list(await self.state.notices(device))

    async def close(self) -> None:
        await self.series.close()
        await self.state.close()


def run(root: Path, scenario: Callable[[Path], Coroutine[Any, Any, None]]) -> None:
    (root / "rules.yaml").write_text(RULES)
    (root / "safety.md").write_text(SAFETY)
    (root / "routing.yaml").write_text(ROUTING)
    asyncio.run(scenario(root))


@pytest.fixture(autouse=True)
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store retry backoff instant (no real sleeping)."""
    monkeypatch.setattr(daemon.resilience, "backoff_delay", lambda *_args: 0.0)


def test_a_refused_fix_moves_the_ticket_and_sends_the_safety_steps_once(tmp_path: Path) -> None:
    """Test the reported case in process: the ticket opens in heating-l2 while the fix runs;
    the device refuses it with the lockout 7 minutes away; the same ticket moves to
    field-service at P1, the customer gets the safety steps once, across a restart too."""

    async def scenario(root: Path) -> None:
        now, broker = [T0], Broker()
        rig = await Rig(root, now, broker).open()
        await rig.evaluate({"b1": 78.0})
        opened = await rig.ticket("b1")
        assert (opened["queue"], opened["priority"], opened["routed_by"]) == ("heating-l2", "P2", 1)
        urgency = opened["context"]["urgency"]
        assert (urgency["remediation"], urgency["impact_in_s"]) == ("pending", 420.0)
        assert urgency["impact_expr"] == "(85 - last(temp)) * 60"

        now[0] += 2 * S
        await rig.reply("b1", "rejected", "remote reduce_power is locked")
        ticket = await rig.ticket("b1")
        assert ticket["id"] == opened["id"]
        assert (ticket["queue"], ticket["priority"], ticket["routed_by"]) == (
            "field-service",
            "P1",
            0,
        )
        assert ticket["assignee"] == opened["assignee"] == "alice"
        events = [(e["event"], e["detail"]) for e in ticket["timeline"]]
        assert [e for e, _ in events] == ["opened", "rerouted", "updated"]
        assert events[1][1].startswith("remediation refused, customer impact in about 7 min: ")
        assert events[2][1] == "safety steps sent to the customer (safety.md)"
        urgency = ticket["context"]["urgency"]
        assert urgency["remediation"] == "refused"
        assert urgency["remediation_detail"] == (
            "the device refused reduce_power (remote reduce_power is locked)"
        )
        assert urgency["text"].startswith("Customer impact predicted in about 7 min (around ")
        assert urgency["safety_steps"] == ["Turn the heating down.", "Do not touch the radiators."]
        (notice,) = await rig.notices("b1")
        assert notice["kind"] == "safety"
        assert notice["steps"] == urgency["safety_steps"]
        assert notice["message"].startswith("We expect it to affect you in about 7 min.")
        assert len(broker.topics("frontline/notices/b1")) == 1
        assert broker.topics("frontline/tickets/") == [f"frontline/tickets/{opened['id']}"] * 3

        now[0] += 5 * S
        await rig.evaluate({"b1": 79.0})  # still firing, a little nearer: nothing new
        assert len((await rig.ticket("b1"))["timeline"]) == 3
        await rig.close()

        restarted = await Rig(root, now, broker).open()
        now[0] += 5 * S
        await restarted.evaluate({"b1": 80.0})
        again = await restarted.ticket("b1")
        assert len(again["timeline"]) == 3
        assert again["queue"] == "field-service"
        assert len(await restarted.notices("b1")) == 1
        assert len(await restarted.state.load_tickets()) == 1
        await restarted.close()

    run(tmp_path, scenario)


def test_a_fix_the_device_accepts_is_not_escalated(tmp_path: Path) -> None:
    """Test the same fault on a device that takes the fix: the ticket stays in heating-l2 while
    it is verified, no safety steps go out, and it resolves itself once the alert clears."""

    async def scenario(root: Path) -> None:
        now, broker = [T0], Broker()
        rig = await Rig(root, now, broker).open()
        await rig.evaluate({"b2": 78.0})
        now[0] += 2 * S
        await rig.reply("b2", "ok", "power reduced")
        ticket = await rig.ticket("b2")
        assert (ticket["queue"], ticket["priority"]) == ("heating-l2", "P2")
        assert ticket["context"]["urgency"]["remediation"] == "pending"
        assert ticket["context"]["urgency"]["remediation_detail"] == "verifying reduce_power"

        now[0] += 5 * S
        await rig.evaluate({"b2": 70.0})  # cooled down: the alert resolves
        now[0] += S
        await rig.actions.tick()  # the verification sees it cleared
        ticket = await rig.ticket("b2")
        assert ticket["status"] == "resolved"
        assert ticket["queue"] == "heating-l2"
        assert [e["event"] for e in ticket["timeline"]] == ["opened", "resolved"]
        assert [n["kind"] for n in await rig.notices("b2")] == ["fixed"]
        await rig.close()

    run(tmp_path, scenario)


def test_a_prediction_that_comes_within_reach_moves_the_ticket(tmp_path: Path) -> None:
    """Test that the impact alone can move a ticket: refused while the lockout is hours away
    stays in heating-l2; once the prediction comes within the hour, it moves."""

    async def scenario(root: Path) -> None:
        (root / "rules.yaml").write_text(RULES.replace("* 60 ", "* 600 "))  # 10 min a degree
        now, broker = [T0], Broker()
        rig = await Rig(root, now, broker).open()
        await rig.evaluate({"b1": 76.0})  # 9 degrees: 90 min
        now[0] += 2 * S
        await rig.reply("b1", "rejected", "locked")
        ticket = await rig.ticket("b1")
        assert ticket["queue"] == "heating-l2"
        assert ticket["context"]["urgency"]["remediation"] == "refused"
        assert await rig.notices("b1") == []

        now[0] += 5 * S
        await rig.evaluate({"b1": 80.0})  # 5 degrees: 50 min
        ticket = await rig.ticket("b1")
        assert (ticket["queue"], ticket["priority"]) == ("field-service", "P1")
        assert [n["kind"] for n in await rig.notices("b1")] == ["safety"]
        await rig.close()

    run(tmp_path, scenario)
