"""Read mapping files (`mappings/*.yaml`) and shipped presets with file:line:col problems.

    mappings:
      - name: zigbee2mqtt
        device: "z2m-{device}"                 # device id template (topic segments, /pointers)
        routes:
          - topic: zigbee2mqtt/{device}/availability
            kind: status
            status: {pointer: /state, online: [online], offline: [offline]}
          - topic: zigbee2mqtt/{device}
            timestamp: {pointer: /last_seen, format: auto}
            drop: [update.*]
            units: {temperature: degC}
        commands:
          topic: zigbee2mqtt/{device}/set
          payload: {state: "{params.state}"}

docs/devices.md describes every key. Pydantic checks the shape; templates, pointers and names
across files are checked here, so every problem of every file is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.adapters.rule_files import fingerprint, rule_paths
from daemon.adapters.yaml_source import (
    Loc,
    YamlSource,
    file_order,
    first_of_each_name,
    read_yaml_source,
    validation_problems,
)
from daemon.core.mappings import (
    PLACEHOLDER,
    SLOT,
    CommandTemplate,
    DeviceMapping,
    MappingSet,
    ReplySpec,
    Route,
    RouteKind,
    StatusWords,
    TemplateError,
    Timestamp,
    TopicTemplate,
    When,
    word,
)
from daemon.core.payloads import DEFAULT_LIMITS, Limits
from daemon.core.units import UnitError, conversion
from daemon.errors import ConfigProblem

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
PRESETS = "daemon.presets"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Timestamp(_Model):
    pointer: str = "/ts"
    format: Literal["auto", "epoch_ms", "epoch_s", "iso8601"] = "auto"
    required: bool = False
    timezone: str | None = None


class _When(_Model):
    pointer: str
    values: list[str | int | bool] = Field(default_factory=list)


class _Status(_Model):
    pointer: str | None = None
    online: list[str | int | bool] = Field(
        default_factory=lambda: list[str | int | bool](["online"])
    )
    offline: list[str | int | bool] = Field(
        default_factory=lambda: list[str | int | bool](["offline"])
    )
    set: Literal["online", "offline"] | None = None


class _Ok(_Model):
    pointer: str
    values: list[str | int | bool] = Field(default_factory=lambda: list[str | int | bool]([True]))


class _Reply(_Model):
    id: str | None = None
    ok: _Ok | None = None
    error: str | None = None
    message: str | None = None


class _Route(_Model):
    topic: str
    kind: Literal["telemetry", "status", "meta", "reply", "ignore"] = "telemetry"
    device: str | None = None
    payload: Literal["json", "value"] = "json"
    metric: str = "value"
    split: Literal["keys"] | None = None
    values: str = ""
    timestamp: _Timestamp = _Timestamp()
    keep: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    prefix: str = ""
    units: dict[str, str] = Field(default_factory=dict)
    convert: dict[str, str] = Field(default_factory=dict)
    arrays: Literal["ignore", "index"] | None = None
    status: _Status = _Status()
    reply: _Reply = _Reply()
    when: _When | None = None
    offline_values: list[str] = Field(default_factory=list)


class _Method(_Model):
    topic: str | None = None
    payload: Any


class _Commands(_Model):
    topic: str
    payload: Any = None
    methods: dict[str, _Method] = Field(default_factory=dict)


class _Mapping(_Model):
    name: str
    device: str = "{device}"
    routes: list[_Route] = Field(min_length=1)
    commands: _Commands | None = None


class _File(_Model):
    mappings: list[_Mapping] = Field(default_factory=list)


def preset_names() -> list[str]:
    """The presets shipped inside the package (`daemon/presets/*.yaml`)."""
    folder = resources.files(PRESETS)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def preset_path(name: str) -> Path:
    """The file of the shipped preset `name`, or ValueError listing the known ones."""
    if name not in preset_names():
        raise ValueError(f"unknown preset {name!r} (shipped: {', '.join(preset_names())})")
    return Path(str(resources.files(PRESETS).joinpath(f"{name}.yaml")))


def is_mapping_file(path: Path) -> bool:
    """Whether `path` holds mappings (a top-level `mappings:` key) rather than rules."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"^mappings\s*:", head, re.MULTILINE) is not None


def _template(
    text: str, loc: Loc, source: YamlSource, problems: list[ConfigProblem]
) -> TopicTemplate | None:
    try:
        return TopicTemplate.parse(text)
    except TemplateError as exc:
        problems.append(source.problem(loc, f"topic {text!r}: {exc}"))
        return None


def _slots_used(text: str) -> set[str]:
    return {m.group(1) for m in SLOT.finditer(text) if not m.group(1).startswith("/")}


def _check_pointer(text: str | None, loc: Loc, source: YamlSource) -> list[ConfigProblem]:
    if text and not text.startswith("/"):
        return [source.problem(loc, f"a JSON pointer starts with / (e.g. /{text})")]
    return []


def _route(
    raw: _Route, mapping: _Mapping, loc: Loc, source: YamlSource
) -> tuple[Route | None, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    topic = _template(raw.topic, (*loc, "topic"), source, problems)
    device = raw.device or mapping.device
    problems += _check_pointer(raw.values, (*loc, "values"), source)
    if raw.when is not None:
        problems += _check_pointer(raw.when.pointer, (*loc, "when", "pointer"), source)
    if raw.offline_values and raw.payload != "value":
        message = "only for `payload: value` (a JSON status is a `kind: status` route)"
        problems.append(source.problem((*loc, "offline_values"), message, key=True))
    if raw.timestamp.timezone is not None:
        try:
            ZoneInfo(raw.timestamp.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            message = f"unknown time zone {raw.timestamp.timezone!r} (an IANA name: Europe/Paris)"
            problems.append(source.problem((*loc, "timestamp", "timezone"), message))
    problems += _check_pointer(raw.timestamp.pointer, (*loc, "timestamp", "pointer"), source)
    problems += _check_pointer(raw.status.pointer, (*loc, "status", "pointer"), source)
    for key in ("id", "error", "message"):
        problems += _check_pointer(getattr(raw.reply, key), (*loc, "reply", key), source)
    if raw.reply.ok is not None:
        problems += _check_pointer(raw.reply.ok.pointer, (*loc, "reply", "ok", "pointer"), source)
    if topic is not None and raw.kind != "ignore":
        known = set(topic.slots) | ({"key"} if raw.split == "keys" else set())
        for name in sorted((_slots_used(device) | _slots_used(raw.prefix)) - known):
            message = f"{{{name}}} is not a segment of {raw.topic!r}"
            where = (*loc, "device") if name in _slots_used(device) else (*loc, "prefix")
            problems.append(source.problem(where, message))
        if raw.payload == "value":
            for name in sorted(_slots_used(raw.metric) - known):
                message = f"{{{name}}} is not a segment of {raw.topic!r}"
                problems.append(source.problem((*loc, "metric"), message))
    problems += _check_convert(raw, loc, source)
    if raw.payload == "value" and raw.kind in ("meta",):
        problems.append(source.problem((*loc, "payload"), "a meta route takes a JSON object"))
    if topic is None or problems:
        return None, problems
    words = StatusWords(
        raw.status.pointer,
        tuple(word(w) for w in raw.status.online),
        tuple(word(w) for w in raw.status.offline),
        raw.status.set,
    )
    route = Route(
        mapping=mapping.name,
        topic=topic,
        kind=RouteKind(raw.kind),
        device=device,
        payload=raw.payload,
        metric=raw.metric,
        split=raw.split,
        values=raw.values,
        timestamp=Timestamp(
            raw.timestamp.pointer,
            raw.timestamp.format,
            raw.timestamp.required,
            raw.timestamp.timezone,
        ),
        when=None
        if raw.when is None
        else When(raw.when.pointer, tuple(word(w) for w in raw.when.values)),
        offline_values=tuple(raw.offline_values),
        keep=tuple(raw.keep),
        drop=tuple(raw.drop),
        rename=dict(raw.rename),
        prefix=raw.prefix,
        units=dict(raw.units),
        convert=dict(raw.convert),
        arrays=raw.arrays,
        status=words,
        reply=ReplySpec(
            raw.reply.id,
            raw.reply.ok.pointer if raw.reply.ok else None,
            tuple(word(w) for w in raw.reply.ok.values) if raw.reply.ok else ("true",),
            raw.reply.error,
            raw.reply.message,
        ),
        where=source.where((*loc, "topic")),
    )
    return route, problems


def _check_convert(raw: _Route, loc: Loc, source: YamlSource) -> list[ConfigProblem]:
    """`convert: {name: unit}` needs the unit the device sends (`units`), and one it converts to."""
    problems = []
    for name, target in raw.convert.items():
        at: Loc = (*loc, "convert", name)
        unit = raw.units.get(name)
        if unit is None:
            message = (
                f"convert: {name} needs the unit the device sends it in (units: {{{name}: ...}})"
            )
            problems.append(source.problem(at, message, key=True))
            continue
        try:
            conversion(unit, target)
        except UnitError as exc:
            problems.append(source.problem(at, f"convert: {exc}"))
    return problems


def _commands(
    raw: _Commands, routes: list[Route], loc: Loc, source: YamlSource
) -> tuple[CommandTemplate | None, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    topic = _template(raw.topic, (*loc, "topic"), source, problems)
    segments = {name for r in routes for name in r.topic.slots}
    if any(r.split == "keys" or "{/" in r.device for r in routes):
        segments.add("key")  # the name a message gives its device (docs/devices.md)
    known = segments | {"id", "method", "command_id", "params"}
    methods: dict[str, tuple[TopicTemplate | None, object]] = {}
    if raw.payload is None and not raw.methods:
        problems.append(source.problem(loc, "give a `payload` template, or `methods`"))
    for name, method in raw.methods.items():
        at: Loc = (*loc, "methods", name)
        override = None
        if method.topic is not None:
            override = _template(method.topic, (*at, "topic"), source, problems)
        methods[name] = (override, method.payload)
    templates = [(loc, raw.topic, raw.payload)] + [
        ((*loc, "methods", n), m.topic or "", m.payload) for n, m in raw.methods.items()
    ]
    for at, topic_text, payload in templates:
        for name in sorted(_placeholders(topic_text) | _placeholders(payload)):
            if name not in known and not name.startswith("params."):
                names = ", ".join([*sorted(known), "params.NAME"])
                message = f"unknown placeholder {{{name}}} (known: {names})"
                problems.append(source.problem(at, message))
    if topic is None or problems:
        return None, problems
    return CommandTemplate(topic, raw.payload, methods), problems


def _placeholders(template: object) -> set[str]:
    if isinstance(template, str):
        return {m.group(1) for m in PLACEHOLDER.finditer(template)}
    if isinstance(template, dict):
        found: set[str] = set()
        for key, value in template.items():
            found |= _placeholders(key) | _placeholders(value)
        return found
    if isinstance(template, list):
        return set().union(*(_placeholders(v) for v in template)) if template else set()
    return set()


def read_mapping_file(path: Path) -> tuple[list[DeviceMapping], list[ConfigProblem]]:
    """Return the mappings in `path` and every problem in it (with problems, none)."""
    source, problems = read_yaml_source(path)
    if source is None:
        return [], problems
    try:
        data = _File.model_validate(source.data)
    except ValidationError as exc:
        return [], sorted(validation_problems(exc, _File, source), key=file_order)
    found: list[DeviceMapping] = []
    for index, raw in enumerate(data.mappings):
        loc: Loc = ("mappings", index)
        if NAME.fullmatch(raw.name) is None:
            message = "must be lower case letters, digits and _ (starting with a letter)"
            problems.append(source.problem((*loc, "name"), message))
        routes: list[Route] = []
        for number, raw_route in enumerate(raw.routes):
            route, route_problems = _route(raw_route, raw, (*loc, "routes", number), source)
            problems += route_problems
            if route is not None:
                routes.append(route)
        commands = None
        if raw.commands is not None:
            commands, command_problems = _commands(raw.commands, routes, (*loc, "commands"), source)
            problems += command_problems
        found.append(DeviceMapping(raw.name, tuple(routes), commands, source.where((*loc, "name"))))
    problems.sort(key=file_order)
    return ([] if problems else found), problems


def load_mappings(
    paths: Iterable[Path], presets: Iterable[str] = ()
) -> tuple[list[DeviceMapping], list[ConfigProblem]]:
    """The presets named, then every mapping in `paths`; names unique across all of them."""
    files: list[Path] = []
    problems: list[ConfigProblem] = []
    for name in presets:
        try:
            files.append(preset_path(name))
        except ValueError as exc:
            problems.append(ConfigProblem("mappings.presets", str(exc), "config"))
    files += [p for p in rule_paths(paths) if p.suffix in (".yaml", ".yml")]
    found: list[DeviceMapping] = []
    for path in files:
        mappings, file_problems = read_mapping_file(path)
        found += mappings
        problems += file_problems
    mappings, duplicates = first_of_each_name(found, "mapping")
    problems += duplicates
    return ([] if problems else mappings), problems


class MappingFileSet:
    """Mapping files and presets, as configured (`mappings.paths`, `mappings.presets`).

    With `require` (a path the operator set) a missing path is a problem; a default one that
    does not exist holds no mappings (docs/operations.md, "A fresh directory").
    """

    def __init__(
        self, paths: Iterable[Path], presets: Iterable[str] = (), require: bool = False
    ) -> None:
        self._paths = tuple(paths)
        self._presets = tuple(presets)
        self._require = require

    def load(self, limits: Limits = DEFAULT_LIMITS) -> tuple[MappingSet, list[ConfigProblem]]:
        """The routes, and every problem of every file."""
        missing = [p for p in self._paths if not p.exists()]
        found, problems = load_mappings([p for p in self._paths if p.exists()], self._presets)
        if self._require:
            problems = [
                ConfigProblem("mappings.paths", "no such file or directory", str(p))
                for p in missing
            ] + problems
        return MappingSet(tuple(found), limits), problems

    def stamp(self) -> object:
        return fingerprint(self._paths)
