"""Pure tests of command parsing and handling, and of a device answering through a fake client."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.commands import (
    Behaviour,
    Command,
    DeviceView,
    Reply,
    handle_command,
    parse_command,
    plan_answer,
)
from simulators.device import Broker, FleetStats, SimDevice
from simulators.faults import ActiveFault, FaultKind, FaultSpec, fix_for
from simulators.fleet import FleetOptions, plan_devices
from simulators.groundtruth import GroundTruthLog
from simulators.models import BOILER, FREEZER, HEAT_PUMP, MODELS, DeviceModel

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
LATER = (NOW + timedelta(minutes=5)).isoformat()
EARLIER = (NOW - timedelta(seconds=1)).isoformat()


def fault(fault_id: str, kind: FaultKind, metric: str | None = None) -> ActiveFault:
    """Return an active fault on a boiler."""
    spec = FaultSpec("sim-boiler-0001", kind, metric)
    return ActiveFault(fault_id, spec, fix_for(BOILER, spec), 0.0)


def view(
    *faults: ActiveFault,
    commands: frozenset[str] = BOILER.commands,
    rejects: frozenset[str] = frozenset(),
) -> DeviceView:
    """Return what a handler sees of a boiler with ``faults``."""
    return DeviceView("sim-boiler-0001", "boiler-x200", commands, faults, 2.5, rejects=rejects)


def payload(**body: Any) -> bytes:
    """Return ``body`` as command JSON."""
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{not json", "error", "not JSON"),
        (b"[1, 2]", "error", "must be a JSON object"),
        (payload(params={}), "error", "'method' must be a non-empty string"),
        (payload(method=""), "error", "'method' must be a non-empty string"),
        (payload(method="reboot", params=[1]), "error", "'params' must be a JSON object"),
        (payload(method="reboot", expires_at=5), "error", "must be an ISO-8601 string"),
        (payload(method="reboot", expires_at="soon"), "error", "not an ISO-8601 time"),
        (payload(method="reboot", expires_at=EARLIER), "rejected", "expired"),
        (payload(method="reboot", expires_at="2024-01-15T11:00:00"), "rejected", "expired"),
        (payload(method="self_destruct", expires_at=LATER), "rejected", "unknown method"),
    ],
)
def test_bad_commands_get_error_or_rejected(raw: bytes, status: str, message: str) -> None:
    """Test that unparseable commands get error; expired and unknown ones get rejected."""
    outcome = handle_command("c1", raw, view(), NOW)
    assert outcome.reply.status == status
    assert message in outcome.reply.message
    assert outcome.reboot_s is None
    assert outcome.clears == ()


def test_parse_command_accepts_z_and_missing_expiry() -> None:
    """Test that expiry may use Z and may be left out (no expiry)."""
    parsed = parse_command("c1", payload(method="reboot", expires_at="2024-01-15T12:05:00Z"), NOW)
    assert isinstance(parsed, Command)
    assert parsed.expires_at == NOW + timedelta(minutes=5)
    parsed = parse_command("c2", payload(method="reboot"), NOW)
    assert isinstance(parsed, Command)
    assert (parsed.expires_at, parsed.params) == (None, {})


def test_expired_command_says_when_it_expired_and_is_not_carried_out() -> None:
    """Test that a command that waited past its expiry (e.g. queued while offline) is rejected."""
    expired_at = NOW - timedelta(seconds=90)
    stuck = fault("stuck", FaultKind.STUCK, "temperature")
    raw = payload(method="reboot", expires_at=expired_at.isoformat())
    outcome = handle_command("c1", raw, view(stuck), NOW)
    assert outcome.reply.status == "rejected"
    assert outcome.reply.message.startswith(f"command expired at {expired_at.isoformat()}")
    assert "90.0 s before it reached the device" in outcome.reply.message
    assert (outcome.effect, outcome.clears, outcome.reboot_s, outcome.method) == (
        "expired",
        (),
        None,
        None,
    )


def test_reboot_replies_ok_and_clears_faults_a_reboot_fixes() -> None:
    """Test that reboot answers ok, restarts, and clears stuck and dropout but not drift."""
    faults = (
        fault("stuck", FaultKind.STUCK, "temperature"),
        fault("drift", FaultKind.DRIFT, "temperature"),
        fault("dropout", FaultKind.DROPOUT),
    )
    outcome = handle_command("c1", payload(method="reboot", expires_at=LATER), view(*faults), NOW)
    assert outcome.reply == Reply("ok", "rebooting", {"downtime_s": 2.5})
    assert outcome.reboot_s == 2.5
    assert outcome.clears == ("stuck", "dropout")
    assert outcome.method == "reboot"
    assert outcome.effect == "fixed"


ALL_METHODS = ("reboot", "reduce_power", "reset_valve", "defrost", "self_destruct")
ALLOWED = {
    "boiler": {"reboot", "reduce_power", "reset_valve"},
    "heat_pump": {"reboot", "defrost"},
    "freezer": {"reboot", "defrost"},
}


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_each_model_accepts_only_its_allowlist(model: DeviceModel[Any], method: str) -> None:
    """Test that each model answers ok to its own commands and rejects every other method."""
    device = DeviceView("d", model.product, model.commands, (), 1.0)
    raw = payload(method=method, params={"percent": 30}, expires_at=LATER)
    outcome = handle_command("c1", raw, device, NOW)
    assert model.commands == ALLOWED[model.name]
    if method in ALLOWED[model.name]:
        assert outcome.reply.status == "ok"
        assert outcome.effect == "no_effect"  # no fault: nothing to fix
    else:
        assert outcome.reply.status == "rejected"
        assert f"unknown method {method!r} for {model.product}" in outcome.reply.message
        assert outcome.method is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "reduce_power needs 'percent', a number from 1 to 100"),
        ({"power": 30}, "reduce_power needs 'percent', a number from 1 to 100"),
        ({"percent": 0}, "'percent' must be between 1 and 100 (got 0)"),
        ({"percent": 101}, "'percent' must be between 1 and 100 (got 101)"),
        ({"percent": -5.5}, "'percent' must be between 1 and 100 (got -5.5)"),
        ({"percent": "30"}, "'percent' must be a number from 1 to 100 (got '30')"),
        ({"percent": True}, "'percent' must be a number from 1 to 100 (got True)"),
        ({"percent": None}, "'percent' must be a number from 1 to 100 (got None)"),
    ],
)
def test_reduce_power_with_bad_params_is_an_error(params: dict[str, Any], message: str) -> None:
    """Test that reduce_power without a percent from 1 to 100 gets error and changes nothing."""
    overheating = fault("hot", FaultKind.DRIFT, "temperature")
    outcome = handle_command(
        "c1", payload(method="reduce_power", params=params), view(overheating), NOW
    )
    assert outcome.reply == Reply("error", message)
    assert (outcome.clears, outcome.method, outcome.effect) == ((), None, "error")


@pytest.mark.parametrize(("percent", "limit"), [(1, 99.0), (30, 70.0), (100, 0.0), (12.5, 87.5)])
def test_reduce_power_reports_the_new_limit(percent: float, limit: float) -> None:
    """Test that reduce_power accepts 1-100 (integers or not) and reports the power limit."""
    raw = payload(method="reduce_power", params={"percent": percent, "reason": "overheating"})
    outcome = handle_command("c1", raw, view(), NOW)
    assert outcome.reply.status == "ok"
    assert outcome.reply.result == {"power_limit": limit}
    assert outcome.params["percent"] == percent


def test_reboot_ignores_extra_params_such_as_reason() -> None:
    """Test that parameters a method does not use (the rules send a reason) are accepted."""
    raw = payload(method="reboot", params={"reason": "stuck-sensor"})
    assert handle_command("c1", raw, view(), NOW).reply.status == "ok"


@pytest.mark.parametrize(
    ("method", "rejects", "status"),
    [
        ("reboot", {"reboot"}, "rejected"),
        ("reset_valve", {"reboot"}, "ok"),
        ("reboot", set(), "ok"),
        ("dance", {"dance"}, "rejected"),  # unknown comes first
    ],
)
def test_device_rejects_methods_locked_locally(method: str, rejects: set[str], status: str) -> None:
    """Test that a device refuses the methods in its behaviour's rejects, saying it is locked."""
    stuck = fault("stuck", FaultKind.STUCK, "temperature")
    outcome = handle_command(
        "c1", payload(method=method), view(stuck, rejects=frozenset(rejects)), NOW
    )
    assert outcome.reply.status == status
    if status == "rejected" and method in BOILER.commands:
        assert outcome.reply.message == (
            f"{method} refused: remote {method} is locked on this device (local setting)"
        )
        assert (outcome.clears, outcome.reboot_s, outcome.effect) == ((), None, "rejected")


@pytest.mark.parametrize(("drop", "expected"), [(0.0, 0), (1.0, 200), (0.3, 60)])
def test_plan_answer_drops_with_the_given_probability(drop: float, expected: int) -> None:
    """Test that a device drops about drop_commands of its commands, and answers after delay."""
    behaviour = Behaviour(answer_delay=12.5, drop_commands=drop)
    rng = random.Random(3)
    plans = [plan_answer(behaviour, rng) for _ in range(200)]
    assert abs(sum(p.drop for p in plans) - expected) <= 15
    assert {p.delay for p in plans} == {12.5}


def test_plan_answer_draws_once_whatever_the_behaviour() -> None:
    """Test that the drop draw does not shift a device's later draws when its settings change."""
    a, b = random.Random(1), random.Random(1)
    plan_answer(Behaviour(), a)
    plan_answer(Behaviour(drop_commands=0.9, answer_delay=3.0), b)
    assert a.random() == b.random()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"answer_delay": -1.0}, "answer_delay must be a time >= 0"),
        ({"answer_delay": float("inf")}, "answer_delay must be a time >= 0"),
        ({"drop_commands": 1.5}, "drop_commands must be between 0 and 1"),
    ],
)
def test_behaviour_rejects_impossible_values(kwargs: dict[str, Any], message: str) -> None:
    """Test that a behaviour that could not be simulated raises ValueError."""
    with pytest.raises(ValueError, match=message):
        Behaviour(**kwargs)


def test_method_the_model_lacks_is_rejected() -> None:
    """Test that a known method is rejected by a model that does not support it."""
    outcome = handle_command("c1", payload(method="reboot"), view(commands=frozenset()), NOW)
    assert outcome.reply.status == "rejected"
    assert "unknown method 'reboot' for boiler-x200" in outcome.reply.message


def test_reply_payload() -> None:
    """Test the JSON published on the reply topic."""
    assert orjson.loads(Reply("rejected", "no").to_payload()) == {
        "status": "rejected",
        "message": "no",
        "result": {},
    }


class FakeClient:
    """Records what a device publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, payload))

    def replies(self) -> list[dict[str, Any]]:
        return [orjson.loads(p) for t, p in self.published if t.endswith("/reply")]


@contextmanager
def sim_device(
    tmp_path: Path, behaviour: Behaviour | None = None, index: int = 0
) -> Iterator[tuple[SimDevice, Path, FleetStats]]:
    """Yield a device (never connected) with ``behaviour``, its ground-truth file and stats."""
    identity = plan_devices(FleetOptions(devices=3))[index]
    identity = replace(identity, behaviour=behaviour or Behaviour())
    stats = FleetStats()
    path = tmp_path / "truth.jsonl"
    with GroundTruthLog(path) as log:
        yield (
            SimDevice(
                identity,
                broker=Broker("127.0.0.1", 1),
                topic_prefix="devices",
                interval=1.0,
                reboot_s=1.0,
                stats=stats,
                log=log,
            ),
            path,
            stats,
        )


def truth(path: Path) -> list[dict[str, Any]]:
    """Return the ground-truth lines of ``path``."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def commands_of(path: Path) -> list[dict[str, Any]]:
    """Return the command_received lines of ``path``."""
    return [line for line in truth(path) if line["event"] == "command_received"]


def test_device_reboot_clears_stuck_once_even_if_redelivered(tmp_path: Path) -> None:
    """Test that a device answers reboot, ends its stuck fault, and answers a duplicate again."""
    identity = plan_devices(FleetOptions(devices=1))[0]
    stats = FleetStats()
    path = tmp_path / "truth.jsonl"
    client = FakeClient()
    topic = "devices/sim-boiler-0001/commands/c1"

    async def scenario() -> SimDevice:
        with GroundTruthLog(path) as log:
            sim = SimDevice(
                identity,
                broker=Broker("127.0.0.1", 1),
                topic_prefix="devices",
                interval=1.0,
                reboot_s=1.0,
                stats=stats,
                log=log,
            )
            sim.start_fault(
                "f1", FaultSpec(identity.device_id, FaultKind.STUCK, "temperature"), 0.0
            )
            for _ in range(2):  # QoS 1 may deliver twice
                await sim._answer(client, topic, payload(method="reboot"))  # type: ignore[arg-type]
            return sim

    sim = asyncio.run(scenario())
    assert sim.faults == ()
    assert [t for t, _ in client.published] == [f"{topic}/reply"] * 2
    assert {orjson.loads(p)["status"] for _, p in client.published} == {"ok"}
    assert (stats.commands_received, stats.commands_answered, stats.faults_active) == (2, 2, 0)
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(line["event"], line.get("reason"), line.get("effect")) for line in lines] == [
        ("fault_started", None, None),
        ("fault_ended", "command:reboot", None),
        ("command_received", None, "fixed"),
        ("command_received", None, "duplicate"),
    ]
    first, again = lines[2:]
    assert (first["command_id"], first["method"], first["status"]) == ("c1", "reboot", "ok")
    assert (first["fixed"], first["active_faults"]) == (["f1"], ["f1"])
    assert first["received_at"] <= first["replied_at"]
    assert (again["status"], again["fixed"], again["active_faults"]) == ("ok", [], [])


def run_commands(sim: SimDevice, client: FakeClient, *bodies: bytes) -> None:
    """Deliver each command body to ``sim`` in turn, as c1, c2, ..."""

    async def deliver() -> None:
        for n, body in enumerate(bodies, 1):
            topic = f"devices/{sim.identity.device_id}/commands/c{n}"
            await sim._answer(client, topic, body)  # type: ignore[arg-type]

    asyncio.run(deliver())


def test_device_answers_after_its_answer_delay_then_acts(tmp_path: Path) -> None:
    """Test that a late device waits answer_delay before replying, and fixes only then."""
    waited: list[float] = []
    client = FakeClient()
    with sim_device(tmp_path, Behaviour(answer_delay=45.0)) as (sim, path, _):

        async def fake_sleep(seconds: float) -> None:
            waited.append(seconds)
            assert client.published == []  # nothing sent while the device is busy
            assert [f.fault_id for f in sim.faults] == ["f1"]  # not fixed yet

        sim._sleep = fake_sleep
        sim.start_fault(
            "f1", FaultSpec(sim.identity.device_id, FaultKind.STUCK, "temperature"), 0.0
        )
        run_commands(sim, client, payload(method="reboot"))
    assert waited == [45.0]
    assert [r["status"] for r in client.replies()] == ["ok"]
    assert sim.faults == ()
    (line,) = commands_of(path)
    assert (line["effect"], line["fixed"]) == ("fixed", ["f1"])


def test_device_that_drops_commands_never_answers_nor_acts(tmp_path: Path) -> None:
    """Test that a dropped command gets no reply, no effect, and stays dropped if redelivered."""
    client = FakeClient()
    with sim_device(tmp_path, Behaviour(drop_commands=1.0)) as (sim, path, stats):
        sim.start_fault(
            "f1", FaultSpec(sim.identity.device_id, FaultKind.STUCK, "temperature"), 0.0
        )
        body = payload(method="reboot", params={"reason": "stuck"})

        async def twice() -> None:
            topic = f"devices/{sim.identity.device_id}/commands/c1"
            for _ in range(2):
                await sim._answer(client, topic, body)  # type: ignore[arg-type]

        asyncio.run(twice())
    assert client.published == []
    assert [f.fault_id for f in sim.faults] == ["f1"]
    assert (stats.commands_received, stats.commands_answered, stats.commands_dropped) == (2, 0, 1)
    lines = commands_of(path)
    assert [(x["effect"], x["status"], x["replied_at"]) for x in lines] == [
        ("dropped", None, None),
        ("duplicate", None, None),
    ]
    assert (lines[0]["method"], lines[0]["params"]) == ("reboot", {"reason": "stuck"})


def test_device_records_rejected_error_and_no_effect_commands(tmp_path: Path) -> None:
    """Test that refused, malformed and no-effect commands are recorded as such."""
    client = FakeClient()
    with sim_device(tmp_path, Behaviour(rejects=frozenset({"reboot"}))) as (sim, path, _):
        device_id = sim.identity.device_id
        sim.start_fault("hot", FaultSpec(device_id, FaultKind.DRIFT, "temperature"), 0.0)
        run_commands(
            sim,
            client,
            payload(method="reboot"),
            b"{oops",
            payload(method="reduce_power", params={"percent": 10}),
            payload(method="reset_valve"),
        )
    assert [r["status"] for r in client.replies()] == ["rejected", "error", "ok", "ok"]
    assert [f.fault_id for f in sim.faults] == ["hot"]  # ok is not fixed: verify
    lines = commands_of(path)
    assert [(x["effect"], x["method"]) for x in lines] == [
        ("rejected", "reboot"),
        ("error", None),
        ("no_effect", "reduce_power"),
        ("no_effect", "reset_valve"),
    ]
    assert all(x["active_faults"] == ["hot"] and x["fixed"] == [] for x in lines)


def test_device_interrupted_while_busy_records_it(tmp_path: Path) -> None:
    """Test that a device stopped before it could reply records the command as interrupted."""
    client = FakeClient()
    with sim_device(tmp_path, Behaviour(answer_delay=30.0)) as (sim, path, _):

        async def cancelled(_seconds: float) -> None:
            raise asyncio.CancelledError

        sim._sleep = cancelled
        with pytest.raises(asyncio.CancelledError):
            run_commands(sim, client, payload(method="reboot"))
    assert client.published == []
    (line,) = commands_of(path)
    assert (line["effect"], line["status"], line["replied_at"]) == ("interrupted", "ok", None)


def test_reduce_power_clears_overheating_and_telemetry_returns_to_normal(tmp_path: Path) -> None:
    """Test that reduce_power >= 20 % ends a boiler drift and the temperature is normal again."""
    client = FakeClient()
    t0 = 1_700_000_000.0
    with sim_device(tmp_path) as (sim, path, _):
        device_id = sim.identity.device_id
        sim.start_fault(
            "hot", FaultSpec(device_id, FaultKind.DRIFT, "temperature", params={"rate": 10.0}), t0
        )

        def temperatures(start: float, count: int) -> list[float]:
            return [
                float(orjson.loads(sim.next_telemetry(start + k) or b"")["values"]["temperature"])
                for k in range(count)
            ]

        hot = temperatures(t0 + 240, 5)
        sim._clock = lambda: t0 + 245
        run_commands(sim, client, payload(method="reduce_power", params={"percent": 30}))
        after = temperatures(t0 + 245, 600)  # ten minutes at the reduced power
    assert min(hot) > 85
    assert max(after) < 75
    assert sim.faults == ()
    assert client.replies()[0]["result"] == {"power_limit": 70.0}
    ended = [x for x in truth(path) if x["event"] == "fault_ended"]
    assert [(x["fault_id"], x["reason"]) for x in ended] == [("hot", "command:reduce_power")]


@pytest.mark.parametrize(("index", "model"), [(1, HEAT_PUMP), (2, FREEZER)])
def test_defrost_runs_a_defrost_cycle_then_normal(tmp_path: Path, index: int, model: Any) -> None:
    """Test that defrost starts a defrost cycle that ends by itself."""
    client = FakeClient()
    with sim_device(tmp_path, index=index) as (sim, _, _):
        assert sim.identity.model is model
        sim._state = replace(sim._state, outdoor_mean=20.0) if model is HEAT_PUMP else sim._state
        t0 = 1_700_000_000.0
        sim.next_telemetry(t0)
        before = orjson.loads(sim.next_telemetry(t0 + 1) or b"")["values"]["defrost"]

        async def deliver() -> None:
            topic = f"devices/{sim.identity.device_id}/commands/c1"
            await sim._answer(client, topic, payload(method="defrost"))  # type: ignore[arg-type]

        sim._clock = lambda: t0 + 2
        asyncio.run(deliver())
        during = [
            orjson.loads(sim.next_telemetry(t0 + k) or b"")["values"]["defrost"]
            for k in range(3, 120, 5)
        ]
        later = orjson.loads(sim.next_telemetry(t0 + 600) or b"")["values"]["defrost"]
    assert (before, set(during), later) == (False, {True}, False)


class QueuedMessage:
    """What aiomqtt buffers: a topic and a payload."""

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload


class ClientWithQueue:
    """A client whose buffer still holds received commands when the device goes away."""

    def __init__(self, *messages: QueuedMessage) -> None:
        self._queue: asyncio.Queue[QueuedMessage] = asyncio.Queue()
        for message in messages:
            self._queue.put_nowait(message)


def test_commands_received_but_never_handled_are_recorded_as_interrupted(tmp_path: Path) -> None:
    """Test that commands still buffered when a device reboots or drops off are in the truth."""
    with sim_device(tmp_path) as (sim, path, stats):
        sim._clock = lambda: 1_700_000_000.0
        client = ClientWithQueue(
            QueuedMessage("devices/sim-boiler-0001/commands/c7", payload(method="reset_valve")),
            QueuedMessage("devices/sim-boiler-0001/commands/c8", b"garbage"),
        )
        sim._record_unhandled(client)  # type: ignore[arg-type]
    lines = commands_of(path)
    assert [(x["command_id"], x["method"], x["effect"]) for x in lines] == [
        ("c7", "reset_valve", "interrupted"),
        ("c8", None, "interrupted"),
    ]
    assert stats.commands_received == 2
