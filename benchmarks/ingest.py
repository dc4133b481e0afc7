"""Ingest throughput: the daemon's store rate against Mosquitto's own C subscriber, same run.

Both consumers drain the same backlog from the same broker (started from the project's
`mosquitto.conf`): N QoS 1 telemetry messages from M devices are queued on two persistent sessions
while the consumers are away, then
  (a) `mosquitto_sub` (C, QoS 1) drains its session to /dev/null: the broker's delivery ceiling;
  (b) `frontline run` drains its session into the SQLite store: stored messages per second;
  (c) a paho-mqtt client that only acknowledges: the Python MQTT library's own ceiling.
Prints the rates and the ratios (b)/(a) and (b)/(c). Usage:

    python benchmarks/ingest.py --messages 200000 --devices 10000 [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.adapters.mosquitto import MosquittoProcess, free_port  # noqa: E402
from daemon.demo import daemon_env, wait_ready  # noqa: E402
from daemon.metrics import parse_metrics  # noqa: E402
from simulators.burst import publish_burst  # noqa: E402

SUB_ID = "bench-mosquitto-sub"
METRICS_PER_MESSAGE = 3


def publish(port: int, messages: int, devices: int) -> float:
    """Publish `messages` QoS 1 messages round-robin over `devices`; return the seconds it took."""
    ts = int(time.time() * 1000) - messages  # distinct timestamps: every point is kept

    def burst() -> Iterator[tuple[str, bytes]]:
        for i in range(messages):
            values = {"temp": 20 + (i % 50) / 10, "pressure": 1.5, "on": True}
            topic = f"devices/bench-{i % devices:05d}/telemetry"
            yield topic, orjson.dumps({"ts": ts + i, "values": values})

    return publish_burst(port, burst())[1]


def sub_command(port: int, *extra: str) -> list[str]:
    """mosquitto_sub on the telemetry, QoS 1, with the benchmark's persistent session."""
    return ["mosquitto_sub", "-p", str(port), "-i", SUB_ID, "-c", "-q", "1",
            "-t", "devices/+/telemetry", *extra]  # fmt: skip


def register_sub(port: int) -> None:
    subprocess.run(sub_command(port, "-E"), check=True)


PAHO_ID = "bench-paho-noop"


def _paho_client() -> paho.Client:
    return paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=PAHO_ID,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
    )


def _paho_connect(client: paho.Client, port: int) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 65535
    client.connect("127.0.0.1", port, clean_start=False, properties=props)


def register_paho(port: int) -> None:
    client = _paho_client()
    _paho_connect(client, port)
    client.subscribe("devices/+/telemetry", 1)
    for _ in range(5):
        client.loop(0.2)
    client.disconnect()


def drain_paho(port: int, messages: int) -> float:
    """(c) paho-mqtt alone: a callback that only acknowledges, the library's own ceiling."""
    client = _paho_client()
    done = threading.Event()
    count = 0
    first = 0.0

    def on_message(cl: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal count, first
        if count == 0:
            first = time.perf_counter()
        count += 1
        cl.ack(msg.mid, msg.qos)
        if count == messages:
            done.set()

    client.on_message = on_message
    _paho_connect(client, port)
    client.loop_start()
    done.wait(600)
    elapsed = time.perf_counter() - first
    client.loop_stop()
    client.disconnect()
    return messages / elapsed


def drain_sub(port: int, messages: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        sub_command(port, "-C", str(messages)),
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )
    return messages / (time.perf_counter() - started)


class Daemon:
    def __init__(self, port: int, data_dir: Path) -> None:
        self.http_port = free_port()
        self.env = daemon_env("127.0.0.1", port, data_dir, self.http_port)
        self.env["FRONTLINE_LOG_LEVEL"] = "WARNING"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=self.env)

    def stored(self) -> float | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/metrics", timeout=2
            ) as r:
                return parse_metrics(r.read().decode()).stored
        except OSError:
            return None

    def wait_ready(self) -> None:
        assert self.process is not None
        wait_ready(self.http_port, self.process, timeout=30)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def measure_daemon(daemon: Daemon, messages: int) -> float:
    """Start the daemon on its backlog; return stored messages/s from first to last point."""
    target = messages * METRICS_PER_MESSAGE
    daemon.start()
    first_t = first_v = None
    while True:
        value = daemon.stored()
        now = time.perf_counter()
        if value and first_t is None:
            first_t, first_v = now, value
        if value is not None and value >= target:
            break
        time.sleep(0.05)
    daemon.stop()
    assert first_t is not None
    assert first_v is not None
    return (target - first_v) / METRICS_PER_MESSAGE / max(now - first_t, 1e-9)


def one_run(messages: int, devices: int) -> tuple[float, float, float, float]:
    workdir = Path(tempfile.mkdtemp(prefix="frontline-bench-"))
    try:
        with MosquittoProcess(workdir / "mosquitto") as broker:
            daemon = Daemon(broker.port, workdir / "data")
            daemon.start()
            daemon.wait_ready()
            daemon.stop()  # its persistent session now queues what follows
            register_sub(broker.port)
            register_paho(broker.port)
            publish_s = publish(broker.port, messages, devices)
            sub_rate = drain_sub(broker.port, messages)
            paho_rate = drain_paho(broker.port, messages)
            daemon_rate = measure_daemon(daemon, messages)
            return messages / publish_s, sub_rate, paho_rate, daemon_rate
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("mosquitto_sub"):
        sys.exit("mosquitto_sub not found: apt-get install mosquitto-clients")
    results = []
    for run in range(1, args.runs + 1):
        pub, sub, bare, daemon = one_run(args.messages, args.devices)
        results.append((sub, bare, daemon))
        print(
            f"run {run}: publish {pub:,.0f} msg/s | (a) mosquitto_sub {sub:,.0f} msg/s"
            f" | (c) paho no-op {bare:,.0f} msg/s | (b) frontline stored {daemon:,.0f} msg/s"
            f" ({daemon * METRICS_PER_MESSAGE:,.0f} points/s)"
            f" | (b)/(a) {daemon / sub:.2f} | (b)/(c) {daemon / bare:.2f}",
            flush=True,
        )
    med = statistics.median
    print(
        f"median of {args.runs}: {args.messages:,} QoS 1 messages from {args.devices:,} devices: "
        f"(a) {med(r[0] for r in results):,.0f} msg/s, (c) {med(r[1] for r in results):,.0f} msg/s,"
        f" (b) {med(r[2] for r in results):,.0f} msg/s; "
        f"ratio (b)/(a) {med(r[2] / r[0] for r in results):.2f}, "
        f"(b)/(c) {med(r[2] / r[1] for r in results):.2f}"
    )


if __name__ == "__main__":
    main()
