"""The helpdesk webhook sink: ticket events POSTed from a durable outbox, signed, per-ticket order.

`enqueue` commits the event to the outbox and returns; `run` sends what is due. Nothing is lost
(the row is committed first and stays until delivered or given up) and nothing is duplicated at
the helpdesk (a re-send after a crash carries the same `Idempotency-Key`). See docs/webhooks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from daemon.adapters.outbox_sqlite import OutboxItem, SqliteOutbox
from daemon.core.backoff import backoff_delay
from daemon.core.durations import parse_duration
from daemon.errors import StoreUnavailable

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "retry", "dead"]
OUTCOMES: tuple[Outcome, ...] = ("delivered", "retry", "dead")

#: statuses that mean "not now" rather than "never": timeout, too early, rate limited
RETRYABLE_4XX = frozenset({408, 425, 429})
#: the longest the loop sleeps without looking again (a wall-clock jump cannot stall it)
_MAX_IDLE_S = 60.0
#: pause of a ticket whose outcome could not be recorded, so it is not retried in a hot loop
_STORE_PAUSE_S = 5.0
_PURGE_EVERY_S = 3600.0
#: bytes of an error response kept for the log and the outbox row
_ERROR_SNIPPET = 200
#: ticket ids and keys travel in HTTP headers: printable ASCII, no surrounding blanks
_HEADER_VALUE = re.compile(r"[!-~](?:[ -~]{0,254}[!-~])?")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MAX_SECONDS = 100 * 365 * 86400


def _duration(value: object) -> float:
    # Same durations as the rest of the settings (`30s`, `5m`, `7d`); not imported from
    # daemon.config because that module imports this one to mount WebhookSettings.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError(f"not a duration: {str(value)[:40]!r} (use e.g. 30s, 5m, 2h, 7d)")


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0, le=_MAX_SECONDS)]


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    #: http(s) URL of the helpdesk endpoint (required when enabled)
    url: str | None = None
    #: HMAC-SHA256 key; without it requests are not signed
    secret: SecretStr | None = None
    #: seconds allowed for one request, connection to response
    timeout: Seconds = 10.0
    #: capped exponential backoff with full jitter between attempts of one event
    retry_min: Seconds = 1.0
    retry_max: Seconds = 300.0
    #: an event not delivered this long after it was enqueued is given up (dead, kept)
    max_age: Seconds = 7 * 86400
    #: tickets delivered in parallel (events of one ticket are always sent one after the other)
    concurrency: int = Field(4, ge=1, le=256)
    #: delivered events are deleted from the outbox after this long (dead ones are kept)
    retention: Seconds = 30 * 86400

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018  raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("secret")
    @classmethod
    def _non_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave it unset to send unsigned requests)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebhookSettings:
        if self.enabled and self.url is None:
            raise ValueError("webhook.url is required when webhook.enabled is true")
        if self.retry_min > self.retry_max:
            raise ValueError("webhook.retry_min must not exceed webhook.retry_max")
        return self


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the `X-Frontline-Signature` value: HMAC-SHA256 over `"<timestamp>." + body`.

    >>> sign(b"k", "1700000000", b"{}")[:15]
    'sha256=c6ef4734'
    """
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance: float = 300
) -> bool:
    """Return whether `signature` is ours for this body and timestamp, and the timestamp is fresh.

    The comparison takes constant time; a timestamp more than `tolerance` seconds from `now`
    (either way) is rejected, so a captured request cannot be replayed later.
    """
    if _TIMESTAMP.fullmatch(timestamp) is None or abs(now - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def classify(status: int) -> Outcome:
    """Return what an HTTP status means for the event.

    >>> [classify(s) for s in (200, 204, 429, 503, 400, 404, 302)]
    ['delivered', 'delivered', 'retry', 'retry', 'dead', 'dead', 'retry']
    """
    if 200 <= status < 300:
        return "delivered"
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return "dead"  # the helpdesk refuses this event: sending it again cannot help
    # 5xx, 408/425/429, and 1xx/3xx (redirects are not followed: that is a URL to fix, and the
    # event must wait for the fix rather than be thrown away).
    return "retry"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds a `Retry-After` header asks to wait (delta-seconds or HTTP date).

    >>> parse_retry_after("120", 0), parse_retry_after("soon", 0), parse_retry_after(None, 0)
    (120.0, None, None)
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP date is always GMT; a zoneless one is not an HTTP date
    return max(0.0, when.timestamp() - now)


def _check_header_value(name: str, value: str) -> None:
    if _HEADER_VALUE.fullmatch(value) is None:
        raise ValueError(
            f"{name} must be 1-256 printable ASCII characters without surrounding blanks:"
            f" {value[:60]!r}"
        )


class WebhookSink:
    """Delivers ticket events to the helpdesk. `run()` is the long-running task."""

    def __init__(
        self,
        settings: WebhookSettings,
        outbox: SqliteOutbox,
        metrics: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        # Wall clock, not monotonic: due times are stored and must survive a restart.
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311  jitter, not cryptography
        self._secret = None if settings.secret is None else settings.secret.get_secret_value()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._failing_since: float | None = None
        self._failures = 0
        self._store_failing = False
        self._next_purge = 0.0
        registry = metrics if metrics is not None else CollectorRegistry()
        self._deliveries = Counter(
            "frontline_webhook_deliveries",
            "Webhook delivery attempts, by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self._deliveries.labels(outcome)
        self._pending = Gauge(
            "frontline_webhook_pending", "Ticket events waiting for the helpdesk", registry=registry
        )
        self._latency = Histogram(
            "frontline_webhook_latency_seconds",
            "Duration of one POST to the helpdesk, any outcome",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self._delay = Histogram(
            "frontline_webhook_delivery_delay_seconds",
            "From enqueue to delivery of one event (retries and outages included)",
            buckets=(0.1, 1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 7 * 86400),
            registry=registry,
        )

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    async def enqueue(self, ticket_id: str, event: Mapping[str, Any], idempotency_key: str) -> None:
        """Store `event` for delivery; it is committed when this returns.

        A second event with the same `idempotency_key` is ignored, so a caller that is unsure
        whether an earlier call went through may simply call again. Does nothing when disabled.
        """
        _check_header_value("ticket_id", ticket_id)
        _check_header_value("idempotency_key", idempotency_key)
        if not self._settings.enabled:
            return
        body = orjson.dumps(event)
        if await self._outbox.add(ticket_id, idempotency_key, body, self._now_ms()):
            self._wake.set()
        else:
            log.debug("webhook event %s of ticket %s already queued", idempotency_key, ticket_id)

    # `timeout` is a budget the shutdown sequence hands out, not a cancel scope of the caller.
    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until no event is pending; False if some still are after `timeout` seconds."""
        if not self._settings.enabled:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            progress = self._progress  # taken before the check: no progress can slip between
            if await self._outbox.pending() == 0:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await progress.wait()

    async def run(self) -> None:
        """Send due events until cancelled; events in flight then stay pending for next time."""
        if not self._settings.enabled:
            log.info("helpdesk webhook disabled")
            await asyncio.Event().wait()  # idle until cancelled, like every other component
            return
        s = self._settings
        log.info("helpdesk webhook to %s (concurrency %d)", _redacted(s.url or ""), s.concurrency)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=s.timeout),
            connector=aiohttp.TCPConnector(limit=s.concurrency),
            headers={"User-Agent": "Frontline-Webhook/1"},
        )
        try:
            await self._dispatch_loop(session)
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()

    async def _dispatch_loop(self, session: aiohttp.ClientSession) -> None:
        while True:
            self._wake.clear()
            try:
                wait = await self._dispatch(session)
                if self._store_failing:
                    log.info("webhook outbox %s is available again", self._outbox.url)
                    self._store_failing = False
            except StoreUnavailable as exc:
                if not self._store_failing:
                    log.warning("webhook outbox unavailable, retrying: %s", exc)
                    self._store_failing = True
                wait = _STORE_PAUSE_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_MAX_IDLE_S if wait is None else min(wait, _MAX_IDLE_S)):
                    await self._wake.wait()

    async def _dispatch(self, session: aiohttp.ClientSession) -> float | None:
        """Start every due event that fits; return how long to wait (None: until woken)."""
        now_ms = self._now_ms()
        await self._purge(now_ms)
        self._pending.set(await self._outbox.pending())
        free = self._settings.concurrency - len(self._in_flight)
        if free <= 0:
            return None  # a finishing delivery wakes the loop
        # Heads of tickets in flight come back too; asking for that many more is enough.
        for item in await self._outbox.due(now_ms, free + len(self._in_flight)):
            if item.ticket_id in self._in_flight:
                continue
            if free == 0:
                return None  # more is due than fits
            self._start(session, item)
            free -= 1
        next_ms = await self._outbox.next_due_ms(now_ms)
        if next_ms is None:
            return None
        return max(0.0, (next_ms - self._now_ms()) / 1000)

    async def _purge(self, now_ms: int) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + _PURGE_EVERY_S
        removed = await self._outbox.purge_delivered(now_ms - int(self._settings.retention * 1000))
        if removed:
            log.info("webhook outbox: removed %d delivered events past retention", removed)

    def _start(self, session: aiohttp.ClientSession, item: OutboxItem) -> None:
        task = asyncio.create_task(self._deliver(session, item), name=f"webhook-{item.id}")
        self._in_flight[item.ticket_id] = task
        task.add_done_callback(functools.partial(self._finished, item.ticket_id))

    def _finished(self, ticket_id: str, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(ticket_id, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("webhook delivery task of ticket %s failed: %r", ticket_id, exc)
        self._wake.set()
        # Replace rather than clear: every flush() waiting on the old event sees this progress.
        self._progress.set()
        self._progress = asyncio.Event()

    async def _deliver(self, session: aiohttp.ClientSession, item: OutboxItem) -> None:
        try:
            await self._attempt(session, item)
        except StoreUnavailable as exc:
            log.warning(
                "webhook event %s of ticket %s: outcome not recorded, stays pending: %s",
                item.id,
                item.ticket_id,
                exc,
            )
            await asyncio.sleep(_STORE_PAUSE_S)  # keeps the ticket's slot: no hot retry
        except Exception:  # one event's bug must not stop the sink; logged with its traceback
            log.exception("webhook event %s of ticket %s failed", item.id, item.ticket_id)
            await asyncio.sleep(_STORE_PAUSE_S)

    async def _attempt(self, session: aiohttp.ClientSession, item: OutboxItem) -> None:
        await self._decide(session, item)
        # Before this task ends (and flush() hears of it), so the gauge is never behind.
        self._pending.set(await self._outbox.pending())

    async def _decide(self, session: aiohttp.ClientSession, item: OutboxItem) -> None:
        s = self._settings
        max_age_ms = int(s.max_age * 1000)
        now = self._clock()
        if math.floor(now * 1000) - item.since_ms >= max_age_ms:
            error = f"expired: not delivered within max_age ({s.max_age:g}s)"
            await self._give_up(item, item.attempts, math.floor(now * 1000), error)
            return
        attempt = item.attempts + 1
        status, error, retry_after = await self._post(session, item, attempt, now)
        end_ms = self._now_ms()
        outcome = "retry" if status is None else classify(status)
        if outcome == "delivered":
            await self._outbox.delivered(item.id, end_ms)
            self._deliveries.labels("delivered").inc()
            self._delay.observe(max(0.0, (end_ms - item.created_ms) / 1000))
            self._note_success()
            return
        if outcome == "dead":
            await self._give_up(item, attempt, end_ms, error)
            return
        backoff = backoff_delay(item.attempts, s.retry_min, s.retry_max, self._rng.random())
        delay = min(s.retry_max, max(backoff, retry_after or 0.0))
        next_ms = end_ms + math.ceil(delay * 1000)
        if next_ms - item.since_ms >= max_age_ms:
            await self._give_up(item, attempt, end_ms, f"{error}; max_age ({s.max_age:g}s) reached")
            return
        await self._outbox.failed(item.id, attempt, next_ms, error, dead=False)
        self._deliveries.labels("retry").inc()
        self._note_failure(item, attempt, error, delay)

    async def _post(
        self, session: aiohttp.ClientSession, item: OutboxItem, attempt: int, now: float
    ) -> tuple[int | None, str, float | None]:
        """POST one event; return (status or None if no answer, error text, Retry-After)."""
        timestamp = str(math.floor(now))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": item.key,
            "X-Frontline-Event-Id": str(item.id),
            "X-Frontline-Ticket": item.ticket_id,
            "X-Frontline-Timestamp": timestamp,
            "X-Frontline-Attempt": str(attempt),
        }
        if self._secret is not None:
            headers["X-Frontline-Signature"] = sign(
                self._secret.encode("utf-8"), timestamp, item.body
            )
        assert self._settings.url is not None  # checked by WebhookSettings when enabled
        started = time.monotonic()
        try:
            async with (
                asyncio.timeout(self._settings.timeout),
                session.post(
                    self._settings.url, data=item.body, headers=headers, allow_redirects=False
                ) as response,
            ):
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
                if 200 <= status < 300:
                    return status, "", retry_after
                snippet = await response.content.read(_ERROR_SNIPPET)
                text = snippet.decode("utf-8", "replace").strip()
                return status, f"HTTP {status}" + (f": {text}" if text else ""), retry_after
        except TimeoutError:
            return None, f"no answer within {self._settings.timeout:g}s", None
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        finally:
            self._latency.observe(time.monotonic() - started)

    async def _give_up(self, item: OutboxItem, attempts: int, now_ms: int, error: str) -> None:
        await self._outbox.failed(item.id, attempts, now_ms, error, dead=True)
        self._deliveries.labels("dead").inc()
        log.warning(
            "webhook event %s (ticket %s, key %s) given up after %d attempts, kept as dead: %s",
            item.id,
            item.ticket_id,
            item.key,
            attempts,
            error,
        )

    def _note_failure(self, item: OutboxItem, attempt: int, error: str, delay: float) -> None:
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "helpdesk webhook failing: %s (ticket %s, event %s, attempt %d); retrying with"
                " backoff, further failures logged at DEBUG until a delivery succeeds",
                error,
                item.ticket_id,
                item.id,
                attempt,
            )
        else:
            log.debug(
                "webhook event %s of ticket %s: attempt %d failed (%s), next in %.2fs",
                item.id,
                item.ticket_id,
                attempt,
                error,
                delay,
            )

    def _note_success(self) -> None:
        if self._failing_since is not None:
            log.info(
                "helpdesk webhook delivering again after %d failed attempts over %.1fs",
                self._failures,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
            self._failures = 0


def _redacted(url: str) -> str:
    """Return `url` without credentials or query (which may carry a token) for the log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
