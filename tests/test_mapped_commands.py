"""Integration: a remediation reaches a Zigbee2MQTT device on its own `set` topic, and is verified.

The Zigbee2MQTT side is played by a small paho client that behaves as Zigbee2MQTT documents it:
it publishes the plug's state on `zigbee2mqtt/<name>` and applies what arrives on
`zigbee2mqtt/<name>/set`, publishing the new state.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon.adapters.mosquitto import MosquittoProcess
from tests.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.integration

RULES = """
groups:
  - name: plugs
    interval: 1s
    match: {mapping: zigbee2mqtt}
    rules:
      - alert: PlugOverload
        expr: last(power) > 2000
        labels: {severity: major, category: electrical}
        annotations: {summary: "plug {{ device.id }} draws {{ value }} W"}
        remediate:
          - command: set
            params: {state: "OFF"}
            timeout: 10s
            verify: 15s
        ticket: on_failure
"""


class Plug:
    """A Zigbee smart plug behind Zigbee2MQTT: state on its topic, commands on `.../set`."""

    def __init__(self, port: int, name: str) -> None:
        self.name = name
        self.state = {"state": "ON", "power": 2300.0, "energy": 12.5, "linkquality": 120}
        self.commands: list[tuple[str, dict[str, object]]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"z2m-{port}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"zigbee2mqtt/{name}/set", 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, daemon=True)

    def start(self) -> Plug:
        topic = f"zigbee2mqtt/{self.name}/availability"
        self.client.publish(topic, b'{"state":"online"}', qos=1, retain=True)
        self._thread.start()
        return self

    def _report(self) -> None:
        while not self._stop.wait(0.5):
            self.publish()

    def publish(self) -> None:
        self.client.publish(f"zigbee2mqtt/{self.name}", orjson.dumps(self.state), qos=1)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        self.commands.append((msg.topic, body))
        if body.get("state") == "OFF":
            self.state = {**self.state, "state": "OFF", "power": 0.0}
        self.publish()

    def stop(self) -> None:
        self._stop.set()
        self.client.loop_stop()
        self.client.disconnect()


def test_remediation_sends_the_zigbee2mqtt_set_command_and_verifies_it(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test acceptance 4: the rule's command goes to `zigbee2mqtt/<name>/set` and the fix holds."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "plugs.yaml").write_text(RULES)
    daemon = DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_RULES__PATHS=json.dumps([str(rules)]),
        FRONTLINE_MAPPINGS__PRESETS='["zigbee2mqtt"]',
        FRONTLINE_ACTIONS__QUIET_PERIOD="3s",
    ).start()
    plug = Plug(broker.port, "Kitchen plug").start()
    try:
        wait_until(
            lambda: any(
                n["kind"] == "fixed" for n in daemon.cli_json("notices", "z2m-Kitchen_plug")
            ),
            timeout=60,
            what="the verified fix of the plug",
        )
        assert plug.commands == [("zigbee2mqtt/Kitchen plug/set", {"state": "OFF"})]
        twin = daemon.cli_json("devices", "show", "z2m-Kitchen_plug")
        assert twin["mapping"] == "zigbee2mqtt"
        assert twin["topic_segments"] == {"device": "Kitchen plug"}
        assert twin["metrics"]["power"] == 0.0
        assert twin["sent_as"] == {"link_quality": "linkquality"}
        assert twin["online"] is True
        assert daemon.metric("frontline_commands_sent_total") == 1
        assert daemon.cli_json("tickets", "list", "--all") == []
    finally:
        plug.stop()
        daemon.kill()


REPLYING = """
mappings:
  - name: plugs
    device: "plug-{device}"
    routes:
      - topic: plugs/{device}/state
      - topic: plugs/{device}/result
        kind: reply
        reply: {id: /id, ok: {pointer: /ok, values: [true]}, message: /msg}
    commands:
      topic: plugs/{device}/cmd
      payload: {id: "{command_id}", do: "{method}", args: "{params}"}
"""
RULES_TWO_STEPS = """
groups:
  - name: plugs
    interval: 1s
    match: {mapping: plugs}
    rules:
      - alert: PlugOverload
        expr: last(power) > 2000
        remediate:
          - {command: dim, params: {level: 50}, timeout: 10s, verify: 10s}
          - {command: switch_off, timeout: 10s, verify: 15s}
"""


def test_a_mapping_with_replies_waits_for_them_and_a_refusal_moves_on(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test a `reply` route: the device's refusal (ok: false) moves to the next step."""
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "plugs.yaml").write_text(REPLYING)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "plugs.yaml").write_text(RULES_TWO_STEPS)
    daemon = DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_RULES__PATHS=json.dumps([str(rules)]),
        FRONTLINE_MAPPINGS__PATHS=json.dumps([str(tmp_path / "mappings")]),
        FRONTLINE_ACTIONS__QUIET_PERIOD="3s",
    ).start()
    seen: list[dict[str, object]] = []
    state = {"power": 2500.0}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="plug-p1")

    def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        seen.append(body)
        if body["do"] == "dim":  # this plug cannot dim
            answer = {"id": body["id"], "ok": False, "msg": "dimming not supported"}
        else:
            state["power"] = 0.0
            answer = {"id": body["id"], "ok": True, "msg": "off"}
        c.publish("plugs/p1/result", orjson.dumps(answer), qos=1)

    client.on_connect = lambda c, *_: c.subscribe("plugs/p1/cmd", 1)
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:

        def fixed() -> bool:
            client.publish("plugs/p1/state", orjson.dumps(state), qos=1)
            return any(n["kind"] == "fixed" for n in daemon.cli_json("notices", "plug-p1"))

        wait_until(fixed, timeout=60, what="the fix after the refused step")
        assert [(s["do"], s["args"]) for s in seen] == [("dim", {"level": 50}), ("switch_off", {})]
        assert all(isinstance(s["id"], str) and s["id"] for s in seen)
    finally:
        client.loop_stop()
        client.disconnect()
        daemon.kill()
