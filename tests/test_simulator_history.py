"""The history backfill: the fleet's simulated past, its wear runs, and its publication."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.device import Broker, FleetStats, SimDevice
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import Fleet, FleetOptions, fault_ids, history_of, plan_devices
from simulators.groundtruth import GroundTruthLog
from simulators.history import (
    HistoryOptions,
    PastFault,
    _PastDevice,
    carried_wear,
    history_messages,
    history_problems,
    meta_messages,
    plan_wear_runs,
    wear_run_faults,
)
from simulators.models import HEAT_PUMP, UsageProfile

END = 1_700_000_000.0
HOUR = 3600.0
Series = dict[str, list[tuple[float, dict[str, Any]]]]


def replay(
    options: FleetOptions, history: HistoryOptions, past: list[PastFault] | None = None
) -> Series:
    """Return each device's history as (ts in seconds, values), as published."""
    series: Series = defaultdict(list)
    identities = plan_devices(options)
    for topic, payload in history_messages(identities, "devices", history, END, 1, past or []):
        body = orjson.loads(payload)
        series[topic.split("/")[1]].append((body["ts"] / 1000, body["values"]))
    return series


def test_every_device_gets_its_past_in_time_order_with_timestamps() -> None:
    """Test the messages: one per device per step, `{ts, values}` even for flat devices, in
    time order, all before the live run starts."""
    options = FleetOptions(devices=5)  # the 5th sends the flat shape live
    history = HistoryOptions(duration=HOUR, step=30.0)
    identities = plan_devices(options)
    messages = list(history_messages(identities, "devices", history, END, 1))
    assert len(messages) == 5 * 120
    stamps = [orjson.loads(payload)["ts"] for _, payload in messages]
    per_device: dict[str, list[int]] = defaultdict(list)
    for (topic, _), ts in zip(messages, stamps, strict=True):
        assert topic.endswith("/telemetry")
        per_device[topic].append(ts)
    assert len(per_device) == 5
    for device_stamps in per_device.values():
        assert device_stamps == sorted(device_stamps)
        assert all((END - HOUR) * 1000 <= ts < END * 1000 for ts in device_stamps)
        gaps = np.diff(device_stamps)
        assert (gaps == 30_000).all()
    assert max(stamps[:5]) < min(stamps[-5:])  # the fleet's steps come in order
    meta = meta_messages(identities, "devices")
    assert [topic for topic, _ in meta] == [f"devices/{i.device_id}/meta" for i in identities]
    assert orjson.loads(meta[0][1]) == identities[0].meta


def test_a_stop_event_ends_the_history_early() -> None:
    stop = threading.Event()
    identities = plan_devices(FleetOptions(devices=2))
    messages = history_messages(
        identities, "devices", HistoryOptions(duration=HOUR), END, 1, stop=stop
    )
    next(messages)
    stop.set()
    assert len(list(messages)) <= 1  # the rest of the step at most


def test_the_past_is_the_live_devices_own_with_their_usage() -> None:
    """Test that the history replays the device the live run drives (its traits come from the
    same seed) and its usage profile: an unused boiler never fires."""
    options = FleetOptions(devices=4, usage={"sim-boiler-0004": UsageProfile.UNUSED}, seed=3)
    identities = plan_devices(options)
    for identity in identities:
        live = SimDevice(identity, broker=Broker("127.0.0.1", 1), topic_prefix="devices",
                         interval=1.0, reboot_s=1.0, stats=FleetStats(),
                         log=GroundTruthLog(None))  # fmt: skip
        past = _PastDevice(identity, 1, 30.0, [])
        assert past.state == live._state  # private, read to compare the device's traits
    series = replay(options, HistoryOptions(duration=6 * HOUR))
    assert not any(values["burner_on"] for _, values in series["sim-boiler-0004"])
    assert any(values["burner_on"] for _, values in series["sim-boiler-0001"])


def service_like(**history: Any) -> tuple[FleetOptions, HistoryOptions]:
    """Return a fleet of 9 (3 heat pumps) with a live wear fault on one heat pump."""
    wear = FaultSpec(
        "sim-heat_pump-0005", FaultKind.WEAR, start=60.0, params={"life": HOUR, "worn": 0.9}
    )
    relation = FaultSpec("sim-boiler-0001", FaultKind.DECORRELATE, params={"rate": 2.0})
    options = FleetOptions(
        devices=9, faults=(wear, relation), usage={"sim-heat_pump-0008": UsageProfile.UNUSED}
    )
    defaults: dict[str, Any] = {"duration": 12 * HOUR, "wear_runs": 3, "repair_after": 1200.0}
    return options, HistoryOptions(**{**defaults, **history})


def test_wear_runs_go_to_working_devices_of_the_wearing_model_and_end_before_the_tail() -> None:
    """Test the plan: the model of the live wear fault, normally used devices other than the
    live wear's, runs one after another, all repaired before the clean tail, seeded."""
    options, history = service_like()
    identities = plan_devices(options)
    runs = plan_wear_runs(history, identities, options.faults, END, options.seed)
    assert len(runs) == 3
    assert {run.device for run in runs} == {"sim-heat_pump-0002"}  # 0005 wears live, 0008 unused
    assert all(0.75 * HOUR <= run.life <= 1.25 * HOUR for run in runs)
    assert runs[0].start >= END - 12 * HOUR
    for first, second in itertools.pairwise(runs):
        assert first.repaired_at <= second.start
    assert runs[-1].repaired_at <= END - history.clean_tail
    assert runs == plan_wear_runs(history, identities, options.faults, END, options.seed)
    other = plan_wear_runs(history, identities, options.faults, END, options.seed + 1)
    assert [r.start for r in other] != [r.start for r in runs]


@pytest.mark.parametrize(
    ("history", "models", "message"),
    [
        (
            {"wear_runs": 12, "wear_model": "heat_pump"},
            ("boiler", "heat_pump", "freezer"),
            "need .* but the history leaves",
        ),
        ({"wear_model": "freezer", "wear_runs": 1}, ("heat_pump",), "no normally used freezer"),
    ],
)
def test_wear_runs_that_cannot_be_placed_are_refused(
    history: dict[str, Any], models: tuple[str, ...], message: str
) -> None:
    _, planned = service_like(**history)
    identities = plan_devices(FleetOptions(devices=9, models=models))
    with pytest.raises(ValueError, match=message):
        plan_wear_runs(planned, identities, (), END, 0)
    assert history_problems(planned, identities, (), 0)


def test_without_a_wear_fault_the_history_must_name_the_model() -> None:
    identities = plan_devices(FleetOptions(devices=3))
    with pytest.raises(ValueError, match=r"history\.wear_model: name the model"):
        plan_wear_runs(HistoryOptions(duration=HOUR, wear_runs=1), identities, (), END, 0)
    assert plan_wear_runs(HistoryOptions(duration=HOUR), identities, (), END, 0) == []


def test_history_options_are_checked() -> None:
    for kwargs, message in [
        ({"duration": 0.0}, "duration must be a time > 0"),
        ({"duration": 60.0, "step": 90.0}, "step must be at most 60s"),
        ({"duration": 10.0, "step": 30.0}, "shorter than one step"),
        ({"duration": HOUR, "wear_runs": -1}, "wear_runs must be >= 0"),
        ({"duration": HOUR, "wear_model": "toaster"}, "unknown device model 'toaster'"),
    ]:
        with pytest.raises(ValueError, match=message):
            HistoryOptions(**kwargs)
    with pytest.raises(ValueError, match="no history to publish"):
        history_of(FleetOptions(history_mode="only"))
    assert history_of(FleetOptions(history=HistoryOptions(HOUR), history_mode="skip")) is None


def test_the_past_holds_run_to_failure_episodes_and_nothing_else() -> None:
    """Test the telemetry of the history: each wear run crosses the failure condition exactly
    when its part fails and is healthy again once replaced; the live wear fault's earlier part
    rises to the end; the boiler with a live decorrelation is healthy in the past."""
    options, history = service_like()
    identities = plan_devices(options)
    runs = plan_wear_runs(history, identities, options.faults, END, options.seed)
    named = list(zip(fault_ids(options.faults), options.faults, strict=True))
    past = wear_run_faults(runs, identities) + carried_wear(named, identities, END)
    series = replay(options, history, past)
    failure = HEAT_PUMP.wear.failure_above
    worn_out = series["sim-heat_pump-0002"]
    for run in runs:
        failed = [v["vibration"] > failure for t, v in worn_out if run.start <= t < run.repaired_at]
        times = [t for t, _ in worn_out if run.start <= t < run.repaired_at]
        first = times[failed.index(True)]
        assert run.fails_at <= first < run.fails_at + history.step
        assert all(failed[failed.index(True) :])
    assert not any(v["vibration"] > failure for t, v in worn_out if t >= runs[-1].repaired_at)
    carried = series["sim-heat_pump-0005"]  # 90 % worn one minute into the live run
    began = END + 60.0 - 0.9 * HOUR
    before = [v["vibration"] for t, v in carried if t < began]
    last = [v["vibration"] for t, v in carried[-10:]]
    assert max(before) < 2.5 < 4.0 < min(last) < failure
    boiler = series["sim-boiler-0001"]
    residual = [
        v["temperature"] - v["return_temp"] - 3.0 - 0.15 * v["power"]
        for _, v in boiler
        if v["burner_on"]
    ]
    assert abs(float(np.mean(residual))) < 0.1  # no decorrelation in the training data


@pytest.mark.integration
def test_history_only_publishes_the_past_through_the_broker(broker: Any, tmp_path: Path) -> None:
    """Test `history_mode="only"` against Mosquitto: retained meta, every past message (QoS 1),
    the wear runs in the ground truth marked as history, and no live device connecting."""
    options, history = service_like(duration=6 * HOUR, wear_runs=2)
    truth = tmp_path / "truth.jsonl"
    options = FleetOptions(
        **{**options.__dict__, "host": broker.host, "port": broker.port, "ground_truth": truth,
           "history": history, "history_mode": "only"}
    )  # fmt: skip
    seen: list[tuple[str, bool]] = []
    lock = threading.Lock()
    done = threading.Event()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        with lock:
            seen.append((message.topic, message.retain))
            if len(seen) >= 9 * 720 + 9:
                done.set()

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="history-watcher")
    watcher.on_message = on_message
    watcher.connect(broker.host, broker.port)
    watcher.subscribe([("devices/+/telemetry", 1), ("devices/+/meta", 1), ("devices/+/status", 1)])
    watcher.loop_start()
    try:
        fleet = Fleet(options)
        asyncio.run(fleet.run())
        assert fleet.stats.history_published == 9 * 720
        assert fleet.stats.messages_published == 0  # no live telemetry
        assert done.wait(30), f"only {len(seen)} messages arrived"
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    topics = [topic for topic, _ in seen]
    assert sum(topic.endswith("/meta") for topic in topics) == 9
    assert not any(topic.endswith("/status") for topic in topics)
    lines = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert {line["event"] for line in lines} == {"fault_started", "fault_ended"}
    assert all(line["history"] for line in lines)
    assert [line["reason"] for line in lines if line["event"] == "fault_ended"] == ["repaired"] * 2
    started = [line for line in lines if line["event"] == "fault_started"]
    assert all(line["kind"] == "wear" and line["fix"] == {"type": "none"} for line in started)
    assert all(
        line["wear"]["failure"] == {"metric": "vibration", "above": 10.0} for line in started
    )
