"""Decide when to log a repeated event: at most once per key per period (pure: time is passed)."""

from __future__ import annotations


class LogLimiter:
    """Allow one event per key per `period_s`; count what was suppressed in between.

    >>> limiter = LogLimiter(60)
    >>> limiter.allow(("d1", "not_json"), 0.0), limiter.allow(("d1", "not_json"), 30.0)
    (0, None)
    >>> limiter.allow(("d1", "not_json"), 61.0)
    1
    """

    def __init__(self, period_s: float, max_keys: int = 10_000) -> None:
        self._period = period_s
        self._max_keys = max_keys
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def allow(self, key: object, now_s: float) -> int | None:
        """Return None to stay quiet, or how many events were suppressed since the last one."""
        last = self._last.get(key)
        if last is not None and now_s - last < self._period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._last) >= self._max_keys:
            cutoff = now_s - self._period
            self._last = {k: t for k, t in self._last.items() if t >= cutoff}
            self._suppressed = {k: n for k, n in self._suppressed.items() if k in self._last}
        self._last[key] = now_s
        return self._suppressed.pop(key, 0)
