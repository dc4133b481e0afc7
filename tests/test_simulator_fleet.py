"""Tests of the fleet plan and of run()'s checks and shutdown without a broker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from simulators.commands import Behaviour
from simulators.customers import Notice
from simulators.device import Broker, FleetStats, SimDevice
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import (
    Customers,
    Fleet,
    FleetOptions,
    fault_ids,
    fault_problems,
    fault_schedule,
    option_problems,
    plan_devices,
)
from simulators.groundtruth import GroundTruthLog
from simulators.models import UsageProfile


def test_plan_assigns_models_round_robin_with_numbered_ids() -> None:
    """Test device ids, round-robin models and every 5th device using the flat shape."""
    plan = plan_devices(FleetOptions(devices=7))
    assert [i.device_id for i in plan] == [
        "sim-boiler-0001",
        "sim-heat_pump-0002",
        "sim-freezer-0003",
        "sim-boiler-0004",
        "sim-heat_pump-0005",
        "sim-freezer-0006",
        "sim-boiler-0007",
    ]
    assert [i.flat for i in plan] == [False, False, False, False, True, False, False]
    plan = plan_devices(FleetOptions(devices=2, models=("freezer",), id_prefix="lab"))
    assert [i.device_id for i in plan] == ["lab-freezer-0001", "lab-freezer-0002"]


def test_plan_meta_is_complete_and_seeded() -> None:
    """Test that meta has the contract's fields, is reproducible, and varies with the seed."""
    plan = plan_devices(FleetOptions(devices=30, seed=3))
    products = {"boiler": "boiler-x200", "heat_pump": "heatpump-a7", "freezer": "freezer-f3"}
    for identity in plan:
        meta = identity.meta
        assert set(meta) == {"model", "firmware", "customer", "location", "labels"}
        assert meta["model"] == products[identity.model.name]
        assert meta["firmware"] in identity.model.firmwares
        assert meta["customer"].startswith("cust-")
        assert meta["labels"]["tier"] in {"gold", "silver", "bronze"}
    assert plan == plan_devices(FleetOptions(devices=30, seed=3))
    assert [i.meta for i in plan] != [i.meta for i in plan_devices(FleetOptions(devices=30))]


def test_plan_rejects_unknown_or_missing_models() -> None:
    """Test that the plan needs known models."""
    with pytest.raises(ValueError, match="unknown device model 'toaster'"):
        plan_devices(FleetOptions(models=("toaster",)))
    with pytest.raises(ValueError, match="at least one device model"):
        plan_devices(FleetOptions(models=()))
    with pytest.raises(ValueError, match="id_prefix 'a/b' must be"):
        plan_devices(FleetOptions(id_prefix="a/b"))


def test_fault_ids_derived_or_given_and_unique() -> None:
    """Test that faults get ids from their position unless named, and names must be unique."""
    drift = FaultSpec("sim-boiler-0001", FaultKind.DRIFT, "temperature")
    named = FaultSpec("sim-boiler-0001", FaultKind.DROPOUT, id="mine")
    assert fault_ids([drift, named]) == ["f001-drift-sim-boiler-0001", "mine"]
    with pytest.raises(ValueError, match="unique: mine"):
        fault_ids([named, named])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (FleetOptions(interval=0), "interval must be > 0"),
        (FleetOptions(devices=0), "devices must be >= 1"),
        (
            FleetOptions(devices=2, faults=(FaultSpec("sim-boiler-0009", FaultKind.DROPOUT),)),
            "fault 1: no device 'sim-boiler-0009' in this fleet",
        ),
        (
            FleetOptions(faults=(FaultSpec("sim-freezer-0003", FaultKind.STUCK, "temperature"),)),
            "freezer has no numeric metric 'temperature'",
        ),
        (
            FleetOptions(behaviours={"sim-freezer-0003": Behaviour(rejects=frozenset({"fly"}))}),
            "behaviours.sim-freezer-0003.rejects: freezer has no command 'fly'",
        ),
        (
            FleetOptions(devices=2, usage={"sim-boiler-0004": UsageProfile.UNUSED}),
            "usage.sim-boiler-0004: no device 'sim-boiler-0004' in this fleet",
        ),
    ],
)
def test_run_rejects_bad_options_before_connecting(options: FleetOptions, message: str) -> None:
    """Test that run() raises ValueError for invalid options without touching the network."""
    with pytest.raises(ValueError, match=message):
        asyncio.run(Fleet(options).run())


def closed_port() -> int:
    """Return a local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_without_broker_retries_then_stops_cleanly(tmp_path: Path) -> None:
    """Test that with no broker the devices keep retrying and run() still ends at its duration."""
    truth = tmp_path / "truth.jsonl"
    options = FleetOptions(
        port=closed_port(),
        devices=3,
        duration=0.6,
        ground_truth=truth,
        faults=(FaultSpec("sim-boiler-0001", FaultKind.DROPOUT, start=0.1),),
    )
    fleet = Fleet(options)

    async def main() -> set[asyncio.Task[object]]:
        await fleet.run()
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(main()) == set()
    stats = fleet.stats
    assert (stats.devices_connected, stats.messages_published) == (0, 0)
    assert (stats.faults_injected, stats.faults_active) == (1, 0)
    lines = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert [(x["event"], x.get("device"), x.get("profile")) for x in lines[:3]] == [
        ("usage_profile", "sim-boiler-0001", "normal"),
        ("usage_profile", "sim-heat_pump-0002", "normal"),
        ("usage_profile", "sim-freezer-0003", "normal"),
    ]
    assert lines[-1]["reason"] == "fleet_stopped"


def test_fault_problems_flag_customer_fix_on_faults_the_customer_cannot_fix() -> None:
    """Test that customer_fix_after is refused on faults fixed by command or by a technician."""
    faults = [
        FaultSpec("sim-boiler-0001", FaultKind.DRIFT, "pressure", params={"rate": -0.1},
                  customer_fix_after=60.0),
        FaultSpec("sim-boiler-0001", FaultKind.DRIFT, "temperature", params={"rate": 2.0},
                  customer_fix_after=60.0),
        FaultSpec("sim-heat_pump-0002", FaultKind.HARDWARE, customer_fix_after=60.0),
        FaultSpec("sim-freezer-0003", FaultKind.OFFLINE, customer_fix_after=60.0),
    ]  # fmt: skip
    assert fault_problems(faults, plan_devices(FleetOptions(devices=3))) == [
        (1, "customer_fix_after",
         "the customer cannot fix this drift fault on boiler (it needs command reduce_power)"),
        (2, "customer_fix_after",
         "the customer cannot fix this hardware fault on heat_pump (it needs a technician)"),
    ]  # fmt: skip


def test_option_problems_name_where_each_problem_is() -> None:
    """Test that behaviours, usage and profiles the fleet cannot use are reported by location."""
    options = FleetOptions(
        devices=3,
        behaviours={
            "sim-boiler-0001": Behaviour(rejects=frozenset({"reboot", "defrost"})),
            "sim-boiler-0009": Behaviour(),
            "sim-freezer-0003": Behaviour(rejects=frozenset({"defrost"})),
        },
        usage={"nobody": UsageProfile.UNUSED},
        profiles={UsageProfile.NORMAL: 0.0, UsageProfile.UNUSED: -1.0},
    )
    assert option_problems(options, plan_devices(options)) == [
        (("behaviours", "sim-boiler-0001", "rejects"),
         "boiler has no command 'defrost' (its commands: reboot, reduce_power, reset_valve)"),
        (("behaviours", "sim-boiler-0009"), "no device 'sim-boiler-0009' in this fleet"),
        (("usage", "nobody"), "no device 'nobody' in this fleet"),
        (("profiles",), "at least one profile needs a weight > 0"),
        (("profiles", "unused"), "weight must be >= 0 (got -1.0)"),
    ]  # fmt: skip


def test_fault_schedule_orders_starts_ends_and_customer_fixes() -> None:
    """Test that the schedule orders faults and plans customers who act alone, not guided ones."""
    a = FaultSpec(
        "d1", FaultKind.DRIFT, "pressure", start=60.0, duration=600.0, customer_fix_after=120.0
    )
    b = FaultSpec("d2", FaultKind.OFFLINE, start=180.0, duration=30.0)
    c = FaultSpec(
        "d3",
        FaultKind.DRIFT,
        "cabinet_temp",
        start=180.0,
        customer_fix_after=10.0,
        customer_fix_from="notice",
    )
    schedule = fault_schedule([("a", a), ("b", b), ("c", c)])
    assert [(offset, action, fault_id) for offset, action, fault_id, _ in schedule] == [
        (60.0, "start", "a"),
        (180.0, "customer", "a"),  # an end or a fix comes before a start at the same time
        (180.0, "start", "b"),
        (180.0, "start", "c"),
        (210.0, "end", "b"),
        (660.0, "end", "a"),
    ]  # fmt: skip


DOOR_STEPS = Notice(
    "guidance",
    "We noticed a problem",
    ("Close the door firmly.", "Check that the door seal is clean."),
    "FreezerWarming",
)


class FakeTimers:
    """Collects scheduled callbacks instead of running them later."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []
        self.cancelled = 0

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimers:
        self.calls.append((delay, callback))
        return self

    def cancel(self) -> None:
        self.cancelled += 1


def test_guided_customer_fixes_after_the_first_notice(tmp_path: Path) -> None:
    """Test that a notice starts the customer's clock once per fault, and only for notice faults."""
    identities = plan_devices(FleetOptions(devices=3, models=("freezer",)))
    path = tmp_path / "truth.jsonl"
    timers = FakeTimers()
    t0 = 1_700_000_000.0
    with GroundTruthLog(path) as log:
        devices = {
            i.device_id: SimDevice(i, broker=Broker("127.0.0.1", 1), topic_prefix="devices",
                                   interval=1.0, reboot_s=1.0, stats=FleetStats(), log=log)
            for i in identities
        }  # fmt: skip
        one, two, _ = devices.values()
        guided = FaultSpec(
            one.identity.device_id,
            FaultKind.DRIFT,
            "cabinet_temp",
            customer_fix_after=90.0,
            customer_fix_from="notice",
        )
        by_itself = FaultSpec(
            two.identity.device_id, FaultKind.DRIFT, "cabinet_temp", customer_fix_after=90.0
        )
        one.start_fault("door", guided, t0)
        one.start_fault(
            "stuck", FaultSpec(one.identity.device_id, FaultKind.STUCK, "cabinet_temp"), t0
        )
        two.start_fault("door2", by_itself, t0)
        customers = Customers(devices, log, timers)
        assert customers.notice("sim-freezer-0002", t0 + 10, DOOR_STEPS) == []  # on their own
        assert customers.notice("unknown-device", t0 + 10, DOOR_STEPS) == []
        assert customers.notice("sim-freezer-0001", t0 + 20, DOOR_STEPS) == [("door", t0 + 110)]
        assert customers.notice("sim-freezer-0001", t0 + 30, DOOR_STEPS) == []  # it runs once
        assert [delay for delay, _ in timers.calls] == [90.0]
        timers.calls[0][1]()  # 90 s later
        customers.cancel()
    assert [f.fault_id for f in one.faults] == ["stuck"]
    assert timers.cancelled == 1
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    guided_line = next(x for x in lines if x["event"] == "customer_guided" and x["acts_at"])
    assert (guided_line["fault_id"], guided_line["device"]) == ("door", "sim-freezer-0001")
    assert guided_line["steps_matched"] is True
    assert guided_line["complied"] is True
    ended = [x for x in lines if x["event"] == "fault_ended"]
    assert [(x["fault_id"], x["reason"]) for x in ended] == [("door", "customer")]
    started = [x for x in lines if x["event"] == "fault_started"]
    assert started[0]["customer_fix"] == {"after_s": 90.0, "from": "notice", "at": None}
    assert started[1]["customer_fix"] is None
    assert started[2]["customer_fix"]["at"] is not None
