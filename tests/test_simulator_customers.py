"""The simulated customers act on guidance only when its steps fit the fault, if they comply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.customers import Customers, Notice, decide, parse_notice
from simulators.device import Broker, FleetStats, SimDevice
from simulators.faults import FaultKind, FaultSpec, start_fault
from simulators.fleet import FleetOptions, plan_devices
from simulators.groundtruth import GroundTruthLog
from simulators.models import BOILER, FREEZER, MODELS

T0 = 1_700_000_000.0
SHIPPED_STEPS = Path(__file__).resolve().parent.parent / "rules" / "runbooks"


def notice(*steps: str, kind: str = "guidance") -> Notice:
    return Notice(kind, "We noticed a problem", steps, "SomeAlert")


FREEZER_STEPS = notice(
    "Close the freezer door firmly and check nothing keeps it ajar.",
    "Run your finger along the rubber seal: it should be clean.",
)
BOILER_STEPS = notice(
    "If the gauge reads below 1 bar, open the filling loop until it reads 1.5 bar.",
    "Reset the boiler.",
)
NETWORK_STEPS = notice("Check that your internet router is on.", "Switch the power off and on.")


def door_ajar(**overrides: Any) -> FaultSpec:
    fields: dict[str, Any] = {
        "device": "d",
        "kind": FaultKind.DRIFT,
        "metric": "cabinet_temp",
        "customer_fix_after": 90.0,
        "customer_fix_from": "notice",
        "params": {"rate": 1.0},
    }
    fields.update(overrides)
    return FaultSpec(**fields)


def always() -> bool:
    return True


def never() -> bool:
    raise AssertionError("compliance must not be drawn here")


def test_parse_notice_reads_the_daemons_payload() -> None:
    """Test that the notice's steps are read as the daemon publishes them, and junk is ignored."""
    payload = orjson.dumps(
        {"device": "d", "kind": "guidance", "title": "T", "message": "M", "steps": ["a", "b"],
         "alert": "FreezerWarming", "at_ms": 1}
    )  # fmt: skip
    assert parse_notice(payload) == Notice("guidance", "T", ("a", "b"), "FreezerWarming")
    assert parse_notice(b"not json") is None
    assert parse_notice(b"[1]") is None
    assert parse_notice(b'{"kind": "guidance", "steps": [1, 2]}') == Notice("guidance", "", ())
    assert not parse_notice(b'{"kind": "fixed", "steps": []}').asks  # type: ignore[union-attr]


def test_steps_that_fit_the_fault_and_a_complying_customer_fix_it() -> None:
    """Test the one path that ends in a fix: fitting steps, a guided customer who complies."""
    fault = start_fault("ajar", door_ajar(), FREEZER, T0)
    decision = decide(fault, FREEZER_STEPS, always)
    assert decision.steps_matched
    assert decision.complied is True
    assert decision.acts_after == 90.0


@pytest.mark.parametrize(
    ("model", "spec", "steps", "matched", "why"),
    [
        # The freezer's door steps do not refill a boiler that loses water.
        (BOILER, FaultSpec("d", FaultKind.DRIFT, "pressure", params={"rate": -0.1},
                           customer_fix_after=60.0, customer_fix_from="notice"),
         FREEZER_STEPS, False, "nothing about filling loop, 1.5 bar"),
        # The door steps do nothing for a failed compressor: a technician must come.
        (FREEZER, FaultSpec("d", FaultKind.HARDWARE), FREEZER_STEPS, False,
         "no steps fix this hardware fault: it needs a technician"),
        (FREEZER, FaultSpec("d", FaultKind.WEAR), FREEZER_STEPS, False, "needs a technician"),
        (BOILER, FaultSpec("d", FaultKind.DECORRELATE), BOILER_STEPS, False, "a technician"),
        (FREEZER, FaultSpec("d", FaultKind.STUCK, "cabinet_temp"), NETWORK_STEPS, False,
         "it needs command reboot"),
        # Network steps for a device whose connection dropped: they fit.
        (FREEZER, FaultSpec("d", FaultKind.OFFLINE, customer_fix_after=30.0,
                            customer_fix_from="notice"), NETWORK_STEPS, True, "follows"),
        # Fitting steps, but this customer never acts, or acts on their own clock.
        (FREEZER, door_ajar(customer_fix_after=None, customer_fix_from="start"), FREEZER_STEPS,
         True, "never acts"),
        (FREEZER, door_ajar(customer_fix_from="start"), FREEZER_STEPS, True, "on their own"),
    ],
)  # fmt: skip
def test_guidance_that_does_not_fix_the_fault_changes_nothing(
    model: Any, spec: FaultSpec, steps: Notice, matched: bool, why: str
) -> None:
    """Test each reason a notice leaves the fault as it is (and the compliance is not drawn)."""
    fault = start_fault("f", spec, model, T0)
    decision = decide(fault, steps, always if matched and "follows" in why else never)
    assert decision.steps_matched is matched
    assert why in decision.why
    if "follows" not in why:
        assert decision.acts_after is None


def test_a_customer_who_does_not_comply_does_nothing() -> None:
    """Test that fitting steps are ignored by a customer who does not comply."""
    decision = decide(start_fault("f", door_ajar(), FREEZER, T0), FREEZER_STEPS, lambda: False)
    assert (decision.steps_matched, decision.complied, decision.acts_after) == (True, False, None)
    assert decision.why == "the customer ignores the guidance"


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_shipped_customer_steps_fit_the_faults_they_are_for(model: Any) -> None:
    """Test that the shipped runbooks' steps fit each customer fix of the models (so a figure of
    guided customers measures the rules' choice of steps, not the matching)."""
    runbooks = {
        "boiler": "boiler-pressure-customer-steps.md",
        "freezer": "freezer-customer-steps.md",
    }
    network = (SHIPPED_STEPS / "offline-customer-steps.md").read_text(encoding="utf-8")
    offline = start_fault("f", FaultSpec("d", FaultKind.OFFLINE), model, T0)
    assert offline.fix.matched_by([network])
    for key, fix in model.fixes.items():
        if fix.type != "customer":
            continue
        text = (SHIPPED_STEPS / runbooks[model.name]).read_text(encoding="utf-8")
        assert fix.matched_by([text]), key
        assert not fix.matched_by([network]), key


class FakeTimers:
    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimers:
        self.calls.append((delay, callback))
        return self

    def cancel(self) -> None:
        pass


def customers_of(
    tmp_path: Path, count: int, compliance: float, seed: int = 0
) -> tuple[Customers, dict[str, SimDevice], FakeTimers, GroundTruthLog]:
    identities = plan_devices(FleetOptions(devices=count, models=("freezer",)))
    log = GroundTruthLog(tmp_path / "truth.jsonl").__enter__()
    devices = {
        i.device_id: SimDevice(i, broker=Broker("127.0.0.1", 1), topic_prefix="devices",
                               interval=1.0, reboot_s=1.0, stats=FleetStats(), log=log)
        for i in identities
    }  # fmt: skip
    timers = FakeTimers()
    return Customers(devices, log, timers, compliance=compliance, seed=seed), devices, timers, log


def test_compliance_is_a_seeded_probability_drawn_once_per_fault(tmp_path: Path) -> None:
    """Test that about `compliance` of the guided customers act, the same ones on every run, and
    that a customer who did not comply does not change their mind on a second notice."""

    def acting(compliance: float, seed: int) -> list[str]:
        customers, devices, _, log = customers_of(tmp_path, 200, compliance, seed)
        for device_id, device in devices.items():
            device.start_fault(f"ajar-{device_id}", door_ajar(device=device_id), T0)
        planned = [
            fault_id
            for device_id in devices
            for fault_id, _ in customers.notice(device_id, T0 + 10, FREEZER_STEPS)
        ]
        for device_id in devices:  # a reminder changes nothing
            assert customers.notice(device_id, T0 + 20, FREEZER_STEPS) == []
        log.__exit__(None, None, None)
        return planned

    first = acting(0.7, seed=5)
    assert 0.6 < len(first) / 200 < 0.8
    assert acting(0.7, seed=5) == first
    assert acting(0.7, seed=6) != first
    assert acting(0.0, seed=5) == []
    assert len(acting(1.0, seed=5)) == 200


def test_a_faults_own_compliance_overrides_the_fleets(tmp_path: Path) -> None:
    """Test `customer_compliance` on the fault against the fleet-wide `compliance`."""
    customers, devices, _, log = customers_of(tmp_path, 2, compliance=1.0)
    one, two = devices
    devices[one].start_fault("a", door_ajar(device=one, customer_compliance=0.0), T0)
    devices[two].start_fault("b", door_ajar(device=two), T0)
    assert customers.notice(one, T0, FREEZER_STEPS) == []
    assert customers.notice(two, T0, FREEZER_STEPS) == [("b", T0 + 90.0)]
    log.__exit__(None, None, None)


def test_the_ground_truth_says_what_was_received_and_why(tmp_path: Path) -> None:
    """Test the customer_guided lines: one per active fault (or one for a healthy device),
    with the steps, whether they fit, whether the customer complied, and when they act."""
    customers, devices, timers, log = customers_of(tmp_path, 3, compliance=1.0)
    one, two, three = devices
    devices[one].start_fault("ajar", door_ajar(device=one), T0)
    devices[one].start_fault("broken", FaultSpec(one, FaultKind.HARDWARE), T0)
    devices[two].start_fault("ajar2", door_ajar(device=two), T0)
    assert customers.notice(one, T0 + 5, FREEZER_STEPS) == [("ajar", T0 + 95)]
    assert customers.notice(two, T0 + 5, BOILER_STEPS) == []  # wrong steps: nothing happens
    assert customers.notice(three, T0 + 5, FREEZER_STEPS) == []
    assert customers.notice(one, T0 + 6, notice(kind="fixed")) == []  # no steps: not guidance
    timers.calls[0][1]()  # 90 s later the door is closed
    log.__exit__(None, None, None)
    assert [f.fault_id for f in devices[one].faults] == ["broken"]
    assert [f.fault_id for f in devices[two].faults] == ["ajar2"]
    lines = [orjson.loads(x) for x in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    guided = [x for x in lines if x["event"] == "customer_guided"]
    summary = [(x["device"], x["fault_id"], x["steps_matched"], x["complied"]) for x in guided]
    assert summary == [
        (one, "ajar", True, True),
        (one, "broken", False, None),
        (two, "ajar2", False, None),
        (three, None, False, None),
    ]
    assert guided[0]["acts_at"] is not None
    assert guided[0]["steps"] == list(FREEZER_STEPS.steps)
    assert guided[0]["alert"] == "SomeAlert"
    assert all(x["acts_at"] is None for x in guided[1:])
    assert guided[3]["why"] == "no fault on the device"
    ended = [(x["fault_id"], x["reason"]) for x in lines if x["event"] == "fault_ended"]
    assert ended == [("ajar", "customer")]
