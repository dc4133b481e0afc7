"""Parse device payloads into validated values, or reject them with a stable reason.

Pure functions: the receive time is an argument. What a device sends is taken field by field
(docs/devices.md, "Names" and "Nested JSON"): every name is stored under one canonical form (lower
snake case), nested objects are flattened, and a field that cannot be a metric or an attribute
(null, an ignored array, an over-long string, a name that collides with another) is dropped and
counted while the rest of the message is stored. A message is rejected as a whole, with its bytes
kept in the dead-letter table, only when nothing in it is usable or it breaks a hard limit (size,
JSON syntax, timestamp, value count).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import orjson

from daemon.errors import PayloadRejected

#: a canonical metric or attribute name (what rules refer to without quotes)
CANONICAL = re.compile(r"[a-z_][a-z0-9_]{0,63}")
MAX_CANONICAL = 64
#: names a device sends may be this long (after flattening); longer ones are dropped
MAX_ORIGINAL = 256
#: nesting deeper than this is dropped per field (a flattened name would be unreadable anyway)
MAX_DEPTH = 8
MIN_TS_MS = 946_684_800_000  # 2000-01-01: anything earlier is a unit mistake (seconds, not ms)
Scalar = str | int | float | bool
Arrays = Literal["ignore", "index"]
# Names repeat across millions of messages: remember their canonical form instead of recomputing
# it. (A cache of pure results: it changes no outcome, only the cost.)
_CANONICAL_OF: dict[str, str] = {}
_NOT_CANONICAL = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that protect the daemon from oversized or absurd input."""

    max_payload_bytes: int = 256 * 1024
    max_batch: int = 1000
    max_values: int = 256
    max_string: int = 128
    max_future_ms: int = 24 * 3600 * 1000
    #: arrays of numbers: `ignore` drops them (counted), `index` stores `name_0`, `name_1`, ...
    arrays: Arrays = "ignore"


DEFAULT_LIMITS = Limits()


# Hot-path records are plain slotted dataclasses: frozen ones cost 3x as much to create, and
# ingest creates one per message (see benchmarks/ingest.py).
@dataclass(slots=True)
class Sample:
    """One timestamped observation of a device: numeric metrics and short string attributes."""

    ts_ms: int
    metrics: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class FieldNotes:
    """What a message's fields went through: renamed to their canonical form, or dropped."""

    #: canonical name -> the name the device sent, where they differ
    renamed: dict[str, str] = field(default_factory=dict)
    #: (the name the device sent, why it was dropped): null, array, not_scalar, too_long,
    #: bad_name, too_deep, collision
    dropped: list[tuple[str, str]] = field(default_factory=list)
    #: canonical name -> unit, from a `units` object in the payload or a mapping
    units: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.renamed or self.dropped or self.units)

    def drop(self, name: str, reason: str) -> None:
        self.dropped.append((name[:MAX_ORIGINAL], reason))


def canonical_name(name: str) -> str:
    """Return the canonical form of a metric name (docs/devices.md, "Names").

    Accents are removed, letters lower-cased, and every run of other characters becomes one
    `_` (none at either end); a name that starts with a digit gets a leading `_`; the result is
    cut to 64 characters. A name with no Latin letter or digit at all becomes `m_` and the first
    10 hex digits of its SHA-256.

    >>> canonical_name("Volume Flow RateRMS"), canonical_name("ENERGY.Total")
    ('volume_flow_raterms', 'energy_total')
    >>> canonical_name("outdoor-temp"), canonical_name("Température °C"), canonical_name("1st")
    ('outdoor_temp', 'temperature_c', '_1st')
    >>> canonical_name("温度")
    'm_3732e264df'
    """
    known = _CANONICAL_OF.get(name)
    if known is not None:
        return known
    if CANONICAL.fullmatch(name) is not None:
        result = name
    else:
        plain = unicodedata.normalize("NFKD", name)
        plain = "".join(c for c in plain if not unicodedata.combining(c)).lower()
        result = _NOT_CANONICAL.sub("_", plain).strip("_")
        if not result:
            result = "m_" + hashlib.sha256(name.encode()).hexdigest()[:10]
        elif result[0].isdigit():
            result = "_" + result
        result = result[:MAX_CANONICAL].rstrip("_") or result[:MAX_CANONICAL]
    if len(_CANONICAL_OF) < 100_000:
        _CANONICAL_OF[name] = result
    return result


def load_json(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> object:
    """Return the JSON document in `payload`, or raise PayloadRejected (too_large, not_json)."""
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


class _Builder:
    """Collects one sample's fields under their canonical names, noting what it drops."""

    __slots__ = ("arrays", "attributes", "limits", "metrics", "notes", "origin")

    def __init__(self, limits: Limits, notes: FieldNotes, arrays: Arrays) -> None:
        self.limits = limits
        self.notes = notes
        self.arrays = arrays
        self.metrics: dict[str, float] = {}
        self.attributes: dict[str, str] = {}
        self.origin: dict[str, str] = {}  # canonical -> original, for collisions in this sample

    def add(self, name: str, value: object, depth: int = 0) -> None:
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                self.notes.drop(name, "too_deep")
                return
            for key, inner in value.items():
                self.add(f"{name}.{key}", inner, depth + 1)
        elif isinstance(value, list):
            self._array(name, value)
        else:
            reason = self._refusal(name, value)
            if reason is None:
                self._store(name, value)
            else:
                self.notes.drop(name, reason)

    def _refusal(self, name: str, value: object) -> str | None:
        """Why a scalar field cannot be stored, or None."""
        if value is None:
            return "null"
        if isinstance(value, str):
            return "too_long" if len(value) > self.limits.max_string else None
        if isinstance(value, float) and not math.isfinite(value):
            return "non_finite"
        if not isinstance(value, int | float):  # a decoder's value (Sparkplug bytes, datasets)
            return "not_scalar"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1023:
            return "non_finite"  # a huge JSON integer: not a double
        return None if 0 < len(name) <= MAX_ORIGINAL else "bad_name"

    def _store(self, name: str, value: object) -> None:
        canonical = canonical_name(name)  # memoised
        seen = self.origin.get(canonical)
        if seen is not None and seen != name:
            self.notes.drop(name, "collision")
            return
        self.origin[canonical] = name
        if canonical != name:
            self.notes.renamed[canonical] = name
        if isinstance(value, str):
            self.attributes[canonical] = value
        else:
            self.metrics[canonical] = float(value)  # type: ignore[arg-type]  # int, float, bool

    def _array(self, name: str, values: list[object]) -> None:
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if not numeric:
            self.notes.drop(name, "not_scalar")
        elif self.arrays == "ignore":
            self.notes.drop(name, "array")
        else:
            for index, value in enumerate(values):
                self.add(f"{name}.{index}", value)

    def sample(self, ts_ms: int) -> Sample:
        count = len(self.metrics) + len(self.attributes)
        if count > self.limits.max_values:
            raise PayloadRejected("too_many_values", f"{count} values > {self.limits.max_values}")
        return Sample(ts_ms, self.metrics, self.attributes)


def sample_from_values(
    values: Mapping[str, object],
    ts_ms: int,
    notes: FieldNotes,
    limits: Limits = DEFAULT_LIMITS,
    prefix: str = "",
    arrays: Arrays | None = None,
) -> Sample:
    """Return the sample made of `values` (any names, nested objects), noting renames and drops.

    Raises PayloadRejected only for a hard limit (`too_many_values`); an empty sample is the
    caller's to refuse. `prefix` is put before every name (`switch:0` -> `switch_0_apower`).

    >>> notes = FieldNotes()
    >>> sample_from_values({"ENERGY": {"Total": 12.3}, "x": None}, 0, notes)
    Sample(ts_ms=0, metrics={'energy_total': 12.3}, attributes={})
    >>> notes.renamed, notes.dropped
    ({'energy_total': 'ENERGY.Total'}, [('x', 'null')])
    """
    if len(values) > limits.max_values:
        raise PayloadRejected("too_many_values", f"{len(values)} values > {limits.max_values}")
    if not prefix:
        fast = _plain_sample(values, ts_ms, limits.max_string)
        if fast is not None:
            return fast
    builder = _Builder(limits, notes, arrays or limits.arrays)
    head = f"{prefix}." if prefix else ""
    for name, value in values.items():
        builder.add(head + name, value)
    return builder.sample(ts_ms)


def _plain_sample(values: Mapping[str, object], ts_ms: int, max_string: int) -> Sample | None:
    """The sample when every name is canonical and every value a finite number or a short
    string (what nearly every message is), else None for the field-by-field path."""
    metrics: dict[str, float] = {}
    attributes: dict[str, str] = {}
    known = _CANONICAL_OF
    isfinite = math.isfinite
    for name, value in values.items():
        if known.get(name) != name:
            return None
        if isinstance(value, float):
            if not isfinite(value):
                return None
            metrics[name] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            metrics[name] = float(value)
        elif isinstance(value, str) and len(value) <= max_string:
            attributes[name] = value
        else:
            return None
    return Sample(ts_ms, metrics, attributes)


def _units(obj: dict[str, object], notes: FieldNotes) -> None:
    raw = obj.get("units")
    if not isinstance(raw, dict):
        raise PayloadRejected("bad_shape", "units must be an object of metric name -> unit")
    for name, unit in raw.items():
        if isinstance(unit, str) and 0 < len(unit) <= 32:
            notes.units[canonical_name(name)] = unit
        else:
            notes.drop(f"units.{name}", "bad_unit")


def _parse_object(obj: object, received_ms: int, limits: Limits, notes: FieldNotes) -> Sample:
    if not isinstance(obj, dict):
        kind = "null" if obj is None else type(obj).__name__
        raise PayloadRejected("bad_shape", f"expected an object, got {kind}")
    if "units" in obj:
        _units(obj, notes)
    if "values" in obj:
        extra = set(obj) - {"ts", "values", "units"}
        if extra:
            raise PayloadRejected("bad_shape", f"unexpected keys beside values: {sorted(extra)}")
        values = obj["values"]
        if not isinstance(values, dict):
            raise PayloadRejected("bad_shape", "values must be an object")
    else:
        values = {k: v for k, v in obj.items() if k not in ("ts", "units")}
    ts = parse_timestamp(obj["ts"], received_ms, limits) if "ts" in obj else received_ms
    return sample_from_values(values, ts, notes, limits)


def nothing_usable(notes: FieldNotes) -> PayloadRejected:
    """The rejection of a message whose every field was dropped (or that had none)."""
    if not notes.dropped:
        return PayloadRejected("empty", "no values")
    shown = ", ".join(f"{name} ({reason})" for name, reason in notes.dropped[:5])
    more = len(notes.dropped) - 5
    return PayloadRejected(
        "nothing_usable",
        f"every field was dropped: {shown}{f' and {more} more' if more > 0 else ''}",
    )


def parse_telemetry_fields(
    payload: bytes, received_ms: int, limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Sample], FieldNotes]:
    """Return the samples in a telemetry payload (one object, or a list of them) and its notes."""
    data = load_json(payload, limits)
    notes = FieldNotes()
    if isinstance(data, list):
        if not data:
            raise PayloadRejected("empty", "empty batch")
        if len(data) > limits.max_batch:
            raise PayloadRejected("batch_too_large", f"{len(data)} items > {limits.max_batch}")
        parsed = [_parse_object(item, received_ms, limits, notes) for item in data]
    else:
        parsed = [_parse_object(data, received_ms, limits, notes)]
    samples = [s for s in parsed if s.metrics or s.attributes]
    if not samples:
        raise nothing_usable(notes)
    return samples, notes


def parse_telemetry(
    payload: bytes, received_ms: int, limits: Limits = DEFAULT_LIMITS
) -> list[Sample]:
    """Return the samples in a telemetry payload (one object, or a list of them).

    >>> parse_telemetry(b'{"temp": 21.5, "on": true, "mode": "eco"}', 1700000000000)
    [Sample(ts_ms=1700000000000, metrics={'temp': 21.5, 'on': 1.0}, attributes={'mode': 'eco'})]
    """
    return parse_telemetry_fields(payload, received_ms, limits)[0]


STATUS_WORDS = {"online": "online", "offline": "offline"}


def parse_status(payload: bytes) -> str | None:
    """Return `online` or `offline`; None for an empty (cleared retained) payload."""
    text = payload.strip().decode("utf-8", errors="replace").lower()
    if not text:
        return None
    if text in STATUS_WORDS:
        return STATUS_WORDS[text]
    raise PayloadRejected("bad_status", f"status must be online or offline, not {text[:40]!r}")


def _check_scalar(key: str, value: object, limits: Limits) -> None:
    if isinstance(value, str):
        if len(value) > 4 * limits.max_string:
            raise PayloadRejected("bad_meta", f"{key}: string too long")
    elif isinstance(value, float) and not math.isfinite(value):
        raise PayloadRejected("bad_meta", f"{key}: not finite")
    elif value is not None and not isinstance(value, int | float | bool):
        raise PayloadRejected("bad_meta", f"{key}: {type(value).__name__} not allowed here")


def check_meta(data: object, limits: Limits = DEFAULT_LIMITS) -> dict[str, object]:
    """Return `data` as device meta: an object of scalars, one level of nesting."""
    if not isinstance(data, dict):
        raise PayloadRejected("bad_meta", "meta must be a JSON object")
    for key, value in data.items():
        if isinstance(value, dict):
            for inner_key, inner in value.items():
                _check_scalar(f"{key}.{inner_key}", inner, limits)
        else:
            _check_scalar(key, value, limits)
    return data


def parse_meta(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, object]:
    """Return device meta: an object of scalars, one level of nesting (labels, location)."""
    if not payload.strip():
        return {}
    return check_meta(load_json(payload, limits), limits)
