"""The fixability matrix: each fault against each command of its model, and what a fix leaves."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from simulators.commands import DeviceView, handle_command
from simulators.device import Broker, FleetStats, SimDevice
from simulators.faults import ActiveFault, FaultKind, FaultSpec, fix_for
from simulators.fleet import FleetOptions, plan_devices
from simulators.groundtruth import GroundTruthLog
from simulators.models import BOILER, FREEZER, HEAT_PUMP, DeviceModel

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
T0 = 1_700_000_000.0

# label: (model, kind, metric, drift rate)
FAULTS: dict[str, tuple[DeviceModel[Any], FaultKind, str | None, float | None]] = {
    "boiler overheating": (BOILER, FaultKind.DRIFT, "temperature", 2.0),
    "boiler temperature falling": (BOILER, FaultKind.DRIFT, "temperature", -2.0),
    "boiler valve passing": (BOILER, FaultKind.DRIFT, "pressure", 0.1),
    "boiler pressure loss": (BOILER, FaultKind.DRIFT, "pressure", -0.1),
    "boiler power drift": (BOILER, FaultKind.DRIFT, "power", 5.0),
    "boiler stuck sensor": (BOILER, FaultKind.STUCK, "temperature", None),
    "boiler dropout": (BOILER, FaultKind.DROPOUT, None, None),
    "boiler spikes": (BOILER, FaultKind.SPIKE, "temperature", None),
    "boiler ignition failure": (BOILER, FaultKind.HARDWARE, None, None),
    "boiler offline": (BOILER, FaultKind.OFFLINE, None, None),
    "heat pump iced (cop)": (HEAT_PUMP, FaultKind.DRIFT, "cop", -0.3),
    "heat pump iced (supply)": (HEAT_PUMP, FaultKind.DRIFT, "supply_temp", -1.0),
    "heat pump cop rising": (HEAT_PUMP, FaultKind.DRIFT, "cop", 0.3),
    "heat pump current drift": (HEAT_PUMP, FaultKind.DRIFT, "compressor_current", 1.0),
    "heat pump stuck sensor": (HEAT_PUMP, FaultKind.STUCK, "supply_temp", None),
    "heat pump dropout": (HEAT_PUMP, FaultKind.DROPOUT, None, None),
    "heat pump spikes": (HEAT_PUMP, FaultKind.SPIKE, "compressor_current", None),
    "heat pump compressor failing": (HEAT_PUMP, FaultKind.HARDWARE, None, None),
    "freezer door ajar": (FREEZER, FaultKind.DRIFT, "cabinet_temp", 1.0),
    "freezer stuck sensor": (FREEZER, FaultKind.STUCK, "cabinet_temp", None),
    "freezer dropout": (FREEZER, FaultKind.DROPOUT, None, None),
    "freezer spikes": (FREEZER, FaultKind.SPIKE, "power_w", None),
    "freezer cooling failure": (FREEZER, FaultKind.HARDWARE, None, None),
    "freezer offline": (FREEZER, FaultKind.OFFLINE, None, None),
    "boiler return decorrelated": (BOILER, FaultKind.DECORRELATE, None, 1.0),
    "heat pump current decorrelated": (HEAT_PUMP, FaultKind.DECORRELATE, None, 0.3),
    "freezer power decorrelated": (FREEZER, FaultKind.DECORRELATE, None, 1.0),
    "boiler igniter wearing": (BOILER, FaultKind.WEAR, None, None),
    "heat pump compressor wearing": (HEAT_PUMP, FaultKind.WEAR, None, None),
    "freezer compressor wearing": (FREEZER, FaultKind.WEAR, None, None),
}

# Per model: label -> (method, params); every command the model accepts, with parameter variants.
COMMANDS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "boiler": {
        "reboot": ("reboot", {}),
        "reduce_power 100": ("reduce_power", {"percent": 100}),
        "reduce_power 30": ("reduce_power", {"percent": 30}),
        "reduce_power 20": ("reduce_power", {"percent": 20}),
        "reduce_power 19": ("reduce_power", {"percent": 19}),
        "reduce_power 5": ("reduce_power", {"percent": 5}),
        "reset_valve": ("reset_valve", {}),
    },
    "heat_pump": {"reboot": ("reboot", {}), "defrost": ("defrost", {})},
    "freezer": {"reboot": ("reboot", {}), "defrost": ("defrost", {"reason": "ice"})},
}

# The matrix: the commands that clear each fault; every other command answers ok and leaves it.
CLEARED_BY: dict[str, set[str]] = {
    "boiler overheating": {"reduce_power 100", "reduce_power 30", "reduce_power 20"},
    "boiler valve passing": {"reset_valve"},
    "boiler stuck sensor": {"reboot"},
    "boiler dropout": {"reboot"},
    "heat pump iced (cop)": {"defrost"},
    "heat pump iced (supply)": {"defrost"},
    "heat pump stuck sensor": {"reboot"},
    "heat pump dropout": {"reboot"},
    "freezer stuck sensor": {"reboot"},
    "freezer dropout": {"reboot"},
}
CUSTOMER = {"boiler pressure loss", "freezer door ajar", "boiler offline", "freezer offline"}


def active(label: str) -> tuple[DeviceModel[Any], ActiveFault]:
    """Return the model and an active fault for ``label``."""
    model, kind, metric, rate = FAULTS[label]
    params = {} if rate is None else {"rate": rate}
    spec = FaultSpec("d", kind, metric, params=params)
    return model, ActiveFault("f", spec, fix_for(model, spec), T0)


CASES = [
    (fault, command)
    for fault, (model, _, _, _) in FAULTS.items()
    for command in COMMANDS[model.name]
]


@pytest.mark.parametrize(("fault", "command"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_fixability_matrix(fault: str, command: str) -> None:
    """Test that each fault is cleared by exactly its fix, and that any other command is ok."""
    model, fault_obj = active(fault)
    method, params = COMMANDS[model.name][command]
    device = DeviceView("d", model.product, model.commands, (fault_obj,), 1.0)
    raw = orjson.dumps({"method": method, "params": params})
    outcome = handle_command("c1", raw, device, NOW)
    assert outcome.reply.status == "ok"
    cleared = command in CLEARED_BY.get(fault, set())
    assert outcome.clears == (("f",) if cleared else ())
    assert outcome.effect == ("fixed" if cleared else "no_effect")


@pytest.mark.parametrize("fault", list(FAULTS))
def test_ground_truth_fix_matches_the_matrix(fault: str) -> None:
    """Test that the fix written to the ground truth is command, customer or none as it behaves."""
    model, fault_obj = active(fault)
    fix = fault_obj.fix
    if fault in CLEARED_BY:
        assert fix.type == "command"
        # The advertised command, with its advertised parameters, really fixes it.
        device = DeviceView("d", model.product, model.commands, (fault_obj,), 1.0)
        raw = orjson.dumps({"method": fix.method, "params": dict(fix.params)})
        assert handle_command("c1", raw, device, NOW).clears == ("f",)
    elif fault in CUSTOMER:
        assert fix.type == "customer"
        assert fix.steps
    else:
        assert fix.type == "none"


def test_customer_steps_say_what_to_do() -> None:
    """Test that the customer steps say to refill to 1.5 bar, or to close the door firmly."""
    assert any("1.5 bar" in step for step in active("boiler pressure loss")[1].fix.steps)
    door = " ".join(active("freezer door ajar")[1].fix.steps)
    assert "door firmly" in door
    assert "seal" in door


def test_overheating_fix_states_its_parameter_range() -> None:
    """Test that the overheating fix says reduce_power needs at least 20 percent."""
    fix = active("boiler overheating")[1].fix
    assert fix.as_json() == {
        "type": "command",
        "method": "reduce_power",
        "params": {"percent": 30},
        "requires": {"percent": {"min": 20.0, "max": 100.0}},
    }


def make_device(index: int) -> SimDevice:
    """Return device ``index`` of a 3-device fleet (never connected, no ground-truth file)."""
    return SimDevice(
        plan_devices(FleetOptions(devices=3))[index],
        broker=Broker("127.0.0.1", 1),
        topic_prefix="devices",
        interval=1.0,
        reboot_s=1.0,
        stats=FleetStats(),
        log=GroundTruthLog(None),
    )


class NullClient:
    """Accepts publishes and forgets them."""

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        pass


def command(device: SimDevice, method: str, at: float) -> None:
    """Deliver ``method`` to ``device`` with its clock at ``at``."""
    device._clock = lambda: at
    topic = f"devices/{device.identity.device_id}/commands/{method}-{at}"
    body = orjson.dumps({"method": method, "params": {}})
    asyncio.run(device._answer(NullClient(), topic, body))  # type: ignore[arg-type]


def values(device: SimDevice, at: float) -> dict[str, Any]:
    """Return the telemetry values of ``device`` sampled at ``at`` ({} during a dropout)."""
    payload = device.next_telemetry(at)
    if payload is None:
        return {}
    body = orjson.loads(payload)
    return dict(body.get("values", body))


@pytest.mark.parametrize(
    "fault",
    ["boiler valve passing", "boiler stuck sensor", "boiler dropout", "freezer stuck sensor"],
)
def test_after_a_fix_telemetry_is_exactly_what_a_healthy_twin_sends(fault: str) -> None:
    """Test that once fixed (reboot, reset_valve) a device sends what a never-failed twin sends."""
    model, kind, metric, rate = FAULTS[fault]
    index = {"boiler": 0, "heat_pump": 1, "freezer": 2}[model.name]
    faulty, healthy = make_device(index), make_device(index)
    params = {} if rate is None else {"rate": rate}
    spec = FaultSpec(faulty.identity.device_id, kind, metric, params=params)
    (method,) = CLEARED_BY[fault]
    for k in range(10):
        assert values(faulty, T0 + k) == values(healthy, T0 + k)
    faulty.start_fault("f", spec, T0 + 10)
    during = [values(faulty, T0 + k) != values(healthy, T0 + k) for k in range(10, 200)]
    command(faulty, method, T0 + 200)
    after = [values(faulty, T0 + k) == values(healthy, T0 + k) for k in range(200, 400)]
    assert sum(during) > 150  # the fault shows
    assert all(after)
    assert faulty.faults == ()


@pytest.mark.parametrize("metric", ["cop", "supply_temp"])
def test_defrost_clears_icing_and_the_heat_pump_recovers(metric: str) -> None:
    """Test that after a defrost the COP and supply temperature return to their normal band."""
    device = make_device(1)
    device._state = replace(device._state, outdoor_mean=8.0)  # no natural defrosts
    rate = -0.5 if metric == "cop" else -2.0
    spec = FaultSpec(device.identity.device_id, FaultKind.DRIFT, metric, params={"rate": rate})
    for k in range(0, 60, 2):
        values(device, T0 + k)
    device.start_fault("f", spec, T0 + 60)
    iced = values(device, T0 + 600)
    command(device, "defrost", T0 + 602)
    cycle = [values(device, T0 + k) for k in range(604, 720, 2)]
    after = [values(device, T0 + k) for k in range(730, 900, 2)]
    assert iced["cop"] < 1.0 if metric == "cop" else iced["supply_temp"] < 25
    assert all(v["defrost"] for v in cycle)
    assert not any(v["defrost"] for v in after)
    assert all(2.0 < v["cop"] < 5.0 and 30 < v["supply_temp"] < 55 for v in after)
    assert device.faults == ()


def test_matrix_covers_every_fault_kind_and_model() -> None:
    """Test that the matrix above names every fault kind on every model it applies to."""
    kinds = {(model.name, kind) for model, kind, _, _ in FAULTS.values()}
    for model, kind in itertools.product((BOILER, HEAT_PUMP, FREEZER), FaultKind):
        if kind is not FaultKind.OFFLINE:
            assert (model.name, kind) in kinds
