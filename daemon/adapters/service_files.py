"""Read the operator's service files: routing (queues, escalation, agents) and customers.

`routing.yaml`:
    queues:
      - {match: {category: heating, severity: "critical|major"}, queue: heating-l2, skill: heating}
      - {match: {kind: advisory}, queue: customer-success, skill: customer-success}
    default: {queue: service, skill: general}
    escalation:
      - {after: 30m, level: 2, queue: service-l2}
    agents:
      - {id: alice, name: Alice Martin, skills: [heating], capacity: 5, level: 1}

`customers.yaml`:
    cust-0007: {name: Jane Doe, tier: gold, contact: sms, phone: "+33...", location: "Lyon, FR"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from daemon.core.durations import parse_duration
from daemon.core.tickets import Agent, EscalationStep, Routing, RoutingRule
from daemon.errors import ConfigInvalid, ConfigProblem


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Queue(_Model):
    match: dict[str, str] = Field(default_factory=dict)
    queue: str
    skill: str


class _Default(_Model):
    queue: str = "service"
    skill: str = "general"


class _Step(_Model):
    after: str | float
    level: int = Field(ge=2)
    queue: str | None = None


class _Agent(_Model):
    id: str
    name: str = ""
    skills: list[str]
    capacity: int = Field(5, ge=1)
    level: int = Field(1, ge=1)


class _RoutingFile(_Model):
    queues: list[_Queue] = Field(default_factory=list)
    default: _Default = _Default()
    escalation: list[_Step] = Field(default_factory=list)
    agents: list[_Agent] = Field(default_factory=list)


class Customer(_Model):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = ""
    tier: str = "standard"
    contact: str = "email"
    location: str | None = None


def _load(path: Path) -> Any:
    try:
        return YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
    except (OSError, YAMLError) as exc:
        raise ConfigInvalid([ConfigProblem("-", f"cannot read: {exc}", str(path))]) from exc


def _problems(exc: ValidationError, path: Path) -> ConfigInvalid:
    return ConfigInvalid(
        [
            ConfigProblem(".".join(str(p) for p in e["loc"]), e["msg"], str(path))
            for e in exc.errors()
        ]
    )


def load_routing(path: Path | None) -> Routing:
    """Return the routing in `path`; no file means one default queue and no agents."""
    if path is None or not path.exists():
        return Routing()
    try:
        data = _RoutingFile.model_validate(_load(path))
        steps = tuple(
            EscalationStep(int(parse_duration(s.after) * 1000), s.level, s.queue)
            for s in data.escalation
        )
    except ValidationError as exc:
        raise _problems(exc, path) from exc
    except ValueError as exc:
        raise ConfigInvalid([ConfigProblem("escalation", str(exc), str(path))]) from exc
    return Routing(
        rules=tuple(RoutingRule(q.match, q.queue, q.skill) for q in data.queues),
        escalation=tuple(sorted(steps, key=lambda s: s.level)),
        agents=tuple(
            Agent(a.id, a.name or a.id, frozenset(a.skills), a.capacity, a.level)
            for a in data.agents
        ),
        default_queue=data.default.queue,
        default_skill=data.default.skill,
    )


def load_customers(path: Path | None) -> dict[str, Customer]:
    if path is None or not path.exists():
        return {}
    raw = _load(path)
    if not isinstance(raw, dict):
        raise ConfigInvalid([ConfigProblem("-", "must map customer ids to details", str(path))])
    try:
        return {str(k): Customer.model_validate(v or {}) for k, v in raw.items()}
    except ValidationError as exc:
        raise _problems(exc, path) from exc


def runbook_steps(path: Path) -> list[str]:
    """Return the numbered steps of a runbook or guide (lines like `1. Do this`)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    steps = []
    for line in lines:
        head, dot, rest = line.strip().partition(". ")
        if dot and head.isdigit() and rest:
            steps.append(rest.strip())
    return steps
