"""Table-driven tests of the MQTT topic contract and of message classification by topic."""

from __future__ import annotations

import pytest

from daemon.core.messages import (
    DEAD_LETTER_BYTES,
    Meta,
    Rejected,
    Reply,
    Status,
    Telemetry,
    classify,
)
from daemon.core.payloads import Limits, Sample
from daemon.core.topics import Topic, TopicKind, is_device_id, parse_topic, subscriptions
from daemon.errors import PayloadRejected

RECEIVED = 1_700_000_000_000

TOPICS = [
    pytest.param(
        "devices/b1/telemetry", "devices", Topic(TopicKind.TELEMETRY, "b1"), id="telemetry"
    ),
    pytest.param("devices/b1/status", "devices", Topic(TopicKind.STATUS, "b1"), id="status"),
    pytest.param("devices/b1/meta", "devices", Topic(TopicKind.META, "b1"), id="meta"),
    pytest.param(
        "devices/b1/commands/cmd-42/reply",
        "devices",
        Topic(TopicKind.REPLY, "b1", "cmd-42"),
        id="reply-with-command-id",
    ),
    pytest.param(
        "devices/Boiler_17.a:b-C/telemetry",
        "devices",
        Topic(TopicKind.TELEMETRY, "Boiler_17.a:b-C"),
        id="every-allowed-character",
    ),
    pytest.param(
        "devices/" + "d" * 128 + "/status",
        "devices",
        Topic(TopicKind.STATUS, "d" * 128),
        id="id-128-chars",
    ),
    pytest.param(
        "fleet/b1/telemetry", "fleet", Topic(TopicKind.TELEMETRY, "b1"), id="other-prefix"
    ),
    pytest.param(
        "acme/prod/devices/b1/meta",
        "acme/prod/devices",
        Topic(TopicKind.META, "b1"),
        id="multi-level-prefix",
    ),
]


@pytest.mark.parametrize(("topic", "prefix", "expected"), TOPICS)
def test_parse_topic(topic: str, prefix: str, expected: Topic) -> None:
    """Test that every topic kind of the contract is recognised with its device and command id."""
    assert parse_topic(topic, prefix) == expected


BAD_TOPICS = [
    pytest.param("devices/a/b/telemetry", "devices", "bad_topic", id="slash-splits-id"),
    pytest.param("devices/b%1/telemetry", "devices", "bad_device_id", id="percent"),
    pytest.param("devices/b 1/telemetry", "devices", "bad_device_id", id="space"),
    pytest.param("devices/+/telemetry", "devices", "bad_device_id", id="wildcard-plus"),
    pytest.param("devices/#/telemetry", "devices", "bad_device_id", id="wildcard-hash"),
    pytest.param("devices/k\u00f6ln/telemetry", "devices", "bad_device_id", id="non-ascii"),
    pytest.param("devices/" + "d" * 129 + "/telemetry", "devices", "bad_device_id", id="129-chars"),
    pytest.param("devices//telemetry", "devices", "bad_device_id", id="empty-id"),
    pytest.param("devices/b1", "devices", "bad_topic", id="no-kind"),
    pytest.param("devices/b1/", "devices", "bad_topic", id="empty-kind"),
    pytest.param("devices/b1/telemetry/", "devices", "bad_topic", id="trailing-slash"),
    pytest.param("devices/b1/Telemetry", "devices", "bad_topic", id="wrong-case-kind"),
    pytest.param("devices/b1/unknown", "devices", "bad_topic", id="unknown-kind"),
    pytest.param("devices/b1/commands/c1", "devices", "bad_topic", id="command-not-reply"),
    pytest.param("devices/b1/commands//reply", "devices", "bad_topic", id="empty-command-id"),
    pytest.param("devices/b1/commands/c1/reply/x", "devices", "bad_topic", id="reply-too-deep"),
    pytest.param("other/b1/telemetry", "devices", "bad_topic", id="other-prefix"),
    pytest.param("devicesX/b1/telemetry", "devices", "bad_topic", id="prefix-lookalike"),
    pytest.param("devices", "devices", "bad_topic", id="prefix-only"),
    pytest.param("", "devices", "bad_topic", id="empty-topic"),
    pytest.param("frontline/status", "devices", "bad_topic", id="daemon-status"),
]


@pytest.mark.parametrize(("topic", "prefix", "reason"), BAD_TOPICS)
def test_bad_topics(topic: str, prefix: str, reason: str) -> None:
    """Test that topics outside the contract are rejected with `bad_topic` or `bad_device_id`."""
    with pytest.raises(PayloadRejected) as info:
        parse_topic(topic, prefix)
    assert info.value.reason == reason


def test_bad_topic_is_rejected_every_time() -> None:
    """Test that the topic cache never turns a rejected topic into an accepted one."""
    for _ in range(3):
        with pytest.raises(PayloadRejected):
            parse_topic("devices/b%/telemetry")
    assert parse_topic("devices/b1/telemetry") is parse_topic("devices/b1/telemetry")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("boiler-17", True, id="plain"),
        pytest.param("A.b:c_d-9", True, id="punctuation"),
        pytest.param("x", True, id="one-char"),
        pytest.param("d" * 128, True, id="128-chars"),
        pytest.param("d" * 129, False, id="129-chars"),
        pytest.param("", False, id="empty"),
        pytest.param("a/b", False, id="slash"),
        pytest.param("a%b", False, id="percent"),
        pytest.param("a b", False, id="space"),
        pytest.param("a\n", False, id="trailing-newline"),
        pytest.param("caf\u00e9", False, id="non-ascii"),
        pytest.param("\uff11", False, id="fullwidth-digit"),
    ],
)
def test_is_device_id(text: str, expected: bool) -> None:
    """Test that device ids follow `[A-Za-z0-9_.:-]{1,128}` exactly."""
    assert is_device_id(text) is expected


@pytest.mark.parametrize(
    ("prefix", "group", "expected"),
    [
        pytest.param(
            "devices",
            None,
            [
                "devices/+/telemetry",
                "devices/+/status",
                "devices/+/meta",
                "devices/+/commands/+/reply",
            ],
            id="plain",
        ),
        pytest.param(
            "devices",
            "ingest",
            [
                "$share/ingest/devices/+/telemetry",
                "devices/+/status",
                "devices/+/meta",
                "devices/+/commands/+/reply",
            ],
            id="shared-telemetry-only",
        ),
        pytest.param(
            "acme/devices",
            "",
            [
                "acme/devices/+/telemetry",
                "acme/devices/+/status",
                "acme/devices/+/meta",
                "acme/devices/+/commands/+/reply",
            ],
            id="empty-group-is-no-group",
        ),
    ],
)
def test_subscriptions(prefix: str, group: str | None, expected: list[str]) -> None:
    """Test that telemetry alone is shared, while retained status and meta reach every worker."""
    assert subscriptions(prefix, group) == expected


CLASSIFIED = [
    pytest.param(
        "devices/b1/telemetry",
        b'{"temp": 21.5}',
        Telemetry("b1", [Sample(RECEIVED, {"temp": 21.5})]),
        id="telemetry",
    ),
    pytest.param("devices/b1/status", b"offline", Status("b1", "offline"), id="status"),
    pytest.param("devices/b1/status", b"", Status("b1", None), id="status-cleared"),
    pytest.param("devices/b1/meta", b'{"model": "m"}', Meta("b1", {"model": "m"}), id="meta"),
    pytest.param(
        "devices/b1/commands/c9/reply",
        b'{"status": "ok"}',
        Reply("b1", "c9", b'{"status": "ok"}'),
        id="reply",
    ),
    pytest.param(
        "devices/b1/telemetry",
        b"nope",
        Rejected("devices/b1/telemetry", "b1", "not_json", "", b"nope", 4),
        id="rejected-payload-keeps-device",
    ),
    pytest.param(
        "devices/b/1/telemetry",
        b"{}",
        Rejected("devices/b/1/telemetry", None, "bad_topic", "", b"{}", 2),
        id="rejected-topic-has-no-device",
    ),
    pytest.param(
        "devices/b1/status",
        b"maybe",
        Rejected("devices/b1/status", "b1", "bad_status", "", b"maybe", 5),
        id="rejected-status",
    ),
    pytest.param(
        "devices/b1/meta",
        b"[1]",
        Rejected("devices/b1/meta", "b1", "bad_meta", "", b"[1]", 3),
        id="rejected-meta",
    ),
]


@pytest.mark.parametrize(("topic", "payload", "expected"), CLASSIFIED)
def test_classify(topic: str, payload: bytes, expected: object) -> None:
    """Test that `classify` routes each topic kind to its parser and rejects with the reason."""
    message = classify(topic, payload, RECEIVED)
    if isinstance(expected, Rejected):
        assert isinstance(message, Rejected)
        assert (message.topic, message.device, message.reason) == (
            expected.topic,
            expected.device,
            expected.reason,
        )
        assert (message.payload, message.size) == (expected.payload, expected.size)
        assert message.detail
    else:
        assert message == expected


def test_classify_uses_prefix_and_limits() -> None:
    """Test that `classify` applies the configured topic prefix and payload limits."""
    assert classify("fleet/b1/status", b"online", RECEIVED, prefix="fleet") == Status(
        "b1", "online"
    )
    rejected = classify("devices/b1/status", b"online", RECEIVED, prefix="fleet")
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "bad_topic"
    small = classify("devices/b1/telemetry", b'{"a": 1, "b": 2}', RECEIVED, limits=Limits(8))
    assert isinstance(small, Rejected)
    assert small.reason == "too_large"


def test_classify_caps_what_it_keeps() -> None:
    """Test that a rejected message keeps at most 64 KiB of payload and its real size."""
    payload = b"x" * (DEAD_LETTER_BYTES + 10)
    topic = "devices/" + "t" * 1000
    message = classify(topic, payload, RECEIVED)
    assert isinstance(message, Rejected)
    assert message.payload == payload[:DEAD_LETTER_BYTES]
    assert message.size == DEAD_LETTER_BYTES + 10
    assert len(message.topic) == 512
    assert len(message.detail) <= 500
