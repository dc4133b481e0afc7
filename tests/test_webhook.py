"""The helpdesk webhook sink and its outbox, against a real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import hashlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

import daemon.adapters.webhook as webhook_module
from daemon.adapters.mosquitto import free_port
from daemon.adapters.outbox_sqlite import SqliteOutbox
from daemon.adapters.webhook import (
    WebhookSettings,
    WebhookSink,
    classify,
    parse_retry_after,
    sign,
    verify,
)

SECRET = b"test-secret-\xe2\x9c\x93"  # UTF-8 bytes of "test-secret-✓", as the settings encode it
NOW = 1_700_000_000.0

# --- signature -------------------------------------------------------------------------------

#: computed independently: `{ printf '%s.' TS; printf '%s' BODY; } | openssl dgst -sha256 -hmac K`
OPENSSL_VECTORS = [
    (b"k", "1700000000", b"{}", "c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"),
    (
        b"whsec_test",
        "1712345678",
        b'{"event":"opened","ticket":"T-1"}',
        "45196673d239d5c7a63f3cbb75511061384fcc916825de38fe8353b52efad624",
    ),
    (
        b"Jefe",
        "0",
        b"what do ya want for nothing?",
        "37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc",
    ),
]


@pytest.mark.parametrize(("secret", "timestamp", "body", "hexdigest"), OPENSSL_VECTORS)
def test_sign_matches_openssl_vectors(
    secret: bytes, timestamp: str, body: bytes, hexdigest: str
) -> None:
    """Test that sign() gives the HMACs openssl computed for the same key and message."""
    assert sign(secret, timestamp, body) == f"sha256={hexdigest}"


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [
        (b"", "1", b""),
        (b"\x00" * 100, "1700000000", b"x" * 10_000),  # a key longer than the block size
        (SECRET, "1700000000", '{"name":"Müller"}'.encode()),
        (b"k", "1700000000", b"1700000000.{}"),  # a body that itself looks like a message
    ],
)
def test_sign_is_hmac_sha256_over_timestamp_dot_body(
    secret: bytes, timestamp: str, body: bytes
) -> None:
    """Test that sign() equals hmac/hashlib over f"{timestamp}." + body."""
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(secret, timestamp, body) == "sha256=" + expected


BODY = b'{"ticket":"T-1","event":"opened"}'
GOOD = sign(SECRET, "1700000000", BODY)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "signature", "now", "ok"),
    [
        (SECRET, "1700000000", BODY, GOOD, NOW, True),
        (SECRET, "1700000000", BODY, GOOD, NOW + 300, True),  # at the tolerance
        (SECRET, "1700000000", BODY, GOOD, NOW - 300, True),  # clocks a little apart
        (SECRET, "1700000000", BODY + b" ", GOOD, NOW, False),  # tampered body
        (SECRET, "1700000000", BODY.replace(b"opened", b"closed"), GOOD, NOW, False),
        (b"other-secret", "1700000000", BODY, GOOD, NOW, False),  # wrong secret
        (SECRET, "1700000001", BODY, GOOD, NOW, False),  # timestamp changed
        (SECRET, "1700000000", BODY, GOOD, NOW + 301, False),  # stale: a replay
        (SECRET, "1700000000", BODY, GOOD, NOW - 301, False),  # from the future
        (SECRET, "1700000000", BODY, GOOD.upper(), NOW, False),
        (SECRET, "1700000000", BODY, GOOD[len("sha256=") :], NOW, False),  # prefix missing
        (SECRET, "1700000000", BODY, "", NOW, False),
        (SECRET, "1700000000", BODY, "sha256=é", NOW, False),  # non-ASCII does not crash
        (SECRET, " 1700000000", BODY, GOOD, NOW, False),
        (SECRET, "1.7e9", BODY, GOOD, NOW, False),
        (SECRET, "", BODY, GOOD, NOW, False),
    ],
)
def test_verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, ok: bool
) -> None:
    """Test that verify() accepts exactly the fresh, untampered, correctly keyed requests."""
    assert verify(secret, timestamp, body, signature, now) is ok


def test_verify_tolerance_is_a_parameter() -> None:
    """Test that a stricter tolerance rejects what the default accepts."""
    assert verify(SECRET, "1700000000", BODY, GOOD, NOW + 60)
    assert not verify(SECRET, "1700000000", BODY, GOOD, NOW + 60, tolerance=30)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"), (201, "delivered"), (202, "delivered"), (204, "delivered"),
        (408, "retry"), (425, "retry"), (429, "retry"), (500, "retry"), (502, "retry"),
        (503, "retry"), (504, "retry"), (301, "retry"), (307, "retry"),
        (400, "dead"), (401, "dead"), (403, "dead"), (404, "dead"), (409, "dead"),
        (410, "dead"), (413, "dead"), (422, "dead"),
    ],
)  # fmt: skip
def test_classify(status: int, outcome: str) -> None:
    """Test that each HTTP status maps to delivered, retry or dead."""
    assert classify(status) == outcome


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("30", 30.0),
        (" 7 ", 7.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("٣", None),  # a non-ASCII digit is not delta-seconds
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),  # a date in the past: no wait
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    """Test that Retry-After is read as delta-seconds or an HTTP date, and junk is ignored."""
    assert parse_retry_after(value, NOW) == seconds


def test_module_doctests_pass() -> None:
    """Test that the docstring examples of the webhook module pass."""
    result = doctest.testmod(webhook_module, report=False)
    assert result.attempted >= 3
    assert result.failed == 0


# --- settings --------------------------------------------------------------------------------


def test_settings_defaults_and_durations() -> None:
    """Test the defaults, and that durations are written like everywhere else (`5m`)."""
    default = WebhookSettings()
    assert (default.enabled, default.timeout, default.retry_min, default.retry_max) == (
        False, 10.0, 1.0, 300.0,
    )  # fmt: skip
    assert (default.max_age, default.concurrency) == (7 * 86400, 4)
    custom = WebhookSettings.model_validate(
        {"enabled": True, "url": "https://hd.example/hook", "retry_max": "5m", "max_age": "2d"}
    )
    assert (custom.retry_max, custom.max_age) == (300.0, 172800.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"enabled": True}, "url is required"),
        ({"url": "ftp://hd.example/hook"}, "http"),
        ({"url": "hd.example/hook"}, "http"),
        ({"url": "http://hd.example:99999/hook"}, "port"),
        ({"retry_min": 10, "retry_max": 5}, "retry_min"),
        ({"timeout": 0}, "greater than 0"),
        ({"concurrency": 0}, "greater than or equal to 1"),
        ({"secret": ""}, "must not be empty"),
        ({"retries": 3}, "Extra inputs"),
        ({"timeout": "soon"}, "duration"),
    ],
)
def test_settings_reject(values: dict[str, Any], message: str) -> None:
    """Test that inconsistent or malformed webhook settings are refused with a clear message."""
    with pytest.raises(ValidationError, match=message):
        WebhookSettings.model_validate(values)


# --- outbox ----------------------------------------------------------------------------------


def test_outbox_hands_out_one_item_per_ticket_in_order(tmp_path: Path) -> None:
    """Test that due() returns each ticket's oldest pending item, and only once it is due."""

    async def scenario() -> None:
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        try:
            assert await outbox.add("A", "a1", b"1", 1000)
            assert await outbox.add("A", "a2", b"2", 1001)
            assert await outbox.add("B", "b1", b"3", 1002)
            assert not await outbox.add("B", "a1", b"other", 1003)  # key taken: ignored
            heads = await outbox.due(1002, 10)
            assert [(i.ticket_id, i.key) for i in heads] == [("A", "a1"), ("B", "b1")]
            assert await outbox.due(999, 10) == []
            assert len(await outbox.due(1002, 1)) == 1

            a1 = heads[0]
            await outbox.failed(a1.id, 1, 5000, "HTTP 503", dead=False)
            assert [i.key for i in await outbox.due(4999, 10)] == ["b1"]  # a2 waits behind a1
            assert await outbox.next_due_ms(4999) == 5000
            assert [i.key for i in await outbox.due(5000, 10)] == ["b1", "a1"]

            await outbox.delivered(a1.id, 5100)
            assert [i.key for i in await outbox.due(5100, 10)] == ["a2", "b1"]  # due first
            a2 = (await outbox.items("A"))[1]
            await outbox.failed(a2.id, 1, 5200, "HTTP 400", dead=True)
            assert [i.key for i in await outbox.due(9999, 10)] == ["b1"]
            assert await outbox.counts() == {"pending": 1, "delivered": 1, "dead": 1}
            assert await outbox.pending() == 1

            stored = {i.key: i for i in await outbox.items()}
            assert (stored["a1"].state, stored["a1"].attempts, stored["a1"].done_ms) == (
                "delivered", 2, 5100,
            )  # fmt: skip
            assert (stored["a2"].state, stored["a2"].last_error) == ("dead", "HTTP 400")
            assert stored["b1"].body == b"3"

            # An outcome for an item that is no longer pending changes nothing.
            await outbox.failed(a1.id, 9, 1, "late", dead=False)
            assert (await outbox.items("A"))[0].state == "delivered"

            assert await outbox.retry_dead(10_000, "A") == 1
            revived = (await outbox.items("A"))[1]
            assert (revived.state, revived.attempts, revived.since_ms) == ("pending", 0, 10_000)
            assert await outbox.purge_delivered(5101) == 1
            assert [i.key for i in await outbox.items()] == ["a2", "b1"]
        finally:
            await outbox.close()

    asyncio.run(scenario())


def test_outbox_survives_reopening(tmp_path: Path) -> None:
    """Test that added items are still there, pending, after the outbox is closed and reopened."""

    async def scenario() -> None:
        first = SqliteOutbox(tmp_path / "outbox.db")
        await first.open()
        await first.add("A", "a1", b"x", 1)
        await first.close()
        second = SqliteOutbox(tmp_path / "outbox.db")
        await second.open()
        try:
            assert [(i.key, i.state) for i in await second.items()] == [("a1", "pending")]
            assert not await second.add("A", "a1", b"x", 2)
        finally:
            await second.close()

    asyncio.run(scenario())


# --- a receiver: a helpdesk that deduplicates by Idempotency-Key, like a real one should ----


@dataclass
class Seen:
    key: str
    ticket: str
    event_id: str
    attempt: int
    signed_ok: bool
    body: bytes
    at: float
    #: keys of this ticket the helpdesk had already applied when this request arrived
    applied_before: tuple[str, ...]


Responder = Callable[[Seen], Awaitable[web.StreamResponse]]


async def ok(_: Seen) -> web.StreamResponse:
    return web.Response(status=200, text="ok")


@dataclass
class Receiver:
    port: int = 0
    secret: bytes = SECRET
    respond: Responder = ok
    seen: list[Seen] = field(default_factory=list)
    applied: dict[str, list[str]] = field(default_factory=dict)
    runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        # A client that gives up (timeout, cancellation) cancels its handler, as in production.
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        h = request.headers
        assert h["Content-Type"] == "application/json"
        ticket, key = h["X-Frontline-Ticket"], h["Idempotency-Key"]
        seen = Seen(
            key=key,
            ticket=ticket,
            event_id=h["X-Frontline-Event-Id"],
            attempt=int(h["X-Frontline-Attempt"]),
            signed_ok=verify(
                self.secret,
                h["X-Frontline-Timestamp"],
                body,
                h.get("X-Frontline-Signature", ""),
                time.time(),
            ),
            body=body,
            at=time.monotonic(),
            applied_before=tuple(self.applied.get(ticket, ())),
        )
        self.seen.append(seen)
        response = await self.respond(seen)
        if 200 <= response.status < 300:
            keys = self.applied.setdefault(ticket, [])
            if key not in keys:  # the deduplication the Idempotency-Key exists for
                keys.append(key)
        return response

    def wire_count(self) -> Counter[str]:
        return Counter(s.key for s in self.seen)


def settings(url: str, **overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "url": url,
        "secret": SecretStr(SECRET.decode()),
        "timeout": 2.0,
        "retry_min": 0.05,
        "retry_max": 0.2,
        "concurrency": 4,
    }
    values.update(overrides)
    return WebhookSettings.model_validate(values)


@contextlib.asynccontextmanager
async def running(sink: WebhookSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sink.run(), name="webhook-sink")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], limit: float = 10.0, what: str = "it") -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def event(ticket: str, n: int) -> dict[str, Any]:
    return {"ticket": ticket, "seq": n, "event": "opened" if n == 0 else "updated"}


def assert_in_order(receiver: Receiver, expected: dict[str, list[str]]) -> None:
    """Every event applied once, in order per ticket, no request sent before its predecessors."""
    assert receiver.applied == expected
    for seen in receiver.seen:
        keys = expected[seen.ticket]
        earlier = keys[: keys.index(seen.key)]
        assert set(earlier) <= set(seen.applied_before), f"{seen.key} sent before {earlier}"


# --- delivery ----------------------------------------------------------------------------------


def test_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Test that 500s, then a receiver that is down, then up again: all arrive once, in order."""

    async def scenario() -> None:
        failures_left = 4

        async def flaky(_: Seen) -> web.StreamResponse:
            nonlocal failures_left
            if failures_left > 0:
                failures_left -= 1
                return web.Response(status=500, text="helpdesk hiccup")
            return web.Response(status=200)

        receiver = await Receiver(respond=flaky).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        registry = CollectorRegistry()
        sink = WebhookSink(settings(receiver.url), outbox, registry)
        expected = {t: [f"{t}-{n}" for n in range(5)] for t in ("T1", "T2", "T3")}
        try:
            for n in range(2):
                for ticket in expected:
                    await sink.enqueue(ticket, event(ticket, n), f"{ticket}-{n}")
            async with running(sink):
                await until(lambda: failures_left == 0 and bool(receiver.applied), what="500s")
                await receiver.stop()  # down: connection refused from now on
                retries = sample(registry, "frontline_webhook_deliveries_total", outcome="retry")
                for n in range(2, 5):
                    for ticket in expected:
                        await sink.enqueue(ticket, event(ticket, n), f"{ticket}-{n}")
                await until(
                    lambda: (
                        sample(registry, "frontline_webhook_deliveries_total", outcome="retry")
                        >= retries + 6
                    ),
                    what="refused connections",
                )
                await receiver.start()  # up again, same port
                assert await sink.flush(10)
        finally:
            await receiver.stop()
            await outbox.close()

        assert_in_order(receiver, expected)
        assert all(s.signed_ok for s in receiver.seen)
        assert sum(1 for s in receiver.seen if s.attempt > 1) >= 1
        for seen in receiver.seen:  # the body is the event, byte for byte
            ticket, seq = seen.key.rsplit("-", 1)
            assert orjson.loads(seen.body) == event(ticket, int(seq))
        assert sample(registry, "frontline_webhook_deliveries_total", outcome="delivered") == 15
        assert sample(registry, "frontline_webhook_deliveries_total", outcome="dead") == 0
        assert sample(registry, "frontline_webhook_deliveries_total", outcome="retry") >= 10
        assert sample(registry, "frontline_webhook_pending") == 0
        assert sample(registry, "frontline_webhook_latency_seconds_count") >= 25

    asyncio.run(scenario())


def test_attempt_headers_and_event_id_are_stable(tmp_path: Path) -> None:
    """Test that retries keep the event id and key and count X-Frontline-Attempt up from 1."""

    async def scenario() -> None:
        async def fail_twice(seen: Seen) -> web.StreamResponse:
            return web.Response(status=503 if seen.attempt <= 2 else 204)

        receiver = await Receiver(respond=fail_twice).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url), outbox)
        try:
            await sink.enqueue("T1", {"n": 1}, "k1")
            async with running(sink):
                assert await sink.flush(5)
        finally:
            await receiver.stop()
            await outbox.close()
        assert [(s.attempt, s.event_id, s.key) for s in receiver.seen] == [
            (1, "1", "k1"), (2, "1", "k1"), (3, "1", "k1"),
        ]  # fmt: skip

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("retry_after", "retry_max", "least", "most"),
    [
        ("1", 5.0, 0.95, 3.0),  # honoured although the backoff would retry within 0.05 s
        ("3600", 0.3, 0.0, 1.0),  # capped by retry_max
    ],
)
def test_retry_after_is_honoured_up_to_retry_max(
    tmp_path: Path, retry_after: str, retry_max: float, least: float, most: float
) -> None:
    """Test that a 429 with Retry-After delays the next attempt that long, at most retry_max."""

    async def scenario() -> None:
        async def limited(seen: Seen) -> web.StreamResponse:
            if seen.attempt == 1:
                return web.Response(status=429, headers={"Retry-After": retry_after})
            return web.Response(status=200)

        receiver = await Receiver(respond=limited).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url, retry_max=retry_max), outbox)
        try:
            await sink.enqueue("T1", {"n": 1}, "k1")
            async with running(sink):
                assert await sink.flush(5)
        finally:
            await receiver.stop()
            await outbox.close()
        first, second = receiver.seen
        assert least <= second.at - first.at <= most

    asyncio.run(scenario())


def test_refused_event_is_dead_and_the_next_one_still_goes(tmp_path: Path) -> None:
    """Test that a 400 makes that event dead (kept, counted) and the ticket's next event goes."""

    async def scenario() -> None:
        async def picky(seen: Seen) -> web.StreamResponse:
            if seen.key == "T1-0":
                return web.Response(status=400, text="unknown category")
            return web.Response(status=200)

        receiver = await Receiver(respond=picky).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        registry = CollectorRegistry()
        sink = WebhookSink(settings(receiver.url), outbox, registry)
        try:
            for n in range(2):
                await sink.enqueue("T1", event("T1", n), f"T1-{n}")
            async with running(sink):
                assert await sink.flush(5)
            items = await outbox.items("T1")
        finally:
            await receiver.stop()
            await outbox.close()
        assert [s.key for s in receiver.seen] == ["T1-0", "T1-1"]  # the 400 was not retried
        assert [(i.key, i.state, i.attempts) for i in items] == [
            ("T1-0", "dead", 1), ("T1-1", "delivered", 1),
        ]  # fmt: skip
        assert items[0].last_error == "HTTP 400: unknown category"
        assert items[0].body == orjson.dumps(event("T1", 0))
        assert sample(registry, "frontline_webhook_deliveries_total", outcome="dead") == 1
        assert sample(registry, "frontline_webhook_deliveries_total", outcome="retry") == 0

    asyncio.run(scenario())


def test_events_past_max_age_are_given_up(tmp_path: Path) -> None:
    """Test that an event still failing at max_age is dead, and so is its expired successor."""

    async def scenario() -> None:
        async def down(_: Seen) -> web.StreamResponse:
            return web.Response(status=503)

        receiver = await Receiver(respond=down).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url, max_age=0.3), outbox)
        try:
            await sink.enqueue("T1", {"n": 0}, "k0")
            await sink.enqueue("T1", {"n": 1}, "k1")
            async with running(sink):
                assert await sink.flush(5)
            k0, k1 = await outbox.items()
        finally:
            await receiver.stop()
            await outbox.close()
        # k0 is given up once its next retry would fall past max_age; k1 then gets what is
        # left of its own max_age, which may be nothing ("expired") or a few attempts.
        keys = [s.key for s in receiver.seen]
        assert keys[0] == "k0"
        assert keys == sorted(keys)
        assert (k0.state, k1.state) == ("dead", "dead")
        assert "max_age" in (k0.last_error or "")
        assert "max_age" in (k1.last_error or "")

    asyncio.run(scenario())


def test_events_expired_during_downtime_are_not_sent(tmp_path: Path) -> None:
    """Test that after a downtime longer than max_age, old events are dead without a request."""

    async def scenario() -> None:
        receiver = await Receiver().start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        s = settings(receiver.url, max_age=3600)
        try:
            await WebhookSink(s, outbox, clock=lambda: NOW).enqueue("T1", {"n": 0}, "old")
            later = WebhookSink(s, outbox, clock=lambda: NOW + 3601)
            await later.enqueue("T1", {"n": 1}, "new")
            async with running(later):
                assert await later.flush(5)
            states = [(i.key, i.state) for i in await outbox.items()]
        finally:
            await receiver.stop()
            await outbox.close()
        assert states == [("old", "dead"), ("new", "delivered")]
        assert [s.key for s in receiver.seen] == ["new"]

    asyncio.run(scenario())


def test_slow_ticket_does_not_delay_other_tickets(tmp_path: Path) -> None:
    """Test that while ticket A's request hangs past the timeout, ticket B is delivered at once."""

    async def scenario() -> None:
        async def slow_for_a(seen: Seen) -> web.StreamResponse:
            if seen.key == "A-0" and seen.attempt == 1:
                await asyncio.sleep(30)  # cancelled when the sink gives up on it
            return web.Response(status=200)

        receiver = await Receiver(respond=slow_for_a).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url, timeout=0.6, concurrency=2), outbox)
        try:
            await sink.enqueue("A", event("A", 0), "A-0")
            await sink.enqueue("A", event("A", 1), "A-1")
            for n in range(3):
                await sink.enqueue("B", event("B", n), f"B-{n}")
            started = time.monotonic()
            async with running(sink):
                await until(lambda: len(receiver.applied.get("B", [])) == 3, what="ticket B")
                b_done = time.monotonic() - started
                assert "A" not in receiver.applied  # A is still hanging
                assert await sink.flush(5)
            elapsed = time.monotonic() - started
        finally:
            await receiver.stop()
            await outbox.close()
        assert b_done < 0.5, f"ticket B waited {b_done:.2f}s behind ticket A"
        assert elapsed >= 0.6  # A's first attempt really did time out
        assert_in_order(receiver, {"A": ["A-0", "A-1"], "B": ["B-0", "B-1", "B-2"]})
        assert receiver.wire_count()["A-0"] == 2  # at least once on the wire, once applied

    asyncio.run(scenario())


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    """Test that no more than `concurrency` requests are in flight, and that many are used."""

    async def scenario() -> int:
        active = peak = 0

        async def counting(_: Seen) -> web.StreamResponse:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.05)
            active -= 1
            return web.Response(status=200)

        receiver = await Receiver(respond=counting).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url, concurrency=3), outbox)
        try:
            for n in range(2):
                for ticket in ("T1", "T2", "T3", "T4", "T5", "T6"):
                    await sink.enqueue(ticket, event(ticket, n), f"{ticket}-{n}")
            async with running(sink):
                assert await sink.flush(5)
        finally:
            await receiver.stop()
            await outbox.close()
        assert sum(len(keys) for keys in receiver.applied.values()) == 12
        return peak

    assert asyncio.run(scenario()) == 3


def test_restart_delivers_what_was_pending(tmp_path: Path) -> None:
    """Test that events enqueued while the helpdesk is down reach it from a new sink and outbox."""

    async def scenario() -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}/hook"
        path = tmp_path / "outbox.db"
        expected = {t: [f"{t}-{n}" for n in range(3)] for t in ("T1", "T2", "T3")}

        outbox = SqliteOutbox(path)
        await outbox.open()
        sink = WebhookSink(settings(url), outbox)
        try:
            for n in range(3):
                for ticket in expected:
                    await sink.enqueue(ticket, event(ticket, n), f"{ticket}-{n}")
            async with running(sink):
                for _ in range(200):
                    if sum(i.attempts for i in await outbox.items()) >= 6:
                        break
                    await asyncio.sleep(0.01)
                assert not await sink.flush(0.05)
        finally:
            await outbox.close()

        receiver = await Receiver(port=port).start()
        reopened = SqliteOutbox(path)
        await reopened.open()
        sink = WebhookSink(settings(url), reopened)
        try:
            assert (await reopened.counts())["pending"] == 9
            async with running(sink):
                assert await sink.flush(5)
        finally:
            await receiver.stop()
            await reopened.close()
        assert_in_order(receiver, expected)
        assert max(receiver.wire_count().values()) == 1

    asyncio.run(scenario())


def test_crash_after_send_resends_with_the_same_key(tmp_path: Path) -> None:
    """Test that a sink stopped before it saw the answer re-sends; the helpdesk applies it once."""

    async def scenario() -> None:
        sink_task: asyncio.Task[None] | None = None

        async def crash_sink_once(seen: Seen) -> web.StreamResponse:
            if len(receiver.seen) == 1:
                receiver.applied.setdefault(seen.ticket, []).append(seen.key)  # applied...
                assert sink_task is not None
                sink_task.cancel()  # ...and the daemon dies before it reads the answer
                await asyncio.sleep(30)
            return web.Response(status=200)

        receiver = await Receiver(respond=crash_sink_once).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        try:
            first = WebhookSink(settings(receiver.url), outbox)
            await first.enqueue("T1", {"n": 0}, "k0")
            async with running(first) as sink_task:
                with contextlib.suppress(asyncio.CancelledError):
                    await sink_task
            assert [(i.state, i.attempts) for i in await outbox.items()] == [("pending", 0)]
            second = WebhookSink(settings(receiver.url), outbox)
            async with running(second):
                assert await second.flush(5)
        finally:
            await receiver.stop()
            await outbox.close()
        assert [(s.key, s.event_id, s.attempt) for s in receiver.seen] == [
            ("k0", "1", 1), ("k0", "1", 1),
        ]  # fmt: skip
        assert receiver.applied == {"T1": ["k0"]}

    asyncio.run(scenario())


def test_duplicate_enqueue_is_stored_and_sent_once(tmp_path: Path) -> None:
    """Test that a second enqueue with the same idempotency key is ignored."""

    async def scenario() -> None:
        receiver = await Receiver().start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url), outbox)
        try:
            await sink.enqueue("T1", {"v": 1}, "T1:opened")
            await sink.enqueue("T1", {"v": 2}, "T1:opened")
            items = await outbox.items()
            async with running(sink):
                assert await sink.flush(5)
            await sink.enqueue("T1", {"v": 3}, "T1:opened")  # also after delivery
            assert await sink.flush(1)
        finally:
            await receiver.stop()
            await outbox.close()
        assert [(i.key, i.body) for i in items] == [("T1:opened", b'{"v":1}')]
        assert [s.body for s in receiver.seen] == [b'{"v":1}']

    asyncio.run(scenario())


def test_one_warning_per_failure_streak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Test that many failed attempts log one warning, and the recovery one info line."""

    async def scenario() -> None:
        async def fail_five(seen: Seen) -> web.StreamResponse:
            return web.Response(status=502 if seen.attempt <= 5 else 200)

        receiver = await Receiver(respond=fail_five).start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url), outbox)
        try:
            await sink.enqueue("T1", {"n": 0}, "k0")
            async with running(sink):
                assert await sink.flush(5)
        finally:
            await receiver.stop()
            await outbox.close()

    with caplog.at_level(logging.DEBUG, logger="daemon.adapters.webhook"):
        asyncio.run(scenario())
    records = [r for r in caplog.records if r.name == "daemon.adapters.webhook"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "HTTP 502" in warnings[0]
    assert sum(r.levelno == logging.DEBUG for r in records) == 4
    assert any("delivering again after 5 failed attempts" in r.getMessage() for r in records)


def test_unsigned_when_no_secret(tmp_path: Path) -> None:
    """Test that without a secret no signature header is sent."""

    async def scenario() -> list[Seen]:
        receiver = await Receiver().start()
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings(receiver.url, secret=None), outbox)
        try:
            await sink.enqueue("T1", {"n": 0}, "k0")
            async with running(sink):
                assert await sink.flush(5)
        finally:
            await receiver.stop()
            await outbox.close()
        return receiver.seen

    (seen,) = asyncio.run(scenario())
    assert not seen.signed_ok


def test_disabled_sink_stores_and_sends_nothing(tmp_path: Path) -> None:
    """Test that a disabled sink ignores events and idles until cancelled."""

    async def scenario() -> None:
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(WebhookSettings(), outbox)
        try:
            await sink.enqueue("T1", {"n": 0}, "k0")
            async with running(sink) as task:
                await asyncio.sleep(0.05)
                assert not task.done()
                assert await sink.flush(0.1)
            assert await outbox.items() == []
        finally:
            await outbox.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("ticket", "key"),
    [("", "k"), ("T1", ""), ("T1\r\nX-Evil: 1", "k"), ("T1", "k\n"), (" T1", "k"), ("T1", "ü")],
)
def test_enqueue_rejects_ids_unfit_for_headers(tmp_path: Path, ticket: str, key: str) -> None:
    """Test that ticket ids and keys that cannot travel in an HTTP header are refused at once."""

    async def scenario() -> None:
        outbox = SqliteOutbox(tmp_path / "outbox.db")
        await outbox.open()
        sink = WebhookSink(settings("http://127.0.0.1:9/hook"), outbox)
        try:
            with pytest.raises(ValueError, match="printable ASCII"):
                await sink.enqueue(ticket, {}, key)
            assert await outbox.items() == []
        finally:
            await outbox.close()

    asyncio.run(scenario())
