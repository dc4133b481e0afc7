"""Table-driven tests of device twins: latest values, liveness stepped through time, persistence."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from daemon.core.messages import (
    Message,
    Meta,
    Origin,
    Rejected,
    Reply,
    Status,
    Telemetry,
    classify,
)
from daemon.core.payloads import Sample
from daemon.core.twin import DeviceTwin, Twins

T0 = 1_700_000_000_000
S = 1000  # one second in ms
TIMEOUT_S = 600.0  # the default inactivity timeout used throughout


def telemetry(device: str, *samples: tuple[int, dict[str, float], dict[str, str]]) -> Telemetry:
    return Telemetry(device, [Sample(ts, dict(m), dict(a)) for ts, m, a in samples])


LATEST = [
    pytest.param([(1, 10.0)], (1, 10.0), id="single"),
    pytest.param([(1, 10.0), (2, 20.0), (3, 30.0)], (3, 30.0), id="in-order"),
    pytest.param([(3, 30.0), (1, 10.0), (2, 20.0)], (3, 30.0), id="out-of-order"),
    pytest.param([(5, 50.0), (5, 55.0)], (5, 55.0), id="same-ts-last-wins"),
    pytest.param([(9, 1.0), (2, 2.0), (10, 3.0), (4, 4.0)], (10, 3.0), id="late-newest"),
]


@pytest.mark.parametrize(("samples", "expected"), LATEST)
def test_latest_metric_keeps_max_ts(
    samples: list[tuple[int, float]], expected: tuple[int, float]
) -> None:
    """Test that out-of-order samples (one per message) never replace a newer value."""
    twins = Twins()
    for received, (ts, value) in enumerate(samples):
        twins.apply(telemetry("d1", (T0 + ts, {"temp": value}, {})), T0 + 100 + received)
    twin = twins.get("d1")
    assert twin is not None
    assert twin.metrics["temp"] == (T0 + expected[0], expected[1])


@pytest.mark.parametrize(("samples", "expected"), LATEST)
def test_latest_metric_within_one_batch(
    samples: list[tuple[int, float]], expected: tuple[int, float]
) -> None:
    """Test that the newest sample of a batch wins, whatever its position in the batch."""
    twins = Twins()
    twins.apply(telemetry("d1", *[(T0 + ts, {"temp": v}, {}) for ts, v in samples]), T0 + 100)
    twin = twins.get("d1")
    assert twin is not None
    assert twin.metrics["temp"] == (T0 + expected[0], expected[1])


def test_latest_attribute_keeps_max_ts() -> None:
    """Test that string attributes also keep the value with the newest timestamp."""
    twins = Twins()
    twins.apply(telemetry("d1", (T0 + 5, {}, {"mode": "eco"})), T0 + 10)
    twins.apply(telemetry("d1", (T0 + 1, {}, {"mode": "boost"})), T0 + 11)
    twins.apply(telemetry("d1", (T0 + 6, {"x": 1.0}, {"fault": "E7"})), T0 + 12)
    twin = twins.get("d1")
    assert twin is not None
    assert twin.attributes == {"mode": (T0 + 5, "eco"), "fault": (T0 + 6, "E7")}
    assert twin.metrics == {"x": (T0 + 6, 1.0)}


def test_metrics_are_tracked_independently() -> None:
    """Test that an old sample of one metric still updates another metric it carries."""
    twins = Twins()
    twins.apply(telemetry("d1", (T0 + 10, {"a": 1.0}, {})), T0 + 10)
    twins.apply(telemetry("d1", (T0 + 5, {"a": 2.0, "b": 3.0}, {})), T0 + 11)
    twin = twins.get("d1")
    assert twin is not None
    assert twin.metrics == {"a": (T0 + 10, 1.0), "b": (T0 + 5, 3.0)}


def test_seen_times_use_receive_time() -> None:
    """Test that first_seen stays put and last_seen is the newest receive time, not sample ts."""
    twins = Twins()
    twins.apply(telemetry("d1", (T0 - 50 * S, {"a": 1.0}, {})), T0)
    twins.apply(telemetry("d1", (T0 - 60 * S, {"a": 1.0}, {})), T0 + 5 * S)
    twins.apply(telemetry("d1", (T0, {"a": 1.0}, {})), T0 + 3 * S)  # delivered late
    twin = twins.get("d1")
    assert twin is not None
    assert (twin.first_seen_ms, twin.last_seen_ms) == (T0, T0 + 5 * S)


# Each step: ("telemetry", t_s) | ("status", t_s, status, retained) | ("meta", t_s, meta)
#          | ("online?", t_s, expected)
Step = tuple[Any, ...]
LIVENESS = [
    pytest.param(
        [
            ("telemetry", 0),
            ("online?", 1, True),
            ("status", 10, "offline", False),
            ("online?", 10, False),
            ("online?", 11, False),
        ],
        id="lwt-newer-than-last-message-is-offline",
    ),
    pytest.param(
        [
            ("telemetry", 0),
            ("status", 10, "offline", False),
            ("telemetry", 20),
            ("online?", 20, True),
            ("online?", 620, True),
            ("online?", 621, False),
        ],
        id="telemetry-after-lwt-is-online",
    ),
    pytest.param(
        [("telemetry", 10), ("status", 10, "offline", False), ("online?", 10, False)],
        id="lwt-same-ms-as-last-message-wins",
    ),
    pytest.param(
        [
            ("telemetry", 0),
            ("status", 10, "offline", False),
            ("status", 20, "online", False),
            ("online?", 20, True),
            ("online?", 620, True),
            ("online?", 621, False),
        ],
        id="live-online-after-lwt",
    ),
    pytest.param(
        [
            ("telemetry", 0),
            ("online?", 599, True),
            ("online?", 600, True),
            ("online?", 600.001, False),
            ("online?", 3600, False),
        ],
        id="silent-beyond-timeout-is-offline",
    ),
    pytest.param(
        [("telemetry", 0), ("online?", 700, False), ("telemetry", 800), ("online?", 800, True)],
        id="recovers-on-next-message",
    ),
    pytest.param(
        [
            ("meta", 0, {"inactivity_timeout": 60}),
            ("telemetry", 0),
            ("online?", 60, True),
            ("online?", 61, False),
        ],
        id="meta-shortens-timeout",
    ),
    pytest.param(
        [
            ("meta", 0, {"inactivity_timeout": 3600.5}),
            ("telemetry", 0),
            ("online?", 1200, True),
            ("online?", 3600.5, True),
            ("online?", 3601, False),
        ],
        id="meta-lengthens-timeout",
    ),
    pytest.param(
        [
            ("telemetry", 0),
            ("meta", 5, {"inactivity_timeout": 60}),
            ("online?", 61, False),
            ("meta", 70, {}),
            ("online?", 70, True),
        ],
        id="meta-override-applies-and-is-removed",
    ),
    pytest.param(
        [
            ("meta", 0, {"inactivity_timeout": True}),
            ("telemetry", 0),
            ("online?", 600, True),
            ("online?", 601, False),
        ],
        id="meta-bool-timeout-ignored",
    ),
    pytest.param(
        [("meta", 0, {"inactivity_timeout": "60"}), ("telemetry", 0), ("online?", 600, True)],
        id="meta-string-timeout-ignored",
    ),
    pytest.param(
        [
            ("meta", 0, {"inactivity_timeout": 0}),
            ("telemetry", 0),
            ("online?", 600, True),
            ("online?", 601, False),
        ],
        id="meta-zero-timeout-ignored",
    ),
    pytest.param(
        [("meta", 0, {"inactivity_timeout": -5}), ("telemetry", 0), ("online?", 600, True)],
        id="meta-negative-timeout-ignored",
    ),
    pytest.param(
        [("telemetry", 0), ("status", 700, "online", True), ("online?", 700, False)],
        id="retained-online-does-not-refresh-last-seen",
    ),
    pytest.param(
        [
            ("telemetry", 0),
            ("status", 700, "online", False),
            ("online?", 700, True),
            ("online?", 1300, True),
            ("online?", 1301, False),
        ],
        id="live-online-refreshes-last-seen",
    ),
    pytest.param(
        [("status", 0, "online", True), ("online?", 0, True), ("online?", 36000, True)],
        id="retained-online-only-counts-as-online",
    ),
    pytest.param(
        [("status", 0, "offline", True), ("online?", 0, False)],
        id="retained-offline-only",
    ),
    pytest.param(
        [("status", 0, "online", True), ("status", 5, None, True), ("online?", 5, False)],
        id="cleared-status-unknown-is-offline",
    ),
    pytest.param(
        [("meta", 0, {"model": "x"}), ("online?", 0, False)],
        id="meta-only-is-offline",
    ),
]


def _run_steps(steps: list[Step]) -> list[tuple[float, bool, bool]]:
    twins = Twins()
    results = []
    for step in steps:
        kind, t_ms = step[0], T0 + round(step[1] * S)
        message: Message
        if kind == "telemetry":
            message = telemetry("d1", (t_ms, {"v": 1.0}, {}))
            twins.apply(message, t_ms)
        elif kind == "status":
            twins.apply(Status("d1", step[2]), t_ms, retained=step[3])
        elif kind == "meta":
            twins.apply(Meta("d1", step[2]), t_ms)
        else:
            twin = twins.get("d1")
            assert twin is not None
            results.append((step[1], twin.online(t_ms, TIMEOUT_S), step[2]))
    return results


@pytest.mark.parametrize("steps", LIVENESS)
def test_online_stepped_through_time(steps: list[Step]) -> None:
    """Test that online/offline follows LWT, inactivity timeout, meta override and retention."""
    results = _run_steps(steps)
    assert results
    assert [(t, got) for t, got, _ in results] == [(t, want) for t, _, want in results]


def test_online_count() -> None:
    """Test that `online_count` counts the twins online at the given time."""
    twins = Twins()
    twins.apply(telemetry("a", (T0, {"v": 1.0}, {})), T0)
    twins.apply(telemetry("b", (T0, {"v": 1.0}, {})), T0 + 100 * S)
    twins.apply(Status("c", "offline"), T0)
    assert twins.online_count(T0 + 100 * S, TIMEOUT_S) == 2
    assert twins.online_count(T0 + 650 * S, TIMEOUT_S) == 1
    assert twins.online_count(T0 + 750 * S, TIMEOUT_S) == 0
    assert twins.online_count(T0 + 750 * S, 3600) == 2


def test_take_dirty() -> None:
    """Test that `take_dirty` returns changed twins once, sorted, and ignores replies/rejects."""
    twins = Twins()
    twins.apply(telemetry("b", (T0, {"v": 1.0}, {})), T0)
    twins.apply(Meta("a", {"model": "m"}), T0)
    twins.apply(Status("c", "online"), T0, retained=True)
    assert [t.id for t in twins.take_dirty()] == ["a", "b", "c"]
    assert twins.take_dirty() == []
    twins.apply(Reply("a", "c1", b"{}"), T0 + 1)
    twins.apply(Rejected("devices/z/telemetry", "z", "not_json", "x", b"x", 1), T0 + 1)
    assert twins.take_dirty() == []
    assert twins.get("z") is None
    assert len(twins) == 3
    twins.apply(telemetry("b", (T0 - 5, {"v": 0.0}, {})), T0 + 2)  # older sample still marks b
    assert [t.id for t in twins.take_dirty()] == ["b"]


def test_loaded_twins_are_not_dirty() -> None:
    """Test that twins given at construction count as persisted until they change."""
    twins = Twins([DeviceTwin("x", T0), DeviceTwin("y", T0)])
    assert sorted(t.id for t in twins) == ["x", "y"]
    assert twins.take_dirty() == []
    twins.apply(Status("y", "offline"), T0 + 1)
    assert [t.id for t in twins.take_dirty()] == ["y"]


def test_to_dict_from_dict_round_trip() -> None:
    """Test that a twin survives to_dict -> JSON -> from_dict unchanged."""
    twins = Twins()
    twins.apply(
        classify(
            "devices/b1/telemetry",
            b'{"ts": 1700000000123, "values": {"temp": 21.5, "on": true, "mode": "eco"}}',
            T0 + 500,
        ),
        T0 + 500,
    )
    twins.apply(classify("devices/b1/meta", b'{"model": "m", "labels": {"a": 1}}', T0), T0 + 600)
    twins.apply(classify("devices/b1/status", b"online", T0), T0 + 700)
    twin = twins.get("b1")
    assert twin is not None
    data = orjson.loads(orjson.dumps(twin.to_dict()))
    restored = DeviceTwin.from_dict(data)
    assert restored == twin
    assert restored.metrics["temp"] == (1_700_000_000_123, 21.5)
    assert restored.attributes == {"mode": (1_700_000_000_123, "eco")}
    assert restored.online(T0 + 800, TIMEOUT_S) == twin.online(T0 + 800, TIMEOUT_S)


def test_from_dict_of_fresh_twin() -> None:
    """Test that a twin with no data at all round-trips too."""
    twin = DeviceTwin("fresh", T0)
    assert DeviceTwin.from_dict(orjson.loads(orjson.dumps(twin.to_dict()))) == twin


# (description, twin built by these messages, message to admit, refused?)
ADMIT_CASES = [
    ("known device, known metric", [telemetry("a", (T0, {"v": 1.0}, {}))],
     telemetry("a", (T0 + 1, {"v": 2.0}, {})), False),
    ("new device under the bound", [telemetry("a", (T0, {"v": 1.0}, {}))],
     telemetry("b", (T0, {"v": 1.0}, {})), False),
    ("new device at the bound", [telemetry("a", (T0, {"v": 1.0}, {})), Status("b", "online")],
     telemetry("c", (T0, {"v": 1.0}, {})), True),
    ("status of a new device at the bound", [Meta("a", {}), Status("b", "online")],
     Status("c", "offline"), True),
    ("meta of a new device at the bound", [Meta("a", {}), Status("b", "online")],
     Meta("c", {"model": "m"}), True),
    ("a reply is no twin", [Meta("a", {}), Status("b", "online")],
     Reply("c", "cmd-1", b"{}"), False),
    ("known device at the name bound, known names",
     [telemetry("a", (T0, {"x": 1, "y": 2}, {"m": "e"}))],
     telemetry("a", (T0 + 1, {"x": 3, "y": 4}, {"m": "f"})), False),
    ("new metric past the name bound", [telemetry("a", (T0, {"x": 1, "y": 2}, {"m": "e"}))],
     telemetry("a", (T0 + 1, {"z": 3}, {})), True),
    ("new attribute past the name bound", [telemetry("a", (T0, {"x": 1, "y": 2}, {"m": "e"}))],
     telemetry("a", (T0 + 1, {}, {"n": "g"})), True),
    ("a new device's first message with too many names", [],
     telemetry("a", (T0, {"w": 1, "x": 1, "y": 1, "z": 1}, {})), True),
    ("names counted across the samples of a batch", [telemetry("a", (T0, {"x": 1}, {}))],
     telemetry("a", (T0 + 1, {"y": 1}, {}), (T0 + 2, {"z": 1}, {}), (T0 + 3, {"w": 1}, {})), True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "message", "refused"),
    [case[1:] for case in ADMIT_CASES],
    ids=[case[0] for case in ADMIT_CASES],
)
def test_admit_refuses_only_growth_past_the_bounds(
    before: list[Message], message: Message, refused: bool
) -> None:
    """Test that admit refuses a new device or new names past the bounds, and nothing else."""
    twins = Twins(max_devices=2, max_names=3)
    for known in before:
        twins.apply(known, T0)
    reason = twins.admit(message)
    assert (reason is not None) == refused, reason
    if reason is not None:
        assert "devices.max_" in reason


def test_flood_of_new_ids_stops_at_the_device_bound() -> None:
    """Test that applying only admitted messages keeps the fleet at max_devices."""
    twins = Twins(max_devices=100)
    refused = 0
    for i in range(1_000):
        message = telemetry(f"flood-{i}", (T0 + i, {"v": 1.0}, {}))
        if twins.admit(message) is None:
            twins.apply(message, T0 + i)
        else:
            refused += 1
    assert len(twins) == 100
    assert refused == 900
    assert twins.admit(telemetry("flood-5", (T0, {"v": 2.0}, {}))) is None  # known: flows


# (description, messages, announced?)
ANNOUNCED_CASES = [
    ("telemetry only", [telemetry("a", (T0, {"v": 1.0}, {}))], False),
    ("meta", [telemetry("a", (T0, {"v": 1.0}, {})), Meta("a", {"model": "m"})], True),
    ("empty meta says nothing", [telemetry("a", (T0, {"v": 1.0}, {})), Meta("a", {})], False),
    ("online status", [Status("a", "online")], True),
    ("last will", [telemetry("a", (T0, {"v": 1.0}, {})), Status("a", "offline")], True),
]


@pytest.mark.parametrize(
    ("messages", "announced"),
    [case[1:] for case in ANNOUNCED_CASES],
    ids=[case[0] for case in ANNOUNCED_CASES],
)
def test_announced_needs_meta_or_a_status(messages: list[Message], announced: bool) -> None:
    """Test that a device counts as announced once it sent meta or a status, not telemetry alone."""
    twins = Twins()
    for message in messages:
        twins.apply(message, T0)
    twin = twins.get("a")
    assert twin is not None
    assert twin.announced is announced


def test_forgettable_selects_silent_devices_without_meta() -> None:
    """Test that only devices without meta and silent since the cut-off are forgettable."""
    twins = Twins()
    twins.apply(telemetry("old", (T0, {"v": 1.0}, {})), T0)
    twins.apply(telemetry("recent", (T0, {"v": 1.0}, {})), T0 + 50 * S)
    twins.apply(telemetry("described", (T0, {"v": 1.0}, {})), T0)
    twins.apply(Meta("described", {"model": "m"}), T0)
    twins.apply(telemetry("status-later", (T0, {"v": 1.0}, {})), T0)
    twins.apply(Status("status-later", "offline"), T0 + 50 * S)
    assert twins.forgettable(T0 + 10 * S) == ["old"]
    assert twins.forgettable(T0 + 100 * S) == ["old", "recent", "status-later"]


def test_forget_removes_twins_and_their_dirty_mark() -> None:
    """Test that forgotten twins are gone, are not saved again, and come back as new devices."""
    twins = Twins()
    twins.apply(telemetry("a", (T0, {"v": 1.0}, {})), T0)
    twins.apply(telemetry("b", (T0, {"v": 1.0}, {})), T0)
    assert twins.forget(["a", "unknown"]) == ["a"]
    assert twins.get("a") is None
    assert [t.id for t in twins.take_dirty()] == ["b"]
    twins.apply(telemetry("a", (T0 + 9, {"v": 2.0}, {})), T0 + 9)
    again = twins.get("a")
    assert again is not None
    assert again.first_seen_ms == T0 + 9


# -- names the device sent, dropped fields, origin (docs/devices.md) ---------------------------


def _received(device: str, payload: bytes, at_ms: int, twins: Twins) -> Telemetry:
    message = classify(f"devices/{device}/telemetry", payload, at_ms)
    assert isinstance(message, Telemetry)
    twins.claim_names(message)
    twins.apply(message, at_ms)
    return message


def test_a_second_spelling_of_a_name_is_a_collision_across_messages() -> None:
    """Test that `flow_rate` after `Flow Rate` is dropped as a collision, not merged."""
    twins = Twins()
    _received("d", b'{"Flow Rate": 1.5}', T0, twins)
    second = _received("d", b'{"flow_rate": 9, "x": 1}', T0 + S, twins)
    assert second.samples[0].metrics == {"x": 1.0}
    assert second.notes is not None
    assert second.notes.dropped == [("flow_rate", "collision")]
    twin = twins.get("d")
    assert twin is not None
    assert twin.metrics["flow_rate"] == (T0, 1.5)
    assert twin.names == {"flow_rate": "Flow Rate"}
    assert twin.dropped == {"flow_rate": ["collision", 1, T0 + S]}
    third = _received("d", b'{"FLOW RATE": 3}', T0 + 2 * S, twins)
    assert third.samples == [Sample(T0 + 2 * S, {}, {})]
    assert twin.dropped["FLOW RATE"][0] == "collision"


def test_a_plain_name_first_owns_its_canonical_form() -> None:
    """Test that a renamed field colliding with a name sent plainly before is dropped."""
    twins = Twins()
    _received("d", b'{"flow_rate": 1}', T0, twins)
    second = _received("d", b'{"Flow Rate": 2}', T0 + S, twins)
    assert second.notes is not None
    assert second.notes.dropped == [("Flow Rate", "collision")]
    assert twins.get("d").metrics["flow_rate"] == (T0, 1.0)  # type: ignore[union-attr]


def test_names_units_drops_and_origin_survive_persistence() -> None:
    """Test that what the device sent under other names comes back from the state DB form."""
    twins = Twins()
    message = _received(
        "d",
        b'{"values": {"Flow Rate": 1, "bad": null}, "units": {"Flow Rate": "l/min"}}',
        T0,
        twins,
    )
    message.origin = Origin("zigbee2mqtt", (("device", "Living room"),))
    twins.apply(message, T0)
    twin = twins.get("d")
    assert twin is not None
    again = DeviceTwin.from_dict(orjson.loads(orjson.dumps(twin.to_dict())))
    assert again.names == {"flow_rate": "Flow Rate"}
    assert again.units == {"flow_rate": "l/min"}
    assert again.dropped == {"bad": ["null", 2, T0]}
    assert again.origin == Origin("zigbee2mqtt", (("device", "Living room"),))


def test_dropped_fields_are_bounded_per_device() -> None:
    """Test that a device sending ever new bad fields keeps only the newest 32 on its twin."""
    twin = DeviceTwin("d", T0)
    twin.note_dropped([(f"f{i}", "null") for i in range(100)], T0)
    assert len(twin.dropped) == 32
    assert "f99" in twin.dropped
    assert "f0" not in twin.dropped
