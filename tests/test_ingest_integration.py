"""Integration: `frontline run` against a real Mosquitto started from the shipped mosquitto.conf."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon.adapters.mosquitto import MosquittoProcess
from simulators.burst import publish_burst
from tests.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000) - 60_000


VALID = [
    ("devices/dev-a/telemetry", b'{"temp": 21.5, "heating": true, "mode": "eco"}'),
    (
        "devices/dev-b/telemetry",
        orjson.dumps({"ts": NOW, "values": {"pressure": 1.25, "flow": 3}}),
    ),
    (
        "devices/dev-c/telemetry",
        orjson.dumps(
            [
                {"ts": NOW + 1000, "values": {"level": 10}},
                {"ts": NOW + 2000, "values": {"level": 11.5}},
                {"ts": "2026-01-01T00:00:00Z", "values": {"level": 9}},
            ]
        ),
    ),
]

MALFORMED = [
    ("devices/dev-a/telemetry", b"this is not json", "not_json"),
    ("devices/dev-a/telemetry", b'{"temp": null}', "nothing_usable"),
    ("devices/dev-b/telemetry", b'{"ts": 1, "values": {"pressure": [1, 2]}}', "bad_ts"),
    ("devices/dev-b/telemetry", orjson.dumps({"values": {"pressure": [1, 2]}}), "nothing_usable"),
    ("devices/dev-b/telemetry", b'{"values": {"pressure": NaN}}', "non_finite"),
    ("devices/dev-c/telemetry", b'{"ts": "last tuesday", "values": {"level": 1}}', "bad_ts"),
    ("devices/dev-c/telemetry", b'[{"level": 1}, [2]]', "bad_shape"),
    ("devices/dev-c/telemetry", b'{"level": 1e999}', "non_finite"),
    ("devices/dev-a/telemetry", b'{"temp": "' + b"x" * 1_000_000 + b'"}', "too_large"),
    ("devices/bad$id/telemetry", b'{"temp": 1}', "bad_device_id"),
    ("devices/" + "d" * 129 + "/telemetry", b'{"temp": 1}', "bad_device_id"),
]


def test_valid_points_are_stored_and_malformed_ones_dead_lettered(
    broker: MosquittoProcess, frontline: DaemonProcess
) -> None:
    """Test that exactly the valid points are stored and every malformed message is kept aside."""
    frontline.start()
    messages = [*VALID, *[(topic, payload) for topic, payload, _ in MALFORMED]]
    publish_burst(broker.port, messages)
    wait_until(
        lambda: (
            frontline.metric("frontline_points_written_total") >= 7
            and sum(
                frontline.metric("frontline_messages_rejected_total", {"reason": reason})
                for reason in {r for *_, r in MALFORMED}
            )
            >= len(MALFORMED)
        ),
        what="all messages processed",
    )
    wait_until(lambda: len(frontline.cli_json("devices", "list")) == 3, what="twins")

    devices = {d["id"]: d for d in frontline.cli_json("devices", "list")}
    assert set(devices) == {"dev-a", "dev-b", "dev-c"}
    assert devices["dev-a"]["metrics"] == {"heating": 1.0, "temp": 21.5}
    assert devices["dev-a"]["attributes"] == {"mode": "eco"}
    assert devices["dev-b"]["metrics"] == {"flow": 3.0, "pressure": 1.25}
    assert devices["dev-c"]["metrics"] == {"level": 11.5}
    assert all(d["online"] for d in devices.values())

    assert frontline.cli_json("query", "dev-b", "pressure", "--since", "1h") == [[NOW, 1.25]]
    assert frontline.cli_json("query", "dev-c", "level", "--since", "400d") == [
        [1767225600000, 9.0],
        [NOW + 1000, 10.0],
        [NOW + 2000, 11.5],
    ]
    temp = frontline.cli_json("query", "dev-a", "temp", "--since", "1h")
    assert [value for _, value in temp] == [21.5]

    letters = frontline.cli_json("dead-letters", "--limit", "100")
    assert sorted(x["reason"] for x in letters) == sorted(r for *_, r in MALFORMED)
    big = next(x for x in letters if x["reason"] == "too_large")
    assert big["size"] > 1_000_000
    for reason in {r for *_, r in MALFORMED}:
        expected = sum(1 for *_, r in MALFORMED if r == reason)
        got = frontline.metric("frontline_messages_rejected_total", {"reason": reason})
        assert got == expected, reason
    assert frontline.running
    assert frontline.get("/healthz")[0] == 200


def _retained_status(port: int) -> bytes | None:
    """Return the retained payload of frontline/status."""
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="status-reader")

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        got.append(msg.payload)
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("frontline/status", 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(5)
    client.loop_stop()
    client.disconnect()
    return got[0] if got else None


def _series(device: str, count: int, start: int = NOW) -> list[tuple[str, bytes]]:
    topic = f"devices/{device}/telemetry"
    return [(topic, orjson.dumps({"ts": start + i, "values": {"n": i}})) for i in range(count)]


def test_sigterm_then_messages_published_while_down_are_stored_on_restart(
    broker: MosquittoProcess, frontline: DaemonProcess
) -> None:
    """Test that SIGTERM exits 0 publishing `offline`, and a restart stores what came meanwhile."""
    frontline.start()
    assert _retained_status(broker.port) == b"online"
    assert frontline.stop(signal.SIGTERM) == 0
    assert _retained_status(broker.port) == b"offline"
    log = frontline.log.read_text()
    assert "frontline stopped after" in log

    publish_burst(broker.port, _series("dev-down", 1000))
    frontline.start()
    frontline.wait_for("frontline_points_written_total", 1000)
    points = frontline.cli_json("query", "dev-down", "n", "--since", "1h")
    assert [value for _, value in points] == [float(i) for i in range(1000)]
    assert frontline.stop() == 0


def test_kill_9_loses_nothing_the_broker_delivered(
    broker: MosquittoProcess, frontline: DaemonProcess
) -> None:
    """Test that `kill -9` mid-stream loses no point: unacknowledged messages are redelivered."""
    frontline.start()
    total = 20_000
    publisher = threading.Thread(
        target=publish_burst, args=(broker.port, _series("dev-crash", total)), daemon=True
    )
    publisher.start()
    frontline.wait_for("frontline_points_written_total", 2000)
    frontline.kill()
    stored_before = frontline.cli_json("query", "dev-crash", "n", "--since", "1h")
    assert len(stored_before) < total, "the crash must happen mid-stream for this test to mean much"
    publisher.join(120)
    frontline.start()
    wait_until(
        lambda: len(frontline.cli_json("query", "dev-crash", "n", "--since", "1h")) >= total,
        timeout=60,
        what="every point after the restart",
    )
    points = frontline.cli_json("query", "dev-crash", "n", "--since", "1h")
    assert [value for _, value in points] == [float(i) for i in range(total)]


def _burst(devices: int, per_device: int) -> list[tuple[str, bytes]]:
    return [
        (f"devices/burst-{d:04d}/telemetry", orjson.dumps({"ts": NOW + i, "values": {"v": i}}))
        for i in range(per_device)
        for d in range(devices)
    ]


def _stalled_burst(frontline: DaemonProcess, port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish while the daemon is frozen (SIGSTOP): it is far slower than the publisher."""
    assert frontline.process is not None
    frontline.process.send_signal(signal.SIGSTOP)
    try:
        publish_burst(port, messages)
    finally:
        frontline.process.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_burst_far_faster_than_ingest_is_stored_completely(
    broker: MosquittoProcess, frontline: DaemonProcess
) -> None:
    """Test that a 100,000-message burst from 1,000 devices arrives complete with mosquitto.conf."""
    frontline.start()
    messages = _burst(1000, 100)
    _stalled_burst(frontline, broker.port, messages)
    probe = _Probe(frontline)
    probe.start()
    try:
        frontline.wait_for("frontline_points_written_total", len(messages), timeout=120)
    finally:
        probe.stop()
    assert frontline.metric("frontline_points_written_total") == len(messages)
    assert len(frontline.cli_json("devices", "list")) == 1000
    # An orchestrator's probes keep their answers while the burst drains (issue #8).
    assert probe.failures == [], probe.failures
    assert probe.answered >= 3, f"only {probe.answered} probe rounds during the drain"
    print(f"probes during the drain: {probe.answered}, slowest {probe.slowest:.3f}s")
    assert frontline.stop() == 0


class _Probe(threading.Thread):
    """Ask /healthz, /readyz and /metrics in turn, each with a 1 s deadline, until stopped."""

    PATHS = ("/healthz", "/readyz", "/metrics")

    def __init__(self, frontline: DaemonProcess) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{frontline.http_port}"
        self.done = threading.Event()
        self.failures: list[str] = []
        self.answered = 0
        self.slowest = 0.0

    def run(self) -> None:
        while not self.done.is_set():
            for path in self.PATHS:
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(self.url + path, timeout=1.0) as response:
                        response.read()
                except urllib.error.HTTPError:
                    pass  # 503 from /readyz is an answer
                except OSError as exc:
                    self.failures.append(f"{path}: {exc}")
                self.slowest = max(self.slowest, time.monotonic() - started)
            self.answered += 1
            self.done.wait(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(5)


def test_default_broker_queue_would_drop_a_burst(tmp_path: Path) -> None:
    """Test that the same stalled burst loses messages with Mosquitto's default queue of 1,000."""
    from tests.conftest import ROOT, require_binary

    require_binary("mosquitto")
    shipped = (ROOT / "mosquitto.conf").read_text()
    defaults = "\n".join(
        line for line in shipped.splitlines() if not line.startswith("max_queued_")
    )
    conf = tmp_path / "default-queues.conf"
    conf.write_text(defaults)
    with MosquittoProcess(tmp_path / "mq", config=conf) as broker:
        # A small receive maximum keeps the burst out of the in-flight window, in the queue.
        daemon = DaemonProcess(
            broker, tmp_path / "data", FRONTLINE_MQTT__RECEIVE_MAXIMUM="20"
        ).start()
        try:
            messages = _burst(100, 50)
            _stalled_burst(daemon, broker.port, messages)
            time.sleep(3)
            stored = daemon.metric("frontline_points_written_total")
            assert stored < len(messages), "expected the broker to drop part of the burst"
        finally:
            daemon.kill()


def test_daemon_survives_broker_restart(broker: MosquittoProcess, frontline: DaemonProcess) -> None:
    """Test that the daemon reconnects after a broker outage and keeps ingesting."""
    frontline.start()
    publish_burst(broker.port, _series("dev-outage", 10))
    frontline.wait_for("frontline_points_written_total", 10)
    broker.stop()
    wait_until(lambda: frontline.metric("frontline_mqtt_connected") == 0, what="disconnect seen")
    assert frontline.get("/readyz")[0] == 503
    broker.start()
    frontline.wait_ready(timeout=30)
    publish_burst(broker.port, _series("dev-outage", 10, start=NOW + 10))
    frontline.wait_for("frontline_points_written_total", 20)
    assert frontline.running
    status = json.loads(frontline.get("/readyz")[1])
    assert status["checks"] == {
        "broker": True,
        "mqtt_thread": True,
        "series_store": True,
        "state_store": True,
    }
    assert status["problems"] == {}


def test_renamed_and_dropped_fields_are_counted_and_shown(
    broker: MosquittoProcess, frontline: DaemonProcess
) -> None:
    """Test acceptance 6: what is renamed or dropped is on /metrics, the twin and dead letters."""
    frontline.start()
    messages = [
        (
            "devices/ws-1/telemetry",
            b'{"outdoor-temp": 5.5, "flow rate": 3.2, "spare": null, "hist": [1, 2], "ok": 1}',
        ),
        ("devices/ws-1/telemetry", b'{"Flow Rate": 4.0, "ok": 2}'),  # collides with `flow rate`
        ("devices/ws-1/telemetry", b'{"only": null, "also": [3]}'),  # nothing usable
    ]
    publish_burst(broker.port, messages)
    wait_until(
        lambda: (
            frontline.metric("frontline_messages_received_total", {"kind": "telemetry"}) >= 2
            and frontline.metric("frontline_messages_rejected_total", {"reason": "nothing_usable"})
            >= 1
        ),
        what="the three messages",
    )
    assert frontline.metric("frontline_fields_renamed_total") == 2
    assert frontline.metric("frontline_fields_dropped_total", {"reason": "null"}) == 1
    assert frontline.metric("frontline_fields_dropped_total", {"reason": "array"}) == 1
    assert frontline.metric("frontline_fields_dropped_total", {"reason": "collision"}) == 1
    (letter,) = frontline.cli_json("dead-letters")
    assert letter["reason"] == "nothing_usable"
    assert "only (null)" in letter["detail"]
    assert "also (array)" in letter["detail"]
    wait_until(lambda: frontline.cli_json("devices", "list") != [], what="the twin")
    twin = frontline.cli_json("devices", "show", "ws-1")
    assert twin["metrics"] == {"flow_rate": 3.2, "ok": 2.0, "outdoor_temp": 5.5}
    assert twin["sent_as"] == {"flow_rate": "flow rate", "outdoor_temp": "outdoor-temp"}
    assert {k: v["reason"] for k, v in twin["dropped_fields"].items()} == {
        "spare": "null",
        "hist": "array",
        "Flow Rate": "collision",
    }
    assert frontline.cli_json("query", "ws-1", "outdoor_temp") != []
