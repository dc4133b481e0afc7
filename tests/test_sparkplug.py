"""Sparkplug B decoder: births, aliases, data, deaths, sequence checks and rebirth requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core import sparkplug_b_pb2 as pb
from daemon.core.messages import Message, Origin, Rejected, Status, Telemetry
from daemon.core.payloads import Limits
from daemon.core.sparkplug import REBIRTH_INTERVAL_MS, SparkplugDecoder
from simulators.sparkplug_node import metric, payload

NOW = 1_700_000_000_000
GROUP, NODE = "plant-1", "edge-1"
NODE_ID, PUMP_ID = "plant-1.edge-1", "plant-1.edge-1.pump-1"


def topic(kind: str, device: str | None = None, group: str = GROUP, node: str = NODE) -> str:
    return f"spBv1.0/{group}/{kind}/{node}" + (f"/{device}" if device else "")


def nbirth(bdseq: int = 0, seq: int = 0, *extra: pb.Payload.Metric) -> bytes:
    return payload(
        [
            metric("bdSeq", pb.UInt64, bdseq, 1),
            metric("Node Control/Rebirth", pb.Boolean, False, 2),
            metric("Properties/Firmware", pb.String, "2.4.1", 3),
            metric("Uptime", pb.Int64, 12, 4),
            *extra,
        ],
        NOW,
        seq,
    )


def dbirth(seq: int = 1) -> bytes:
    return payload(
        [
            metric("Inputs/Temperature", pb.Float, 21.3, 10),
            metric("Inputs/Pressure", pb.Double, 1.25, 11),
            metric("Outputs/Running", pb.Boolean, True, 12),
            metric("Counters/Delta", pb.Int16, -5, 13),
            metric("Status/Mode", pb.String, "auto", 14),
        ],
        NOW,
        seq,
    )


def ndeath(bdseq: int) -> bytes:
    return payload([metric("bdSeq", pb.UInt64, bdseq)], NOW)


def born(decoder: SparkplugDecoder | None = None, bdseq: int = 0) -> SparkplugDecoder:
    """A decoder that has seen the node's NBIRTH (seq 0) and pump-1's DBIRTH (seq 1)."""
    decoder = decoder or SparkplugDecoder()
    decoder.decode(topic("NBIRTH"), nbirth(bdseq), NOW)
    decoder.decode(topic("DBIRTH", "pump-1"), dbirth(), NOW)
    return decoder


def only(messages: list[Message], kind: type) -> list:  # type: ignore[type-arg]
    return [m for m in messages if isinstance(m, kind)]


def statuses(messages: list[Message]) -> list[tuple[str, str | None]]:
    return [(m.device, m.status) for m in only(messages, Status)]


def ddata(seq: int, *metrics: pb.Payload.Metric, ts: int = NOW) -> bytes:
    return payload(list(metrics), ts, seq)


def test_node_birth_is_online_with_its_metrics_but_not_the_protocol_ones() -> None:
    """Test that NBIRTH marks the node online and stores its metrics, not bdSeq or Node Control."""
    decoder = SparkplugDecoder()
    out = decoder.decode(topic("NBIRTH"), nbirth(bdseq=4), NOW + 5)
    assert statuses(out) == [(NODE_ID, "online")]
    [telemetry] = only(out, Telemetry)
    assert telemetry.device == NODE_ID
    [sample] = telemetry.samples
    assert sample.ts_ms == NOW
    assert sample.metrics == {"uptime": 12.0}
    assert sample.attributes == {"properties_firmware": "2.4.1"}
    assert telemetry.origin == Origin("sparkplug", (("group", GROUP), ("node", NODE)))
    assert decoder.counters == dict.fromkeys(decoder.counters, 0)


def test_device_birth_canonical_names_types_and_renames() -> None:
    """Test that DBIRTH marks the device online; names become canonical and renames are noted."""
    decoder = SparkplugDecoder()
    decoder.decode(topic("NBIRTH"), nbirth(), NOW)
    out = decoder.decode(topic("DBIRTH", "pump-1"), dbirth(), NOW)
    assert statuses(out) == [(PUMP_ID, "online")]
    [telemetry] = only(out, Telemetry)
    [sample] = telemetry.samples
    # a float32 21.3 is stored as 21.3, not 21.299999237060547; Int16 -5 keeps its sign
    assert sample.metrics == {
        "inputs_temperature": 21.3,
        "inputs_pressure": 1.25,
        "outputs_running": 1.0,
        "counters_delta": -5.0,
    }
    assert sample.attributes == {"status_mode": "auto"}
    assert telemetry.notes is not None
    assert telemetry.notes.renamed["inputs_temperature"] == "Inputs/Temperature"
    assert telemetry.notes.dropped == []
    assert telemetry.origin is not None
    assert telemetry.origin.segment("device") == "pump-1"


def test_data_by_alias_uses_the_birth_names() -> None:
    """Test that DDATA metrics that carry only an alias get their names from the DBIRTH."""
    decoder = born()
    out = decoder.decode(
        topic("DDATA", "pump-1"),
        ddata(2, metric(None, pb.Float, 22.5, 10), metric(None, pb.Boolean, False, 12)),
        NOW,
    )
    [telemetry] = out
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"inputs_temperature": 22.5, "outputs_running": 0.0}
    assert decoder.counters["unknown_alias"] == 0
    assert decoder.take_requests() == []


def test_node_data_by_alias() -> None:
    """Test that NDATA is the node's own telemetry, by alias."""
    decoder = born()
    [telemetry] = decoder.decode(topic("NDATA"), ddata(2, metric(None, pb.Int64, 99, 4)), NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.device == NODE_ID
    assert telemetry.samples[0].metrics == {"uptime": 99.0}


def test_metrics_with_different_timestamps_become_separate_samples() -> None:
    """Test that one payload's metrics are grouped into one sample per timestamp."""
    decoder = born()
    body = ddata(
        2,
        metric(None, pb.Float, 20.0, 10, ts_ms=NOW - 2000),
        metric(None, pb.Double, 1.0, 11, ts_ms=NOW - 2000),
        metric(None, pb.Float, 21.0, 10, ts_ms=NOW - 1000),
        metric(None, pb.Double, 1.5, 11),  # no timestamp of its own: the payload's
    )
    [telemetry] = decoder.decode(topic("DDATA", "pump-1"), body, NOW + 50)
    assert isinstance(telemetry, Telemetry)
    assert [(s.ts_ms, s.metrics) for s in telemetry.samples] == [
        (NOW - 2000, {"inputs_temperature": 20.0, "inputs_pressure": 1.0}),
        (NOW - 1000, {"inputs_temperature": 21.0}),
        (NOW, {"inputs_pressure": 1.5}),
    ]


def test_a_payload_without_timestamp_is_stamped_on_receipt() -> None:
    """Test that metrics with no timestamp at all take the receive time."""
    decoder = born()
    body = pb.Payload(seq=2, metrics=[metric(None, pb.Float, 20.0, 10)]).SerializeToString()
    [telemetry] = decoder.decode(topic("DDATA", "pump-1"), body, NOW + 777)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].ts_ms == NOW + 777


def test_seq_gap_is_counted_and_asks_for_a_rebirth() -> None:
    """Test that a skipped seq is counted and queues one NCMD Node Control/Rebirth = true."""
    decoder = born()
    decoder.decode(topic("DDATA", "pump-1"), ddata(2, metric(None, pb.Float, 1.0, 10)), NOW)
    out = decoder.decode(topic("DDATA", "pump-1"), ddata(5, metric(None, pb.Float, 2.0, 10)), NOW)
    assert only(out, Telemetry)[0].samples[0].metrics == {"inputs_temperature": 2.0}  # kept
    assert decoder.counters["seq_gap"] == 1
    [(request_topic, body)] = decoder.take_requests()
    assert request_topic == f"spBv1.0/{GROUP}/NCMD/{NODE}"
    command = pb.Payload.FromString(body)
    assert command.timestamp == NOW
    assert not command.HasField("seq")
    [rebirth] = command.metrics
    assert (rebirth.name, rebirth.datatype, rebirth.boolean_value) == (
        "Node Control/Rebirth",
        pb.Boolean,
        True,
    )
    assert decoder.counters["rebirth_requested"] == 1
    assert decoder.take_requests() == []  # taken once


def test_seq_wraps_and_a_redelivery_is_not_a_gap() -> None:
    """Test that 255 -> 0 is in order and a repeated seq (a redelivery) is no gap."""
    decoder = SparkplugDecoder()
    decoder.decode(topic("NBIRTH"), nbirth(seq=254), NOW)
    for seq in (255, 255, 0, 1):
        decoder.decode(topic("NDATA"), ddata(seq, metric(None, pb.Int64, seq, 4)), NOW)
    assert decoder.counters["seq_gap"] == 0
    assert decoder.take_requests() == []


def test_unknown_alias_is_dropped_and_asks_for_a_rebirth_at_most_every_interval() -> None:
    """Test that an alias no birth declared is dropped (unknown_alias) and rate-limits requests."""
    decoder = born()
    out = decoder.decode(
        topic("DDATA", "pump-1"),
        ddata(2, metric(None, pb.Float, 1.0, 10), metric(None, pb.Float, 9.0, 77)),
        NOW,
    )
    [telemetry] = out
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"inputs_temperature": 1.0}
    assert telemetry.notes is not None
    assert telemetry.notes.dropped == [("alias 77", "unknown_alias")]
    assert len(decoder.take_requests()) == 1
    for seq, received in ((3, NOW + 1000), (4, NOW + REBIRTH_INTERVAL_MS - 1)):
        body = ddata(seq, metric(None, pb.Float, 9.0, 77), metric(None, pb.Float, 1.0, 10))
        decoder.decode(topic("DDATA", "pump-1"), body, received)
    assert decoder.take_requests() == []  # within the interval: not again
    decoder.decode(
        topic("DDATA", "pump-1"), ddata(5, metric(None, pb.Float, 9.0, 77)), NOW + 10_000
    )
    assert len(decoder.take_requests()) == 1
    assert decoder.counters["unknown_alias"] == 4
    assert decoder.counters["rebirth_requested"] == 2


def test_data_from_a_node_never_born_is_decoded_by_name_and_asks_for_a_rebirth() -> None:
    """Test that after a restart (no birth seen) named metrics are kept, aliases dropped."""
    decoder = SparkplugDecoder()
    named = ddata(40, metric("Inputs/Temperature", pb.Float, 19.5))
    [telemetry] = decoder.decode(topic("DDATA", "pump-1"), named, NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"inputs_temperature": 19.5}
    assert decoder.counters["data_before_birth"] == 1
    assert len(decoder.take_requests()) == 1
    [rejected] = decoder.decode(
        topic("DDATA", "pump-1"), ddata(41, metric(None, pb.Float, 1.0, 10)), NOW
    )
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "nothing_usable"
    assert "alias 10 (unknown_alias)" in rejected.detail
    assert rejected.device == PUMP_ID
    assert decoder.counters["data_before_birth"] == 2


def test_node_death_takes_the_node_and_its_devices_offline() -> None:
    """Test that an NDEATH with the birth's bdSeq marks the node and every online device offline."""
    decoder = born(bdseq=3)
    decoder.decode(topic("DBIRTH", "pump-2"), dbirth(seq=2), NOW)
    out = decoder.decode(topic("NDEATH"), ndeath(3), NOW)
    assert statuses(out) == [
        (NODE_ID, "offline"),
        (PUMP_ID, "offline"),
        ("plant-1.edge-1.pump-2", "offline"),
    ]
    assert decoder.counters["bdseq_mismatch"] == 0


def test_a_stale_death_is_ignored() -> None:
    """Test that an NDEATH of an older session (other bdSeq) is counted and changes nothing."""
    decoder = born(bdseq=5)
    assert decoder.decode(topic("NDEATH"), ndeath(4), NOW) == []
    assert decoder.counters["bdseq_mismatch"] == 1
    body = ddata(2, metric(None, pb.Float, 1.0, 10))
    assert only(decoder.decode(topic("DDATA", "pump-1"), body, NOW), Telemetry)  # still born


def test_rebirth_after_death_with_the_next_bdseq() -> None:
    """Test the cycle death -> NBIRTH(bdSeq+1) -> DBIRTH, and a late old will after it."""
    decoder = born(bdseq=0)
    decoder.decode(topic("NDEATH"), ndeath(0), NOW)
    out = decoder.decode(topic("NBIRTH"), nbirth(bdseq=1), NOW)
    assert statuses(out) == [(NODE_ID, "online")]
    out = decoder.decode(topic("DBIRTH", "pump-1"), dbirth(), NOW)
    assert statuses(out) == [(PUMP_ID, "online")]
    assert decoder.decode(topic("NDEATH"), ndeath(0), NOW) == []
    assert decoder.counters["bdseq_mismatch"] == 1


def test_a_new_node_birth_voids_the_device_aliases_until_their_births() -> None:
    """Test that after an NBIRTH a device's old aliases no longer decode (its DBIRTH must come)."""
    decoder = born()
    decoder.decode(topic("NBIRTH"), nbirth(), NOW)
    out = decoder.decode(topic("DDATA", "pump-1"), ddata(1, metric(None, pb.Float, 1.0, 10)), NOW)
    assert only(out, Rejected)[0].reason == "nothing_usable"
    assert decoder.counters["data_before_birth"] == 1


def test_device_death_and_its_data_after() -> None:
    """Test that DDEATH marks the device offline and its data before the next DBIRTH is counted."""
    decoder = born()
    out = decoder.decode(topic("DDEATH", "pump-1"), payload([], NOW, 2), NOW)
    assert statuses(out) == [(PUMP_ID, "offline")]
    named = ddata(3, metric("Inputs/Pressure", pb.Double, 2.0))
    assert only(decoder.decode(topic("DDATA", "pump-1"), named, NOW), Telemetry)
    assert decoder.counters["data_before_birth"] == 1
    # NDEATH afterwards: the device is already offline, only the node goes
    assert statuses(decoder.decode(topic("NDEATH"), ndeath(0), NOW)) == [(NODE_ID, "offline")]


def test_values_that_are_not_metrics_are_dropped_with_their_reason() -> None:
    """Test null, bytes, DataSet and Template metrics, and arrays under both array policies."""
    dataset = pb.Payload.Metric(name="Table", datatype=pb.DataSet)
    dataset.dataset_value.num_of_columns = 1
    template = pb.Payload.Metric(name="Motor", datatype=pb.Template)
    template.template_value.version = "1"
    packed = pb.Payload.Metric(name="Curve", datatype=pb.Int16Array)
    packed.bytes_value = b"\x01\x00\xff\xff"  # [1, -1]
    body = payload(
        [
            metric("Level", pb.Double, 3.5),
            metric("Missing", pb.Double, None),
            pb.Payload.Metric(name="Blob", datatype=pb.Bytes, bytes_value=b"\x00\x01"),
            dataset,
            template,
            packed,
        ],
        NOW,
        1,
    )
    [_, telemetry] = SparkplugDecoder().decode(topic("DBIRTH", "tank"), body, NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"level": 3.5}
    assert telemetry.notes is not None
    assert sorted(telemetry.notes.dropped) == [
        ("Blob", "not_scalar"),
        ("Curve", "array"),
        ("Missing", "null"),
        ("Motor", "not_scalar"),
        ("Table", "not_scalar"),
    ]
    indexed = SparkplugDecoder(Limits(arrays="index"))
    [_, telemetry] = indexed.decode(topic("DBIRTH", "tank"), body, NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"level": 3.5, "curve_0": 1.0, "curve_1": -1.0}


@pytest.mark.parametrize(
    ("datatype", "field", "raw", "expected"),
    [
        pytest.param(pb.Int8, "int_value", 0xFB, -5.0, id="int8-8bit"),
        pytest.param(pb.Int8, "int_value", 0xFFFF_FFFB, -5.0, id="int8-32bit"),
        pytest.param(pb.Int32, "int_value", 0x8000_0000, -(2.0**31), id="int32-min"),
        pytest.param(pb.UInt32, "int_value", 0xFFFF_FFFF, 4294967295.0, id="uint32"),
        pytest.param(pb.Int64, "long_value", 2**64 - 2, -2.0, id="int64"),
        pytest.param(pb.DateTime, "long_value", NOW, float(NOW), id="datetime"),
    ],
)
def test_integer_types_are_read_with_their_sign(
    datatype: int, field: str, raw: int, expected: float
) -> None:
    """Test that signed types are two's complement at their width, unsigned ones are not."""
    value = pb.Payload.Metric(name="v", datatype=datatype, **{field: raw})
    [_, telemetry] = SparkplugDecoder().decode(topic("DBIRTH", "d"), payload([value], NOW, 1), NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"v": expected}


def test_data_without_datatype_takes_the_birth_datatype() -> None:
    """Test that DATA may leave out the datatype: the sign comes from the birth's type."""
    decoder = born()
    value = pb.Payload.Metric(alias=13, int_value=0xFFFF_FFF0)  # Counters/Delta: Int16
    [telemetry] = decoder.decode(topic("DDATA", "pump-1"), ddata(2, value), NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"counters_delta": -16.0}


def test_a_bad_metric_timestamp_drops_that_metric_only() -> None:
    """Test that a metric stamped in seconds (or far ahead) is dropped as bad_ts, the rest kept."""
    decoder = born()
    body = ddata(
        2,
        metric(None, pb.Float, 1.0, 10, ts_ms=NOW // 1000),
        metric(None, pb.Double, 2.0, 11),
    )
    [telemetry] = decoder.decode(topic("DDATA", "pump-1"), body, NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"inputs_pressure": 2.0}
    assert telemetry.notes is not None
    assert telemetry.notes.dropped == [("Inputs/Temperature", "bad_ts")]


def test_malformed_and_oversized_payloads_are_rejected() -> None:
    """Test that bytes that are not a Sparkplug payload are dead-lettered as bad_sparkplug."""
    decoder = SparkplugDecoder(Limits(max_payload_bytes=1000))
    [rejected] = decoder.decode(topic("NDATA"), b"\x12\x05ab", NOW)  # metrics cut short
    assert isinstance(rejected, Rejected)
    assert (rejected.reason, rejected.device, rejected.payload) == (
        "bad_sparkplug",
        NODE_ID,
        b"\x12\x05ab",
    )
    assert rejected.detail.startswith("not a Sparkplug B payload")
    [rejected] = decoder.decode(topic("NDATA"), b"\x00" * 1001, NOW)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "too_large"


@pytest.mark.parametrize(
    "name",
    [
        "spBv1.0/STATE/scada-host",
        "STATE/scada-host",
        "spBv1.0/plant-1/NCMD/edge-1",
        "spBv1.0/plant-1/DCMD/edge-1/pump-1",
    ],
)
def test_state_and_commands_are_ignored(name: str) -> None:
    """Test that host STATE messages and commands (ours included) produce nothing."""
    decoder = SparkplugDecoder()
    assert decoder.decode(name, b"ONLINE", NOW) == []
    assert decoder.decode(name, payload([metric("Node Control/Rebirth", 11, True)]), NOW) == []


@pytest.mark.parametrize(
    "name",
    [
        "spBv1.0/plant-1/NDATA/edge-1/extra",
        "spBv1.0/plant-1/DDATA/edge-1",
        "spBv1.0/plant-1/BOGUS/edge-1",
        "spBv1.0/plant-1/NDATA",
        "spBv1.0//NDATA/edge-1",
        "spAv1.0/plant-1/NDATA/edge-1",
    ],
)
def test_topics_outside_the_namespace_layout_are_rejected(name: str) -> None:
    """Test that a topic that is not `spBv1.0/group/TYPE/node[/device]` is dead-lettered."""
    [rejected] = SparkplugDecoder().decode(name, nbirth(), NOW)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "bad_topic"


def test_ids_outside_the_device_id_charset_are_sanitised() -> None:
    """Test that group, node and device become one device id, other characters `_`."""
    decoder = SparkplugDecoder()
    out = decoder.decode(topic("NBIRTH", group="Plant A", node="edge@1"), nbirth(), NOW)
    assert statuses(out) == [("Plant_A.edge_1", "online")]
    out = decoder.decode(topic("DBIRTH", "Pump é 1", group="Plant A", node="edge@1"), dbirth(), NOW)
    [status] = only(out, Status)
    assert status.device == "Plant_A.edge_1.Pump_1"
    assert status.origin == Origin(
        "sparkplug", (("group", "Plant A"), ("node", "edge@1"), ("device", "Pump é 1"))
    )
    # the rebirth request goes to the node's own topic, not the sanitised id
    decoder.decode(
        topic("DDATA", "Pump é 1", group="Plant A", node="edge@1"),
        ddata(9, metric(None, pb.Float, 1.0, 10)),
        NOW,
    )
    [(request_topic, _)] = decoder.take_requests()
    assert request_topic == "spBv1.0/Plant A/NCMD/edge@1"


def test_a_birth_over_the_value_cap_keeps_its_aliases() -> None:
    """Test that a birth rejected as too_many_values still declares its aliases for DATA."""
    decoder = SparkplugDecoder(Limits(max_values=2))
    decoder.decode(topic("NBIRTH"), nbirth(), NOW)
    out = decoder.decode(topic("DBIRTH", "pump-1"), dbirth(), NOW)
    assert statuses(out) == [(PUMP_ID, "online")]
    assert only(out, Rejected)[0].reason == "too_many_values"
    [telemetry] = decoder.decode(
        topic("DDATA", "pump-1"), ddata(2, metric(None, pb.Float, 5.0, 10)), NOW
    )
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"inputs_temperature": 5.0}


def test_empty_births_and_data() -> None:
    """Test that a birth without metrics is only a status; empty DATA is rejected as empty."""
    decoder = SparkplugDecoder()
    assert statuses(decoder.decode(topic("NBIRTH"), payload([], NOW, 0), NOW)) == [
        (NODE_ID, "online")
    ]
    assert decoder.decode(topic("DBIRTH", "pump-1"), payload([], NOW, 1), NOW) == [
        Status(
            PUMP_ID,
            "online",
            Origin("sparkplug", (("group", GROUP), ("node", NODE), ("device", "pump-1"))),
        )
    ]
    [rejected] = decoder.decode(topic("DDATA", "pump-1"), payload([], NOW, 2), NOW)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "empty"


def test_a_birth_metric_without_a_name_is_dropped() -> None:
    """Test that a birth metric with only an alias is dropped as bad_name, without a rebirth."""
    decoder = SparkplugDecoder()
    body = payload([metric("Level", pb.Double, 1.0, 1), metric(None, pb.Double, 2.0, 2)], NOW, 0)
    [_, telemetry] = decoder.decode(topic("NBIRTH"), body, NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].metrics == {"level": 1.0}
    assert telemetry.notes is not None
    assert telemetry.notes.dropped == [("(no name)", "bad_name")]
    assert decoder.take_requests() == []


def test_a_name_that_is_not_utf8_is_stored_with_replacement_characters() -> None:
    """Test that invalid UTF-8 in a metric name or string value (protobuf hands over bytes) is
    read with U+FFFD, not a crash."""
    value = b"\x0a\x02A\xff" + b"\x20\x0c" + b"\x7a\x02\xfe!"  # name "A\xff", String "\xfe!"
    body = pb.Payload(timestamp=NOW, seq=0).SerializeToString() + b"\x12" + bytes([len(value)])
    [_, telemetry] = SparkplugDecoder().decode(topic("NBIRTH"), body + value, NOW)
    assert isinstance(telemetry, Telemetry)
    assert telemetry.samples[0].attributes == {"a": "\ufffd!"}
    assert telemetry.notes is not None
    assert telemetry.notes.renamed == {"a": "A\ufffd"}


SESSION = [
    (topic("NBIRTH"), nbirth()),
    (topic("DBIRTH", "pump-1"), dbirth()),
    (topic("DDATA", "pump-1"), ddata(2, metric(None, pb.Float, 1.0, 10))),
    (topic("NDEATH"), ndeath(0)),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=80), st.integers(0, 400))))
def test_corrupted_sessions_never_raise(edits: list[tuple[int, bytes, int]]) -> None:
    """Test that any bytes, or valid messages with bytes spliced in, give messages, never an
    exception (the decoder runs on the MQTT network thread)."""
    decoder = SparkplugDecoder()
    for index, noise, at in edits:
        name, body = SESSION[index]
        corrupted = body[:at] + noise + body[at + len(noise) :]
        for message in decoder.decode(name, corrupted, NOW) + decoder.decode(name, noise, NOW):
            assert isinstance(message, Telemetry | Status | Rejected)
    assert all(value >= 0 for value in decoder.counters.values())
