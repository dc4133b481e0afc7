"""Property-based tests of the pure core: classify never raises, valid telemetry round-trips."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core.backoff import backoff_delay
from daemon.core.durations import format_duration, parse_duration
from daemon.core.messages import Message, Meta, Rejected, Reply, Status, Telemetry, classify
from daemon.core.payloads import CANONICAL, MIN_TS_MS, Sample
from daemon.core.ratelimit import LogLimiter
from daemon.core.topics import DEVICE_ID

RECEIVED = 1_700_000_000_000
REASONS = {
    "too_large",
    "not_json",
    "non_finite",
    "bad_shape",
    "bad_ts",
    "nothing_usable",
    "empty",
    "batch_too_large",
    "too_many_values",
    "bad_status",
    "bad_meta",
    "bad_topic",
    "bad_device_id",
}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Generating nested JSON is the slow part: fewer examples keep the file at a few seconds.
SLOWER = settings(FAST, max_examples=150)

device_ids = st.from_regex(DEVICE_ID, fullmatch=True)
topics = st.one_of(
    st.builds(
        "devices/{}/{}".format,
        st.one_of(device_ids, st.text(max_size=20)),
        st.sampled_from(["telemetry", "status", "meta", "commands/c1/reply", "x", ""]),
    ),
    st.text(max_size=60),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: ints beyond 64 bits and beyond the float range
    st.integers(min_value=-(10**400), max_value=10**400).filter(lambda n: abs(n) > 10**300),
    st.floats(),  # nan, inf, -0.0, subnormals
    st.text(max_size=200),  # unicode, including lone surrogates
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=12), children, max_size=6),
    ),
    max_leaves=40,
)
telemetry_like = st.one_of(
    st.dictionaries(st.sampled_from(["ts", "values", "a", "b_1", "x y"]), json_values, max_size=4),
    st.lists(st.dictionaries(st.sampled_from(["ts", "values", "a"]), json_values), max_size=4),
    json_values,
)


def encode(value: Any, ascii_only: bool) -> bytes:
    """Return `value` as JSON the way sloppy firmware might: NaN and lone surrogates included."""
    text = json.dumps(value, ensure_ascii=ascii_only)  # writes NaN / Infinity tokens
    return text.encode("utf-8", errors="surrogatepass")


def assert_well_formed(message: Message, payload: bytes) -> None:
    assert isinstance(message, Telemetry | Status | Meta | Reply | Rejected)
    if isinstance(message, Rejected):
        assert message.reason in REASONS
        assert message.payload == payload[: len(message.payload)]
        assert message.size == len(payload)
    if isinstance(message, Telemetry):
        assert message.samples
        for sample in message.samples:
            assert all(math.isfinite(v) for v in sample.metrics.values())
            assert all(isinstance(v, str) for v in sample.attributes.values())


@FAST
@given(topic=topics, payload=st.binary(max_size=300))
def test_classify_never_raises_on_bytes(topic: str, payload: bytes) -> None:
    """Test that random bytes on random topics always give a message or a Rejected."""
    assert_well_formed(classify(topic, payload, RECEIVED), payload)


@SLOWER
@given(
    device=device_ids,
    kind=st.sampled_from(["telemetry", "meta", "status"]),
    value=telemetry_like,
    ascii_only=st.booleans(),
)
def test_classify_never_raises_on_json(
    device: str, kind: str, value: Any, ascii_only: bool
) -> None:
    """Test that any JSON-ish structure (NaN, huge ints, unicode) never makes classify raise."""
    payload = encode(value, ascii_only)
    assert_well_formed(classify(f"devices/{device}/{kind}", payload, RECEIVED), payload)


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(min_value=1, max_value=3000), opener=st.sampled_from([b"[", b'{"a":']))
def test_classify_never_raises_on_deep_nesting(depth: int, opener: bytes) -> None:
    """Test that deeply nested payloads are rejected (or accepted) without an exception."""
    closer = b"]" if opener == b"[" else b"}"
    payload = opener * depth + b"1" + closer * depth
    for kind in ("telemetry", "meta"):
        assert_well_formed(classify(f"devices/d/{kind}", payload, RECEIVED), payload)


names = st.from_regex(CANONICAL, fullmatch=True).filter(
    lambda n: n not in {"ts", "values", "units"}
)
metric_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
)
attribute_values = st.text(max_size=128).filter(
    lambda s: not any(0xD800 <= ord(c) < 0xE000 for c in s)
)
value_maps = st.dictionaries(
    names, st.one_of(metric_values, attribute_values), min_size=1, max_size=20
)
timestamps = st.integers(min_value=MIN_TS_MS, max_value=RECEIVED + 24 * 3600 * 1000)
items = st.tuples(
    st.sampled_from(["flat", "flat_ts", "ts_values", "values"]), timestamps, value_maps
)


def shape(kind: str, ts: int, values: dict[str, Any]) -> dict[str, Any]:
    if kind == "flat":
        return dict(values)
    if kind == "flat_ts":
        return {"ts": ts, **values}
    if kind == "ts_values":
        return {"ts": ts, "values": values}
    return {"values": values}


def expected_sample(kind: str, ts: int, values: dict[str, Any]) -> Sample:
    metrics = {
        k: (1.0 if v else 0.0) if isinstance(v, bool) else float(v)
        for k, v in values.items()
        if not isinstance(v, str)
    }
    attributes = {k: v for k, v in values.items() if isinstance(v, str)}
    return Sample(ts if kind in {"flat_ts", "ts_values"} else RECEIVED, metrics, attributes)


@SLOWER
@given(device=device_ids, batch=st.lists(items, min_size=1, max_size=5), as_list=st.booleans())
def test_valid_telemetry_round_trips(
    device: str, batch: list[tuple[str, int, dict[str, Any]]], as_list: bool
) -> None:
    """Test that every generated metric and attribute arrives exactly, with its timestamp."""
    if not as_list:
        batch = batch[:1]
    objects = [shape(*item) for item in batch]
    payload = orjson.dumps(objects if as_list else objects[0])
    message = classify(f"devices/{device}/telemetry", payload, RECEIVED)
    assert message == Telemetry(device, [expected_sample(*item) for item in batch])


@FAST
@given(seconds=st.floats(min_value=0, max_value=1e10, allow_nan=False))
def test_format_then_parse_duration_stays_close(seconds: float) -> None:
    """Test that parse_duration(format_duration(x)) is within rounding of x."""
    back = parse_duration(format_duration(seconds))
    tolerance = 0.0005 if seconds < 1 else 0.5
    assert abs(back - seconds) <= tolerance + 1e-9 * seconds


@FAST
@given(seconds=st.integers(min_value=1, max_value=10**9))
def test_whole_seconds_round_trip_exactly(seconds: int) -> None:
    """Test that whole seconds survive format -> parse exactly."""
    assert parse_duration(format_duration(seconds)) == seconds


@FAST
@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=10),
    cap=st.floats(min_value=0.001, max_value=3600),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_stays_within_ceiling(attempt: int, base: float, cap: float, draw: float) -> None:
    """Test that the jittered delay is never negative and never above min(cap, base * 2^n)."""
    delay = backoff_delay(attempt, base, cap, draw)
    assert 0 <= delay <= min(cap, base * 2.0 ** min(attempt, 64))
    assert delay <= cap


@FAST
@given(
    gaps=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.floats(min_value=0, max_value=40)),
        max_size=60,
    )
)
def test_log_limiter_matches_its_model(gaps: list[tuple[str, float]]) -> None:
    """Test that each key is let through at most once per period with an exact suppressed count."""
    limiter = LogLimiter(60.0)
    now = 0.0
    last: dict[str, float] = {}
    suppressed: dict[str, int] = {}
    for key, gap in gaps:
        now += gap
        got = limiter.allow(key, now)
        if key in last and now - last[key] < 60.0:
            suppressed[key] = suppressed.get(key, 0) + 1
            assert got is None
        else:
            assert got == suppressed.pop(key, 0)
            last[key] = now
