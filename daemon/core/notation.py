"""The compact series notation of rule tests, as in `promtool test rules` (Prometheus 2.42).

`"60 62 _ 64"` lists values (`_` = no sample); `"60+2x3"` is 60, 62, 64, 66 (start, step, count
of steps: n + 1 values); `"1x4"` repeats 1 five times; `"5-1x2"` is 5, 4, 3; `"_x3"` is three
missing samples (n, not n + 1: promtool's grammar, so a series ported from a promtool test lines
up sample for sample). A step needs its count (`60+2` alone is an error there too). promtool's
`stale` (a staleness marker) has no counterpart: Frontline has no staleness markers.
"""

from __future__ import annotations

import re

_TERM = re.compile(
    r"^(?P<start>-?\d+(?:\.\d+)?(?:e-?\d+)?|_)(?:(?P<sign>[+-])(?P<step>\d+(?:\.\d+)?))?(?:x(?P<count>\d+))?$"
)
_LONGEST = 100_000


def expand_series(text: str) -> list[float | None]:
    """Return the values `text` describes; ValueError names the bad term.

    >>> expand_series("60+2x3 _x2 1x1")
    [60.0, 62.0, 64.0, 66.0, None, None, 1.0, 1.0]
    """
    values: list[float | None] = []
    for term in str(text).split():
        if term == "stale":
            raise ValueError(
                "series term 'stale': Frontline has no staleness markers; use `_` (no sample)"
            )
        match = _TERM.match(term)
        if match is None:
            raise ValueError(f"bad series term {term!r} (use e.g. 60, 60+2x10, 1x5, _, _x3)")
        start, sign, step, count = match.group("start", "sign", "step", "count")
        if sign and count is None:
            raise ValueError(f"bad series term {term!r}: a step needs a count, e.g. {term}x10")
        repeats = int(count) if count is not None else 0
        if repeats > _LONGEST:
            raise ValueError(f"series term {term!r} is too long")
        if start == "_":
            if sign:
                raise ValueError(f"bad series term {term!r}: `_` takes no step")
            # promtool: `_xn` is n missing samples, while `axn` is n + 1 values
            values.extend([None] * (repeats if count is not None else 1))
            continue
        first = float(start)
        delta = float(step or 0) * (-1 if sign == "-" else 1)
        values.extend(first + delta * i for i in range(repeats + 1))
    return values
