"""A simulated Sparkplug B edge node: births, data by alias, deaths and rebirths over real MQTT.

Used by the tests and by hand against a broker::

    python -m simulators.sparkplug_node --port 1883 --devices 3 --interval 2

The node connects with its NDEATH (carrying its bdSeq) as the MQTT will, subscribes to its
commands, publishes NBIRTH and a DBIRTH per device (every metric with an alias), then DDATA by
alias only. `die()` cuts the TCP connection without a DISCONNECT, so the broker publishes the
NDEATH; `connect()` again starts the next session with bdSeq + 1. An NCMD `Node Control/Rebirth`
= true makes it publish its births again (same bdSeq, seq from 0), as the specification says.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon.core import sparkplug_b_pb2 as pb

Value = float | int | bool | str
#: the metrics every simulated device declares in its DBIRTH: name -> (datatype, first value)
DEVICE_METRICS: dict[str, tuple[int, Value]] = {
    "Inputs/Temperature": (pb.Float, 21.5),
    "Inputs/Pressure": (pb.Double, 1.25),
    "Outputs/Running": (pb.Boolean, True),
    "Counters/Starts": (pb.Int32, 7),
    "Status/Mode": (pb.String, "auto"),
}
#: the edge node's own metrics (bdSeq and Node Control/Rebirth are added by the node)
NODE_METRICS: dict[str, tuple[int, Value]] = {
    "Properties/Firmware": (pb.String, "2.4.1"),
    "Uptime": (pb.Int64, 0),
}
TIMEOUT_S = 10.0


def metric(
    name: str | None,
    datatype: int,
    value: Value | None,
    alias: int | None = None,
    ts_ms: int | None = None,
) -> pb.Payload.Metric:
    """Return one Sparkplug metric, the value in the field its datatype uses (None: is_null)."""
    out = pb.Payload.Metric(datatype=datatype)
    if name is not None:
        out.name = name
    if alias is not None:
        out.alias = alias
    if ts_ms is not None:
        out.timestamp = ts_ms
    if value is None:
        out.is_null = True
    elif datatype in (pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32):
        out.int_value = int(value) & 0xFFFF_FFFF  # two's complement for the signed types
    elif datatype in (pb.Int64, pb.UInt64, pb.DateTime):
        out.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    elif datatype == pb.Float:
        out.float_value = float(value)
    elif datatype == pb.Double:
        out.double_value = float(value)
    elif datatype == pb.Boolean:
        out.boolean_value = bool(value)
    else:
        out.string_value = str(value)
    return out


def payload(
    metrics: Sequence[pb.Payload.Metric], ts_ms: int | None = None, seq: int | None = None
) -> bytes:
    """Return an encoded Sparkplug B payload."""
    out = pb.Payload(timestamp=ts_ms if ts_ms is not None else now_ms(), metrics=metrics)
    if seq is not None:
        out.seq = seq
    return out.SerializeToString()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugNode:
    """One edge node with devices, on its own paho connection (MQTT 3.1.1, clean session)."""

    def __init__(
        self,
        port: int,
        group: str = "plant-1",
        node: str = "edge-1",
        devices: Sequence[str] = ("pump-1",),
        host: str = "127.0.0.1",
        namespace: str = "spBv1.0",
    ) -> None:
        self.port, self.host = port, host
        self.group, self.node, self.devices = group, node, list(devices)
        self.namespace = namespace
        self.bdseq = 0
        self.seq = 0
        #: NCMD rebirth requests this node answered
        self.rebirths = 0
        #: MQTT sessions started (connect() calls)
        self.sessions = 0
        #: DCMD writes received, in order: (device, {metric: value})
        self.commands: list[tuple[str, dict[str, Value | None]]] = []
        #: called on paho's thread with each DCMD's device and writes
        self.on_command: Callable[[str, dict[str, Value | None]], None] | None = None
        self.client: paho.Client | None = None
        self._lock = threading.Lock()  # one seq order for the caller's and paho's publishes
        # Aliases unique across the node and its devices: node metrics first, then each device's.
        names = ["bdSeq", "Node Control/Rebirth", *NODE_METRICS]
        self.node_aliases = {name: index for index, name in enumerate(names, 1)}
        self.device_aliases: dict[str, dict[str, int]] = {}
        for device in self.devices:
            first = len(self.node_aliases) + 1 + len(self.device_aliases) * len(DEVICE_METRICS)
            self.device_aliases[device] = {n: first + i for i, n in enumerate(DEVICE_METRICS)}

    def topic(self, kind: str, device: str | None = None) -> str:
        tail = f"/{device}" if device is not None else ""
        return f"{self.namespace}/{self.group}/{kind}/{self.node}{tail}"

    # -- session --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Start a session: will = NDEATH with this session's bdSeq, commands subscribed, births."""
        if self.sessions:  # a session after the first: the next bdSeq
            self.bdseq = (self.bdseq + 1) % 256
        self.sessions += 1
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.group}-{self.node}",
            clean_session=True,
            reconnect_on_failure=False,
        )
        death = payload([metric("bdSeq", pb.UInt64, self.bdseq)])
        client.will_set(self.topic("NDEATH"), death, qos=1, retain=False)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_message = self._on_message
        client.connect(self.host, self.port)
        client.loop_start()
        client.subscribe(
            [(self.topic("NCMD"), 1), (f"{self.namespace}/{self.group}/DCMD/{self.node}/+", 1)]
        )
        if not subscribed.wait(TIMEOUT_S):
            raise TimeoutError(f"no SUBACK from the broker on port {self.port}")
        self.client = client
        self.publish_births()

    def die(self) -> None:
        """Cut the connection without an MQTT DISCONNECT: the broker publishes the NDEATH will."""
        client = self.client
        if client is None:
            return
        client.loop_stop()
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already gone is just as good
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def stop(self) -> None:
        """End the session cleanly: publish the NDEATH, then disconnect."""
        client = self.client
        if client is None or not client.is_connected():
            return  # never connected, or died
        death = payload([metric("bdSeq", pb.UInt64, self.bdseq)])
        client.publish(self.topic("NDEATH"), death, qos=1).wait_for_publish(TIMEOUT_S)
        client.disconnect()
        client.loop_stop()

    # -- messages -------------------------------------------------------------------------------

    def publish_births(self) -> None:
        """NBIRTH (seq 0) and a DBIRTH per device, every metric with its name, alias and type."""
        with self._lock:
            self.seq = 0
            metrics = [
                metric("bdSeq", pb.UInt64, self.bdseq, self.node_aliases["bdSeq"]),
                metric(
                    "Node Control/Rebirth",
                    pb.Boolean,
                    False,
                    self.node_aliases["Node Control/Rebirth"],
                ),
            ]
            metrics += [
                metric(name, datatype, value, self.node_aliases[name])
                for name, (datatype, value) in NODE_METRICS.items()
            ]
            self._send(self.topic("NBIRTH"), metrics, seq=0)
            for device in self.devices:
                self._device_birth(device)

    def publish_device_birth(self, device: str) -> None:
        """A DBIRTH for one device (after its DDEATH, say)."""
        with self._lock:
            self._device_birth(device)

    def publish_device_data(
        self, device: str, values: Mapping[str, Value | None], ts_ms: int | None = None
    ) -> None:
        """DDATA by alias only; a name the DBIRTH did not declare is sent by name."""
        aliases = self.device_aliases[device]
        metrics = [
            metric(
                None if name in aliases else name,
                DEVICE_METRICS.get(name, (_datatype(value), value))[0],
                value,
                aliases.get(name),
                ts_ms,
            )
            for name, value in values.items()
        ]
        with self._lock:
            self._send(self.topic("DDATA", device), metrics, seq=self._next_seq(), ts_ms=ts_ms)

    def publish_node_data(self, values: Mapping[str, Value], ts_ms: int | None = None) -> None:
        """NDATA by alias for the node's own metrics."""
        metrics = [
            metric(None, NODE_METRICS[name][0], value, self.node_aliases[name], ts_ms)
            for name, value in values.items()
        ]
        with self._lock:
            self._send(self.topic("NDATA"), metrics, seq=self._next_seq(), ts_ms=ts_ms)

    def publish_device_death(self, device: str) -> None:
        with self._lock:
            self._send(self.topic("DDEATH", device), [], seq=self._next_seq())

    def skip_seq(self, count: int = 1) -> None:
        """Lose `count` messages on the way, as far as a host can tell (a seq gap)."""
        with self._lock:
            self.seq = (self.seq + count) % 256

    def _device_birth(self, device: str) -> None:
        aliases = self.device_aliases[device]
        metrics = [
            metric(name, datatype, value, aliases[name])
            for name, (datatype, value) in DEVICE_METRICS.items()
        ]
        self._send(self.topic("DBIRTH", device), metrics, seq=self._next_seq())

    def _device_command(self, msg: paho.MQTTMessage) -> None:
        """A DCMD: its writes are recorded and handed to `on_command` (the device's behaviour)."""
        device = msg.topic.rsplit("/", 1)[-1]
        with contextlib.suppress(Exception):  # a malformed command is ignored, as by a node
            command = pb.Payload.FromString(bytes(msg.payload))
            writes = {m.name: _written(m) for m in command.metrics}
            self.commands.append((device, writes))
            if self.on_command is not None:
                self.on_command(device, writes)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def _send(
        self, topic: str, metrics: list[pb.Payload.Metric], seq: int, ts_ms: int | None = None
    ) -> None:
        client = self.client
        if client is None:
            raise RuntimeError("the node is not connected: call connect() first")
        body = payload(metrics, ts_ms, seq)
        client.publish(topic, body, qos=0).wait_for_publish(TIMEOUT_S)

    def _on_message(self, client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        if not msg.topic.startswith(self.topic("NCMD")):
            self._device_command(msg)
            return
        with contextlib.suppress(Exception):  # a malformed command is ignored, as by a node
            command = pb.Payload.FromString(bytes(msg.payload))
            if any(m.name == "Node Control/Rebirth" and m.boolean_value for m in command.metrics):
                self.rebirths += 1
                if self.client is client:  # not on paho's thread: the births wait for it
                    threading.Thread(target=self.publish_births, daemon=True).start()


def _written(metric: pb.Payload.Metric) -> Value | None:
    kind = metric.WhichOneof("value")
    return None if kind is None else getattr(metric, kind)


def _datatype(value: Value | None) -> int:
    if isinstance(value, bool):
        return int(pb.Boolean)
    if isinstance(value, int):
        return int(pb.Int64)
    if isinstance(value, float):
        return int(pb.Double)
    return int(pb.String)


def main(argv: Sequence[str] | None = None) -> None:
    """Run one edge node until Ctrl-C: births, then DDATA every interval, a clean NDEATH."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--group", default="plant-1")
    parser.add_argument("--node", default="edge-1")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between DDATA")
    args = parser.parse_args(argv)
    devices = [f"pump-{n}" for n in range(1, args.devices + 1)]
    node = SparkplugNode(args.port, args.group, args.node, devices, args.host)
    node.connect()
    started = time.monotonic()
    try:
        while True:
            time.sleep(args.interval)
            t = time.monotonic() - started
            for index, device in enumerate(devices):
                node.publish_device_data(
                    device,
                    {
                        "Inputs/Temperature": round(21.5 + 3 * math.sin(t / 60 + index), 1),
                        "Inputs/Pressure": round(1.25 + 0.05 * math.cos(t / 30 + index), 3),
                    },
                )
            node.publish_node_data({"Uptime": int(t)})
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()


if __name__ == "__main__":
    main()
