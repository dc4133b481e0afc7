"""Parse device payloads into validated values, or reject them with a stable reason.

Pure functions: the receive time is an argument. A message is accepted or rejected as a whole
(a batch too): storing part of a message from buggy firmware would mislead more than it helps, and
the rejected bytes are kept in the dead-letter table for inspection.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from daemon.errors import PayloadRejected

METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MIN_TS_MS = 946_684_800_000  # 2000-01-01: anything earlier is a unit mistake (seconds, not ms)
Scalar = str | int | float | bool
# Names repeat across millions of messages: remember the valid ones instead of re-matching them.
# (A cache of pure results: it changes no outcome, only the cost.)
_KNOWN_NAMES: set[str] = set()


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that protect the daemon from oversized or absurd input."""

    max_payload_bytes: int = 256 * 1024
    max_batch: int = 1000
    max_values: int = 256
    max_string: int = 128
    max_future_ms: int = 24 * 3600 * 1000


DEFAULT_LIMITS = Limits()


# Hot-path records are plain slotted dataclasses: frozen ones cost 3x as much to create, and
# ingest creates one per message (see benchmarks/ingest.py).
@dataclass(slots=True)
class Sample:
    """One timestamped observation of a device: numeric metrics and short string attributes."""

    ts_ms: int
    metrics: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)


def _load_json(payload: bytes, limits: Limits) -> object:
    if len(payload) > limits.max_payload_bytes:
        raise PayloadRejected(
            "too_large", f"{len(payload)} bytes > limit {limits.max_payload_bytes}"
        )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # Non-finite only if the parser stopped at a bare NaN/Infinity token (or a number too
        # large for a double): the same letters inside a string of broken JSON are not_json.
        token = exc.doc[exc.pos : exc.pos + 8]
        if token.startswith(("NaN", "Infinity")) or "infinity" in str(exc):
            raise PayloadRejected("non_finite", "NaN or Infinity is not a value") from exc
        raise PayloadRejected("not_json", str(exc)) from exc


def parse_timestamp(raw: object, received_ms: int, limits: Limits = DEFAULT_LIMITS) -> int:
    """Return `raw` (epoch ms, or ISO-8601 text; naive means UTC) as epoch ms.

    >>> parse_timestamp("2023-11-14T22:13:20Z", 0, Limits(max_future_ms=10**13))
    1700000000000
    """
    if isinstance(raw, bool):
        raise PayloadRejected("bad_ts", f"ts must be epoch ms or ISO-8601, not {raw!r}")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise PayloadRejected("bad_ts", "ts is not finite")
        ts = int(raw)
    elif isinstance(raw, str) and len(raw) <= 40:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise PayloadRejected("bad_ts", f"ts {raw!r} is not ISO-8601") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ts = int(moment.timestamp() * 1000)
    else:
        raise PayloadRejected("bad_ts", f"ts must be epoch ms or ISO-8601, not {str(raw)[:40]!r}")
    if ts < MIN_TS_MS:
        raise PayloadRejected("bad_ts", f"ts {ts} is before 2000 (epoch seconds instead of ms?)")
    if ts > received_ms + limits.max_future_ms:
        raise PayloadRejected("bad_ts", f"ts {ts} is more than a day in the future")
    return ts


def _parse_values(values: dict[str, object], ts_ms: int, limits: Limits) -> Sample:
    if not values:
        raise PayloadRejected("empty", "no values")
    if len(values) > limits.max_values:
        raise PayloadRejected("too_many_values", f"{len(values)} values > {limits.max_values}")
    metrics: dict[str, float] = {}
    attributes: dict[str, str] = {}
    for name, value in values.items():
        if name not in _KNOWN_NAMES:
            if METRIC_NAME.fullmatch(name) is None:
                raise PayloadRejected("bad_name", f"value name {name[:80]!r} is not an identifier")
            if len(_KNOWN_NAMES) < 100_000:
                _KNOWN_NAMES.add(name)
        if isinstance(value, bool):
            metrics[name] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            number = float(value)
            if not math.isfinite(number):
                raise PayloadRejected("non_finite", f"{name} is not finite")
            metrics[name] = number
        elif isinstance(value, str):
            if len(value) > limits.max_string:
                raise PayloadRejected("bad_value", f"{name}: longer than {limits.max_string}")
            attributes[name] = value
        else:
            kind = "null" if value is None else type(value).__name__
            raise PayloadRejected("bad_value", f"{name}: {kind} is not a metric or attribute")
    return Sample(ts_ms, metrics, attributes)


def _parse_object(obj: object, received_ms: int, limits: Limits) -> Sample:
    if not isinstance(obj, dict):
        kind = "null" if obj is None else type(obj).__name__
        raise PayloadRejected("bad_shape", f"expected an object, got {kind}")
    if "values" in obj:
        extra = set(obj) - {"ts", "values"}
        if extra:
            raise PayloadRejected("bad_shape", f"unexpected keys beside values: {sorted(extra)}")
        values = obj["values"]
        if not isinstance(values, dict):
            raise PayloadRejected("bad_shape", "values must be an object")
    else:
        values = {k: v for k, v in obj.items() if k != "ts"}
    ts = parse_timestamp(obj["ts"], received_ms, limits) if "ts" in obj else received_ms
    return _parse_values(values, ts, limits)


def parse_telemetry(
    payload: bytes, received_ms: int, limits: Limits = DEFAULT_LIMITS
) -> list[Sample]:
    """Return the samples in a telemetry payload (one object, or a list of them).

    >>> parse_telemetry(b'{"temp": 21.5, "on": true, "mode": "eco"}', 1700000000000)
    [Sample(ts_ms=1700000000000, metrics={'temp': 21.5, 'on': 1.0}, attributes={'mode': 'eco'})]
    """
    data = _load_json(payload, limits)
    if isinstance(data, list):
        if not data:
            raise PayloadRejected("empty", "empty batch")
        if len(data) > limits.max_batch:
            raise PayloadRejected("batch_too_large", f"{len(data)} items > {limits.max_batch}")
        return [_parse_object(item, received_ms, limits) for item in data]
    return [_parse_object(data, received_ms, limits)]


def parse_status(payload: bytes) -> str | None:
    """Return `online` or `offline`; None for an empty (cleared retained) payload."""
    text = payload.strip().decode("utf-8", errors="replace").lower()
    if not text:
        return None
    if text in {"online", "offline"}:
        return text
    raise PayloadRejected("bad_status", f"status must be online or offline, not {text[:40]!r}")


def _check_scalar(key: str, value: object, limits: Limits) -> None:
    if isinstance(value, str):
        if len(value) > 4 * limits.max_string:
            raise PayloadRejected("bad_meta", f"{key}: string too long")
    elif isinstance(value, float) and not math.isfinite(value):
        raise PayloadRejected("bad_meta", f"{key}: not finite")
    elif value is not None and not isinstance(value, int | float | bool):
        raise PayloadRejected("bad_meta", f"{key}: {type(value).__name__} not allowed here")


def parse_meta(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, object]:
    """Return device meta: an object of scalars, one level of nesting (labels, location)."""
    if not payload.strip():
        return {}
    data = _load_json(payload, limits)
    if not isinstance(data, dict):
        raise PayloadRejected("bad_meta", "meta must be a JSON object")
    for key, value in data.items():
        if isinstance(value, dict):
            for inner_key, inner in value.items():
                _check_scalar(f"{key}.{inner_key}", inner, limits)
        else:
            _check_scalar(key, value, limits)
    return data
