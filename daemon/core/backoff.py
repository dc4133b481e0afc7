"""Capped exponential backoff with full jitter (pure: the random draw is an argument)."""

from __future__ import annotations


def backoff_delay(attempt: int, base: float, cap: float, draw: float) -> float:
    """Return the delay before retry number `attempt` (0-based); `draw` is uniform in [0, 1).

    Full jitter spreads a fleet of reconnecting clients instead of synchronising them.

    >>> backoff_delay(0, 0.5, 30, 0.999) < 0.5, backoff_delay(20, 0.5, 30, 0.5)
    (True, 15.0)
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    return max(0.0, draw) * ceiling
