"""Tests of the mapping engine and its file format (docs/devices.md, "Mappings")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.adapters.mapping_files import MappingFileSet, load_mappings, read_mapping_file
from daemon.cli.mappings import mappings as mappings_cli
from daemon.core.ingress import Ingress
from daemon.core.mappings import (
    CommandTemplate,
    TemplateError,
    TopicTemplate,
    device_id,
    pointer,
    render_command,
)
from daemon.core.messages import Ignored, Meta, Origin, Rejected, Reply, Status, Telemetry

NOW = 1_700_000_000_000

MAPPING = """
mappings:
  - name: plant
    device: "plant-{line}-{device}"
    routes:
      - topic: plant/system/#
        kind: ignore
      - topic: plant/{line}/{device}/state
        kind: status
        status: {pointer: /up, online: [true, "yes"], offline: [false, "no"]}
      - topic: plant/{line}/{device}/info
        kind: meta
      - topic: plant/{line}/{device}/{sensor}/raw
        payload: value
        metric: "{sensor}"
        units: {flow: l/min}
      - topic: plant/{line}/{device}/data
        values: /readings
        timestamp: {pointer: /at, format: epoch_s}
        keep: ["pump.*", "flow*", "Mode"]
        drop: ["*debug*"]
        rename: {"pump.rpm": pump_speed}
        units: {pump_speed: rpm}
        arrays: index
  - name: hub
    routes:
      - topic: hub/data
        split: keys
        device: "hub-{key}"
      - topic: hub/connect
        kind: status
        device: "hub-{/device}"
        status: {set: online}
"""


@pytest.fixture
def ingress(tmp_path: Path) -> Ingress:
    path = tmp_path / "plant.yaml"
    path.write_text(MAPPING)
    found, problems = MappingFileSet([path]).load()
    assert problems == []
    return Ingress(mappings=found)


def test_routes_decode_telemetry_with_pointers_filters_renames_and_units(
    ingress: Ingress,
) -> None:
    """Test one telemetry route: values pointer, epoch-seconds timestamp, keep/drop/rename."""
    payload = json.dumps(
        {
            "at": 1_699_999_990,
            "readings": {
                "pump": {"rpm": 1450, "temp": 61.5, "debug_level": 3},
                "flow rate": 3.2,
                "Mode": "auto",
                "flowHistory": [1, 2],
                "other": 1,
            },
        }
    ).encode()
    (message,) = ingress.classify("plant/l1/p7/data", payload, NOW)
    assert isinstance(message, Telemetry)
    assert message.device == "plant-l1-p7"
    assert message.origin == Origin("plant", (("device", "p7"), ("line", "l1")))
    (sample,) = message.samples
    assert sample.ts_ms == 1_699_999_990_000
    assert sample.metrics == {
        "pump_speed": 1450.0,
        "pump_temp": 61.5,
        "flow_rate": 3.2,
        "flowhistory_0": 1.0,
        "flowhistory_1": 2.0,
    }
    assert sample.attributes == {"mode": "auto"}
    assert message.notes is not None
    assert message.notes.renamed["pump_speed"] == "pump.rpm"
    assert message.notes.units == {"pump_speed": "rpm"}
    assert sorted(message.notes.dropped) == [
        ("other", "filtered"),
        ("pump.debug_level", "filtered"),
    ]


STATUS = [
    (b'{"up": true}', "online"),
    (b'{"up": "no"}', "offline"),
    (b'{"up": false}', "offline"),
]


@pytest.mark.parametrize(("payload", "status"), STATUS)
def test_status_routes_read_their_words(ingress: Ingress, payload: bytes, status: str) -> None:
    """Test a status route whose payload says online or offline in its own words."""
    (message,) = ingress.classify("plant/l1/p7/state", payload, NOW)
    assert message == Status(
        "plant-l1-p7", status, Origin("plant", (("device", "p7"), ("line", "l1")))
    )


def test_unknown_status_words_and_unmatched_topics_are_dead_lettered(ingress: Ingress) -> None:
    """Test that a status word the route does not know, and a topic no route has, are refused."""
    (bad,) = ingress.classify("plant/l1/p7/state", b'{"up": "maybe"}', NOW)
    assert isinstance(bad, Rejected)
    assert bad.reason == "bad_status"
    (stray,) = ingress.classify("elsewhere/x", b"1", NOW)
    assert isinstance(stray, Rejected)
    assert stray.reason == "bad_topic"


def test_value_payloads_take_their_name_from_the_topic(ingress: Ingress) -> None:
    """Test `payload: value`: plain-text numbers and words, named by a topic segment."""
    (flow,) = ingress.classify("plant/l1/p7/flow/raw", b" 12.5 ", NOW)
    assert isinstance(flow, Telemetry)
    assert flow.samples[0].metrics == {"flow": 12.5}
    assert flow.notes is not None
    assert flow.notes.units == {"flow": "l/min"}
    (mode,) = ingress.classify("plant/l1/p7/mode/raw", b"eco", NOW)
    assert isinstance(mode, Telemetry)
    assert mode.samples[0].attributes == {"mode": "eco"}


def test_meta_ignore_and_split_routes(ingress: Ingress) -> None:
    """Test a meta route, an ignored topic, one payload for several devices, a connect message."""
    (meta,) = ingress.classify("plant/l1/p7/info", b'{"model": "pump-x", "site": "north"}', NOW)
    assert isinstance(meta, Meta)
    assert meta.meta == {"model": "pump-x", "site": "north"}
    assert ingress.classify("plant/system/log", b"anything", NOW) == [Ignored("plant/system/#")]
    payload = b'{"Pump A": [{"ts": 1699999999000, "values": {"t": 1}}], "Pump B": {"t": 2}}'
    first, second = ingress.classify("hub/data", payload, NOW)
    assert isinstance(first, Telemetry)
    assert isinstance(second, Telemetry)
    assert (first.device, first.samples[0].ts_ms, first.samples[0].metrics) == (
        "hub-Pump_A",
        1_699_999_999_000,
        {"t": 1.0},
    )
    assert (second.device, second.samples[0].metrics) == ("hub-Pump_B", {"t": 2.0})
    (connect,) = ingress.classify("hub/connect", b'{"device": "Pump A"}', NOW)
    assert isinstance(connect, Status)
    assert (connect.device, connect.status) == ("hub-Pump_A", "online")


def test_filters_cover_every_route_but_the_ignored(ingress: Ingress) -> None:
    """Test the subscriptions: native topics, then one filter per route, telemetry shared."""
    filters = ingress.filters("grp")
    assert "$share/grp/plant/+/+/data" in filters
    assert "plant/+/+/state" in filters
    assert not any("system" in f for f in filters)
    assert filters[0] == "$share/grp/devices/+/telemetry"


def test_a_route_that_finds_nothing_usable_is_rejected_whole(ingress: Ingress) -> None:
    """Test that a message whose every field is filtered out is a dead letter with the reason."""
    (message,) = ingress.classify("plant/l1/p7/data", b'{"readings": {"other": 1}}', NOW)
    assert isinstance(message, Rejected)
    assert message.reason == "nothing_usable"
    assert "other (filtered)" in message.detail


def test_topic_templates() -> None:
    """Test matching, filters and the template errors."""
    template = TopicTemplate.parse("tele/{device}/SENSOR")
    assert template.match("tele/kitchen/SENSOR") == {"device": "kitchen"}
    assert template.match("tele/kitchen/STATE") is None
    assert template.match("tele//SENSOR") is None
    assert template.match("tele/a/b/SENSOR") is None
    assert TopicTemplate.parse("a/#").match("a/b/c") == {}
    for bad in ["a/+/b", "a/#/b", "a/{x}-y", "$SYS/x", "", "a/{x}/{x}"]:
        with pytest.raises(TemplateError):
            TopicTemplate.parse(bad)


def test_pointers_and_device_ids() -> None:
    """Test JSON pointers (RFC 6901 escapes, list indices) and device id cleaning."""
    doc = {"a": {"b/c": [1, {"d~e": 2}]}}
    assert pointer(doc, "/a/b~1c/1/d~0e") == 2
    assert pointer(doc, "/a/x") is None
    assert pointer(doc, "/a/b~1c/9") is None
    assert device_id("Living room/lamp") == "Living_room_lamp"
    assert device_id("ok-id.1:2") == "ok-id.1:2"


def test_command_templates_keep_types_and_refuse_unknown_methods() -> None:
    """Test rendering: whole-placeholder values keep their type; unlisted methods are refused."""
    origin = Origin("t", (("device", "plug 1"),))
    text = CommandTemplate(TopicTemplate.parse("cmnd/{device}/POWER"), "{params.state}")
    assert render_command(text, origin, "t-plug_1", "c9", "power", {"state": "OFF"}) == (
        "cmnd/plug 1/POWER",
        b"OFF",
    )
    rpc = CommandTemplate(
        TopicTemplate.parse("{device}/rpc"),
        None,
        {
            "switch_off": (
                None,
                {"id": "{command_id}", "method": "Switch.Set", "params": {"id": 0, "on": False}},
            ),
            "set_level": (None, {"level": "{params.level}", "note": "to {params.level}%"}),
        },
    )
    topic, body = render_command(rpc, origin, "d", "c1", "set_level", {"level": 40})
    assert (topic, json.loads(body)) == ("plug 1/rpc", {"level": 40, "note": "to 40%"})
    with pytest.raises(TemplateError, match="has no command 'reboot'"):
        render_command(rpc, origin, "d", "c1", "reboot", {})


def _file(*route: str, commands: str = "", name: str = "x") -> str:
    lines = ["mappings:", f"  - name: {name}", "    routes:", "      - " + route[0]]
    lines += [f"        {line}" for line in route[1:]]
    return "\n".join(lines) + "\n" + commands


BROKEN = [
    (_file("topic: a/{device}", name="X"), "2:11", "lower case"),
    (_file("topic: a/+/b"), "4:16", "named segment"),
    (_file("topic: a/b", "device: '{nope}'"), "5:17", "{nope} is not a segment"),
    (_file("topic: a/b", "kind: weird"), "5:15", "'telemetry', 'status'"),
    (_file("topic: a/{d}", "device: '{d}'", "values: x"), "6:17", "(e.g. /x)"),
    (
        _file(
            "topic: a/{d}", "device: '{d}'", commands="    commands: {topic: b/x, payload: '{s}'}\n"
        ),
        "6:15",
        "unknown placeholder {s}",
    ),
    ("mappings:\n  - name: x\n    routes: []\n", "3:13", "at least 1"),
    (_file("topic: a/b", "colour: red"), "5:9", "unknown key"),
]


@pytest.mark.parametrize(("text", "where", "message"), BROKEN)
def test_broken_mapping_files_say_where_and_what(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    """Test that every kind of mistake is reported with file:line:col and a reason."""
    path = tmp_path / "m.yaml"
    path.write_text(text)
    found, problems = read_mapping_file(path)
    assert found == []
    assert problems, text
    rendered = "\n".join(str(p) for p in problems)
    assert f"{path}:{where}" in rendered
    assert message in rendered


def test_names_are_unique_across_files_and_presets(tmp_path: Path) -> None:
    """Test that a mapping named like an enabled preset is a problem, not a silent override."""
    path = tmp_path / "z.yaml"
    path.write_text(_file("topic: z/{device}", name="zigbee2mqtt"))
    _, problems = load_mappings([path], ["zigbee2mqtt"])
    assert any("duplicate mapping name 'zigbee2mqtt'" in p.message for p in problems)
    _, unknown = load_mappings([], ["zigbee3mqtt"])
    assert "unknown preset 'zigbee3mqtt'" in unknown[0].message


def test_mappings_test_command_prints_what_a_payload_becomes(tmp_path: Path) -> None:
    """Test `frontline mappings test`: a preset by name, a payload, its decoded form."""
    runner = CliRunner()
    payload = '{"temperature": 21.5, "linkquality": 120, "update": {"state": "idle"}, "x": null}'
    result = runner.invoke(
        mappings_cli, ["test", "zigbee2mqtt", payload, "--topic", "zigbee2mqtt/Hall sensor"]
    )
    assert result.exit_code == 0, result.output
    assert "telemetry from z2m-Hall_sensor" in result.output
    assert "temperature = 21.5 degC" in result.output
    assert "link_quality = 120.0   (sent as 'linkquality')" in result.output
    assert "dropped 'x': null" in result.output
    rejected = runner.invoke(
        mappings_cli, ["test", "zigbee2mqtt", "not json", "--topic", "zigbee2mqtt/Hall"]
    )
    assert rejected.exit_code == 1
    assert "rejected: not_json" in rejected.output


def test_reply_routes_say_which_command_and_how_it_went(tmp_path: Path) -> None:
    """Test `kind: reply`: the command id, ok/error by pointer, a reply without an id."""
    path = tmp_path / "r.yaml"
    path.write_text(
        _file(
            "topic: r/{device}/result",
            "kind: reply",
            "reply: {id: /id, ok: {pointer: /data/success, values: [true]}, error: /error}",
        )
    )
    found, problems = MappingFileSet([path]).load()
    assert problems == []
    ingress = Ingress(mappings=found)
    cases = [
        (b'{"id": "c1", "data": {"success": true}}', "c1", "ok", ""),
        (b'{"id": 7, "data": {"success": false}}', "7", "error", ""),
        (b'{"id": "c2", "error": {"code": 404}}', "c2", "error", "{'code': 404}"),
        (b'{"data": {"success": true}}', "", "ok", ""),
    ]
    for payload, command, status, message in cases:
        (reply,) = ingress.classify("r/d1/result", payload, NOW)
        assert isinstance(reply, Reply)
        assert (reply.device, reply.command_id) == ("d1", command)
        assert json.loads(reply.payload) == {"status": status, "message": message}


def test_naive_times_in_a_zone_unit_globs_and_dropped_names_with_their_prefix(
    tmp_path: Path,
) -> None:
    """Test `timestamp.timezone`, a glob in `units`, and the prefix on dropped field names."""
    path = tmp_path / "z.yaml"
    path.write_text(
        _file(
            "topic: z/{device}/{part}",
            "timestamp: {pointer: /Time, format: iso8601, timezone: Europe/Paris}",
            "prefix: '{part}'",
            "drop: [debug]",
            'units: {"*.power": W, "*_energy": kWh}',
        )
    )
    found, problems = MappingFileSet([path]).load()
    assert problems == []
    payload = b'{"Time": "2023-11-14T23:13:20", "a": {"power": 5}, "b_energy": 2, "debug": 1}'
    (message,) = Ingress(mappings=found).classify("z/d1/meter", payload, NOW)
    assert isinstance(message, Telemetry)
    assert message.samples[0].ts_ms == NOW  # 23:13:20 in Paris (UTC+1) is 22:13:20 UTC
    assert message.notes is not None
    assert message.notes.units == {"meter_a_power": "W", "meter_b_energy": "kWh"}
    assert message.notes.dropped == [("meter.debug", "filtered")]
    path.write_text(_file("topic: z/{device}", "timestamp: {timezone: Mars/Olympus}"))
    _, problems = MappingFileSet([path]).load()
    assert "unknown time zone 'Mars/Olympus'" in problems[0].message


def test_a_later_message_keeps_the_segments_of_an_earlier_one() -> None:
    """Test the twin's origin: a connect (no segments) keeps what telemetry said."""
    from daemon.core.twin import Twins

    twins = Twins()
    first = Status("tb-A", "online", Origin("tb", (("key", "A"),)))
    twins.apply(first, NOW)
    twins.apply(Status("tb-A", "offline", Origin("tb", (("x", "1"),))), NOW + 1)
    twin = twins.get("tb-A")
    assert twin is not None
    assert twin.origin == Origin("tb", (("key", "A"), ("x", "1")))
    twins.apply(Status("tb-A", "online", Origin("other", ())), NOW + 2)
    assert twin.origin == Origin("other", ())
