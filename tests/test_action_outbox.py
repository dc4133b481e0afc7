"""The action outbox: alert transitions acted on exactly once across crashes and restarts.

In-process, on the real SQLite stores and the real rule and action services: a "crash" is a
service dropped without running (or with a commit that failed), then new services opened on the
same files, as a restarted daemon would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
from daemon.core.alerts import Phase
from daemon.core.engine import Watch
from daemon.core.messages import Meta, Status
from daemon.core.twin import Twins
from daemon.core.windows import SeriesWindows
from daemon.errors import StoreUnavailable
from daemon.metrics import Metrics
from daemon.ports import ACTIONS_CURSOR
from daemon.resilience import StoreHealth
from daemon.rules import RuleService

T0 = 1_700_000_000_000
S = 1000
RULES = """
groups:
  - name: boilers
    interval: 10s
    rules:
      - alert: Hot
        expr: last(temp) > 50
        labels: {severity: major, category: heating}
        annotations: {summary: "{{ device.id }} is hot"}
        ticket: always
      - alert: Cold
        expr: last(temp) < 0
        labels: {severity: minor, category: heating}
        guide: steps.md
      - alert: Stuck
        expr: last(temp) == 42
        labels: {severity: minor, category: sensor}
        remediate:
          - command: reboot
            timeout: 30s
            verify: 5m
"""
GUIDE = "# Cold\n\n1. Close the window.\n2. Turn the knob to 5.\n"


@dataclass
class Delivered:
    published: bool

    def is_published(self) -> bool:
        return self.published


@dataclass
class Broker:
    """What the daemon handed its MQTT connection; `acks` decides if the broker confirms."""

    acks: bool = True
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Delivered:
        self.sent.append((topic, payload))
        return Delivered(self.acks)

    def topics(self, prefix: str) -> list[str]:
        return [t for t, _ in self.sent if t.startswith(prefix)]


class FailingState:
    """The real state store, whose next `fail` action commits raise as a full disk would."""

    def __init__(self, inner: SqliteStateStore, fail: int) -> None:
        self.inner = inner
        self.fail = fail

    async def save_actions(self, *args: Any, **kwargs: Any) -> list[int]:
        if self.fail > 0:
            self.fail -= 1
            raise StoreUnavailable(self.inner.url, "database or disk is full")
        return await self.inner.save_actions(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Daemon:
    """The rule and action services of one daemon run over the files in `root`."""

    def __init__(self, root: Path, now: list[int], broker: Broker) -> None:
        self.root = root
        self.now = now
        self.broker = broker
        self.series = SqliteSeriesStore(root / "series.db")
        self.state = SqliteStateStore(root / "state.db")
        self.twins = Twins()
        self.windows = SeriesWindows()
        self.health = StoreHealth("series", "state")
        self.metrics = Metrics()

    async def open(self, state: Any = None, **actions: Any) -> Daemon:
        await self.series.open()
        await self.state.open()
        for i in range(5):
            self.twins.apply(Meta(f"b{i}", {"model": "boiler-x"}), T0 - 60 * S)
        self.rules = RuleService(
            RulesSettings(paths=(self.root / "rules.yaml",), outage_grace=0),
            self.state,
            self.series,
            self.twins,
            self.windows,
            lambda: Watch(True, T0 - 3600 * S, 0),
            self.metrics,
            600.0,
            self.health,
            files=RuleFileSet((self.root / "rules.yaml",)),
        )
        self.actions = ActionService(
            ActionsSettings(routing=None, customers=None, **actions),
            self.rules,
            self.twins,
            self.series,
            state or self.state,
            self.broker,
            self.metrics,
            600.0,
            ServiceFileSet(None, None),
            self.health,
            clock=lambda: self.now[0],
        )
        await self.actions.start()
        await self.rules.start()
        return self

    async def fire(self, temps: dict[str, float]) -> None:
        """Evaluate the group with these latest temperatures (commits the transitions)."""
        for device, value in temps.items():
            self.windows.add(device, "temp", self.now[0] - S, value)
        group = self.rules.groups[0]
        await self.rules.evaluate(group, self.now[0])

    async def close(self) -> None:
        await self.series.close()
        await self.state.close()

    async def tickets(self) -> list[dict[str, Any]]:
        return [orjson.loads(t) for t in await self.state.load_tickets()]


def run(root: Path, scenario: Callable[[Path], Awaitable[None]]) -> None:
    (root / "rules.yaml").write_text(RULES)
    (root / "steps.md").write_text(GUIDE)
    asyncio.run(scenario(root))


@pytest.fixture(autouse=True)
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store retry backoff instant (no real sleeping)."""
    monkeypatch.setattr(daemon.resilience, "backoff_delay", lambda *_args: 0.0)


def test_firing_committed_before_a_crash_is_ticketed_once_after_restart(tmp_path: Path) -> None:
    """Test that alerts that fired just before a crash get their ticket, once, on restart."""

    async def scenario(root: Path) -> None:
        now, broker = [T0], Broker()
        first = await Daemon(root, now, broker).open()
        await first.fire({f"b{i}": 80.0 for i in range(5)})
        firing = [s for s in first.rules.states.values() if s.phase is Phase.FIRING]
        assert len(firing) == 5
        assert await first.tickets() == []
        await first.close()  # kill -9 here: the actions never saw the transitions

        second = await Daemon(root, now, broker).open()
        assert await second.actions.catch_up() == 5
        tickets = await second.tickets()
        assert sorted(t["device"] for t in tickets) == [f"b{i}" for i in range(5)]
        assert {t["alert"] for t in tickets} == {"Hot"}
        assert await second.actions.catch_up() == 0
        await second.close()

        third = await Daemon(root, now, broker).open()
        assert await third.actions.catch_up() == 0
        assert len(await third.tickets()) == 5
        assert len(third.actions.tickets) == 5
        await third.close()
        assert len(broker.topics("frontline/tickets/")) == 5
        assert len(broker.topics("frontline/alerts/b")) == 5

    run(tmp_path, scenario)


def test_a_commit_that_fails_is_retried_and_acted_on_once(tmp_path: Path) -> None:
    """Test that a state store refusing the action commit delays the ticket, never drops it."""

    async def scenario(root: Path) -> None:
        now, broker = [T0], Broker()
        rig = Daemon(root, now, broker)
        flaky = FailingState(rig.state, fail=0)
        await rig.open(state=flaky)
        flaky.fail = 3
        await rig.fire({"b0": 80.0})
        assert await rig.actions.catch_up() == 1
        assert flaky.fail == 0
        assert [t["device"] for t in await rig.tickets()] == ["b0"]
        assert rig.health.healthy("state")
        await rig.close()

    run(tmp_path, scenario)


def test_guidance_deadline_survives_a_restart_and_escalates(tmp_path: Path) -> None:
    """Test that a customer guided before a restart is handed to a person after the timeout."""

    async def scenario(root: Path) -> None:
        now, broker = [T0], Broker()
        first = await Daemon(root, now, broker).open(guidance_timeout=600)
        await first.fire({"b1": -5.0})
        assert await first.actions.catch_up() == 1
        notices = await first.state.notices("b1")
        assert [n["kind"] for n in notices] == ["guidance"]
        assert notices[0]["steps"] == ["Close the window.", "Turn the knob to 5."]
        await first.close()

        now[0] = T0 + 601 * S
        second = await Daemon(root, now, broker).open(guidance_timeout=600)
        await second.fire({"b1": -5.0})  # still cold: still firing
        await second.actions.catch_up()
        await second.actions.tick()
        tickets = await second.tickets()
        assert [(t["device"], t["alert"]) for t in tickets] == [("b1", "Cold")]
        assert "did not clear it in 10 min" in tickets[0]["timeline"][0]["detail"]
        assert [n["kind"] for n in await second.state.notices("b1")] == ["guidance"]
        await second.close()

    run(tmp_path, scenario)


def test_unconfirmed_messages_are_published_again_after_a_restart(tmp_path: Path) -> None:
    """Test that a command the broker never confirmed is sent again, with the same id."""

    async def scenario(root: Path) -> None:
        now = [T0]
        offline_broker = Broker(acks=False)
        first = await Daemon(root, now, offline_broker).open()
        first.twins.apply(Status("b2", "online"), T0)
        await first.fire({"b2": 42.0})
        await first.actions.catch_up()
        await first.actions.outbound.confirm()
        commands = offline_broker.topics("devices/b2/commands/")
        assert len(commands) == 1
        await first.close()

        broker = Broker()
        second = await Daemon(root, now, broker).open()
        assert await second.actions.outbound.resend_leftovers() >= 1
        assert broker.topics("devices/b2/commands/") == commands
        await second.actions.outbound.confirm()
        assert await second.state.load_outgoing() == []
        await second.close()

        third = await Daemon(root, now, Broker()).open()
        assert await third.actions.outbound.resend_leftovers() == 0
        await third.close()

    run(tmp_path, scenario)


def test_a_new_state_db_starts_its_cursor_at_the_end(tmp_path: Path) -> None:
    """Test that the cursor of a database from before the outbox skips its old history."""

    async def scenario(root: Path) -> None:
        state = SqliteStateStore(root / "state.db")
        await state.open()
        event = {
            "at_ms": T0,
            "key": "k",
            "device": "b0",
            "alert": "Hot",
            "labels": {},
            "from_phase": "pending",
            "to_phase": "firing",
            "value": 80.0,
            "annotations": {},
        }
        await state.save_alerts({}, [event, event])
        await state.close()
        rig = await Daemon(root, [T0], Broker()).open()
        assert await rig.state.get_value(ACTIONS_CURSOR) == b"2"
        assert await rig.actions.catch_up() == 0
        await rig.close()

    run(tmp_path, scenario)


def test_a_forgotten_device_resolves_its_alerts_and_its_ticket_follows(tmp_path: Path) -> None:
    """Test that forgetting a device resolves its firing alert, so its ticket can close."""

    async def scenario(root: Path) -> None:
        now, broker = [T0], Broker()
        rig = await Daemon(root, now, broker).open(quiet_period=60)
        await rig.fire({"b3": 80.0})
        await rig.actions.catch_up()
        assert [t["status"] for t in await rig.tickets()] == ["open"]
        assert await rig.rules.forget(["b3"], now[0]) == 1
        assert not any(s.device == "b3" for s in rig.rules.states.values())
        assert await rig.actions.catch_up() == 1  # the RESOLVED transition
        now[0] += 61 * S
        await rig.actions.tick()
        assert [t["status"] for t in await rig.tickets()] == ["resolved"]
        await rig.close()

    run(tmp_path, scenario)
