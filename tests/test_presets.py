"""Tests of the shipped presets (docs/devices.md): what each ecosystem's messages become.

The sample payloads are written from each project's public description of its format (the URL is
at the top of each preset): Tasmota's `tele/<topic>/SENSOR`, Shelly Gen2's `status/switch:0` and
`NotifyStatus`, Home Assistant's statestream, ThingsBoard's gateway API and Zigbee2MQTT's state.
Each goes through `Ingress.classify` exactly as ingest decodes it, with all five presets enabled.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from daemon.adapters.mapping_files import (
    MappingFileSet,
    load_mappings,
    preset_names,
    preset_path,
)
from daemon.core.ingress import Ingress
from daemon.core.mappings import MappingSet, TopicTemplate, render_command
from daemon.core.messages import (
    Ignored,
    Message,
    Meta,
    Origin,
    Rejected,
    Reply,
    Status,
    Telemetry,
)

NOW = 1_700_000_000_000
ALL = (
    "zigbee2mqtt",
    "tasmota",
    "shelly_gen2",
    "homeassistant_statestream",
    "thingsboard_gateway",
)


def _load(*presets: str) -> MappingSet:
    found, problems = MappingFileSet([], presets).load()
    assert problems == []
    return found


@pytest.fixture(scope="module")
def ingress() -> Ingress:
    return Ingress(mappings=_load(*ALL))


def _one(ingress: Ingress, topic: str, payload: bytes | str | object) -> Message:
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes):
        payload = orjson.dumps(payload)
    (message,) = ingress.classify(topic, payload, NOW)
    return message


def _telemetry(ingress: Ingress, topic: str, payload: bytes | str | object) -> Telemetry:
    message = _one(ingress, topic, payload)
    assert isinstance(message, Telemetry), message
    return message


def _status(ingress: Ingress, topic: str, payload: bytes | str | object) -> Status:
    message = _one(ingress, topic, payload)
    assert isinstance(message, Status), message
    return message


def _command(
    preset: str, origin: Origin | None, device: str, method: str, params: dict[str, object]
) -> tuple[str, bytes]:
    mapping = _load(preset).mapping(preset)
    assert mapping is not None
    assert mapping.commands is not None
    assert origin is not None
    return render_command(mapping.commands, origin, device, "fl-1", method, params)


# -- every preset ----------------------------------------------------------------------------


def test_every_shipped_preset_is_tested_here() -> None:
    """Test that this file covers exactly the presets that ship."""
    assert sorted(preset_names()) == sorted(ALL)


def test_all_presets_load_together_without_problems() -> None:
    """Test that the five presets load at once, in order, each under its own name."""
    found, problems = MappingFileSet([], ALL).load()
    assert problems == []
    assert [m.name for m in found.mappings] == list(ALL)
    filters = found.filters()
    assert len(filters) == len(set(filters))
    assert "tele/+/SENSOR" in filters
    assert "v1/gateway/telemetry" in filters


@pytest.mark.parametrize("name", ALL)
def test_each_preset_says_where_its_format_is_documented(name: str) -> None:
    """Test that every preset opens with comments naming the project's documentation."""
    text = preset_path(name).read_text()
    head = text.split("\nmappings:")[0]
    assert all(line.startswith("#") for line in head.splitlines())
    assert "https://" in head


DOCS = Path(__file__).resolve().parent.parent / "docs" / "devices.md"
SECTIONS = {
    "zigbee2mqtt": "## Zigbee2MQTT",
    "tasmota": "## Tasmota",
    "shelly_gen2": "## Shelly Gen2",
    "homeassistant_statestream": "## Home Assistant",
    "thingsboard_gateway": "## ThingsBoard gateway",
}


def test_docs_describe_every_preset_and_their_example_is_the_shipped_one(tmp_path: Path) -> None:
    """Test docs/devices.md: a section per preset, and the Mappings example loads as the
    Zigbee2MQTT preset does (same routes, same commands)."""
    text = DOCS.read_text()
    lines = text.splitlines()
    assert sorted(SECTIONS) == sorted(ALL)
    for heading in SECTIONS.values():
        assert heading in lines
    section = text.split("\n## Mappings\n")[1].split("\n## ")[0]
    blocks = [block.split("```")[0] for block in section.split("```yaml\n")[1:]]
    (example,) = [block for block in blocks if "- name: zigbee2mqtt" in block]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    (documented,), problems = load_mappings([path])
    assert problems == []
    shipped = _load("zigbee2mqtt").mapping("zigbee2mqtt")
    assert shipped is not None
    assert [(r.topic, r.kind, r.status, r.timestamp) for r in documented.routes] == [
        (r.topic, r.kind, r.status, r.timestamp) for r in shipped.routes
    ]
    assert documented.commands == shipped.commands


# -- Zigbee2MQTT -----------------------------------------------------------------------------


def test_zigbee2mqtt_state_flattens_update_and_reads_last_seen(ingress: Ingress) -> None:
    """Test a sensor's state: flat values, the nested `update` object, last_seen, a null."""
    payload = {
        "battery": 100,
        "humidity": 58.3,
        "linkquality": 156,
        "temperature": 21.6,
        "voltage": 3045,
        "action": None,
        "update": {"state": "idle", "installed_version": 16777241, "latest_version": 16777241},
        "update_available": False,
        "last_seen": "2023-11-14T22:13:10.000Z",
    }
    message = _telemetry(ingress, "zigbee2mqtt/Living room", payload)
    assert message.device == "z2m-Living_room"
    assert message.origin == Origin("zigbee2mqtt", (("device", "Living room"),))
    (sample,) = message.samples
    assert sample.ts_ms == 1_699_999_990_000
    assert sample.metrics == {
        "battery": 100.0,
        "humidity": 58.3,
        "link_quality": 156.0,
        "temperature": 21.6,
        "voltage": 3045.0,
        "update_installed_version": 16777241.0,
        "update_latest_version": 16777241.0,
        "update_available": 0.0,
    }
    assert sample.attributes == {"update_state": "idle"}
    assert message.notes is not None
    assert message.notes.dropped == [("action", "null")]
    assert message.notes.renamed["link_quality"] == "linkquality"
    assert message.notes.renamed["update_state"] == "update.state"
    assert message.notes.units == {"temperature": "degC", "humidity": "%", "battery": "%"}


def test_zigbee2mqtt_plug_power_and_energy_have_units(ingress: Ingress) -> None:
    """Test a metering plug: its power, current and energy come with their units."""
    payload = {"state": "ON", "power": 45.2, "current": 0.2, "energy": 1.27, "voltage": 231}
    message = _telemetry(ingress, "zigbee2mqtt/Kitchen plug", payload)
    assert message.device == "z2m-Kitchen_plug"
    assert message.samples[0].metrics["power"] == 45.2
    assert message.samples[0].attributes == {"state": "ON"}
    assert message.notes is not None
    assert message.notes.units == {"power": "W", "current": "A", "energy": "kWh"}


@pytest.mark.parametrize(("state", "expected"), [("online", "online"), ("offline", "offline")])
def test_zigbee2mqtt_availability(ingress: Ingress, state: str, expected: str) -> None:
    """Test the availability topic's {"state": ...} object."""
    status = _status(ingress, "zigbee2mqtt/Living room/availability", {"state": state})
    assert (status.device, status.status) == ("z2m-Living_room", expected)


def test_zigbee2mqtt_bridge_topics_are_ignored(ingress: Ingress) -> None:
    """Test that the bridge's own topics are acknowledged and not stored."""
    for topic in ("zigbee2mqtt/bridge", "zigbee2mqtt/bridge/state", "zigbee2mqtt/bridge/logging"):
        assert isinstance(_one(ingress, topic, {"state": "online"}), Ignored)


def test_zigbee2mqtt_command_sets_attributes_on_the_set_topic(ingress: Ingress) -> None:
    """Test the command: the rule's params are the JSON object Zigbee2MQTT sets."""
    message = _telemetry(ingress, "zigbee2mqtt/Kitchen plug", {"state": "ON", "power": 2300})
    topic, payload = _command(
        "zigbee2mqtt", message.origin, message.device, "set", {"state": "OFF"}
    )
    assert topic == "zigbee2mqtt/Kitchen plug/set"
    assert json.loads(payload) == {"state": "OFF"}


# -- Tasmota ---------------------------------------------------------------------------------

TASMOTA_SENSOR = {
    "Time": "2019-11-03T19:34:28",
    "ENERGY": {
        "TotalStartTime": "2019-10-30T09:12:48",
        "Total": 12.3,
        "Yesterday": 0.456,
        "Today": 0.123,
        "Power": 45,
        "ApparentPower": 52,
        "ReactivePower": 26,
        "Factor": 0.87,
        "Voltage": 230,
        "Current": 0.2,
    },
}

TASMOTA_STATE = {
    "Time": "2021-06-13T06:59:52",
    "Uptime": "0T00:00:11",
    "UptimeSec": 11,
    "Heap": 28,
    "SleepMode": "Dynamic",
    "Sleep": 50,
    "LoadAvg": 19,
    "MqttCount": 1,
    "POWER": "ON",
    "Wifi": {
        "AP": 1,
        "SSId": "workshop",
        "BSSId": "F4:92:BF:7F:35:4B",
        "Channel": 3,
        "RSSI": 30,
        "Signal": -85,
        "LinkCount": 1,
        "Downtime": "0T00:00:05",
    },
}


def test_tasmota_sensor_energy_is_flattened_with_units(ingress: Ingress) -> None:
    """Test tele/<topic>/SENSOR: ENERGY.* flattened, the local-time `Time` dropped."""
    message = _telemetry(ingress, "tele/plug_5A9AE8/SENSOR", TASMOTA_SENSOR)
    assert message.device == "tasmota-plug_5A9AE8"
    assert message.origin == Origin("tasmota", (("device", "plug_5A9AE8"),))
    (sample,) = message.samples
    assert sample.ts_ms == NOW  # Time is naive local time: the receive time is used
    assert sample.metrics == {
        "energy_total": 12.3,
        "energy_yesterday": 0.456,
        "energy_today": 0.123,
        "energy_power": 45.0,
        "energy_apparentpower": 52.0,
        "energy_reactivepower": 26.0,
        "energy_factor": 0.87,
        "energy_voltage": 230.0,
        "energy_current": 0.2,
    }
    assert sample.attributes == {"energy_totalstarttime": "2019-10-30T09:12:48"}
    assert message.notes is not None
    assert message.notes.dropped == [("Time", "filtered")]
    assert message.notes.renamed["energy_total"] == "ENERGY.Total"
    assert message.notes.units == {
        "energy_total": "kWh",
        "energy_today": "kWh",
        "energy_yesterday": "kWh",
        "energy_power": "W",
        "energy_apparentpower": "VA",
        "energy_voltage": "V",
        "energy_current": "A",
    }


def test_tasmota_two_channel_meter_arrays_are_stored_by_position(ingress: Ingress) -> None:
    """Test a Sonoff Dual R3's ENERGY arrays: one metric per channel."""
    payload = {
        "Time": "2023-04-11T07:31:34",
        "Switch1": "ON",
        "Switch2": "ON",
        "ENERGY": {"Total": [0.0, 2.91], "Today": [0.0, 1.347], "Power": [0, 45]},
        "AM2301": {"Temperature": 21.4, "Humidity": 48.1, "DewPoint": 9.9},
        "TempUnit": "C",
    }
    (sample,) = _telemetry(ingress, "tele/dualr3/SENSOR", payload).samples
    assert sample.metrics == {
        "energy_total_0": 0.0,
        "energy_total_1": 2.91,
        "energy_today_0": 0.0,
        "energy_today_1": 1.347,
        "energy_power_0": 0.0,
        "energy_power_1": 45.0,
        "am2301_temperature": 21.4,
        "am2301_humidity": 48.1,
        "am2301_dewpoint": 9.9,
    }
    assert sample.attributes == {"switch1": "ON", "switch2": "ON", "tempunit": "C"}


def test_tasmota_state_is_device_health(ingress: Ingress) -> None:
    """Test tele/<topic>/STATE: uptime, heap, Wi-Fi; the relay's word as the attribute power."""
    message = _telemetry(ingress, "tele/plug_5A9AE8/STATE", TASMOTA_STATE)
    (sample,) = message.samples
    assert sample.metrics == {
        "uptimesec": 11.0,
        "heap": 28.0,
        "sleep": 50.0,
        "loadavg": 19.0,
        "mqttcount": 1.0,
        "wifi_ap": 1.0,
        "wifi_channel": 3.0,
        "wifi_rssi": 30.0,
        "wifi_signal": -85.0,
        "wifi_linkcount": 1.0,
    }
    assert sample.attributes == {
        "sleepmode": "Dynamic",
        "power": "ON",
        "wifi_ssid": "workshop",
        "wifi_bssid": "F4:92:BF:7F:35:4B",
        "wifi_downtime": "0T00:00:05",
    }
    assert message.notes is not None
    assert message.notes.dropped == [("Time", "filtered"), ("Uptime", "filtered")]
    assert message.notes.units == {
        "uptimesec": "s",
        "heap": "kB",
        "wifi_rssi": "%",
        "wifi_signal": "dBm",
    }


@pytest.mark.parametrize(("word", "expected"), [("Online", "online"), ("Offline", "offline")])
def test_tasmota_lwt(ingress: Ingress, word: str, expected: str) -> None:
    """Test tele/<topic>/LWT: the plain words Online and Offline."""
    status = _status(ingress, "tele/plug_5A9AE8/LWT", word)
    assert (status.device, status.status) == ("tasmota-plug_5A9AE8", expected)


def test_tasmota_stat_power_updates_the_relay_word(ingress: Ingress) -> None:
    """Test stat/<topic>/POWER: the relay's new state, as in STATE."""
    message = _telemetry(ingress, "stat/plug_5A9AE8/POWER", "OFF")
    assert message.device == "tasmota-plug_5A9AE8"
    assert message.samples[0].attributes == {"power": "OFF"}


def test_tasmota_commands_are_text_on_cmnd(ingress: Ingress) -> None:
    """Test the command: cmnd/<topic>/<Command> with the value as plain text."""
    message = _telemetry(ingress, "tele/plug_5A9AE8/SENSOR", TASMOTA_SENSOR)
    power = _command("tasmota", message.origin, message.device, "POWER", {"value": "OFF"})
    assert power == ("cmnd/plug_5A9AE8/POWER", b"OFF")
    dimmer = _command("tasmota", message.origin, message.device, "Dimmer", {"value": 40})
    assert dimmer == ("cmnd/plug_5A9AE8/Dimmer", b"40")


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"POWER": "OFF"}, "ok", ""),
        ({"Command": "Unknown"}, "error", "Unknown"),
        ({"Command": "Error"}, "error", "Error"),
    ],
)
def test_tasmota_result_answers_the_command_in_flight(
    ingress: Ingress, payload: object, status: str, message: str
) -> None:
    """Test stat/<topic>/RESULT: a reply without a command id, an error when Tasmota refused."""
    reply = _one(ingress, "stat/plug_5A9AE8/RESULT", payload)
    assert isinstance(reply, Reply)
    assert (reply.device, reply.command_id) == ("tasmota-plug_5A9AE8", "")
    assert json.loads(reply.payload) == {"status": status, "message": message}


# -- Shelly Gen2 -----------------------------------------------------------------------------

SHELLY = "shellyplus1pm-a8032ab12345"
SHELLY_SWITCH = {
    "id": 0,
    "source": "init",
    "output": False,
    "apower": 0,
    "voltage": 231.4,
    "current": 0,
    "aenergy": {"total": 0, "by_minute": [0, 0, 0], "minute_ts": 1654511280},
    "temperature": {"tC": 51.6, "tF": 125},
}


def test_shelly_component_status_is_named_after_the_component(ingress: Ingress) -> None:
    """Test <id>/status/switch:0: values prefixed switch_0_, by_minute (an array) dropped."""
    message = _telemetry(ingress, f"{SHELLY}/status/switch:0", SHELLY_SWITCH)
    assert message.device == f"shelly-{SHELLY}"
    assert message.origin is not None
    assert message.origin.segment("device") == SHELLY
    (sample,) = message.samples
    assert sample.ts_ms == NOW
    assert sample.metrics == {
        "switch_0_output": 0.0,
        "switch_0_apower": 0.0,
        "switch_0_voltage": 231.4,
        "switch_0_current": 0.0,
        "switch_0_aenergy_total": 0.0,
        "switch_0_temperature_tc": 51.6,
    }
    assert sample.attributes == {"switch_0_source": "init"}
    assert message.notes is not None
    assert sorted(message.notes.dropped) == [
        ("switch:0.aenergy.by_minute", "array"),
        ("switch:0.aenergy.minute_ts", "filtered"),
        ("switch:0.id", "filtered"),
        ("switch:0.temperature.tF", "filtered"),
    ]
    assert message.notes.renamed["switch_0_apower"] == "switch:0.apower"
    assert message.notes.units == {
        "switch_0_apower": "W",
        "switch_0_voltage": "V",
        "switch_0_current": "A",
        "switch_0_aenergy_total": "Wh",
        "switch_0_temperature_tc": "degC",
    }


def test_shelly_other_components(ingress: Ingress) -> None:
    """Test the input, wifi and sys components; ble's empty status is ignored."""
    (sample,) = _telemetry(ingress, f"{SHELLY}/status/input:0", {"id": 0, "state": True}).samples
    assert sample.metrics == {"input_0_state": 1.0}
    wifi = {"sta_ip": "192.168.1.52", "status": "got ip", "ssid": "workshop", "rssi": -58}
    (sample,) = _telemetry(ingress, f"{SHELLY}/status/wifi", wifi).samples
    assert sample.metrics == {"wifi_rssi": -58.0}
    assert sample.attributes["wifi_sta_ip"] == "192.168.1.52"
    sys = {"mac": "A8032AB12345", "restart_required": False, "uptime": 7213, "ram_free": 147156}
    (sample,) = _telemetry(ingress, f"{SHELLY}/status/sys", sys).samples
    assert sample.metrics == {
        "sys_restart_required": 0.0,
        "sys_uptime": 7213.0,
        "sys_ram_free": 147156.0,
    }
    assert isinstance(_one(ingress, f"{SHELLY}/status/ble", {}), Ignored)


def test_shelly_notify_status_carries_what_changed_at_its_time(ingress: Ingress) -> None:
    """Test <id>/events/rpc NotifyStatus: params.ts in Unix seconds, components as in status/."""
    frame = {
        "src": SHELLY,
        "dst": f"{SHELLY}/events",
        "method": "NotifyStatus",
        "params": {
            "ts": 1_699_999_990.5,
            "switch:0": {
                "id": 0,
                "output": True,
                "source": "button",
                "apower": 8.9,
                "aenergy": {"total": 1.234, "by_minute": [140.1, 0, 0], "minute_ts": 1699999980},
            },
        },
    }
    message = _telemetry(ingress, f"{SHELLY}/events/rpc", frame)
    assert message.device == f"shelly-{SHELLY}"
    (sample,) = message.samples
    assert sample.ts_ms == 1_699_999_990_500
    assert sample.metrics == {
        "switch_0_output": 1.0,
        "switch_0_apower": 8.9,
        "switch_0_aenergy_total": 1.234,
    }
    assert sample.attributes == {"switch_0_source": "button"}
    assert message.notes is not None
    assert sorted(message.notes.dropped) == [
        ("switch:0.aenergy.by_minute", "array"),
        ("switch:0.aenergy.minute_ts", "filtered"),
        ("switch:0.id", "filtered"),
        ("ts", "filtered"),
    ]
    assert message.notes.units == {
        "switch_0_apower": "W",
        "switch_0_aenergy_total": "Wh",
    }


def test_shelly_notify_event_is_acknowledged_not_stored(ingress: Ingress) -> None:
    """Test NotifyEvent (a button press): the route's `when` passes it to the ignore route."""
    frame = {
        "src": SHELLY,
        "dst": f"{SHELLY}/events",
        "method": "NotifyEvent",
        "params": {
            "ts": 1_699_999_990.5,
            "events": [{"component": "input:0", "id": 0, "event": "single_push", "ts": 1.7e9}],
        },
    }
    assert _one(ingress, f"{SHELLY}/events/rpc", frame) == Ignored("{device}/events/rpc")
    status = {**frame, "method": "NotifyStatus", "params": {"ts": 1_699_999_990.5, "x": 1}}
    assert isinstance(_one(ingress, f"{SHELLY}/events/rpc", status), Telemetry)


@pytest.mark.parametrize(("word", "expected"), [("true", "online"), ("false", "offline")])
def test_shelly_online(ingress: Ingress, word: str, expected: str) -> None:
    """Test <id>/online: true on connect, false as the broker's last will."""
    status = _status(ingress, f"{SHELLY}/online", word)
    assert (status.device, status.status) == (f"shelly-{SHELLY}", expected)


def test_shelly_commands_are_json_rpc_requests(ingress: Ingress) -> None:
    """Test the command: a JSON-RPC request on <id>/rpc with the rule's method and params."""
    message = _telemetry(ingress, f"{SHELLY}/status/switch:0", SHELLY_SWITCH)
    params: dict[str, object] = {"id": 0, "on": False}
    topic, payload = _command("shelly_gen2", message.origin, message.device, "Switch.Set", params)
    assert topic == f"{SHELLY}/rpc"
    assert json.loads(payload) == {
        "id": "fl-1",
        "src": "frontline",
        "method": "Switch.Set",
        "params": {"id": 0, "on": False},
    }


def test_shelly_rpc_answers_come_on_the_requests_src(ingress: Ingress) -> None:
    """Test frontline/rpc: the response frame names the command (id) and the device (src)."""
    ok = {"id": "fl-1", "src": SHELLY, "dst": "frontline", "result": {"was_on": True}}
    reply = _one(ingress, "frontline/rpc", ok)
    assert reply == Reply(f"shelly-{SHELLY}", "fl-1", b'{"status":"ok","message":""}')
    refused = {
        "id": "fl-2",
        "src": SHELLY,
        "dst": "frontline",
        "error": {"code": -105, "message": "Argument 'id', value 3 not found!"},
    }
    reply = _one(ingress, "frontline/rpc", refused)
    assert isinstance(reply, Reply)
    assert reply.command_id == "fl-2"
    assert json.loads(reply.payload) == {
        "status": "error",
        "message": "Argument 'id', value 3 not found!",
    }


# -- Home Assistant statestream --------------------------------------------------------------

HA = "statestream/sensor/outdoor_temperature"


def test_homeassistant_numeric_state_is_the_metric_state(ingress: Ingress) -> None:
    """Test <base>/<domain>/<entity>/state with a number (plain text)."""
    message = _telemetry(ingress, f"{HA}/state", "5.5")
    assert message.device == "ha-sensor.outdoor_temperature"
    assert message.origin is not None
    assert message.origin.mapping == "homeassistant_statestream"
    assert message.samples[0].ts_ms == NOW
    assert message.samples[0].metrics == {"state": 5.5}


def test_homeassistant_word_state_and_attributes(ingress: Ingress) -> None:
    """Test a word state (`on`) and JSON-encoded attributes: text, numbers, lists by position."""
    plug = "statestream/switch/boiler_plug"
    assert _telemetry(ingress, f"{plug}/state", "on").samples[0].attributes == {"state": "on"}
    unit = _telemetry(ingress, f"{HA}/unit_of_measurement", '"°C"')
    assert unit.samples[0].attributes == {"unit_of_measurement": "°C"}
    name = _telemetry(ingress, f"{HA}/friendly_name", '"Outdoor temperature"')
    assert name.samples[0].attributes == {"friendly_name": "Outdoor temperature"}
    light = "statestream/light/kitchen"
    assert _telemetry(ingress, f"{light}/brightness", "255").samples[0].metrics == {
        "brightness": 255.0
    }
    color = _telemetry(ingress, f"{light}/rgb_color", "[255, 128, 0]")
    assert color.device == "ha-light.kitchen"
    assert color.samples[0].metrics == {
        "rgb_color_0": 255.0,
        "rgb_color_1": 128.0,
        "rgb_color_2": 0.0,
    }


def test_homeassistant_timestamps_and_word_lists_are_ignored(ingress: Ingress) -> None:
    """Test publish_timestamps' topics and list-of-words attributes: acknowledged, not stored."""
    stamp = '"2017-10-01T23:20:30.920969+00:00"'
    assert isinstance(_one(ingress, f"{HA}/last_updated", stamp), Ignored)
    assert isinstance(_one(ingress, f"{HA}/last_changed", stamp), Ignored)
    modes = '["off", "heat", "auto"]'
    assert isinstance(_one(ingress, "statestream/climate/hall/hvac_modes", modes), Ignored)


@pytest.mark.parametrize(("word", "expected"), [("online", "online"), ("offline", "offline")])
def test_homeassistant_birth_and_will(ingress: Ingress, word: str, expected: str) -> None:
    """Test Home Assistant's own availability on homeassistant/status."""
    status = _status(ingress, "homeassistant/status", word)
    assert (status.device, status.status) == ("ha-homeassistant", expected)


def test_homeassistant_unavailable_entity_is_offline(ingress: Ingress) -> None:
    """Test the state `unavailable`: the entity goes offline, then a value brings it back."""
    status = _status(ingress, f"{HA}/state", "unavailable")
    assert (status.device, status.status) == ("ha-sensor.outdoor_temperature", "offline")
    assert isinstance(_one(ingress, f"{HA}/state", "5.5"), Telemetry)


def test_homeassistant_commands_name_the_service_for_an_automation(ingress: Ingress) -> None:
    """Test the command: one topic, the entity's domain, the rule's method as the service."""
    message = _telemetry(ingress, "statestream/switch/boiler_plug/state", "on")
    topic, payload = _command(
        "homeassistant_statestream", message.origin, message.device, "turn_off", {}
    )
    assert topic == "frontline/homeassistant/call_service"
    assert json.loads(payload) == {
        "domain": "switch",
        "service": "turn_off",
        "entity_id": "switch.boiler_plug",
        "data": {},
    }
    climate = _telemetry(ingress, "statestream/climate/hall/current_temperature", "19.5")
    _, payload = _command(
        "homeassistant_statestream",
        climate.origin,
        climate.device,
        "set_temperature",
        {"temperature": 21},
    )
    assert json.loads(payload)["data"] == {"temperature": 21}
    assert json.loads(payload)["entity_id"] == "climate.hall"


# -- ThingsBoard gateway ---------------------------------------------------------------------


def test_thingsboard_telemetry_of_several_devices(ingress: Ingress) -> None:
    """Test v1/gateway/telemetry: one message, one Telemetry per device name, ts in ms."""
    payload = {
        "Device A": [
            {"ts": 1_699_999_980_000, "values": {"temperature": 42, "humidity": 80}},
            {"ts": 1_699_999_990_000, "values": {"temperature": 43, "humidity": 81}},
        ],
        "Device B": [{"ts": 1_699_999_990_000, "values": {"pressure": 1.2, "readings": [1, 2]}}],
    }
    a, b = ingress.classify("v1/gateway/telemetry", orjson.dumps(payload), NOW)
    assert isinstance(a, Telemetry)
    assert isinstance(b, Telemetry)
    assert (a.device, b.device) == ("tb-Device_A", "tb-Device_B")
    assert a.origin == Origin("thingsboard_gateway", (("key", "Device A"),))
    assert [(s.ts_ms, s.metrics) for s in a.samples] == [
        (1_699_999_980_000, {"temperature": 42.0, "humidity": 80.0}),
        (1_699_999_990_000, {"temperature": 43.0, "humidity": 81.0}),
    ]
    assert b.samples[0].metrics == {"pressure": 1.2}
    assert b.notes is not None
    assert b.notes.dropped == [("readings", "array")]


def test_thingsboard_telemetry_without_ts_uses_the_receive_time(ingress: Ingress) -> None:
    """Test plain values per device (no ts): stored at the receive time."""
    payload = {"Pump 7": {"flow rate": 3.2, "mode": "auto"}}
    message = _telemetry(ingress, "v1/gateway/telemetry", payload)
    assert message.device == "tb-Pump_7"
    assert message.samples[0].ts_ms == NOW
    assert message.samples[0].metrics == {"flow_rate": 3.2}
    assert message.samples[0].attributes == {"mode": "auto"}


def test_thingsboard_connect_and_disconnect(ingress: Ingress) -> None:
    """Test v1/gateway/connect and /disconnect: the named device goes online, then offline."""
    online = _status(ingress, "v1/gateway/connect", {"device": "Device A", "type": "Thermostat"})
    assert (online.device, online.status) == ("tb-Device_A", "online")
    offline = _status(ingress, "v1/gateway/disconnect", {"device": "Device A"})
    assert (offline.device, offline.status) == ("tb-Device_A", "offline")


def test_thingsboard_attributes_are_meta(ingress: Ingress) -> None:
    """Test v1/gateway/attributes: each device's client-side attributes become its meta."""
    payload = {
        "Device A": {"attribute1": "value1", "attribute2": 42},
        "Device B": {"firmware": "2.3.1"},
    }
    a, b = ingress.classify("v1/gateway/attributes", orjson.dumps(payload), NOW)
    assert a == Meta(
        "tb-Device_A",
        {"attribute1": "value1", "attribute2": 42},
        Origin("thingsboard_gateway", (("key", "Device A"),)),
    )
    assert isinstance(b, Meta)
    assert b.device == "tb-Device_B"
    assert b.meta == {"firmware": "2.3.1"}


def test_thingsboard_rpc_names_the_device_and_its_answer_is_read(ingress: Ingress) -> None:
    """Test the gateway RPC: {key} from telemetry or connect, the answer, our echo ignored."""
    (mapping,) = load_mappings([], ["thingsboard_gateway"])[0]
    assert mapping.commands is not None
    origin = Origin("thingsboard_gateway", (("key", "Device A"),))
    params: dict[str, object] = {"pin": 4, "value": 0}
    topic, payload = render_command(mapping.commands, origin, "tb-Device_A", "7", "setGpio", params)
    assert topic == "v1/gateway/rpc"
    assert json.loads(payload) == {
        "device": "Device A",
        "data": {"id": "7", "method": "setGpio", "params": {"pin": 4, "value": 0}},
    }
    (connect,) = ingress.classify("v1/gateway/connect", b'{"device": "Device A"}', NOW)
    assert connect.origin == origin  # a connect alone names the device for commands too
    assert ingress.classify("v1/gateway/rpc", payload, NOW) == [Ignored("v1/gateway/rpc")]
    answer = b'{"device": "Device A", "id": "7", "data": {"success": true}}'
    (reply,) = ingress.classify("v1/gateway/rpc", answer, NOW)
    assert isinstance(reply, Reply)
    assert (reply.device, reply.command_id) == ("tb-Device_A", "7")
    assert json.loads(reply.payload)["status"] == "ok"


# -- the payload styles of the issue ---------------------------------------------------------

STYLES = [
    pytest.param(
        "tele/plug_5A9AE8/SENSOR",
        {"Time": "2019-11-03T19:34:28", "ENERGY": {"Total": 12.3, "Power": 45}},
        "tasmota-plug_5A9AE8",
        {"energy_total": 12.3, "energy_power": 45.0},
        {},
        id="tasmota-nested-energy",
    ),
    pytest.param(
        "zigbee2mqtt/Hall sensor",
        {"temperature": 21.5, "humidity": 40, "linkquality": 120, "update": {"state": "idle"}},
        "z2m-Hall_sensor",
        {"temperature": 21.5, "humidity": 40.0, "link_quality": 120.0},
        {"update_state": "idle"},
        id="zigbee2mqtt-flat-with-update",
    ),
    pytest.param(
        f"{SHELLY}/status/switch:0",
        {"id": 0, "output": True, "apower": 8.9, "aenergy": {"total": 1.5, "by_minute": [1, 2]}},
        f"shelly-{SHELLY}",
        {"switch_0_output": 1.0, "switch_0_apower": 8.9, "switch_0_aenergy_total": 1.5},
        {},
        id="shelly-gen2-nested-aenergy",
    ),
    pytest.param(
        "devices/boiler-7/telemetry",
        {"outdoor-temp": 5.5, "flow rate": 3.2},
        "boiler-7",
        {"outdoor_temp": 5.5, "flow_rate": 3.2},
        {},
        id="native-names-with-spaces-and-hyphens",
    ),
    pytest.param(
        "v1/gateway/telemetry",
        {"Boiler 9": [{"ts": 1_699_999_990_000, "values": {"Volume Flow RateRMS": 2.5}}]},
        "tb-Boiler_9",
        {"volume_flow_raterms": 2.5},
        {},
        id="thingsboard-gateway-device-names",
    ),
    pytest.param(
        "statestream/sensor/outdoor_temperature/state",
        "5.5",
        "ha-sensor.outdoor_temperature",
        {"state": 5.5},
        {},
        id="homeassistant-statestream-plain-value",
    ),
]


@pytest.mark.parametrize(("topic", "payload", "device", "metrics", "attributes"), STYLES)
def test_payload_styles_become_devices_with_canonical_metrics(
    ingress: Ingress,
    topic: str,
    payload: object,
    device: str,
    metrics: dict[str, float],
    attributes: dict[str, str],
) -> None:
    """Test acceptance: each style on its native topic, all presets on, gives the device."""
    message = _telemetry(ingress, topic, payload)
    assert message.device == device
    (sample,) = message.samples
    assert sample.metrics == metrics
    assert sample.attributes == attributes


# -- no preset takes another's messages ------------------------------------------------------

#: (the preset a message belongs to, its topic, its payload): every sample above, roughly
SAMPLES: list[tuple[str, str, object]] = [
    ("zigbee2mqtt", "zigbee2mqtt/Living room", {"temperature": 21.6, "battery": 100}),
    ("zigbee2mqtt", "zigbee2mqtt/Living room/availability", {"state": "offline"}),
    ("zigbee2mqtt", "zigbee2mqtt/bridge/state", {"state": "online"}),
    ("tasmota", "tele/plug_5A9AE8/SENSOR", TASMOTA_SENSOR),
    ("tasmota", "tele/plug_5A9AE8/STATE", TASMOTA_STATE),
    ("tasmota", "tele/plug_5A9AE8/LWT", "Online"),
    ("tasmota", "stat/plug_5A9AE8/POWER", "ON"),
    ("tasmota", "stat/plug_5A9AE8/RESULT", {"POWER": "ON"}),
    ("shelly_gen2", f"{SHELLY}/status/switch:0", SHELLY_SWITCH),
    ("shelly_gen2", f"{SHELLY}/status/ble", {}),
    ("shelly_gen2", f"{SHELLY}/online", "false"),
    ("shelly_gen2", f"{SHELLY}/events/rpc", {"params": {"ts": 1.7e9, "cloud": {"connected": 1}}}),
    ("shelly_gen2", "frontline/rpc", {"id": "fl-1", "src": SHELLY, "result": {"was_on": True}}),
    ("homeassistant_statestream", f"{HA}/state", "5.5"),
    ("homeassistant_statestream", f"{HA}/unit_of_measurement", '"°C"'),
    ("homeassistant_statestream", f"{HA}/last_updated", '"2017-10-01T23:20:30+00:00"'),
    ("homeassistant_statestream", "homeassistant/status", "online"),
    ("thingsboard_gateway", "v1/gateway/telemetry", {"Device A": [{"temperature": 42}]}),
    ("thingsboard_gateway", "v1/gateway/attributes", {"Device A": {"model": "TH-1"}}),
    ("thingsboard_gateway", "v1/gateway/connect", {"device": "Device A"}),
    ("thingsboard_gateway", "v1/gateway/disconnect", {"device": "Device A"}),
]


def _taken_by(mappings: MappingSet, topic: str, payload: object) -> str | None:
    found = mappings.route(topic, _bytes(payload))
    return None if found is None else found[0].mapping


@pytest.mark.parametrize(("preset", "topic", "payload"), SAMPLES)
def test_each_message_is_taken_by_its_own_preset_in_any_order(
    preset: str, topic: str, payload: object
) -> None:
    """Test that with all five presets, in either order, a message goes to its own preset's
    route and decodes exactly as with that preset alone."""
    alone = Ingress(mappings=_load(preset))
    forward = _load(*ALL)
    backward = _load(*reversed(ALL))
    assert _taken_by(forward, topic, payload) == preset
    assert _taken_by(backward, topic, payload) == preset
    expected = alone.classify(topic, _bytes(payload), NOW)
    assert not any(isinstance(m, Rejected) for m in expected), expected
    for mappings in (forward, backward):
        assert Ingress(mappings=mappings).classify(topic, _bytes(payload), NOW) == expected


def _bytes(payload: object) -> bytes:
    return payload.encode() if isinstance(payload, str) else orjson.dumps(payload)


def _instance(template: TopicTemplate) -> str:
    """A topic the template matches, with a neutral name in every segment."""
    levels = [
        "x" if level == "#" else (f"n{i}" if level.startswith("{") else level)
        for i, level in enumerate(template.levels)
    ]
    return "/".join(levels)


def test_no_route_of_one_preset_matches_the_topics_of_another() -> None:
    """Test that every route's topic, its segments filled with plain names, matches no route of
    another preset: no preset shadows another whatever their order."""
    found = _load(*ALL)
    for mapping in found.mappings:
        for route in mapping.routes:
            topic = _instance(route.topic)
            others = [
                (other.name, theirs.topic.text)
                for other in found.mappings
                if other.name != mapping.name
                for theirs in other.routes
                if theirs.topic.match(topic) is not None
            ]
            assert others == [], f"{mapping.name} {route.topic.text}: {topic} also {others}"
