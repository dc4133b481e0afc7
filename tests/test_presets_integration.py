"""Integration: the five shipped presets at once, on a real Mosquitto, against `frontline run`.

One paho client plays every ecosystem: it publishes one telemetry and one status message per
ecosystem on the topics the projects use (samples as in tests/test_presets.py), and the devices
must appear in `frontline devices list --json` with their metrics and online; then each
ecosystem's offline message flips its device offline.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest

from daemon.adapters.mosquitto import MosquittoProcess
from simulators.burst import publish_burst
from tests.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.integration

PRESETS = [
    "zigbee2mqtt",
    "tasmota",
    "shelly_gen2",
    "homeassistant_statestream",
    "thingsboard_gateway",
]
SHELLY = "shellyplus1pm-a8032ab12345"


def _telemetry(now_ms: int) -> list[tuple[str, bytes]]:
    return [
        (
            "zigbee2mqtt/Living room",
            orjson.dumps({"temperature": 21.6, "linkquality": 156, "update": {"state": "idle"}}),
        ),
        (
            "tele/plug_5A9AE8/SENSOR",
            orjson.dumps({"Time": "2019-11-03T19:34:28", "ENERGY": {"Total": 12.3, "Power": 45}}),
        ),
        (
            f"{SHELLY}/events/rpc",
            orjson.dumps(
                {
                    "src": SHELLY,
                    "dst": f"{SHELLY}/events",
                    "method": "NotifyStatus",
                    "params": {
                        "ts": now_ms / 1000,
                        "switch:0": {"id": 0, "output": True, "apower": 8.9, "voltage": 231.4},
                    },
                }
            ),
        ),
        ("statestream/sensor/outdoor_temperature/state", b"5.5"),
        (
            "v1/gateway/telemetry",
            orjson.dumps({"Device A": [{"ts": now_ms, "values": {"temperature": 42}}]}),
        ),
    ]


ONLINE = [
    ("zigbee2mqtt/Living room/availability", b'{"state": "online"}'),
    ("tele/plug_5A9AE8/LWT", b"Online"),
    (f"{SHELLY}/online", b"true"),
    ("homeassistant/status", b"online"),
    ("v1/gateway/connect", b'{"device": "Device A", "type": "Thermostat"}'),
]

OFFLINE = [
    ("zigbee2mqtt/Living room/availability", b'{"state": "offline"}'),
    ("tele/plug_5A9AE8/LWT", b"Offline"),
    (f"{SHELLY}/online", b"false"),
    ("homeassistant/status", b"offline"),
    ("v1/gateway/disconnect", b'{"device": "Device A"}'),
]

#: device -> the metrics its telemetry gives
METRICS = {
    "z2m-Living_room": {"temperature": 21.6, "link_quality": 156.0},
    "tasmota-plug_5A9AE8": {"energy_total": 12.3, "energy_power": 45.0},
    f"shelly-{SHELLY}": {"switch_0_output": 1.0, "switch_0_apower": 8.9, "switch_0_voltage": 231.4},
    "ha-sensor.outdoor_temperature": {"state": 5.5},
    "tb-Device_A": {"temperature": 42.0},
}
#: the devices the status messages are about (Home Assistant's is Home Assistant itself)
STATUS_DEVICES = [
    "z2m-Living_room",
    "tasmota-plug_5A9AE8",
    f"shelly-{SHELLY}",
    "ha-homeassistant",
    "tb-Device_A",
]


def test_five_ecosystems_on_their_native_topics_become_devices_that_go_offline(
    broker: MosquittoProcess, frontline: DaemonProcess
) -> None:
    """Test acceptance: telemetry and status of each ecosystem, all presets enabled."""
    frontline.env["FRONTLINE_MAPPINGS__PRESETS"] = json.dumps(PRESETS)
    frontline.start()
    publish_burst(broker.port, [*ONLINE, *_telemetry(int(time.time() * 1000))])

    devices: dict[str, dict[str, Any]] = {}

    def listed() -> dict[str, dict[str, Any]]:
        devices.clear()
        devices.update({d["id"]: d for d in frontline.cli_json("devices", "list")})
        return devices

    def all_online_with_metrics() -> bool:
        found = listed()
        return all(
            device in found
            and all(found[device]["metrics"].get(k) == v for k, v in metrics.items())
            for device, metrics in METRICS.items()
        ) and all(device in found and found[device]["online"] for device in STATUS_DEVICES)

    wait_until(all_online_with_metrics, timeout=60, what="the five ecosystems' devices, online")
    assert set(devices) == set(METRICS) | set(STATUS_DEVICES)
    for device, metrics in METRICS.items():
        assert devices[device]["metrics"] == metrics, device
        assert devices[device]["online"] is True, device
    assert devices["z2m-Living_room"]["attributes"] == {"update_state": "idle"}
    assert devices["ha-homeassistant"]["status"] == "online"
    show = frontline.cli_json("devices", "show", "tasmota-plug_5A9AE8")
    assert show["mapping"] == "tasmota"
    assert show["units"] == {"energy_power": "W", "energy_total": "kWh"}
    assert show["sent_as"]["energy_total"] == "ENERGY.Total"
    assert "Time" in show["dropped_fields"]
    assert frontline.cli_json("dead-letters") == []

    publish_burst(broker.port, OFFLINE)

    def all_offline() -> bool:
        found = listed()
        return all(not found[device]["online"] for device in STATUS_DEVICES)

    wait_until(all_offline, timeout=60, what="every ecosystem's offline status")
    for device in STATUS_DEVICES:
        assert devices[device]["status"] == "offline", device
    # The entity's own twin is untouched by Home Assistant going away (no per-entity status).
    assert devices["ha-sensor.outdoor_temperature"]["online"] is True
    assert frontline.cli_json("dead-letters") == []
    assert frontline.running
