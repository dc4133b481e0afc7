"""Pure tests of fault specs, effects, fixes, customer impact and the ground-truth log."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.device import Broker, FleetStats, SimDevice
from simulators.faults import (
    ActiveFault,
    FaultKind,
    FaultSpec,
    Fix,
    apply_faults,
    blocks_telemetry,
    check_fault_target,
    customer_impact_after,
    fix_for,
)
from simulators.fleet import FleetOptions, plan_devices
from simulators.groundtruth import GroundTruthLog, fault_ended_event, fault_started_event
from simulators.models import BOILER, FREEZER, HEAT_PUMP, Values

T0 = 1_700_000_000.0


def active(spec: FaultSpec, started_at: float = T0) -> ActiveFault:
    """Return ``spec`` as a fault that started at ``started_at`` on a boiler."""
    return ActiveFault("f1", spec, fix_for(BOILER, spec), started_at)


def spec(kind: str, metric: str | None = "temperature", **params: float) -> FaultSpec:
    """Return a fault of ``kind`` on a boiler."""
    return FaultSpec("sim-boiler-0001", FaultKind(kind), metric, params=params)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "melt"}, "'melt' is not a valid FaultKind"),
        ({"device": ""}, "needs a device id"),
        ({"kind": "drift", "metric": None}, "drift fault needs a metric"),
        ({"kind": "offline", "metric": "temperature"}, "offline fault takes no metric"),
        ({"start": -1.0}, "start must be a time >= 0"),
        ({"duration": 0.0}, "duration must be a time > 0"),
        ({"duration": float("inf")}, "duration must be a time > 0"),
        ({"params": {"speed": 1.0}}, "no parameter 'speed' \\(known: rate\\)"),
        ({"kind": "stuck", "params": {"rate": 1.0}}, "no parameter 'rate' \\(known: none\\)"),
        ({"params": {"rate": float("nan")}}, "rate must be a finite number"),
        ({"kind": "spike", "params": {"probability": 1.5}}, "probability must be between 0 and 1"),
    ],
)
def test_fault_spec_rejects_what_cannot_run(kwargs: dict[str, Any], message: str) -> None:
    """Test that an impossible fault spec raises ValueError saying what is wrong."""
    fields: dict[str, Any] = {"device": "sim-boiler-0001", "kind": "drift", "metric": "temperature"}
    with pytest.raises(ValueError, match=message):
        FaultSpec(**(fields | kwargs))


def test_fault_spec_fills_default_params() -> None:
    """Test that a kind's defaults fill the parameters not given."""
    assert spec("spike", magnitude=3.0).effective_params == {"magnitude": 3.0, "probability": 0.2}
    assert spec("drift").effective_params == {"rate": 1.0}


def test_fault_target_must_be_a_numeric_metric_of_the_model() -> None:
    """Test that a fault on a metric the model lacks, or on a non-numeric one, is rejected."""
    check_fault_target(spec("drift", "temperature"), BOILER)
    with pytest.raises(ValueError, match="no numeric metric 'cabinet_temp'"):
        check_fault_target(spec("drift", "cabinet_temp"), BOILER)
    with pytest.raises(ValueError, match="no numeric metric 'burner_on'"):
        check_fault_target(spec("stuck", "burner_on"), BOILER)


@pytest.mark.parametrize(
    ("rate", "minutes", "expected"),
    [(2.0, 0.0, 60.0), (2.0, 1.0, 62.0), (2.0, 5.0, 70.0), (-3.0, 2.0, 54.0), (2.0, -1.0, 60.0)],
)
def test_drift_moves_linearly_per_minute(rate: float, minutes: float, expected: float) -> None:
    """Test that drift adds ``rate`` per minute since the fault started (nothing before)."""
    fault = active(spec("drift", rate=rate))
    out = apply_faults({"temperature": 60.0}, [fault], T0 + 60 * minutes, random.Random(0))
    assert out["temperature"] == pytest.approx(expected)


def test_spike_adds_isolated_outliers_of_magnitude() -> None:
    """Test that spikes are +/- magnitude, at about the given probability."""
    fault = active(spec("spike", magnitude=25.0, probability=0.3))
    rng = random.Random(1)
    outs = [apply_faults({"temperature": 60.0}, [fault], T0, rng) for _ in range(2000)]
    deltas = [float(out["temperature"]) - 60.0 for out in outs]
    spikes = [d for d in deltas if d != 0]
    assert {abs(d) for d in spikes} == {25.0}
    assert 0.25 < len(spikes) / len(deltas) < 0.35
    assert any(d > 0 for d in spikes)
    assert any(d < 0 for d in spikes)


@pytest.mark.parametrize(("probability", "changed"), [(0.0, False), (1.0, True)])
def test_spike_probability_bounds(probability: float, changed: bool) -> None:
    """Test that probability 0 never spikes and 1 always does."""
    fault = active(spec("spike", probability=probability))
    rng = random.Random(2)
    outs = [apply_faults({"temperature": 60.0}, [fault], T0, rng)["temperature"] for _ in range(50)]
    assert all((value != 60.0) == changed for value in outs)


def test_stuck_repeats_the_value_it_froze() -> None:
    """Test that a stuck sensor repeats one value while the other metrics move on."""
    fault = active(spec("stuck"))
    rng = random.Random(0)
    first = apply_faults({"temperature": 61.5, "pressure": 1.5}, [fault], T0, rng)
    later = apply_faults({"temperature": 66.0, "pressure": 1.6}, [fault], T0 + 60, rng)
    assert first["temperature"] == later["temperature"] == 61.5
    assert later["pressure"] == 1.6


def test_faults_leave_input_and_other_metrics_alone() -> None:
    """Test that applying faults returns a new dict and ignores metrics that are absent."""
    values: Values = {"temperature": 60.0, "mode": "eco"}
    fault = ActiveFault("f1", spec("drift", "power", rate=5.0), Fix("none"), T0)
    out = apply_faults(values, [fault], T0 + 60, random.Random(0))
    assert out == values
    assert out is not values


@pytest.mark.parametrize(
    ("kind", "metric", "blocks"),
    [("dropout", None, True), ("offline", None, True), ("stuck", "temperature", False)],
)
def test_dropout_and_offline_block_telemetry(kind: str, metric: str | None, blocks: bool) -> None:
    """Test that only dropout and offline faults stop the telemetry."""
    assert blocks_telemetry([active(spec(kind, metric))]) == blocks
    assert not blocks_telemetry([])


@pytest.mark.parametrize(
    ("model", "kind", "metric", "rate", "fix_type", "method"),
    [
        (BOILER, "stuck", "temperature", 1.0, "command", "reboot"),
        (FREEZER, "dropout", None, 1.0, "command", "reboot"),
        (BOILER, "drift", "temperature", 2.0, "command", "reduce_power"),
        (BOILER, "drift", "temperature", -2.0, "none", None),
        (BOILER, "drift", "pressure", 0.1, "command", "reset_valve"),
        (BOILER, "drift", "pressure", -0.1, "customer", None),
        (BOILER, "drift", "power", 5.0, "none", None),
        (HEAT_PUMP, "drift", "cop", -0.3, "command", "defrost"),
        (HEAT_PUMP, "drift", "supply_temp", -1.0, "command", "defrost"),
        (HEAT_PUMP, "drift", "cop", 0.3, "none", None),
        (HEAT_PUMP, "drift", "compressor_current", 1.0, "none", None),
        (FREEZER, "drift", "cabinet_temp", 1.0, "customer", None),
        (FREEZER, "drift", "cabinet_temp", -1.0, "none", None),
        (HEAT_PUMP, "spike", "cop", 1.0, "none", None),
        (HEAT_PUMP, "offline", None, 1.0, "customer", None),
        (BOILER, "hardware", None, 1.0, "none", None),
        (HEAT_PUMP, "hardware", None, 1.0, "none", None),
        (FREEZER, "hardware", None, 1.0, "none", None),
    ],
)
def test_fix_for_each_fault(
    model: Any, kind: str, metric: str | None, rate: float, fix_type: str, method: str | None
) -> None:
    """Test how each fault can be fixed: by command, by the customer, or not remotely."""
    params = {"rate": rate} if kind == "drift" else {}
    fix = fix_for(model, FaultSpec("d", FaultKind(kind), metric, params=params))
    assert fix.type == fix_type
    assert fix.method == method
    assert bool(fix.steps) == (fix_type == "customer")


@pytest.mark.parametrize(
    ("model", "fault", "seconds"),
    [
        (BOILER, FaultSpec("d", FaultKind.DRIFT, "temperature", params={"rate": 2.0}), 300.0),
        (BOILER, FaultSpec("d", FaultKind.DRIFT, "pressure", params={"rate": -0.1}), 300.0),
        (FREEZER, FaultSpec("d", FaultKind.DRIFT, "cabinet_temp", params={"rate": 0.0}), None),
        (FREEZER, FaultSpec("d", FaultKind.STUCK, "cabinet_temp"), 2700.0),
        (BOILER, FaultSpec("d", FaultKind.SPIKE, "temperature"), None),
        (BOILER, FaultSpec("d", FaultKind.DROPOUT), None),
        (BOILER, FaultSpec("d", FaultKind.OFFLINE), 1800.0),
        (BOILER, FaultSpec("d", FaultKind.HARDWARE), 1200.0),
        (FREEZER, FaultSpec("d", FaultKind.HARDWARE), 900.0),
        (BOILER, FaultSpec("d", FaultKind.SPIKE, "power", customer_impact_after=60.0), 60.0),
        (BOILER, FaultSpec("d", FaultKind.DROPOUT, customer_impact_after=600.0), 600.0),
    ],
)
def test_customer_impact_after(model: Any, fault: FaultSpec, seconds: float | None) -> None:
    """Test when the customer notices each fault, or that they never do."""
    assert customer_impact_after(model, fault) == seconds


def test_fix_json_forms() -> None:
    """Test the ground-truth form of each kind of fix."""
    assert Fix("command", method="reboot").as_json() == {
        "type": "command",
        "method": "reboot",
        "params": {},
    }
    assert Fix("customer", steps=("a", "b"), keywords=(("a",),)).as_json() == {
        "type": "customer",
        "steps": ["a", "b"],
        "keywords": [["a"]],
    }
    assert Fix("none").as_json() == {"type": "none"}
    power = Fix("command", "reduce_power", {"percent": 30}, requires={"percent": (20.0, 100.0)})
    assert power.as_json() == {
        "type": "command",
        "method": "reduce_power",
        "params": {"percent": 30},
        "requires": {"percent": {"min": 20.0, "max": 100.0}},
    }


def test_ground_truth_events() -> None:
    """Test the started and ended lines: times, impact, fix and reason."""
    fault = active(FaultSpec("sim-boiler-0001", FaultKind.DRIFT, "temperature", duration=60.0))
    started = fault_started_event(fault, "boiler-x200", 600.0)
    assert started["event"] == "fault_started"
    assert started["model"] == "boiler-x200"
    assert started["params"] == {"rate": 1.0}
    start = datetime.fromisoformat(started["start"])
    assert start.timestamp() == T0
    assert (datetime.fromisoformat(started["customer_impact_at"]) - start).total_seconds() == 600
    assert (datetime.fromisoformat(started["planned_end"]) - start).total_seconds() == 60
    assert started["fix"] == {
        "type": "command",
        "method": "reduce_power",
        "params": {"percent": 30},
        "requires": {"percent": {"min": 20.0, "max": 100.0}},
    }
    assert started["customer_fix"] is None
    assert "detail" not in started
    assert fault_started_event(fault, "boiler-x200", None)["customer_impact_at"] is None
    ended = fault_ended_event(fault, T0 + 5, "command:reboot")
    assert ended["reason"] == "command:reboot"
    assert datetime.fromisoformat(ended["end"]).timestamp() == T0 + 5


@contextmanager
def device(tmp_path: Path, index: int = 0) -> Iterator[tuple[SimDevice, Path, FleetStats]]:
    """Yield a device of a 5-device fleet (never connected), its ground-truth file and stats."""
    identity = plan_devices(FleetOptions(devices=5))[index]
    path = tmp_path / "truth.jsonl"
    stats = FleetStats()
    with GroundTruthLog(path) as log:
        yield (
            SimDevice(
                identity,
                broker=Broker("127.0.0.1", 1),
                topic_prefix="devices",
                interval=1.0,
                reboot_s=0.1,
                stats=stats,
                log=log,
            ),
            path,
            stats,
        )


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Return the JSON lines of ``path``."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize(("index", "flat"), [(0, False), (4, True)])
def test_device_telemetry_shapes(tmp_path: Path, index: int, flat: bool) -> None:
    """Test that a device publishes {"ts", "values"} or, every 5th device, the flat shape."""
    with device(tmp_path, index) as (sim, _, _):
        payload = sim.next_telemetry(T0 + 0.123)
    assert payload is not None
    body = orjson.loads(payload)
    if flat:
        assert "ts" not in body
        assert set(sim.identity.model.metrics) <= set(body)
    else:
        assert body["ts"] == 1_700_000_000_123
        assert set(sim.identity.model.metrics) <= set(body["values"])


def test_device_stuck_fault_repeats_last_published_value(tmp_path: Path) -> None:
    """Test that a stuck fault freezes the value last sent, and is written to the ground truth."""
    with device(tmp_path) as (sim, path, stats):
        last = orjson.loads(sim.next_telemetry(T0) or b"")["values"]["temperature"]
        sim.start_fault("f1", spec("stuck"), T0 + 1)
        assert (stats.faults_injected, stats.faults_active) == (1, 1)
        for k in range(2, 30):
            assert orjson.loads(sim.next_telemetry(T0 + k) or b"")["values"]["temperature"] == last
        assert sim.end_fault("f1", "duration", T0 + 30)
        assert not sim.end_fault("f1", "duration", T0 + 31)
    assert stats.faults_active == 0
    lines = read_lines(path)
    assert [line["event"] for line in lines] == ["fault_started", "fault_ended"]
    assert lines[0]["fix"] == {"type": "command", "method": "reboot", "params": {}}
    assert lines[1]["reason"] == "duration"


@pytest.mark.parametrize("kind", ["dropout", "offline"])
def test_device_sends_nothing_during_dropout_or_offline(tmp_path: Path, kind: str) -> None:
    """Test that telemetry stops for the length of a dropout or offline fault."""
    with device(tmp_path) as (sim, _, _):
        sim.start_fault("f1", spec(kind, None), T0)
        assert sim.next_telemetry(T0 + 1) is None
        sim.end_fault("f1", "duration", T0 + 2)
        assert sim.next_telemetry(T0 + 3) is not None
