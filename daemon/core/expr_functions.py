"""Values, operators and window functions of the rule expression language.

Plain Python over short windows: numpy's per-call overhead is larger than the work for the few
dozen points a rule window holds. `None` means "no data / unknown" and propagates; logic is
Kleene's three-valued logic, so `false and unknown` is false and `true or unknown` is true.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Protocol

Value = float | bool | str | None
Points = Sequence[tuple[int, float]]
_VALUE = operator.itemgetter(1)


class EvalContext(Protocol):
    """What an expression can see of one device at one instant; time arrives as `now_ms`."""

    now_ms: int

    def window(self, metric: str, seconds: float) -> Sequence[tuple[int, float]]:
        """Points with `now_ms - seconds * 1000 < ts <= now_ms`, ascending."""
        ...

    def last(self, metric: str) -> tuple[int, float] | None:
        """The latest point at or before `now_ms`."""
        ...

    def state(self, name: str) -> str | None:
        """The latest string attribute from telemetry."""
        ...

    def attr(self, name: str) -> float | str | bool | None:
        """Device meta (`labels.X` allowed)."""
        ...

    def offline_for(self) -> float | None:
        """Seconds offline (0.0 if online); None if unknown."""
        ...

    def absent_for(self, metric: str) -> float | None:
        """Seconds since the metric's last sample over watched time; None if unknown."""
        ...

    def silence_clamped(self, metric: str | None = None) -> bool:
        """True when `offline_for` (None) or `absent_for(metric)` counts only from the end of the
        daemon's own outage grace: a value short of a threshold is then no evidence."""
        ...

    def anomaly(self, model: str) -> float | None:
        """The latest anomaly score of `model` (0..1), None if none."""
        ...

    def rul(self, model: str) -> float | None:
        """The latest remaining useful life predicted by `model` (in its unit), None if none."""
        ...


# ------------------------------------------------------------------------------ value semantics
def number(value: object) -> float | None:
    """Return `value` as a float (booleans as 1.0/0.0); None for strings and unknowns."""
    if value.__class__ is float:
        return value
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    return None


def truth(value: Value) -> bool | None:
    """Return a condition's truth value; anything but a boolean is unknown."""
    return value if value is True or value is False else None


def finite(value: float) -> float | None:
    """Return `value`, or None for inf/nan (an overflow is no meaningful reading)."""
    return value if math.isfinite(value) else None


def _divide(a: float, b: float) -> float | None:
    return None if b == 0 else finite(a / b)


def _modulo(a: float, b: float) -> float | None:
    return None if b == 0 else finite(a % b)


def _finite_op(op: Callable[[float, float], float]) -> Callable[[float, float], float | None]:
    return lambda a, b: finite(op(a, b))


ARITHMETIC: dict[str, Callable[[float, float], float | None]] = {
    "+": _finite_op(operator.add),
    "-": _finite_op(operator.sub),
    "*": _finite_op(operator.mul),
    "/": _divide,
    "%": _modulo,
}
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def arithmetic(op: str, left: Value, right: Value) -> Value:
    """Apply an arithmetic operator; None if either side is unknown or a string, or on x/0."""
    a, b = number(left), number(right)
    if a is None or b is None:
        return None
    return ARITHMETIC[op](a, b)


def compare(op: str, left: Value, right: Value) -> Value:
    """Compare two values; None for unknowns, mixed strings and numbers, and ordered strings."""
    if left is None or right is None:
        return None
    left_str, right_str = isinstance(left, str), isinstance(right, str)
    if left_str or right_str:
        if left_str and right_str and op in {"==", "!="}:
            return (left == right) == (op == "==")
        return None
    a, b = number(left), number(right)
    assert a is not None  # neither None nor a string
    assert b is not None
    return COMPARE[op](a, b)


def logic_and(left: Value, right: Value) -> bool | None:
    """Kleene `and`: false wins, then unknown."""
    a, b = truth(left), truth(right)
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def logic_or(left: Value, right: Value) -> bool | None:
    """Kleene `or`: true wins, then unknown."""
    a, b = truth(left), truth(right)
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def logic_not(value: Value) -> bool | None:
    """Kleene `not`: unknown stays unknown."""
    a = truth(value)
    return None if a is None else not a


def meta_value(value: object) -> Value:
    """Return a device meta value as an expression value: numbers as floats, strings as is."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return float(value)
    return None


# ------------------------------------------------------------------------------ window functions
def window_avg(points: Points) -> float | None:
    """The mean, None if empty."""
    if not points:
        return None
    total = 0.0
    for _, value in points:
        total += value
    return total / len(points)


def window_min(points: Points) -> float | None:
    """The minimum, None if empty."""
    if not points:
        return None
    return float(min(points, key=_VALUE)[1])


def window_max(points: Points) -> float | None:
    """The maximum, None if empty."""
    if not points:
        return None
    return float(max(points, key=_VALUE)[1])


def window_sum(points: Points) -> float | None:
    """The sum, None if empty (no data is not zero)."""
    if not points:
        return None
    total = 0.0
    for _, value in points:
        total += value
    return total


def window_count(points: Points) -> float:
    """The number of points, 0 for an empty window."""
    return float(len(points))


def window_stddev(points: Points) -> float | None:
    """The population standard deviation (two passes, for accuracy), None if empty."""
    mean = window_avg(points)
    if mean is None:
        return None
    squares = 0.0
    for _, value in points:
        squares += (value - mean) * (value - mean)
    return math.sqrt(squares / len(points))


def window_quantile(points: Points, q: float) -> float | None:
    """The q-quantile with linear interpolation between closest ranks, None if empty."""
    if not points:
        return None
    ordered = sorted(value for _, value in points)
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (rank - low) * (ordered[high] - ordered[low]))


def window_rate(points: Points) -> float | None:
    """Per-second increase of a counter; a drop is a reset, counted as a restart from 0.

    Like Prometheus `rate` without extrapolation to the window edges. None under two points or
    when all points share one timestamp.
    """
    if len(points) < 2:
        return None
    span = (points[-1][0] - points[0][0]) / 1000.0
    if span <= 0:
        return None
    increase = 0.0
    previous = points[0][1]
    for _, value in points:
        increase += value - previous if value >= previous else value
        previous = value
    return increase / span


def window_delta(points: Points) -> float | None:
    """Last minus first value, None under two points."""
    if len(points) < 2:
        return None
    return float(points[-1][1] - points[0][1])


def window_changes(points: Points) -> float:
    """How often consecutive values differ; 0 under two points."""
    changes = 0
    previous = points[0][1] if points else 0.0
    for _, value in points:
        if value != previous:
            changes += 1
        previous = value
    return float(changes)


def fit_line(points: Points) -> tuple[float, float, float] | None:
    """Least-squares line as (mean time in ms, mean value, slope per second).

    Closed form around the means, so millisecond timestamps cause no loss of precision. None
    under two points or when all points share one timestamp.
    """
    count = len(points)
    if count < 2:
        return None
    origin = points[0][0]
    sum_t = sum_v = 0.0
    for ts, value in points:
        sum_t += ts - origin
        sum_v += value
    mean_t, mean_v = sum_t / count, sum_v / count
    sxx = sxy = 0.0
    for ts, value in points:
        dt = ts - origin - mean_t
        sxx += dt * dt
        sxy += dt * (value - mean_v)
    if sxx == 0:
        return None
    return origin + mean_t, mean_v, sxy / sxx * 1000.0


def window_slope(points: Points) -> float | None:
    """The least-squares slope in units per second."""
    line = fit_line(points)
    return None if line is None else line[2]


def window_forecast(points: Points, at_ms: float) -> float | None:
    """The least-squares line's value at `at_ms`."""
    line = fit_line(points)
    if line is None:
        return None
    mean_t, mean_v, slope = line
    return finite(mean_v + slope * (at_ms - mean_t) / 1000.0)


def window_time_to(points: Points, now_ms: int, threshold: float) -> float | None:
    """Seconds until the least-squares line reaches `threshold`, as seen at `now_ms`.

    0.0 once the line has reached it (it crossed the threshold within the window, moving with the
    trend); None if the trend is flat, or if the line moves away from the threshold because it
    lay beyond it for the whole window: the series approached from neither side.
    """
    line = fit_line(points)
    if line is None:
        return None
    mean_t, mean_v, slope = line
    if slope == 0:
        return None
    now_value = mean_v + slope * (now_ms - mean_t) / 1000.0
    ahead = (threshold - now_value) / slope
    if ahead > 0:
        return finite(ahead)
    first_value = mean_v + slope * (points[0][0] - mean_t) / 1000.0
    crossed = (first_value - threshold) * (now_value - threshold) <= 0
    return 0.0 if crossed else None


# The functions of one window and nothing else, dispatched by name.
REDUCERS: dict[str, Callable[[Points], float | None]] = {
    "avg": window_avg,
    "min": window_min,
    "max": window_max,
    "sum": window_sum,
    "count": window_count,
    "stddev": window_stddev,
    "rate": window_rate,
    "delta": window_delta,
    "slope": window_slope,
    "changes": window_changes,
}
NEEDS_TWO = frozenset({"rate", "delta", "slope", "forecast", "time_to"})
