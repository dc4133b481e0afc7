"""The simulated fleet against a real Mosquitto (the ``broker`` fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.device import drop_connection
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import Fleet, FleetOptions

pytestmark = pytest.mark.integration

Seen = tuple[str, bytes, bool]  # topic, payload, retain
WAIT_S = 5.0


class Watcher:
    """A paho client on its own thread that records every message matching ``topics``.

    It runs outside the test's event loop, so that loop holds nothing but the fleet's tasks.
    """

    def __init__(self, broker: Any, *topics: str) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._broker = broker
        self._topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watcher-{uuid.uuid4()}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.seen.append((message.topic, message.payload, message.retain))

    def __enter__(self) -> Watcher:
        self.client.connect(self._broker.host, self._broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "watcher could not subscribe"
        return self

    def __exit__(self, *_: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    async def wait_for(self, found: Callable[[list[Seen]], bool]) -> None:
        """Poll until ``found(messages so far)`` holds; fail after WAIT_S seconds."""
        deadline = time.monotonic() + WAIT_S
        while not found(self.snapshot()):
            assert time.monotonic() < deadline, f"timed out; seen: {self.snapshot()[-10:]}"
            await asyncio.sleep(0.02)

    def payloads(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in self.snapshot() if t == topic]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)


def retained(broker: Any, topic: str, count: int) -> dict[str, Seen]:
    """Return the retained messages on ``topic`` (a filter), waiting for ``count`` of them."""
    with Watcher(broker, topic) as watcher:
        asyncio.run(watcher.wait_for(lambda seen: len(seen) >= count))
    return {t: (t, payload, retain) for t, payload, retain in watcher.seen}


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def read_truth(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_fleet_publishes_meta_status_and_both_telemetry_shapes(broker: Any, tmp_path: Path) -> None:
    """Test that 5 devices announce meta and online, publish both shapes, and end offline."""
    truth = tmp_path / "truth.jsonl"
    faults = (
        FaultSpec("sim-boiler-0001", FaultKind.DRIFT, "temperature", 0.3, 0.6, {"rate": 60.0}),
        FaultSpec("sim-freezer-0003", FaultKind.STUCK, "cabinet_temp", start=0.5),
    )
    options = FleetOptions(
        host=broker.host,
        port=broker.port,
        devices=5,
        interval=0.2,
        duration=2.0,
        faults=faults,
        ground_truth=truth,
    )
    fleet = Fleet(options)
    ids = ["sim-boiler-0001", "sim-heat_pump-0002", "sim-freezer-0003", "sim-boiler-0004"]
    flat_id = "sim-heat_pump-0005"

    ended = [f"devices/{device_id}/status" for device_id in [*ids, flat_id]]

    async def main(watcher: Watcher) -> set[asyncio.Task[Any]]:
        await fleet.run()
        left = other_tasks()
        await watcher.wait_for(
            lambda _: all(watcher.payloads(t)[-1:] == [b"offline"] for t in ended)
        )
        return left

    started = time.time()
    with Watcher(broker, "devices/#") as watcher:
        assert asyncio.run(main(watcher)) == set()
    finished = time.time()
    metas = retained(broker, "devices/+/meta", 5)
    statuses = retained(broker, "devices/+/status", 5)
    for device_id in [*ids, flat_id]:
        assert watcher.payloads(f"devices/{device_id}/status")[:1] == [b"online"]
        assert watcher.payloads(f"devices/{device_id}/status")[-1] == b"offline"
        telemetry = [orjson.loads(p) for p in watcher.payloads(f"devices/{device_id}/telemetry")]
        assert len(telemetry) >= 3
        if device_id == flat_id:
            assert all("ts" not in body and "supply_temp" in body for body in telemetry)
        else:
            assert all(set(body) == {"ts", "values"} for body in telemetry)
            # Wall-clock epoch milliseconds, taken while the fleet ran (not seconds, not a
            # simulated clock); bounded by the run itself, so a busy machine cannot fail it.
            assert started - 1 <= telemetry[-1]["ts"] / 1000 <= finished + 1
        _, meta, retain = metas[f"devices/{device_id}/meta"]
        assert retain
        assert set(orjson.loads(meta)) == {"model", "firmware", "customer", "location", "labels"}
        assert statuses[f"devices/{device_id}/status"][1:] == (b"offline", True)
    assert orjson.loads(metas["devices/sim-boiler-0001/meta"][1])["model"] == "boiler-x200"
    stats = fleet.stats
    assert stats.messages_published >= 15
    assert (stats.devices_connected, stats.faults_injected, stats.faults_active) == (0, 2, 0)
    lines = read_truth(truth)
    assert [(e["event"], e["device"]) for e in lines[:5]] == [
        ("usage_profile", device_id) for device_id in [*ids, flat_id]
    ]
    events = [(e["event"], e["kind"], e.get("reason")) for e in lines[5:]]
    assert events == [
        ("fault_started", "drift", None),
        ("fault_started", "stuck", None),
        ("fault_ended", "drift", "duration"),
        ("fault_ended", "stuck", "fleet_stopped"),
    ]


def command(method: str, expires_in: float = 60.0, **params: Any) -> bytes:
    expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
    return orjson.dumps({"method": method, "params": params, "expires_at": expires_at.isoformat()})


def test_reboot_answers_ok_reannounces_online_and_clears_stuck(broker: Any, tmp_path: Path) -> None:
    """Test commands over MQTT: reboot (ok, offline, online, fault fixed), unknown and expired."""
    truth = tmp_path / "truth.jsonl"
    options = FleetOptions(
        host=broker.host,
        port=broker.port,
        devices=1,
        interval=0.2,
        reboot_downtime=0.5,
        faults=(FaultSpec("sim-boiler-0001", FaultKind.STUCK, "temperature"),),
        ground_truth=truth,
    )
    base = "devices/sim-boiler-0001"

    status = f"{base}/status"

    async def main(watcher: Watcher) -> set[asyncio.Task[Any]]:
        fleet_task = asyncio.create_task(Fleet(options).run())
        await watcher.wait_for(lambda _: len(watcher.payloads(f"{base}/telemetry")) >= 2)
        watcher.publish(f"{base}/commands/c-unknown", command("dance"))
        watcher.publish(f"{base}/commands/c-old", command("reboot", -1))
        watcher.publish(f"{base}/commands/c-garbled", b"\xff")
        watcher.publish(f"{base}/commands/c-reboot", command("reboot"))
        reannounced = [b"online", b"offline", b"online"]
        await watcher.wait_for(lambda _: watcher.payloads(status)[-3:] == reannounced)
        fleet_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fleet_task
        left = other_tasks()
        await watcher.wait_for(lambda _: watcher.payloads(status)[-1:] == [b"offline"])
        return left

    with Watcher(broker, f"{base}/#") as watcher:
        assert asyncio.run(main(watcher)) == set()
    assert watcher.payloads(status)[:1] == [b"online"]
    replies = {
        topic.split("/")[-2]: orjson.loads(payload)
        for topic, payload, _ in watcher.seen
        if topic.endswith("/reply")
    }
    assert replies["c-unknown"]["status"] == "rejected"
    assert "unknown method 'dance'" in replies["c-unknown"]["message"]
    assert replies["c-old"]["status"] == "rejected"
    assert "expired" in replies["c-old"]["message"]
    assert replies["c-garbled"]["status"] == "error"
    assert replies["c-reboot"]["status"] == "ok"
    order = [t for t, payload, _ in watcher.seen if t.endswith("c-reboot/reply") or
             (t.endswith("/status") and payload == b"offline")]  # fmt: skip
    assert order[0].endswith("c-reboot/reply")  # the reply comes before the restart
    assert watcher.payloads(status).count(b"offline") == 2  # reboot, then cancelled: goodbye
    ended = [e for e in read_truth(truth) if e["event"] == "fault_ended"]
    assert [e["reason"] for e in ended] == ["command:reboot"]


def test_offline_fault_makes_the_broker_publish_the_lwt(broker: Any, tmp_path: Path) -> None:
    """Test that an offline fault yields the will 'offline', no telemetry, then a reconnect."""
    truth = tmp_path / "truth.jsonl"
    options = FleetOptions(
        host=broker.host,
        port=broker.port,
        devices=1,
        models=("freezer",),
        interval=0.2,
        duration=3.5,
        faults=(FaultSpec("sim-freezer-0001", FaultKind.OFFLINE, start=1.0, duration=1.5),),
        ground_truth=truth,
    )
    base = "devices/sim-freezer-0001"

    with Watcher(broker, f"{base}/#") as watcher:
        asyncio.run(Fleet(options).run())
        offline = [b"online", b"offline", b"online", b"offline"]
        asyncio.run(watcher.wait_for(lambda _: watcher.payloads(f"{base}/status") == offline))
    events = [
        payload.decode() if topic.endswith("/status") else "telemetry"
        for topic, payload, _ in watcher.seen
        if topic.endswith(("/status", "/telemetry"))
    ]
    compact = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]
    # The broker's will says offline; not a single message until the device is back online.
    assert compact == ["online", "telemetry", "offline", "online", "telemetry", "offline"]
    assert [e["event"] for e in read_truth(truth)] == [
        "usage_profile",
        "fault_started",
        "fault_ended",
    ]


def test_command_queued_while_offline_is_answered_on_return_and_fixes(
    broker: Any, tmp_path: Path
) -> None:
    """Test that commands queued while offline are handled on return and reduce_power fixes."""
    # A reduce_power among them clears the boiler's overheating drift: the temperature is back to
    # normal and the ground truth says the fault ended by command:reduce_power; a command that
    # expired while queued is rejected as expired, one with a bad percent gets error.
    truth = tmp_path / "truth.jsonl"
    device_id = "sim-boiler-0001"
    options = FleetOptions(
        host=broker.host,
        port=broker.port,
        devices=1,
        models=("boiler",),
        interval=0.2,
        faults=(
            # +50 °C a second: unmistakable within one message.
            FaultSpec(device_id, FaultKind.DRIFT, "temperature", params={"rate": 3000.0},
                      id="overheating"),
            FaultSpec(device_id, FaultKind.OFFLINE, start=1.0, duration=2.0, id="network"),
        ),
        ground_truth=truth,
    )  # fmt: skip
    base = f"devices/{device_id}"
    status = f"{base}/status"

    def temperatures(watcher: Watcher) -> list[float]:
        return [
            orjson.loads(p)["values"]["temperature"] for p in watcher.payloads(f"{base}/telemetry")
        ]

    def replies(watcher: Watcher) -> dict[str, dict[str, Any]]:
        return {
            topic.split("/")[-2]: orjson.loads(payload)
            for topic, payload, _ in watcher.snapshot()
            if topic.endswith("/reply")
        }

    async def main(watcher: Watcher) -> tuple[list[float], int]:
        fleet_task = asyncio.create_task(Fleet(options).run())
        # The broker publishes the will: the device is gone.
        await watcher.wait_for(lambda _: watcher.payloads(status) == [b"online", b"offline"])
        hot = temperatures(watcher)
        watcher.publish(f"{base}/commands/c-fix", command("reduce_power", percent=30))
        watcher.publish(f"{base}/commands/c-stale", command("reboot", expires_in=0.3))
        watcher.publish(f"{base}/commands/c-bad", command("reduce_power", percent=0))
        await watcher.wait_for(lambda _: len(replies(watcher)) == 3)
        answered_at = len(watcher.snapshot())
        count = len(temperatures(watcher))
        await watcher.wait_for(lambda _: len(temperatures(watcher)) >= count + 5)
        fleet_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fleet_task
        return hot, answered_at

    with Watcher(broker, f"{base}/#") as watcher:
        hot, answered_at = asyncio.run(main(watcher))
    seen = watcher.snapshot()
    back_online = [i for i, (t, p, _) in enumerate(seen) if t == status and p == b"online"][1]
    first_reply = min(i for i, (t, _, _) in enumerate(seen) if t.endswith("/reply"))
    assert back_online < first_reply  # nothing answered while offline
    assert max(hot) > 80
    answers = replies(watcher)
    assert answers["c-fix"] == {"status": "ok", "message": "power reduced by 30 %",
                                "result": {"power_limit": 70.0}}  # fmt: skip
    assert answers["c-stale"]["status"] == "rejected"
    assert "expired" in answers["c-stale"]["message"]
    assert answers["c-bad"]["status"] == "error"
    assert "'percent' must be between 1 and 100" in answers["c-bad"]["message"]
    after = [
        orjson.loads(p)["values"]["temperature"]
        for t, p, _ in seen[answered_at:]
        if t.endswith("/telemetry")
    ]
    assert len(after) >= 5
    assert all(50 < t < 75 for t in after)  # back to normal
    lines = read_truth(truth)
    ended = {e["fault_id"]: e for e in lines if e["event"] == "fault_ended"}
    assert ended["overheating"]["reason"] == "command:reduce_power"
    assert ended["network"]["reason"] == "duration"
    handled = {e["command_id"]: e for e in lines if e["event"] == "command_received"}
    assert {k: v["effect"] for k, v in handled.items()} == {
        "c-fix": "fixed", "c-stale": "expired", "c-bad": "error"
    }  # fmt: skip
    assert handled["c-fix"]["fixed"] == ["overheating"]
    assert handled["c-fix"]["received_at"] >= ended["network"]["end"]  # handled on return


async def drain(client: aiomqtt.Client) -> None:
    """Read messages until the connection ends (with MqttError)."""
    async for _ in client.messages:
        pass


def test_drop_connection_is_unclean(broker: Any) -> None:
    """Test that drop_connection makes the broker publish the client's will."""

    async def main(watcher: Watcher) -> None:
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier="lwt-test",
            will=aiomqtt.Will("lwt-test/status", b"will-sent", qos=1, retain=False),
        )
        async with client:
            await client.publish("lwt-test/status", b"hello", qos=1)
            drop_connection(client)
            with pytest.raises(aiomqtt.MqttError):
                await asyncio.wait_for(drain(client), WAIT_S)
        await watcher.wait_for(lambda seen: len(seen) >= 2)

    with Watcher(broker, "lwt-test/status") as watcher:
        asyncio.run(main(watcher))
    assert watcher.payloads("lwt-test/status") == [b"hello", b"will-sent"]


DOOR_NOTICE = orjson.dumps(
    {"kind": "guidance", "steps": ["Close the door firmly.", "Check the door seal."]}
)


def test_customer_fixes_after_a_notice_or_by_themselves(broker: Any, tmp_path: Path) -> None:
    """Test that one simulated customer acts after the daemon's notice and one on their own."""
    truth = tmp_path / "truth.jsonl"
    guided, alone = "sim-freezer-0001", "sim-freezer-0002"
    options = FleetOptions(
        host=broker.host,
        port=broker.port,
        devices=2,
        models=("freezer",),
        interval=0.2,
        faults=(
            FaultSpec(guided, FaultKind.DRIFT, "cabinet_temp", params={"rate": 600.0}, id="ajar",
                      customer_fix_after=0.5, customer_fix_from="notice"),
            FaultSpec(alone, FaultKind.DRIFT, "cabinet_temp", params={"rate": 600.0}, id="ajar2",
                      customer_fix_after=1.0),
        ),
        ground_truth=truth,
    )  # fmt: skip

    def events(name: str) -> list[dict[str, Any]]:
        return [e for e in read_truth(truth) if e["event"] == name] if truth.exists() else []

    async def main(watcher: Watcher) -> set[asyncio.Task[Any]]:
        fleet_task = asyncio.create_task(Fleet(options).run())
        await watcher.wait_for(lambda _: len(events("fault_ended")) == 1)  # on their own
        assert events("customer_guided") == []  # no notice yet: the guided one waits
        # Guidance whose steps fit the fault; repeat until the listener is up.
        deadline = time.monotonic() + WAIT_S
        while not events("customer_guided"):
            assert time.monotonic() < deadline, "the customers never saw the notice"
            watcher.publish(f"frontline/notices/{guided}", DOOR_NOTICE)
            await asyncio.sleep(0.1)
        await watcher.wait_for(lambda _: len(events("fault_ended")) == 2)
        count = len(watcher.payloads(f"devices/{guided}/telemetry"))
        topic = f"devices/{guided}/telemetry"
        await watcher.wait_for(lambda _: len(watcher.payloads(topic)) >= count + 3)
        fleet_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fleet_task
        return other_tasks()

    with Watcher(broker, "devices/+/telemetry") as watcher:
        assert asyncio.run(main(watcher)) == set()
    last = [orjson.loads(p)["values"]["cabinet_temp"] for p in
            watcher.payloads(f"devices/{guided}/telemetry")[-3:]]  # fmt: skip
    assert all(t < -15 for t in last)  # the door is closed: back to normal
    ended = {e["fault_id"]: e["reason"] for e in events("fault_ended")}
    assert ended == {"ajar": "customer", "ajar2": "customer"}
    (line,) = [e for e in events("customer_guided") if e["acts_at"]]
    assert line["fault_id"] == "ajar"
    gap = datetime.fromisoformat(line["acts_at"]) - datetime.fromisoformat(line["notice_at"])
    assert gap.total_seconds() == pytest.approx(0.5)
