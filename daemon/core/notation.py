"""The compact series notation of rule tests (as in `promtool test rules`).

`"60 62 _ 64"` lists values (`_` = no sample); `"60+2x3"` is 60, 62, 64, 66 (start, step, count
of steps); `"1x4"` repeats 1 five times; `"5-1x2"` is 5, 4, 3; `"_x3"` is four missing samples.
"""

from __future__ import annotations

import re

_TERM = re.compile(
    r"^(?P<start>-?\d+(?:\.\d+)?(?:e-?\d+)?|_)(?:(?P<sign>[+-])(?P<step>\d+(?:\.\d+)?))?(?:x(?P<count>\d+))?$"
)


def expand_series(text: str) -> list[float | None]:
    """Return the values `text` describes; ValueError names the bad term.

    >>> expand_series("60+2x3 _ 1x1")
    [60.0, 62.0, 64.0, 66.0, None, 1.0, 1.0]
    """
    values: list[float | None] = []
    for term in str(text).split():
        match = _TERM.match(term)
        if match is None:
            raise ValueError(f"bad series term {term!r} (use e.g. 60, 60+2x10, 1x5, _)")
        start, sign, step, count = match.group("start", "sign", "step", "count")
        if start == "_":
            if sign:
                raise ValueError(f"bad series term {term!r}: `_` takes no step")
            values.extend([None] * (int(count or 0) + 1))
            continue
        first = float(start)
        delta = float(step or 0) * (-1 if sign == "-" else 1)
        repeats = int(count) if count is not None else 0
        if repeats > 100_000:
            raise ValueError(f"series term {term!r} is too long")
        values.extend(first + delta * i for i in range(repeats + 1))
    return values
