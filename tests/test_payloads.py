"""Table-driven tests of device payload parsing: accepted shapes and every rejection reason."""

from __future__ import annotations

import orjson
import pytest

from daemon.core.payloads import (
    CANONICAL,
    MIN_TS_MS,
    FieldNotes,
    Limits,
    Sample,
    canonical_name,
    parse_meta,
    parse_status,
    parse_telemetry,
    parse_telemetry_fields,
    parse_timestamp,
    sample_from_values,
)
from daemon.errors import PayloadRejected

RECEIVED = 1_700_000_000_000  # 2023-11-14T22:13:20Z
TS = 1_699_999_999_000
DAY_MS = 24 * 3600 * 1000


ACCEPTED = [
    pytest.param(b'{"temp": 21.5}', [Sample(RECEIVED, {"temp": 21.5})], id="flat"),
    pytest.param(
        b'{"ts": 1699999999000, "values": {"temp": 21.5}}',
        [Sample(TS, {"temp": 21.5})],
        id="ts-values",
    ),
    pytest.param(b'{"values": {"temp": 1}}', [Sample(RECEIVED, {"temp": 1.0})], id="values-no-ts"),
    pytest.param(b'{"ts": 1699999999000, "temp": 2}', [Sample(TS, {"temp": 2.0})], id="flat-ts"),
    pytest.param(
        b'[{"temp": 1}, {"ts": 1699999999000, "values": {"temp": 2}}]',
        [Sample(RECEIVED, {"temp": 1.0}), Sample(TS, {"temp": 2.0})],
        id="batch-mixed-shapes",
    ),
    pytest.param(
        b'{"on": true, "off": false}',
        [Sample(RECEIVED, {"on": 1.0, "off": 0.0})],
        id="booleans",
    ),
    pytest.param(
        b'{"n": -3, "z": 0, "big": 12345678901, "e": 1.5e-7}',
        [Sample(RECEIVED, {"n": -3.0, "z": 0.0, "big": 12345678901.0, "e": 1.5e-7})],
        id="numbers",
    ),
    pytest.param(
        b'{"temp": 20, "mode": "eco", "blank": ""}',
        [Sample(RECEIVED, {"temp": 20.0}, {"mode": "eco", "blank": ""})],
        id="short-strings-are-attributes",
    ),
    pytest.param(
        ('{"mode": "' + "x" * 128 + '"}').encode(),
        [Sample(RECEIVED, {}, {"mode": "x" * 128})],
        id="string-at-limit",
    ),
    pytest.param(
        '{"mode": "Ökö 🔥"}'.encode(),
        [Sample(RECEIVED, {}, {"mode": "Ökö 🔥"})],
        id="unicode-string",
    ),
    pytest.param(
        ('{"' + "a" * 64 + '": 1}').encode(),
        [Sample(RECEIVED, {"a" * 64: 1.0})],
        id="name-at-limit",
    ),
    pytest.param(
        b'{"_x9": 1, "T_2": 2}', [Sample(RECEIVED, {"_x9": 1.0, "t_2": 2.0})], id="identifier-names"
    ),
    pytest.param(
        b'[{"a": 1}, {}]', [Sample(RECEIVED, {"a": 1.0})], id="empty-item-in-batch-is-skipped"
    ),
]


@pytest.mark.parametrize(("payload", "expected"), ACCEPTED)
def test_accepted_payloads(payload: bytes, expected: list[Sample]) -> None:
    """Test that each accepted payload shape yields exactly the expected samples."""
    assert parse_telemetry(payload, RECEIVED) == expected


TIMESTAMPS = [
    pytest.param(1_699_999_999_000, TS, id="epoch-ms"),
    pytest.param(1_699_999_999_000.9, TS, id="epoch-ms-float"),
    pytest.param("2023-11-14T22:13:20Z", RECEIVED, id="iso-z"),
    pytest.param("2023-11-14T22:13:20.123Z", RECEIVED + 123, id="iso-z-millis"),
    pytest.param("2023-11-14T23:13:20+01:00", RECEIVED, id="iso-offset-plus"),
    pytest.param("2023-11-14T17:13:20-05:00", RECEIVED, id="iso-offset-minus"),
    pytest.param("2023-11-14T22:13:20", RECEIVED, id="iso-naive-is-utc"),
    pytest.param("2023-11-14 22:13:20+00:00", RECEIVED, id="iso-space-separator"),
    pytest.param(MIN_TS_MS, MIN_TS_MS, id="year-2000-boundary"),
    pytest.param(RECEIVED + DAY_MS, RECEIVED + DAY_MS, id="one-day-ahead-boundary"),
]


@pytest.mark.parametrize(("raw", "expected"), TIMESTAMPS)
def test_timestamps(raw: object, expected: int) -> None:
    """Test that epoch ms and ISO-8601 timestamps (naive = UTC) become epoch ms."""
    assert parse_timestamp(raw, RECEIVED) == expected


@pytest.mark.parametrize(("raw", "expected"), TIMESTAMPS)
def test_timestamps_inside_payload(raw: object, expected: int) -> None:
    """Test that the payload's ts field goes through the same timestamp rules."""
    payload = orjson.dumps({"ts": raw, "values": {"v": 1}})
    assert parse_telemetry(payload, RECEIVED) == [Sample(expected, {"v": 1.0})]


def _big_batch(count: int) -> bytes:
    return b"[" + b",".join([b'{"v": 1}'] * count) + b"]"


def _many_values(count: int) -> bytes:
    return ("{" + ",".join(f'"v{i}": {i}' for i in range(count)) + "}").encode()


SMALL = Limits(max_payload_bytes=32, max_batch=2, max_values=2, max_string=4)

REJECTED = [
    # too_large
    pytest.param(b'{"temp": 21.5, "x": 1234567890123}', SMALL, "too_large", id="too-large-small"),
    pytest.param(b" " * (256 * 1024 + 1), None, "too_large", id="too-large-default"),
    # not_json
    pytest.param(b"", None, "not_json", id="empty-bytes"),
    pytest.param(b"{", None, "not_json", id="truncated"),
    pytest.param(b"temp=21.5", None, "not_json", id="not-json-text"),
    pytest.param(b"{'temp': 1}", None, "not_json", id="single-quotes"),
    pytest.param(b'{"temp": 1,}', None, "not_json", id="trailing-comma"),
    pytest.param(b'{"temp": \xff}', None, "not_json", id="invalid-utf8"),
    pytest.param(b"[" * 2000 + b"]" * 2000, None, "not_json", id="too-deep"),
    pytest.param(b'{"mode": "NaN"', None, "not_json", id="truncated-with-nan-string"),
    pytest.param(b'{"note": "Infinity", ', None, "not_json", id="truncated-with-inf-string"),
    # non_finite
    pytest.param(b'{"temp": NaN}', None, "non_finite", id="nan"),
    pytest.param(b'{"temp": Infinity}', None, "non_finite", id="infinity"),
    pytest.param(b'{"temp": -Infinity}', None, "non_finite", id="minus-infinity"),
    pytest.param(b'{"temp": 1e400}', None, "non_finite", id="1e400"),
    pytest.param(b'{"temp": -1e400}', None, "non_finite", id="minus-1e400"),
    pytest.param(b'{"values": {"temp": NaN}}', None, "non_finite", id="nan-in-values"),
    pytest.param(b'[{"a": 1}, {"a": 1e400}]', None, "non_finite", id="overflow-in-batch"),
    # bad_shape
    pytest.param(b"42", None, "bad_shape", id="number-at-top"),
    pytest.param(b"null", None, "bad_shape", id="null-at-top"),
    pytest.param(b'"online"', None, "bad_shape", id="string-at-top"),
    pytest.param(b"true", None, "bad_shape", id="bool-at-top"),
    pytest.param(b'{"values": [1, 2]}', None, "bad_shape", id="values-is-list"),
    pytest.param(b'{"values": 5}', None, "bad_shape", id="values-is-number"),
    pytest.param(b'{"values": null}', None, "bad_shape", id="values-is-null"),
    pytest.param(
        b'{"ts": 1699999999000, "values": {"a": 1}, "extra": 2}',
        None,
        "bad_shape",
        id="extra-key-beside-values",
    ),
    pytest.param(b'[[{"a": 1}]]', None, "bad_shape", id="nested-list-in-batch"),
    pytest.param(b'[{"a": 1}, 5]', None, "bad_shape", id="number-in-batch"),
    pytest.param(b'[{"a": 1}, null]', None, "bad_shape", id="null-in-batch"),
    # nothing_usable: every field dropped (one usable field keeps the message)
    pytest.param(b'{"a": null}', None, "nothing_usable", id="only-null"),
    pytest.param(b'{"a": [1, 2]}', None, "nothing_usable", id="only-ignored-array"),
    pytest.param(b'{"a": [{"b": 1}]}', None, "nothing_usable", id="only-array-of-objects"),
    pytest.param(('{"a": "' + "x" * 129 + '"}').encode(), None, "nothing_usable", id="long-string"),
    pytest.param(b'{"a": "long"}', SMALL, "ok", id="string-at-custom-limit"),
    pytest.param(b'{"a": "longer"}', SMALL, "nothing_usable", id="string-over-custom-limit"),
    pytest.param(b'{"values": {"a": {}}}', None, "empty", id="only-empty-object"),
    pytest.param(b'[{"a": 1}, {"a": [1]}]', None, "ok", id="batch-keeps-usable-items"),
    pytest.param(b'{"a": {"b": 1}}', None, "ok", id="nested-object-flattened"),
    # bad_ts
    pytest.param(b'{"ts": "yesterday", "a": 1}', None, "bad_ts", id="ts-not-a-time"),
    pytest.param(b'{"ts": "2023-13-01T00:00:00Z", "a": 1}', None, "bad_ts", id="ts-bad-month"),
    pytest.param(b'{"ts": true, "a": 1}', None, "bad_ts", id="ts-true"),
    pytest.param(b'{"ts": false, "a": 1}', None, "bad_ts", id="ts-false"),
    pytest.param(b'{"ts": null, "a": 1}', None, "bad_ts", id="ts-null"),
    pytest.param(b'{"ts": [1], "a": 1}', None, "bad_ts", id="ts-list"),
    pytest.param(b'{"ts": {}, "values": {"a": 1}}', None, "bad_ts", id="ts-object"),
    pytest.param(b'{"ts": 1700000000, "a": 1}', None, "bad_ts", id="ts-epoch-seconds"),
    pytest.param(b'{"ts": 0, "a": 1}', None, "bad_ts", id="ts-zero"),
    pytest.param(b'{"ts": -1, "a": 1}', None, "bad_ts", id="ts-negative"),
    pytest.param(b'{"ts": "1999-12-31T23:59:59Z", "a": 1}', None, "bad_ts", id="ts-1999-iso"),
    pytest.param(b'{"ts": 946684799999, "a": 1}', None, "bad_ts", id="ts-just-before-2000"),
    pytest.param(
        f'{{"ts": {RECEIVED + DAY_MS + 1}, "a": 1}}'.encode(), None, "bad_ts", id="ts-future"
    ),
    pytest.param(b'{"ts": 1e30, "a": 1}', None, "bad_ts", id="ts-huge"),
    pytest.param(
        ('{"ts": "2023-11-14T22:13:20' + "0" * 40 + 'Z", "a": 1}').encode(),
        None,
        "bad_ts",
        id="ts-string-too-long",
    ),
    # bad_name: only a name past the length limit (any other name is canonicalised)
    pytest.param(('{"' + "a" * 257 + '": 1}').encode(), None, "nothing_usable", id="name-too-long"),
    pytest.param(b'{"": 1}', None, "nothing_usable", id="name-empty"),
    # empty
    pytest.param(b"{}", None, "empty", id="empty-object"),
    pytest.param(b"[]", None, "empty", id="empty-batch"),
    pytest.param(b'{"values": {}}', None, "empty", id="empty-values"),
    pytest.param(b'{"ts": 1699999999000}', None, "empty", id="only-ts"),
    pytest.param(b"[{}, {}]", None, "empty", id="only-empty-items-in-batch"),
    # batch_too_large / too_many_values
    pytest.param(b'[{"a":1},{"a":2},{"a":3}]', SMALL, "batch_too_large", id="batch-small-limit"),
    pytest.param(_big_batch(1001), None, "batch_too_large", id="batch-1001"),
    pytest.param(_big_batch(1000), None, "ok", id="batch-1000-ok"),
    pytest.param(b'{"a":1,"b":2,"c":3}', SMALL, "too_many_values", id="values-small-limit"),
    pytest.param(_many_values(257), None, "too_many_values", id="values-257"),
    pytest.param(_many_values(256), None, "ok", id="values-256-ok"),
]


@pytest.mark.parametrize(("payload", "limits", "reason"), REJECTED)
def test_rejection_reasons(payload: bytes, limits: Limits | None, reason: str) -> None:
    """Test that each bad payload is rejected with its exact reason label (or passes at a limit)."""
    if reason == "ok":
        assert parse_telemetry(payload, RECEIVED, limits or Limits())
        return
    with pytest.raises(PayloadRejected) as info:
        parse_telemetry(payload, RECEIVED, limits or Limits())
    assert info.value.reason == reason
    assert info.value.detail
    assert str(info.value).startswith(f"{reason}: ")


def test_payload_at_size_limit_is_accepted() -> None:
    """Test that a payload of exactly `max_payload_bytes` is accepted and one more byte is not."""
    payload = b'{"temp": 21.5}'
    limits = Limits(max_payload_bytes=len(payload))
    assert parse_telemetry(payload, RECEIVED, limits) == [Sample(RECEIVED, {"temp": 21.5})]
    with pytest.raises(PayloadRejected, match="too_large"):
        parse_telemetry(payload + b" ", RECEIVED, limits)


def test_future_limit_follows_limits() -> None:
    """Test that the allowed clock skew into the future comes from `Limits`."""
    limits = Limits(max_future_ms=1000)
    assert parse_timestamp(RECEIVED + 1000, RECEIVED, limits) == RECEIVED + 1000
    with pytest.raises(PayloadRejected, match="bad_ts"):
        parse_timestamp(RECEIVED + 1001, RECEIVED, limits)


STATUSES = [
    pytest.param(b"online", "online", id="online"),
    pytest.param(b"offline", "offline", id="offline"),
    pytest.param(b" ONLINE\n", "online", id="case-and-whitespace"),
    pytest.param(b"Offline", "offline", id="capitalised"),
    pytest.param(b"", None, id="empty-cleared-retained"),
    pytest.param(b"  \n", None, id="blank"),
]


@pytest.mark.parametrize(("payload", "expected"), STATUSES)
def test_status(payload: bytes, expected: str | None) -> None:
    """Test that status payloads become `online`, `offline` or None (cleared)."""
    assert parse_status(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"online!", id="suffix"),
        pytest.param(b"1", id="number"),
        pytest.param(b'{"status": "online"}', id="json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"on line", id="space"),
    ],
)
def test_status_rejected(payload: bytes) -> None:
    """Test that anything but online/offline/empty is rejected as `bad_status`."""
    with pytest.raises(PayloadRejected) as info:
        parse_status(payload)
    assert info.value.reason == "bad_status"


META_ACCEPTED = [
    pytest.param(
        b'{"model": "boiler-x2", "firmware": "1.2.3", "customer": "c-17", "rated_kw": 24}',
        {"model": "boiler-x2", "firmware": "1.2.3", "customer": "c-17", "rated_kw": 24},
        id="object",
    ),
    pytest.param(
        b'{"labels": {"site": "north", "floor": 2, "ok": true, "x": null},'
        b' "location": {"lat": 1.5}}',
        {"labels": {"site": "north", "floor": 2, "ok": True, "x": None}, "location": {"lat": 1.5}},
        id="one-level-nesting",
    ),
    pytest.param(b'{"inactivity_timeout": 60}', {"inactivity_timeout": 60}, id="timeout-override"),
    pytest.param(b"", {}, id="empty-cleared-retained"),
    pytest.param(b"  ", {}, id="blank"),
    pytest.param(b"{}", {}, id="empty-object"),
]


@pytest.mark.parametrize(("payload", "expected"), META_ACCEPTED)
def test_meta(payload: bytes, expected: dict[str, object]) -> None:
    """Test that meta objects with scalars and one level of nesting are accepted as they are."""
    assert parse_meta(payload) == expected


META_REJECTED = [
    pytest.param(b'{"labels": {"a": {"b": 1}}}', "bad_meta", id="two-levels"),
    pytest.param(b'{"labels": {"a": [1]}}', "bad_meta", id="list-in-nested"),
    pytest.param(b'{"tags": ["a", "b"]}', "bad_meta", id="list-value"),
    pytest.param(b'["model"]', "bad_meta", id="list-at-top"),
    pytest.param(b'"boiler"', "bad_meta", id="string-at-top"),
    pytest.param(b"null", "bad_meta", id="null-at-top"),
    pytest.param(('{"model": "' + "m" * 513 + '"}').encode(), "bad_meta", id="long-string"),
    pytest.param(('{"l": {"k": "' + "m" * 513 + '"}}').encode(), "bad_meta", id="long-nested"),
    pytest.param(b'{"model": ', "not_json", id="not-json"),
    pytest.param(b'{"x": NaN}', "non_finite", id="nan"),
    pytest.param(b'{"x": 1e999}', "non_finite", id="overflow"),
    pytest.param(b"{" + b" " * (256 * 1024) + b"}", "too_large", id="too-large"),
]


@pytest.mark.parametrize(("payload", "reason"), META_REJECTED)
def test_meta_rejected(payload: bytes, reason: str) -> None:
    """Test that meta deeper than one level, lists and non-objects are rejected with a reason."""
    with pytest.raises(PayloadRejected) as info:
        parse_meta(payload)
    assert info.value.reason == reason


# -- names and nested JSON (docs/devices.md, "Names" and "Nested JSON") -------------------------

CANONICAL_NAMES = [
    ("Volume Flow RateRMS", "volume_flow_raterms"),
    ("outdoor-temp", "outdoor_temp"),
    ("flow rate", "flow_rate"),
    ("ENERGY.Total", "energy_total"),
    ("switch:0.aenergy.total", "switch_0_aenergy_total"),
    ("Température °C", "temperature_c"),
    ("  --x--  ", "x"),
    ("1st stage", "_1st_stage"),
    ("temp", "temp"),
    ("a" * 64, "a" * 64),
    ("A" * 80, "a" * 64),
]


@pytest.mark.parametrize(("name", "canonical"), CANONICAL_NAMES)
def test_canonical_names(name: str, canonical: str) -> None:
    """Test the one canonicalisation rule on names of every kind a device sends."""
    assert canonical_name(name) == canonical
    assert canonical_name(canonical) == canonical  # idempotent


def test_names_without_latin_letters_get_a_stable_hashed_name() -> None:
    """Test that a name with nothing to keep becomes `m_<hash>`, the same every time."""
    first = canonical_name("温度")
    assert first.startswith("m_")
    assert len(first) == 12
    assert canonical_name("温度") == first
    assert canonical_name("湿度") != first


def test_every_canonical_name_is_an_identifier() -> None:
    """Test that the canonical form of awkward names is a valid rule identifier."""
    for name in ["", "_", "..", "Ω", "a\u0301", "💧 flow", "x" * 300, "9", "__a__"]:
        assert CANONICAL.fullmatch(canonical_name(name)) is not None, name


def test_the_skab_header_is_stored_whole() -> None:
    """Test that a SKAB row (names with spaces and capitals) keeps all 8 columns, renamed."""
    row = {
        "Accelerometer1RMS": 0.2,
        "Accelerometer2RMS": 0.26,
        "Current": 2.4,
        "Pressure": 0.38,
        "Temperature": 89.7,
        "Thermocouple": 29.1,
        "Voltage": 229.4,
        "Volume Flow RateRMS": 32.0,
    }
    payload = orjson.dumps({"ts": TS, "values": row})
    samples, notes = parse_telemetry_fields(payload, RECEIVED)
    assert samples == [Sample(TS, {canonical_name(k): float(v) for k, v in row.items()})]
    assert notes.renamed["volume_flow_raterms"] == "Volume Flow RateRMS"
    assert notes.dropped == []


def test_nested_objects_are_flattened_and_leftovers_dropped_per_field() -> None:
    """Test a Tasmota-style payload: nested objects flattened, nulls and arrays counted."""
    payload = orjson.dumps(
        {
            "ENERGY": {"Total": 12.3, "Power": 45, "Period": None},
            "Wifi": {"RSSI": 80, "Channels": [1, 6]},
            "Modes": [{"a": 1}],
            "update": {"state": "idle"},
        }
    )
    samples, notes = parse_telemetry_fields(payload, RECEIVED)
    assert samples[0].metrics == {"energy_total": 12.3, "energy_power": 45.0, "wifi_rssi": 80.0}
    assert samples[0].attributes == {"update_state": "idle"}
    assert sorted(notes.dropped) == [
        ("ENERGY.Period", "null"),
        ("Modes", "not_scalar"),
        ("Wifi.Channels", "array"),
    ]


def test_arrays_of_numbers_are_indexed_when_configured() -> None:
    """Test `arrays: index`: a Shelly `by_minute` array becomes one metric per position."""
    notes = FieldNotes()
    sample = sample_from_values(
        {"aenergy": {"by_minute": [1.5, 2, 3]}}, TS, notes, Limits(arrays="index")
    )
    assert sample.metrics == {
        "aenergy_by_minute_0": 1.5,
        "aenergy_by_minute_1": 2.0,
        "aenergy_by_minute_2": 3.0,
    }


def test_names_that_collide_are_reported_not_merged() -> None:
    """Test that the second name mapping to one canonical name is dropped as a collision."""
    samples, notes = parse_telemetry_fields(b'{"Flow Rate": 1, "flow-rate": 2, "x": 3}', RECEIVED)
    assert samples[0].metrics == {"flow_rate": 1.0, "x": 3.0}
    assert notes.dropped == [("flow-rate", "collision")]


def test_nesting_past_the_depth_limit_is_dropped() -> None:
    """Test that an object nested deeper than the limit is dropped, the rest stored."""
    deep: dict[str, object] = {"v": 1}
    for _ in range(12):
        deep = {"d": deep}
    samples, notes = parse_telemetry_fields(orjson.dumps({"ok": 1, "deep": deep}), RECEIVED)
    assert samples[0].metrics == {"ok": 1.0}
    assert notes.dropped[0][1] == "too_deep"


def test_a_units_object_gives_units_by_canonical_name() -> None:
    """Test that `units` beside `values` is read, keyed by canonical name, and not stored."""
    payload = b'{"values": {"Flow Rate": 3.2}, "units": {"Flow Rate": "l/min", "x": 5}}'
    samples, notes = parse_telemetry_fields(payload, RECEIVED)
    assert samples[0].metrics == {"flow_rate": 3.2}
    assert notes.units == {"flow_rate": "l/min"}
    assert notes.dropped == [("units.x", "bad_unit")]
