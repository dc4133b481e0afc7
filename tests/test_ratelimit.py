"""The log limiter: a hard bound on keys and exact suppressed counts, against a reference model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.ratelimit import LogLimiter

PERIOD = 60.0


class Model:
    """The limiter's contract written the slow, obvious way: a list ordered by last report."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.order: list[str] = []  # oldest report first
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        if key in self.last:
            if now - self.last[key] < PERIOD:
                self.suppressed[key] += 1
                return None
            count = self.suppressed[key]
            self.order.remove(key)
        else:
            count = 0
            if len(self.order) >= self.max_keys:
                oldest = self.order.pop(0)
                del self.last[oldest], self.suppressed[oldest]
        self.order.append(key)
        self.last[key], self.suppressed[key] = now, 0
        return count


EVENTS = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.floats(min_value=0, max_value=45)), max_size=120
)


@settings(max_examples=300, deadline=None)
@given(max_keys=st.integers(min_value=1, max_value=6), events=EVENTS)
def test_limiter_matches_the_model_and_never_exceeds_max_keys(
    max_keys: int, events: list[tuple[str, float]]
) -> None:
    """Test that the limiter answers like the reference model and never holds more than max_keys."""
    limiter, model = LogLimiter(PERIOD, max_keys), Model(max_keys)
    now = 0.0
    for key, gap in events:
        now += gap
        assert limiter.allow(key, now) == model.allow(key, now), (key, now)
        assert len(limiter) <= max_keys
        assert len(limiter) == len(model.order)


@settings(max_examples=200, deadline=None)
@given(events=EVENTS)
def test_suppressed_counts_add_up_when_nothing_is_evicted(events: list[tuple[str, float]]) -> None:
    """Test that reported plus still-pending suppressed events account for every quiet answer."""
    limiter = LogLimiter(PERIOD, max_keys=8)  # as many keys as the alphabet: no eviction
    now = 0.0
    quiet = reported = 0
    for key, gap in events:
        now += gap
        answer = limiter.allow(key, now)
        if answer is None:
            quiet += 1
        else:
            reported += answer
    pending = sum(limiter.allow(key, now + 2 * PERIOD) or 0 for key in "abcdefgh")
    assert reported + pending == quiet


def test_flood_of_distinct_keys_keeps_the_newest() -> None:
    """Test that a flood of distinct keys leaves exactly max_keys, the most recent ones."""
    limiter = LogLimiter(PERIOD, max_keys=100)
    for i in range(10_000):
        assert limiter.allow(("device", i), float(i) / 1000) == 0
    assert len(limiter) == 100
    assert limiter.allow(("device", 9_999), 10.0) is None  # still remembered: quiet
    assert limiter.allow(("device", 0), 10.0) == 0  # evicted long ago: reported again


def test_rejects_a_zero_bound() -> None:
    """Test that a limiter cannot be built without room for one key."""
    with pytest.raises(ValueError, match="max_keys"):
        LogLimiter(PERIOD, max_keys=0)
