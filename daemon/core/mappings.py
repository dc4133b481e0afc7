"""Mappings: what a message on a foreign topic layout means (docs/devices.md, "Mappings").

A mapping names routes (a topic template with named segments, the kind of message it carries,
where the device id, the timestamp and the values are) and, optionally, how a command is sent
back. Presets for the common ecosystems ship in `daemon/presets/`. Pure: the files are read by
`daemon/adapters/mapping_files.py`; time is an argument.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

import orjson

from daemon.core.messages import (
    Ignored,
    Message,
    Meta,
    Origin,
    Reply,
    Status,
    Telemetry,
    rejection,
)
from daemon.core.payloads import (
    DEFAULT_LIMITS,
    MAX_DEPTH,
    Arrays,
    FieldNotes,
    Limits,
    Sample,
    canonical_name,
    check_meta,
    load_json,
    nothing_usable,
    parse_timestamp,
    sample_from_values,
)
from daemon.core.topics import is_device_id
from daemon.core.units import conversion
from daemon.errors import PayloadRejected

SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|/[^{}]*)\}")
#: placeholders in a command's payload template: `{method}`, `{params.mode}`, `{device}`
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_NOT_ID = re.compile(r"[^A-Za-z0-9_.:-]+")
_UNREAD = object()  # a payload not parsed yet (a route's `when` parses it once)


class RouteKind(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    META = "meta"
    REPLY = "reply"
    IGNORE = "ignore"


class TemplateError(ValueError):
    """A topic or id template that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A topic with `{name}` segments (one level each) and an optional trailing `#`.

    >>> t = TopicTemplate.parse("shellies/{device}/status/{component}")
    >>> t.match("shellies/plus1/status/switch:0")
    {'device': 'plus1', 'component': 'switch:0'}
    >>> t.filter, t.render({"device": "a", "component": "b"})
    ('shellies/+/status/+', 'shellies/a/status/b')
    """

    text: str
    levels: tuple[str, ...]  # literal text, or "{name}", or "#"

    @classmethod
    def parse(cls, text: str) -> TopicTemplate:
        if not text or text.startswith("$"):
            raise TemplateError("a topic template is a non-empty topic not starting with $")
        levels = tuple(text.split("/"))
        seen: set[str] = set()
        for index, level in enumerate(levels):
            if level == "#":
                if index != len(levels) - 1:
                    raise TemplateError("# may only be the last level")
                continue
            if "+" in level or "#" in level:
                raise TemplateError(f"use a named segment like {{device}}, not {level!r}")
            slot = _slot_name(level)
            if slot is None and ("{" in level or "}" in level):
                raise TemplateError(f"a named segment is a whole level: {level!r}")
            if slot is not None:
                if slot in seen:
                    raise TemplateError(f"segment {{{slot}}} named twice")
                seen.add(slot)
        return cls(text, levels)

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(name for level in self.levels if (name := _slot_name(level)) is not None)

    @property
    def filter(self) -> str:
        return "/".join("+" if _slot_name(level) else level for level in self.levels)

    def match(self, topic: str) -> dict[str, str] | None:
        parts = topic.split("/")
        levels = self.levels
        if levels[-1] == "#":
            if len(parts) < len(levels) - 1:
                return None
        elif len(parts) != len(levels):
            return None
        found: dict[str, str] = {}
        for level, part in zip(levels, parts, strict=False):
            if level == "#":
                break
            name = _slot_name(level)
            if name is None:
                if level != part:
                    return None
            elif not part:
                return None
            else:
                found[name] = part
        return found

    def render(self, values: Mapping[str, str]) -> str:
        out = []
        for level in self.levels:
            name = _slot_name(level)
            out.append(level if name is None else values[name])
        return "/".join(out)


def _slot_name(level: str) -> str | None:
    if len(level) > 2 and level[0] == "{" and level[-1] == "}" and SLOT.fullmatch(level):
        return level[1:-1]
    return None


def fill(template: str, slots: Mapping[str, str], document: object = None) -> str:
    """Fill `{name}` from `slots` and `{/pointer}` from the JSON `document`.

    >>> fill("tb-{/device}", {}, {"device": "Pump 7"})
    'tb-Pump 7'
    """

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("/"):
            found = pointer(document, key)
            if found is None or isinstance(found, dict | list):
                raise PayloadRejected("bad_mapping", f"no value at {key} for {template!r}")
            return str(found)
        if key not in slots:
            raise PayloadRejected("bad_mapping", f"no {{{key}}} for {template!r}")
        return slots[key]

    return SLOT.sub(value, template)


def pointer(document: object, path: str) -> object:
    """Return what JSON pointer `path` (RFC 6901) names in `document`, or None.

    >>> pointer({"a": {"b/c": [5, 6]}}, "/a/b~1c/1")
    6
    """
    if path in ("", "/"):
        return document
    current = document
    for raw in path.lstrip("/").split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            current = current.get(key)
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            return None
        if current is None:
            return None
    return current


def device_id(text: str) -> str:
    """Return `text` as a device id: characters outside `[A-Za-z0-9_.:-]` become `_`.

    >>> device_id("Living room/Sensor 1")
    'Living_room_Sensor_1'
    """
    if is_device_id(text):
        return text
    cleaned = _NOT_ID.sub("_", text)[:128]
    if not is_device_id(cleaned):
        raise PayloadRejected("bad_device_id", f"no device id in {text[:140]!r}")
    return cleaned


@dataclass(frozen=True, slots=True)
class Timestamp:
    pointer: str = "/ts"
    format: str = "auto"  # auto | epoch_ms | epoch_s | iso8601
    required: bool = False
    #: the IANA time zone of ISO-8601 text without an offset (Tasmota's local `Time`); else UTC
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class When:
    """A route's condition on the payload: the value at `pointer` is one of `values` (or,
    without values, is there at all)."""

    pointer: str
    values: tuple[str, ...] = ()

    def holds(self, document: object) -> bool:
        value = pointer(document, self.pointer)
        if value is None:
            return False
        if not self.values:
            return True
        return not isinstance(value, dict | list) and word(value) in self.values


@dataclass(frozen=True, slots=True)
class StatusWords:
    """How a status payload says online or offline; `set` fixes it (a connect message)."""

    pointer: str | None = None
    online: tuple[str, ...] = ("online",)
    offline: tuple[str, ...] = ("offline",)
    set: str | None = None


@dataclass(frozen=True, slots=True)
class ReplySpec:
    """Where a command reply says which command it answers and how it went (JSON pointers).

    Without `id` the reply answers the device's command in flight; without `ok` and `error`
    any reply means done.
    """

    id: str | None = None
    ok: str | None = None
    ok_values: tuple[str, ...] = ("true",)
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    mapping: str
    topic: TopicTemplate
    kind: RouteKind = RouteKind.TELEMETRY
    device: str = "{device}"
    #: `json`: the payload is a JSON object (or list of them); `value`: it is one value
    payload: str = "json"
    #: for `payload: value`, the metric's name (a template: `{attribute}`)
    metric: str = "value"
    #: `keys`: the payload's top-level keys are device names (ThingsBoard's gateway)
    split: str | None = None
    values: str = ""  # JSON pointer to the object that holds the values
    timestamp: Timestamp = Timestamp()
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    prefix: str = ""
    units: Mapping[str, str] = field(default_factory=dict)
    #: name (as in `units`) -> the unit its values are converted to at ingest
    convert: Mapping[str, str] = field(default_factory=dict)
    arrays: Arrays | None = None
    status: StatusWords = StatusWords()
    reply: ReplySpec = ReplySpec()
    #: only messages whose payload satisfies this take the route (else the next route is tried)
    when: When | None = None
    #: for `payload: value` telemetry: words that mean the device is offline (`unavailable`)
    offline_values: tuple[str, ...] = ()
    where: str = ""  # file:line of the route, for `frontline check` and errors


@dataclass(frozen=True, slots=True)
class CommandTemplate:
    """How a command reaches a mapped device: a topic and a payload, per method or for all."""

    topic: TopicTemplate
    payload: object  # JSON-like template; strings may hold {method}, {params.NAME}, {device}...
    methods: Mapping[str, tuple[TopicTemplate | None, object]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceMapping:
    name: str
    routes: tuple[Route, ...]
    commands: CommandTemplate | None = None
    source: str = ""

    @property
    def replies(self) -> bool:
        """Whether its devices answer commands (a `reply` route), else the publication counts."""
        return any(route.kind is RouteKind.REPLY for route in self.routes)


class MappingSet:
    """Every route of every mapping, tried in order; the first whose topic matches decides."""

    def __init__(self, mappings: tuple[DeviceMapping, ...] = (), limits: Limits = DEFAULT_LIMITS):
        self.mappings = mappings
        self.limits = limits
        self._routes = [route for mapping in mappings for route in mapping.routes]
        self._by_name = {mapping.name: mapping for mapping in mappings}

    def __bool__(self) -> bool:
        return bool(self._routes)

    def filters(self, shared_group: str | None = None) -> list[str]:
        """The MQTT subscriptions the routes need (telemetry shared in a group if given)."""
        out: list[str] = []
        for route in self._routes:
            if route.kind is RouteKind.IGNORE:
                continue
            topic = route.topic.filter
            if shared_group and route.kind is RouteKind.TELEMETRY:
                topic = f"$share/{shared_group}/{topic}"
            if topic not in out:
                out.append(topic)
        return out

    def route(self, topic: str, payload: bytes) -> tuple[Route, dict[str, str]] | None:
        """The first route whose topic matches and whose `when` holds, with its segments."""
        document: object = _UNREAD
        for route in self._routes:
            slots = route.topic.match(topic)
            if slots is None:
                continue
            if route.when is not None:
                if document is _UNREAD:
                    try:
                        document = load_json(payload, self.limits)
                    except PayloadRejected:
                        document = None
                if not route.when.holds(document):
                    continue
            return route, slots
        return None

    def mapping(self, name: str) -> DeviceMapping | None:
        return self._by_name.get(name)

    def decode(self, topic: str, payload: bytes, received_ms: int) -> list[Message] | None:
        """Return what a message on `topic` means, or None when no route takes it."""
        found = self.route(topic, payload)
        if found is None:
            return None
        route, slots = found
        try:
            return decode(route, slots, payload, received_ms, self.limits)
        except PayloadRejected as rejected:
            return [rejection(topic, None, rejected, payload)]


def decode(
    route: Route,
    slots: dict[str, str],
    payload: bytes,
    received_ms: int,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Message]:
    """Return the messages one payload on `route` carries (several with `split: keys`)."""
    if route.kind is RouteKind.IGNORE:
        return [Ignored(route.topic.text)]
    document = _document(route, payload, limits)
    if route.split == "keys":
        if not isinstance(document, dict):
            raise PayloadRejected("bad_shape", "expected an object of device name -> data")
        out: list[Message] = []
        for key, part in document.items():
            out.extend(_one(route, {**slots, "key": str(key)}, part, payload, received_ms, limits))
        return out
    return _one(route, slots, document, payload, received_ms, limits)


def _document(route: Route, payload: bytes, limits: Limits) -> object:
    if route.payload == "json":
        words = route.status
        if route.kind is RouteKind.STATUS and words.pointer is None and "{/" not in route.device:
            return payload  # the whole payload is the word (or `set` says it)
        return load_json(payload, limits)
    if len(payload) > limits.max_payload_bytes:
        raise PayloadRejected("too_large", f"{len(payload)} bytes > {limits.max_payload_bytes}")
    return payload


def _one(
    route: Route,
    slots: dict[str, str],
    document: object,
    raw: bytes,
    received_ms: int,
    limits: Limits,
) -> list[Message]:
    device = device_id(fill(route.device, slots, document))
    if "key" not in slots and (named := _named_by_payload(route.device, document)) is not None:
        slots = {**slots, "key": named}  # the name the message gives the device, as with split
    origin = Origin(route.mapping, tuple(sorted(slots.items())))
    if route.kind is RouteKind.STATUS:
        return [Status(device, _status(route.status, document), origin)]
    if route.kind is RouteKind.META:
        return [Meta(device, check_meta(document, limits), origin)]
    if route.kind is RouteKind.REPLY:
        return [_reply(route.reply, device, document, raw)]
    notes = FieldNotes()
    if route.payload == "value":
        assert isinstance(document, bytes)
        text = document.decode("utf-8", errors="replace").strip()
        if text in route.offline_values:
            return [Status(device, "offline", origin)]
        if not _kept(route, fill(route.metric, slots)):
            return [Ignored(route.topic.text)]
        samples = [_value_sample(route, slots, text, notes, received_ms, limits)]
    else:
        items = document if isinstance(document, list) else [document]
        if len(items) > limits.max_batch:
            raise PayloadRejected("batch_too_large", f"{len(items)} items > {limits.max_batch}")
        samples = [_sample(route, slots, item, notes, received_ms, limits) for item in items]
    samples = [s for s in samples if s.metrics or s.attributes]
    if not samples:
        raise nothing_usable(notes)
    return [Telemetry(device, samples, notes or None, origin)]


def _named_by_payload(template: str, document: object) -> str | None:
    """The value of the device template's first `{/pointer}`, if it has one."""
    for match in SLOT.finditer(template):
        key = match.group(1)
        if key.startswith("/"):
            value = pointer(document, key)
            return None if value is None or isinstance(value, dict | list) else str(value)
    return None


def word(value: object) -> str:
    """A value as the text a mapping's word lists hold (`true`, `5`, `online`): the payload's
    values and the file's words are both made text by this, so that they compare."""
    return orjson.dumps(value).decode() if isinstance(value, bool) else str(value)


def _status(words: StatusWords, document: object) -> str | None:
    if words.set is not None:
        return words.set
    value = document if words.pointer is None else pointer(document, words.pointer)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace").strip()
    text = word(value)
    if value is None or text == "":
        return None
    if text in words.online:
        return "online"
    if text in words.offline:
        return "offline"
    known = ", ".join([*words.online, *words.offline])
    raise PayloadRejected("bad_status", f"status {text[:40]!r} is not one of {known}")


def _reply(spec: ReplySpec, device: str, document: object, raw: bytes) -> Reply:
    """A device's answer to a command, in the native reply's terms (`status`, `message`)."""
    found = pointer(document, spec.id) if spec.id else None
    command_id = "" if found is None or isinstance(found, dict | list) else str(found)
    status = "ok"
    if spec.ok is not None:
        status = "ok" if word(pointer(document, spec.ok)) in spec.ok_values else "error"
    failure = pointer(document, spec.error) if spec.error else None
    if failure is not None:
        status = "error"
    detail = pointer(document, spec.message) if spec.message else failure
    message = "" if detail is None else str(detail)[:200]
    if not message and isinstance(document, bytes | str):
        message = (
            raw.decode("utf-8", errors="replace") if isinstance(document, bytes) else document
        )[:200]
    body = orjson.dumps({"status": status, "message": message})
    return Reply(device, command_id, body)


def _timestamp(route: Route, document: object, received_ms: int, limits: Limits) -> int:
    spec = route.timestamp
    raw = pointer(document, spec.pointer) if spec.pointer else None
    if raw is None:
        if spec.required:
            raise PayloadRejected("bad_ts", f"no timestamp at {spec.pointer}")
        return received_ms
    if spec.format == "epoch_s" and isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = raw * 1000
    elif spec.format == "epoch_ms" and isinstance(raw, str):
        raise PayloadRejected("bad_ts", f"{spec.pointer} is text, not epoch ms")
    elif spec.format == "iso8601" and not isinstance(raw, str):
        raise PayloadRejected("bad_ts", f"{spec.pointer} is not ISO-8601 text")
    if spec.timezone is not None and isinstance(raw, str) and len(raw) <= 40:
        raw = _local_time(raw, spec.timezone)
    return parse_timestamp(raw, received_ms, limits)


def _local_time(text: str, zone: str) -> object:
    """ISO-8601 text without an offset read in `zone` (epoch ms); other text as it is."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text  # parse_timestamp says why
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return int(moment.timestamp() * 1000)


def _sample(
    route: Route,
    slots: dict[str, str],
    item: object,
    notes: FieldNotes,
    received_ms: int,
    limits: Limits,
) -> Sample:
    if not isinstance(item, dict):
        kind = "null" if item is None else type(item).__name__
        raise PayloadRejected("bad_shape", f"expected an object, got {kind}")
    ts = _timestamp(route, item, received_ms, limits)
    if route.values:
        values = pointer(item, route.values)
    elif isinstance(item.get("values"), dict) and set(item) <= {"ts", "values", "units"}:
        values = item["values"]  # the native {"ts", "values"} shape
    else:
        values = item
    if not isinstance(values, dict):
        raise PayloadRejected("bad_shape", f"no object of values at {route.values or '/'}")
    skip = {route.timestamp.pointer.lstrip("/")} if route.timestamp.pointer.count("/") == 1 else ()
    prefix = fill(route.prefix, slots) if route.prefix else ""
    head = f"{prefix}." if prefix else ""  # in the names of dropped fields, as sent
    chosen: dict[str, object] = {}
    renamed: dict[str, str] = {}
    for name, value in _flatten(values, notes, head):
        if name in skip:
            continue
        if not _kept(route, name):
            notes.drop(head + name, "filtered")
            continue
        new = route.rename.get(name) or route.rename.get(canonical_name(name))
        if new is not None:
            renamed[new] = name
        chosen[new or name] = value
    sample = sample_from_values(chosen, ts, notes, limits, prefix, route.arrays)
    _record(route, notes, renamed, prefix, sample)
    return sample


def _value_sample(
    route: Route,
    slots: dict[str, str],
    text: str,
    notes: FieldNotes,
    received_ms: int,
    limits: Limits,
) -> Sample:
    value: object
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text  # plain text: a state word (`on`) or a number written as text
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            value = number
    name = fill(route.metric, slots)
    new = route.rename.get(name)
    sample = sample_from_values({new or name: value}, received_ms, notes, limits, "", route.arrays)
    _record(route, notes, {new: name} if new else {}, "", sample)
    return sample


def _record(
    route: Route, notes: FieldNotes, renamed: dict[str, str], prefix: str, sample: Sample
) -> None:
    """Note the names as the device sent them, and the units of the metrics it sent.

    A metric the route `convert`s is converted here, and noted in its new unit.
    """
    head = f"{prefix}." if prefix else ""
    for new, original in renamed.items():
        notes.renamed[canonical_name(head + new)] = head + original
    for name, unit in route.units.items():
        target = route.convert.get(name)
        for canonical in _unit_names(name, head, notes, sample):
            if target is not None:  # checked when the mapping was loaded
                sample.metrics[canonical] = conversion(unit, target)(sample.metrics[canonical])
            notes.units[canonical] = target or unit


def _unit_names(name: str, head: str, notes: FieldNotes, sample: Sample) -> list[str]:
    """The sample's metrics a `units` key names: one name, or a glob (`*.apower`) matched
    against the names as sent and their canonical forms."""
    if not any(char in name for char in "*?["):
        canonical = canonical_name(head + name)
        return [canonical] if canonical in sample.metrics else []
    return [
        metric
        for metric in sample.metrics
        if fnmatch.fnmatchcase(metric, name)
        or fnmatch.fnmatchcase(notes.renamed.get(metric, metric).removeprefix(head), name)
    ]


def _kept(route: Route, name: str) -> bool:
    canonical = canonical_name(name)

    def hit(patterns: tuple[str, ...]) -> bool:
        return any(
            fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(canonical, p) for p in patterns
        )

    if route.keep and not hit(route.keep):
        return False
    return not (route.drop and hit(route.drop))


def _flatten(
    values: dict[str, object], notes: FieldNotes, label: str = "", head: str = "", depth: int = 0
) -> Iterator[tuple[str, object]]:
    """(dotted name, value) of every leaf; `label` goes before the names of dropped fields."""
    for key, value in values.items():
        name = f"{head}{key}"
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                notes.drop(label + name, "too_deep")
            else:
                yield from _flatten(value, notes, label, f"{name}.", depth + 1)
        else:
            yield name, value


# -- commands back ---------------------------------------------------------------------------


def render_command(
    commands: CommandTemplate,
    origin: Origin,
    device: str,
    command_id: str,
    method: str,
    params: Mapping[str, object],
) -> tuple[str, bytes]:
    """Return the topic and payload that carry one command to a mapped device.

    Strings in the payload template may hold `{method}`, `{command_id}`, `{id}` (the device id),
    `{params}` (all of them), `{params.NAME}` and the route's topic segments (`{device}`); a
    string that is exactly one placeholder takes the value itself (a number stays a number). A
    payload template that is a string is sent as text.

    >>> t = CommandTemplate(TopicTemplate.parse("z/{device}/set"), {"state": "{params.state}"})
    >>> origin = Origin("z", (("device", "plug"),))
    >>> render_command(t, origin, "z-plug", "c1", "power", {"state": "OFF"})
    ('z/plug/set', b'{"state":"OFF"}')
    """
    topic_template, template = commands.topic, commands.payload
    if commands.methods:
        if method not in commands.methods:
            known = ", ".join(sorted(commands.methods))
            raise TemplateError(f"{origin.mapping} has no command {method!r} (it has: {known})")
        override, template = commands.methods[method]
        topic_template = override or topic_template
    values: dict[str, object] = {
        **dict(origin.segments),
        "id": device,
        "method": method,
        "command_id": command_id,
        "params": dict(params),
        **{f"params.{k}": v for k, v in params.items()},
    }
    segments = {k: str(v) for k, v in values.items()}
    try:
        topic = topic_template.render(segments)
    except KeyError as exc:
        raise TemplateError(f"the command topic needs {{{exc.args[0]}}}") from exc
    body = _render(template, values)
    payload = body.encode() if isinstance(body, str) else orjson.dumps(body)
    return topic, payload


def _render(template: object, values: Mapping[str, object]) -> object:
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole is not None:
            return _value(values, whole.group(1))
        return PLACEHOLDER.sub(lambda m: str(_value(values, m.group(1))), template)
    if isinstance(template, dict):
        return {str(_render(k, values)): _render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_render(v, values) for v in template]
    return template


def _value(values: Mapping[str, object], key: str) -> object:
    if key not in values:
        raise TemplateError(f"the command payload needs {{{key}}}")
    return values[key]
