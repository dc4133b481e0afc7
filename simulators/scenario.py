"""Scenario files and fault flags: parsing and validation, with file:line:col in every error.

A scenario is YAML::

    description: Six devices, a few faults in the first 40 seconds
    devices: 6              # default 10
    interval: 1s            # seconds between telemetry messages per device; default 5s
    seed: 42                # default 0
    models: [boiler, heat_pump, freezer]   # optional, assigned round-robin
    id_prefix: sim          # default "sim": ids like sim-boiler-0001
    duration: 60s           # optional; omitted = until stopped
    faults:
      - device: sim-boiler-0001
        kind: drift         # drift | spike | stuck | dropout | offline | hardware
                            # | decorrelate | wear
        metric: temperature # for drift, spike and stuck
        start: 5s           # after the fleet starts; default 0
        duration: 30s       # omitted = until fixed or until the fleet stops
        params: {rate: 20}  # drift: rate (per minute); spike: magnitude, probability;
                            # decorrelate: rate; wear: life (a time), worn (0..1)
        id: boiler-drift    # optional
      - device: sim-boiler-0004
        kind: drift
        metric: pressure
        params: {rate: -0.2}
        customer_fix_after: 2m      # the customer fixes it (only for customer-fixable faults);
        customer_fix_from: notice   # counted from the daemon's first notice (default: start)
        customer_impact_after: 8m   # optional: overrides the model's estimate
        customer_compliance: 0.5    # optional: overrides `compliance` for this customer
      - offline:sim-boiler-0004:start=15s:duration=15s   # the flag form works too
    compliance: 0.8         # probability a guided customer follows steps that fit; default 1
    history:                # past telemetry published before the live run (simulators.history)
      duration: 12h
      step: 30s             # default 30s, at most 60s
      wear_runs: 6          # run-to-failure episodes in the past; default 0
      wear_model: heat_pump # default: the model of the first wear fault
      wear_life: 2h         # default: the life of that fault
      repair_after: 30m     # default 30m
      clean_tail: 2h        # no wear run in the last 2 h; default 2h
      seed: 11              # default: the scenario's seed
    behaviours:             # per device: how it treats commands
      sim-boiler-0001: {answer_delay: 20s, rejects: [reboot], drop_commands: 0.5}
    usage:                  # per device: normal | unused | barely_used | misused
      sim-boiler-0004: unused
    profiles: {normal: 9, barely_used: 1}   # weights for the devices not in `usage`

Times are seconds, or numbers with units ``ms``, ``s``, ``m``, ``h`` (``90s``, ``1.5m``, ``1m30s``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from daemon.core.durations import parse_duration
from simulators.commands import Behaviour
from simulators.faults import METRIC_KINDS, TIME_PARAMS, CustomerFixFrom, FaultKind, FaultSpec
from simulators.fleet import FleetOptions, fault_problems, option_problems, plan_devices
from simulators.history import HistoryOptions
from simulators.models import UsageProfile, get_model


class ScenarioInvalid(ValueError):
    """A scenario file that cannot be used. ``str()`` lists every problem as file:line:col: text."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line  # 1-based line of the first problem, when known


def parse_seconds(value: object) -> float:
    """Return seconds from a number or a string such as ``30``, ``30s``, ``5m``, ``1m30s``."""
    try:
        return parse_duration(value)  # type: ignore[arg-type]  # it checks the type itself
    except ValueError:
        raise ValueError(f"expected a time such as 30s or 5m, got {value!r}") from None


def _seconds_or_never(value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == "never"):
        return None
    return parse_seconds(value)


def _number(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")  # noqa: TRY004  as in parse_seconds
    return value


def parse_fault_flag(text: str) -> FaultSpec:
    """Return the fault described by a command-line flag.

    Syntax: ``KIND:DEVICE[:METRIC][:KEY=VALUE]...``

    - KIND: ``drift``, ``spike``, ``stuck`` (these need a METRIC), ``dropout``, ``offline``,
      ``hardware``, ``decorrelate``, ``wear``.
    - KEY=VALUE: ``start`` and ``duration`` are times (``30s``, ``5m``, ``1h``, ``1m30s``, bare
      seconds); start defaults to 0, no duration means until fixed or until the fleet stops;
      ``id`` names the fault; ``customer_fix_after`` (a time, or ``never``),
      ``customer_fix_from`` (``start`` or ``notice``) and ``customer_impact_after`` (a time) as
      in scenario files; the kind's parameters are numbers: ``rate`` for drift (units per
      minute, default 1), ``magnitude`` (default 10) and ``probability`` (default 0.2) for spike,
      ``rate`` for decorrelate (default 0.5), ``life`` (a time, default 1h) and ``worn`` (the
      fraction of the life already used, default 0) for wear.

    Examples::

        drift:sim-boiler-0001:temperature:start=30s:duration=5m:rate=2
        stuck:sim-freezer-0003:cabinet_temp:start=10s
        spike:sim-heat_pump-0002:compressor_current:magnitude=15:probability=0.3
        offline:sim-boiler-0004:start=15s:duration=20s
        drift:sim-boiler-0004:pressure:rate=-0.2:customer_fix_after=2m:customer_fix_from=notice
        hardware:sim-heat_pump-0005:start=1m
        decorrelate:sim-boiler-0001:start=2m:rate=1
        wear:sim-heat_pump-0002:life=2h:worn=0.9

    Device ids containing ``:`` cannot be written this way; use a scenario file. Raises
    ValueError saying what is wrong.
    """
    try:
        return _parse_flag(text)
    except ValueError as exc:
        raise ValueError(f"bad fault {text!r}: {exc}") from None


def _parse_flag(text: str) -> FaultSpec:
    positional: list[str] = []
    options: dict[str, str] = {}
    for part in text.strip().split(":"):
        if "=" in part:
            key, _, value = (p.strip() for p in part.partition("="))
            if key in options:
                raise ValueError(f"{key} given twice")
            options[key] = value
        elif options:
            raise ValueError(f"{part!r} comes after KEY=VALUE options; expected KEY=VALUE")
        else:
            positional.append(part.strip())
    if not positional or not positional[0]:
        raise ValueError("expected KIND:DEVICE[:METRIC][:KEY=VALUE]...")
    try:
        kind = FaultKind(positional[0])
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown kind {positional[0]!r} (known: {known})") from None
    most = 3 if kind in METRIC_KINDS else 2
    if len(positional) < 2 or not positional[1]:
        raise ValueError("missing the device id (KIND:DEVICE...)")
    if len(positional) > most:
        raise ValueError(f"too many fields for {kind}: {':'.join(positional[most:])!r}")
    start = parse_seconds(options.pop("start", "0"))
    duration_text = options.pop("duration", None)
    duration = None if duration_text is None else parse_seconds(duration_text)
    fault_id = options.pop("id", None)
    fix_after_text = options.pop("customer_fix_after", None)
    fix_after = None if fix_after_text is None else _seconds_or_never(fix_after_text)
    fix_from = options.pop("customer_fix_from", "start")
    if fix_from not in ("start", "notice"):
        raise ValueError(f"customer_fix_from must be start or notice, got {fix_from!r}")
    impact_text = options.pop("customer_impact_after", None)
    impact = None if impact_text is None else parse_seconds(impact_text)
    compliance_text = options.pop("customer_compliance", None)
    compliance = None if compliance_text is None else _float("customer_compliance", compliance_text)
    params = {
        key: parse_seconds(value) if key in TIME_PARAMS else _float(key, value)
        for key, value in options.items()
    }
    metric = positional[2] if len(positional) == 3 else None
    return FaultSpec(
        positional[1],
        kind,
        metric,
        start,
        duration,
        params,
        fault_id,
        customer_fix_after=fix_after,
        customer_fix_from="notice" if fix_from == "notice" else "start",
        customer_impact_after=impact,
        customer_compliance=compliance,
    )


def _float(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def _param(value: object) -> object:
    """Return a fault parameter: a number, or a time such as ``2h`` in seconds."""
    if isinstance(value, str):
        return parse_seconds(value)
    return _number(value)


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
SecondsOrNever = Annotated[float | None, BeforeValidator(_seconds_or_never)]
Number = Annotated[float, BeforeValidator(_number)]
Param = Annotated[float, BeforeValidator(_param)]
Probability = Annotated[Number, Field(ge=0, le=1)]


class _FaultEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str
    kind: FaultKind
    metric: str | None = None
    start: Seconds = 0.0
    duration: Seconds | None = None
    params: dict[str, Param] = Field(default_factory=dict)
    id: str | None = None
    customer_fix_after: SecondsOrNever = None
    customer_fix_from: CustomerFixFrom = "start"
    customer_impact_after: Seconds | None = None
    customer_compliance: Probability | None = None

    def to_spec(self) -> FaultSpec:
        return FaultSpec(
            self.device,
            self.kind,
            self.metric,
            self.start,
            self.duration,
            self.params,
            self.id,
            customer_fix_after=self.customer_fix_after,
            customer_fix_from=self.customer_fix_from,
            customer_impact_after=self.customer_impact_after,
            customer_compliance=self.customer_compliance,
        )

    @model_validator(mode="after")
    def _check(self) -> Self:
        self.to_spec()  # the spec's own checks, reported at this entry
        return self


def _check_flag(text: str) -> str:
    _parse_flag(text)
    return text


def _item_form(value: Any) -> str:
    return "flag" if isinstance(value, str) else "map"


_FaultItem = Annotated[
    Annotated[_FaultEntry, Tag("map")] | Annotated[str, AfterValidator(_check_flag), Tag("flag")],
    Discriminator(_item_form),
]


class _BehaviourEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    answer_delay: Annotated[Seconds, Field(ge=0)] = 0.0
    rejects: tuple[str, ...] = ()
    drop_commands: Annotated[Number, Field(ge=0, le=1)] = 0.0

    def to_behaviour(self) -> Behaviour:
        return Behaviour(self.answer_delay, frozenset(self.rejects), self.drop_commands)


def _check_model(name: str) -> str:
    get_model(name)
    return name


class _HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    duration: Annotated[Seconds, Field(gt=0)]
    step: Annotated[Seconds, Field(gt=0, le=60)] = 30.0
    wear_runs: Annotated[int, Field(ge=0, le=10_000, strict=True)] = 0
    wear_model: Annotated[str, AfterValidator(_check_model)] | None = None
    wear_life: Annotated[Seconds, Field(gt=0)] | None = None
    repair_after: Annotated[Seconds, Field(ge=0)] = 1800.0
    clean_tail: Annotated[Seconds, Field(ge=0)] = 7200.0
    seed: Annotated[int, Field(strict=True)] | None = None

    def to_options(self) -> HistoryOptions:
        return HistoryOptions(
            duration=self.duration,
            step=self.step,
            wear_runs=self.wear_runs,
            wear_model=self.wear_model,
            wear_life=self.wear_life,
            repair_after=self.repair_after,
            clean_tail=self.clean_tail,
            seed=self.seed,
        )

    @model_validator(mode="after")
    def _check(self) -> Self:
        self.to_options()  # the options' own checks, reported at this entry
        return self


class _ScenarioFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    devices: Annotated[int, Field(ge=1, le=100_000, strict=True)] = 10
    interval: Annotated[Seconds, Field(gt=0)] = 5.0
    seed: Annotated[int, Field(strict=True)] = 0
    models: tuple[Annotated[str, AfterValidator(_check_model)], ...] | None = Field(
        default=None, min_length=1
    )
    id_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] = "sim"
    duration: Annotated[Seconds, Field(gt=0)] | None = None
    faults: list[_FaultItem] = Field(default_factory=list)
    behaviours: dict[str, _BehaviourEntry] = Field(default_factory=dict)
    usage: dict[str, UsageProfile] = Field(default_factory=dict)
    profiles: dict[UsageProfile, Annotated[Number, Field(ge=0)]] = Field(default_factory=dict)
    compliance: Probability = 1.0
    history: _HistoryEntry | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the fleet to simulate, the faults to inject, how devices behave."""

    devices: int
    interval: float
    seed: int
    faults: tuple[FaultSpec, ...]
    models: tuple[str, ...] | None = None
    id_prefix: str = "sim"
    duration: float | None = None
    description: str = ""
    behaviours: Mapping[str, Behaviour] = field(default_factory=dict)
    usage: Mapping[str, UsageProfile] = field(default_factory=dict)
    profiles: Mapping[UsageProfile, float] = field(default_factory=dict)
    compliance: float = 1.0
    history: HistoryOptions | None = None

    def options(self, base: FleetOptions | None = None) -> FleetOptions:
        """Return ``base`` (default options if None) with this scenario's fleet and faults."""
        base = base or FleetOptions()
        return replace(
            base,
            devices=self.devices,
            interval=self.interval,
            seed=self.seed,
            faults=self.faults,
            models=self.models or base.models,
            id_prefix=self.id_prefix,
            duration=self.duration if self.duration is not None else base.duration,
            behaviours=self.behaviours or base.behaviours,
            usage=self.usage or base.usage,
            profiles=self.profiles or base.profiles,
            compliance=self.compliance,
            history=self.history if self.history is not None else base.history,
        )


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; ScenarioInvalid lists every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioInvalid(f"{path}: cannot read scenario: {exc}", path=path) from exc
    try:
        data = YAML(typ="rt").load(text)  # round-trip: keeps line numbers for error messages
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        where = f"{line}:{mark.column + 1}" if mark is not None else "?"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ScenarioInvalid(f"{path}:{where}: {problem}", path=path, line=line) from exc
    except YAMLError as exc:
        raise ScenarioInvalid(f"{path}: invalid YAML: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise ScenarioInvalid(f"{path}:1:1: a scenario must be a YAML mapping", path=path, line=1)
    problems: list[tuple[tuple[Any, ...], str]] = []
    try:
        parsed = _ScenarioFile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(p for p in error["loc"] if p not in ("map", "flag"))
            problems.append((loc, error["msg"].removeprefix("Value error, ")))
        raise _invalid(path, data, problems) from None
    faults = tuple(
        item.to_spec() if isinstance(item, _FaultEntry) else _parse_flag(item)
        for item in parsed.faults
    )
    scenario = Scenario(
        devices=parsed.devices,
        interval=parsed.interval,
        seed=parsed.seed,
        faults=faults,
        models=parsed.models,
        id_prefix=parsed.id_prefix,
        duration=parsed.duration,
        description=parsed.description,
        behaviours={d: b.to_behaviour() for d, b in parsed.behaviours.items()},
        usage=dict(parsed.usage),
        profiles=dict(parsed.profiles),
        compliance=parsed.compliance,
        history=parsed.history.to_options() if parsed.history is not None else None,
    )
    options = scenario.options()
    identities = plan_devices(options)
    for index, name, message in fault_problems(faults, identities):
        problems.append((("faults", index, name), message))
    problems.extend(option_problems(options, identities))
    if problems:
        raise _invalid(path, data, problems)
    return scenario


def _position(data: Any, loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """Return the 1-based (line, column) of the deepest node of ``loc`` found in ``data``."""
    found = None
    node = data
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            line, col = node.lc.key(key)
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            line, col = node.lc.item(key)
        else:
            break
        found = (line + 1, col + 1)
        node = node[key]
    return found


def _invalid(path: Path, data: Any, problems: list[tuple[tuple[Any, ...], str]]) -> ScenarioInvalid:
    lines = []
    first_line = None
    for loc, message in problems:
        position = _position(data, loc)
        where = f"{position[0]}:{position[1]}" if position else "1:1"
        if first_line is None and position:
            first_line = position[0]
        field = ".".join(str(p) for p in loc) or "scenario"
        lines.append(f"{path}:{where}: {field}: {message}")
    return ScenarioInvalid("\n".join(lines), path=path, line=first_line)
