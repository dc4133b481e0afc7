"""Decide when to log a repeated event: at most once per key per period (pure: time is passed)."""

from __future__ import annotations

from collections import OrderedDict


class LogLimiter:
    """Allow one event per key per `period_s`; count what was suppressed in between.

    Keys are kept in the order they were last let through, so the oldest is always at the front:
    `allow` is amortised O(1) and at most `max_keys` keys are held. When a new key arrives at the
    bound, the key let through longest ago is forgotten with its suppressed count (its next event
    is logged at once, reporting 0): a flood of distinct keys costs log lines, never memory.

    >>> limiter = LogLimiter(60)
    >>> limiter.allow(("d1", "not_json"), 0.0), limiter.allow(("d1", "not_json"), 30.0)
    (0, None)
    >>> limiter.allow(("d1", "not_json"), 61.0)
    1
    >>> small = LogLimiter(60, max_keys=2)
    >>> [small.allow(key, 0.0) for key in ("a", "b", "c")], len(small)
    ([0, 0, 0], 2)
    """

    def __init__(self, period_s: float, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._period = period_s
        self._max_keys = max_keys
        # key -> [time it was last let through, events suppressed since]
        self._keys: OrderedDict[object, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def allow(self, key: object, now_s: float) -> int | None:
        """Return None to stay quiet, or how many events were suppressed since the last one."""
        entry = self._keys.get(key)
        if entry is not None:
            if now_s - entry[0] < self._period:
                entry[1] += 1
                return None
            suppressed = int(entry[1])
            entry[0], entry[1] = now_s, 0
            self._keys.move_to_end(key)
            return suppressed
        if len(self._keys) >= self._max_keys:
            self._keys.popitem(last=False)
        self._keys[key] = [now_s, 0]
        return 0
