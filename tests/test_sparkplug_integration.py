"""Integration: a simulated Sparkplug B edge node on a real Mosquitto, decoded as it arrives.

A plain paho subscriber on `spBv1.0/#` feeds every message, in receive order, to a
SparkplugDecoder and publishes the decoder's rebirth requests, as the ingest does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon.adapters.mosquitto import MosquittoProcess
from daemon.core import sparkplug_b_pb2 as pb
from daemon.core.messages import Message, Rejected, Status, Telemetry
from daemon.core.sparkplug import SparkplugDecoder
from simulators.sparkplug_node import SparkplugNode
from tests.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.integration

NODE_ID = "plant-1.edge-1"
PUMP_1, PUMP_2 = "plant-1.edge-1.pump-1", "plant-1.edge-1.pump-2"


class Listener:
    """A host application in miniature: subscribe, decode in order, publish rebirth requests."""

    def __init__(self, port: int) -> None:
        self.decoder = SparkplugDecoder()
        self.messages: list[Message] = []
        self.raw: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="sparkplug-listener")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(self.decoder.filters()[0], qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        received_ms = time.time_ns() // 1_000_000
        body = bytes(msg.payload)
        with self.lock:
            self.raw.append((msg.topic, body))
            self.messages.extend(self.decoder.decode(msg.topic, body, received_ms))
            requests = self.decoder.take_requests()
        for topic, request in requests:
            client.publish(topic, request, qos=0)

    def statuses(self, device: str) -> list[str | None]:
        with self.lock:
            return [m.status for m in self.messages if isinstance(m, Status) and m.device == device]

    def values(self, device: str, name: str) -> list[float]:
        with self.lock:
            return [
                sample.metrics[name]
                for m in self.messages
                if isinstance(m, Telemetry) and m.device == device
                for sample in m.samples
                if name in sample.metrics
            ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener(broker: MosquittoProcess) -> Iterator[Listener]:
    subscriber = Listener(broker.port)
    yield subscriber
    subscriber.close()


@pytest.fixture
def node(broker: MosquittoProcess) -> Iterator[SparkplugNode]:
    edge = SparkplugNode(broker.port, "plant-1", "edge-1", ["pump-1", "pump-2"])
    yield edge
    edge.stop()


def test_births_data_by_alias_death_and_rebirth(listener: Listener, node: SparkplugNode) -> None:
    """Test the edge node's whole life: devices, metric names and online/offline transitions."""
    node.connect()
    wait_until(lambda: listener.statuses(PUMP_2) == ["online"], 10, "the births")
    assert listener.statuses(NODE_ID) == ["online"]
    assert listener.statuses(PUMP_1) == ["online"]
    assert listener.values(PUMP_1, "inputs_temperature") == [21.5]  # from the DBIRTH
    assert listener.values(NODE_ID, "properties_firmware") == []  # a string: an attribute
    [node_birth] = [m for m in listener.messages if isinstance(m, Telemetry)][:1]
    assert node_birth.device == NODE_ID
    assert node_birth.samples[0].attributes == {"properties_firmware": "2.4.1"}

    node.publish_device_data("pump-1", {"Inputs/Temperature": 23.5, "Outputs/Running": False})
    node.publish_device_data("pump-2", {"Inputs/Pressure": 1.75})
    wait_until(lambda: listener.values(PUMP_2, "inputs_pressure") == [1.25, 1.75], 10, "DDATA")
    assert listener.values(PUMP_1, "inputs_temperature") == [21.5, 23.5]
    assert listener.values(PUMP_1, "outputs_running") == [1.0, 0.0]
    ddata = [pb.Payload.FromString(body) for topic, body in listener.raw if "/DDATA/" in topic]
    assert ddata
    assert all(m.alias and not m.name for p in ddata for m in p.metrics)  # aliases only

    node.die()  # no DISCONNECT: the broker publishes the NDEATH will
    wait_until(lambda: listener.statuses(PUMP_2) == ["online", "offline"], 10, "the will")
    assert listener.statuses(NODE_ID) == ["online", "offline"]
    assert listener.statuses(PUMP_1) == ["online", "offline"]

    node.connect()  # the next session: bdSeq 1
    wait_until(lambda: listener.statuses(PUMP_2) == ["online", "offline", "online"], 10, "rebirth")
    node.publish_device_data("pump-1", {"Inputs/Temperature": 24.0})
    wait_until(lambda: 24.0 in listener.values(PUMP_1, "inputs_temperature"), 10, "new data")
    assert listener.statuses(NODE_ID) == ["online", "offline", "online"]
    assert listener.statuses(PUMP_1) == ["online", "offline", "online"]
    assert not [m for m in listener.messages if isinstance(m, Rejected)]
    assert listener.decoder.counters == dict.fromkeys(listener.decoder.counters, 0)


def test_a_host_that_missed_the_births_asks_for_a_rebirth(
    listener: Listener, node: SparkplugNode
) -> None:
    """Test the rebirth loop: data by alias before any birth -> NCMD -> births -> decoded data."""
    node.connect()
    wait_until(lambda: listener.statuses(PUMP_2) == ["online"], 10, "the births")
    with listener.lock:  # the host restarts: what it knew of the node is gone
        listener.decoder = SparkplugDecoder()
        listener.messages.clear()
    node.publish_device_data("pump-1", {"Inputs/Temperature": 30.0})
    wait_until(lambda: node.rebirths == 1, 10, "the node to get the rebirth request")
    wait_until(lambda: listener.statuses(PUMP_2) == ["online"], 10, "the births again")
    node.publish_device_data("pump-1", {"Inputs/Temperature": 31.0})
    wait_until(lambda: 31.0 in listener.values(PUMP_1, "inputs_temperature"), 10, "the data")
    assert listener.statuses(NODE_ID) == ["online"]
    [rejected] = [m for m in listener.messages if isinstance(m, Rejected)]
    assert rejected.reason == "nothing_usable"  # the DDATA whose aliases were unknown
    assert "alias" in rejected.detail
    assert listener.values(PUMP_1, "inputs_temperature") == [21.5, 31.0]  # DBIRTH, DDATA
    counters = listener.decoder.counters
    assert (counters["data_before_birth"], counters["unknown_alias"]) == (1, 1)
    assert counters["rebirth_requested"] == 1


def test_a_seq_gap_is_counted_and_answered_with_a_rebirth(
    listener: Listener, node: SparkplugNode
) -> None:
    """Test that a message lost between node and host (a seq gap) makes the node rebirth."""
    node.connect()
    wait_until(lambda: listener.statuses(PUMP_2) == ["online"], 10, "the births")
    node.skip_seq(3)
    node.publish_device_data("pump-2", {"Inputs/Pressure": 2.0})
    wait_until(lambda: node.rebirths == 1, 10, "the rebirth request")
    wait_until(lambda: listener.statuses(PUMP_2) == ["online", "online"], 10, "the rebirth")
    assert listener.values(PUMP_2, "inputs_pressure") == [1.25, 2.0, 1.25]
    assert listener.decoder.counters["seq_gap"] == 1
    assert listener.decoder.counters["rebirth_requested"] == 1


def _online(daemon: DaemonProcess) -> dict[str, bool]:
    return {d["id"]: d["online"] for d in daemon.cli_json("devices", "list")}


def test_the_daemon_ingests_an_edge_node_and_asks_for_births_after_a_restart(
    broker: MosquittoProcess, node: SparkplugNode, tmp_path: Path
) -> None:
    """Test acceptance 3 through `frontline run`: devices, metrics, offline/online, rebirth."""
    daemon = DaemonProcess(broker, tmp_path / "data", FRONTLINE_MAPPINGS__SPARKPLUG="true").start()
    try:
        node.connect()
        wait_until(
            lambda: _online(daemon) == {NODE_ID: True, PUMP_1: True, PUMP_2: True},
            what="the node and its devices online",
        )
        node.publish_device_data("pump-1", {"Inputs/Temperature": 23.5})
        wait_until(
            lambda: (
                [v for _, v in daemon.cli_json("query", PUMP_1, "inputs_temperature")]
                == [21.5, 23.5]
            ),
            what="the birth's and the data's temperature",
        )
        twin = daemon.cli_json("devices", "show", PUMP_1)
        assert twin["mapping"] == "sparkplug"
        assert twin["sent_as"]["inputs_temperature"] == "Inputs/Temperature"

        node.die()  # the broker publishes the NDEATH will
        wait_until(
            lambda: _online(daemon) == {NODE_ID: False, PUMP_1: False, PUMP_2: False},
            what="the death to take every device offline",
        )
        node.connect()
        wait_until(lambda: all(_online(daemon).values()), what="the rebirth")

        daemon.stop()  # a restart forgets the aliases: the next data asks for births
        daemon.start()
        node.publish_device_data("pump-2", {"Inputs/Pressure": 3.5})
        wait_until(lambda: node.rebirths == 1, what="the rebirth request")
        node.publish_device_data("pump-2", {"Inputs/Pressure": 4.5})
        wait_until(
            lambda: 4.5 in [v for _, v in daemon.cli_json("query", PUMP_2, "inputs_pressure")],
            what="data decoded after the rebirth",
        )
        events = "frontline_sparkplug_events_total"
        assert daemon.metric(events, {"event": "rebirth_requested"}) == 1
        assert daemon.metric(events, {"event": "data_before_birth"}) == 1
    finally:
        daemon.kill()


SPARKPLUG_RULES = """
groups:
  - name: pumps
    interval: 1s
    match: {mapping: sparkplug, id: "*.pump-*"}
    rules:
      - alert: PumpHot
        expr: last(inputs_temperature) > 80
        remediate:
          - command: cool
            params: {"Outputs/Cooling": true, "Outputs/Speed": 40}
            timeout: 10s
            verify: 15s
"""


def test_a_remediation_writes_to_a_sparkplug_device_with_dcmd(
    broker: MosquittoProcess, node: SparkplugNode, tmp_path: Path
) -> None:
    """Test commands back to Sparkplug: the rule's parameters arrive as DCMD metric writes."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "pumps.yaml").write_text(SPARKPLUG_RULES)
    daemon = DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_MAPPINGS__SPARKPLUG="true",
        FRONTLINE_RULES__PATHS=f'["{rules}"]',
        FRONTLINE_ACTIONS__QUIET_PERIOD="3s",
    ).start()
    temperature = {"value": 95.0}

    def cool(device: str, writes: dict[str, object]) -> None:
        if writes.get("Outputs/Cooling") is True:
            temperature["value"] = 60.0

    node.on_command = cool
    try:
        node.connect()

        def fixed() -> bool:
            node.publish_device_data("pump-1", {"Inputs/Temperature": temperature["value"]})
            return any(n["kind"] == "fixed" for n in daemon.cli_json("notices", PUMP_1))

        wait_until(fixed, timeout=60, what="the pump cooled by the written command")
        assert node.commands == [("pump-1", {"Outputs/Cooling": True, "Outputs/Speed": 40})]
    finally:
        daemon.kill()
