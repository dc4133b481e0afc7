"""Durations as operators write them: `30s 5m 2h 7d 250ms`, or a plain number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float) -> float:
    """Return `text` in seconds; `1h30m` and `90` (seconds) both work.

    >>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration(5)
    (5400.0, 0.25, 5.0)
    """
    if isinstance(text, bool):
        # ValueError, not TypeError: pydantic turns only ValueError into a validation error.
        raise ValueError(f"not a duration: {text!r}")  # noqa: TRY004
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:  # an int beyond the float range
            seconds = math.inf
        if not math.isfinite(seconds):  # NaN < 0 is False: it would slip through the next check
            raise ValueError(f"duration must be finite: {text!r}")
        if seconds < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return seconds
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r}")  # noqa: TRY004  see above
    stripped = text.strip()
    try:
        return parse_duration(float(stripped))
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _PART.finditer(stripped):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(stripped):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 7d, 1h30m)")
    if not math.isfinite(total):
        raise ValueError(f"duration must be finite: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Return a short human form: `90` -> `1m30s`.

    >>> format_duration(90), format_duration(0.5), format_duration(86400 * 2)
    ('1m30s', '500ms', '2d')
    """
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    parts, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
