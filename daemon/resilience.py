"""Surviving the stores: retry transient errors with backoff, and say how each store is doing.

Every task that writes state goes through `persist`: a store that is away (locked, read-only,
full, unreachable) stops that task's progress, never the daemon. `/readyz` reports the failing
stores with the last error, from the writers themselves and from a periodic write probe.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from daemon.core.backoff import backoff_delay
from daemon.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_BASE_S = 0.2
RETRY_CAP_S = 10.0


class StoreHealth:
    """The last thing each named store ("series", "state") said: fine, or why not."""

    def __init__(self, *names: str) -> None:
        self._problems: dict[str, str | None] = dict.fromkeys(names)
        self.failures = 0

    def failed(self, name: str, problem: str) -> None:
        self._problems[name] = problem
        self.failures += 1

    def ok(self, name: str) -> None:
        self._problems[name] = None

    def healthy(self, name: str) -> bool:
        return self._problems.get(name) is None

    def checks(self) -> dict[str, bool]:
        return {name: problem is None for name, problem in self._problems.items()}

    def problems(self) -> dict[str, str]:
        return {name: problem for name, problem in self._problems.items() if problem is not None}


async def persist(
    call: Callable[[], Awaitable[T]],
    what: str,
    store: str,
    health: StoreHealth,
    on_error: Callable[[], None] = lambda: None,
    *,
    write: bool = True,
) -> T:
    """Await `call()` until it succeeds, retrying StoreUnavailable with capped jittered backoff.

    Only cancellation ends the wait: what the caller was about to persist is never dropped.
    A successful write proves the store healthy again; a successful read (`write=False`) does
    not (a read-only or full disk still serves reads).
    """
    attempt = 0
    while True:
        try:
            result = await call()
        except StoreUnavailable as exc:
            health.failed(store, exc.detail)
            on_error()
            delay = backoff_delay(attempt, RETRY_BASE_S, RETRY_CAP_S, random.random())  # noqa: S311
            log.error("%s failed (%s); retrying in %.1fs", what, exc, delay)
            attempt += 1
            await asyncio.sleep(delay)
        else:
            if attempt:
                log.info("%s succeeded after %d retries", what, attempt)
            if write:
                health.ok(store)
            return result
