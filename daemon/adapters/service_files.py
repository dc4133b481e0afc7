"""Read the operator's service files: routing (queues, escalation, agents) and customers.

`routing.yaml` (docs/tickets.md):
    queues:
      - match: {remediation: "refused|failed", impact_within: 1h}
        queue: field-service
        skill: heating
        priority: P1
        safety_steps: true
      - {match: {category: heating, severity: "critical|major"}, queue: heating-l2, skill: heating}
      - {match: {kind: advisory}, queue: customer-success, skill: customer-success}
    default: {queue: service, skill: general}
    escalation:
      - {after: 30m, level: 2, queue: service-l2}
    agents:
      - {id: alice, name: Alice Martin, skills: [heating], capacity: 5, level: 1}

`customers.yaml`, customer ids straight to their details:
    cust-0007: {name: Jane Doe, tier: gold, contact: sms, phone: "+33...", location: "Lyon, FR"}

Both are strict, like the settings and the rule files: an unknown key (a typo, or a wrapping
`customers:` around the mapping) or a bad value is a problem with file:line:col, and every problem
of a file is reported at once. A path the operator set must exist. The default paths may be
absent: that is logged as a warning, and means no routing rules (or no customers), because a
daemon started with no rules/service/ folder must still run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.adapters.yaml_source import (
    Loc,
    YamlSource,
    file_order,
    read_yaml_source,
    validation_problems,
)
from daemon.config import ActionsSettings, Seconds
from daemon.core.durations import parse_duration
from daemon.core.tickets import Agent, EscalationStep, Routing, RoutingRule
from daemon.core.urgency import OUTCOMES
from daemon.errors import ConfigInvalid, ConfigProblem

log = logging.getLogger(__name__)

#: the facts a ticket is routed on (daemon.core.tickets.open_ticket); any other key never matches
MATCH_KEYS = ("alert", "category", "severity", "tier", "kind", "remediation", "impact_within")
#: the values of `kind`: fault tickets, approval tickets (a command waits for an agent), advisories
TICKET_KINDS = ("fault", "approval", "advisory")
#: keys whose patterns must match one of a fixed set of values, else the rule could never match
_CLOSED_KEYS = {"kind": ("ticket kind", TICKET_KINDS), "remediation": ("outcome", OUTCOMES)}
DEFAULT_ROUTING: Path | None = ActionsSettings.model_fields["routing"].default
DEFAULT_CUSTOMERS: Path | None = ActionsSettings.model_fields["customers"].default


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Queue(_Model):
    match: dict[str, str] = Field(default_factory=dict)
    queue: str = Field(min_length=1)
    skill: str = Field(min_length=1)
    #: the ticket's priority when this rule decides (default: from the alert's severity)
    priority: Literal["P1", "P2", "P3", "P4"] | None = None
    #: send the customer the rule's `safety` steps when this rule decides
    safety_steps: bool = False

    @field_validator("match", mode="before")
    @classmethod
    def _seconds_as_text(cls, value: object) -> object:
        """`impact_within: 3600` is seconds, like every duration in the operator's files."""
        within = value.get("impact_within") if isinstance(value, dict) else None
        if (
            isinstance(value, dict)
            and isinstance(within, int | float)
            and not isinstance(within, bool)
        ):
            return {**value, "impact_within": str(within)}
        return value


class _Default(_Model):
    queue: str = Field("service", min_length=1)
    skill: str = Field("general", min_length=1)


class _Step(_Model):
    after: Seconds
    level: int = Field(ge=2)
    queue: str | None = None


class _Agent(_Model):
    id: str = Field(min_length=1)
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
    """What a ticket tells the agent about the customer (`context.customer`)."""

    name: str = ""
    #: routing can match on it (`match: {tier: gold}`)
    tier: str = "standard"
    #: how the customer prefers to be reached: email, sms, phone, app, ...
    contact: str = "email"
    phone: str | None = None
    email: str | None = None
    #: wins over the device meta `location` in the ticket
    location: str | None = None


def _check_queues(data: dict[str, Any], source: YamlSource) -> list[ConfigProblem]:
    """Problems the models cannot see: match keys that never match, duplicate agents.

    Runs on the raw data so that these are reported together with the models' problems.
    """
    problems = []
    queues = data.get("queues")
    for index, queue in enumerate(queues if isinstance(queues, list) else []):
        match = queue.get("match") if isinstance(queue, dict) else None
        for key, pattern in match.items() if isinstance(match, dict) else ():
            loc: Loc = ("queues", index, "match", key)
            if key not in MATCH_KEYS:
                message = f"unknown match key (expected one of: {', '.join(MATCH_KEYS)})"
                problems.append(source.problem(loc, message, key=True))
            elif key == "impact_within":
                wrong = _within_problem(pattern)
                if wrong:
                    problems.append(source.problem(loc, wrong))
            elif key in _CLOSED_KEYS and not any(
                fnmatchcase(value, p.strip())
                for p in str(pattern).split("|")
                for value in _CLOSED_KEYS[key][1]
            ):
                what, values = _CLOSED_KEYS[key]
                message = f"matches no {what} (the {what}s are {', '.join(values)})"
                problems.append(source.problem(loc, message))
    agents = data.get("agents")
    seen: set[str] = set()
    for index, agent in enumerate(agents if isinstance(agents, list) else []):
        agent_id = agent.get("id") if isinstance(agent, dict) else None
        if isinstance(agent_id, str) and agent_id in seen:
            problems.append(
                source.problem(("agents", index, "id"), f"duplicate agent {agent_id!r}")
            )
        seen.add(str(agent_id))
    return problems


def _within_problem(pattern: object) -> str | None:
    """What is wrong with an `impact_within` value: it is one duration, not a pattern."""
    if isinstance(pattern, bool) or not isinstance(pattern, str | int | float):
        return None  # the model reports the type
    try:
        seconds = parse_duration(pattern)
    except ValueError as exc:
        return str(exc)
    return None if seconds > 0 else "impact_within must be longer than 0s"


def _rule(queue: _Queue) -> RoutingRule:
    match = {k: v for k, v in queue.match.items() if k != "impact_within"}
    within = queue.match.get("impact_within")
    return RoutingRule(
        match,
        queue.queue,
        queue.skill,
        impact_within_s=None if within is None else parse_duration(within),
        priority=queue.priority,
        safety_steps=queue.safety_steps,
    )


def read_routing(path: Path) -> tuple[Routing, list[ConfigProblem]]:
    """Return the routing in `path` and every problem in it (with problems, an empty routing)."""
    source, problems = read_yaml_source(path)
    if source is None:
        return Routing(), problems
    problems = _check_queues(source.data, source)
    try:
        data = _RoutingFile.model_validate(source.data)
    except ValidationError as exc:
        problems = validation_problems(exc, _RoutingFile, source) + problems
        return Routing(), sorted(problems, key=file_order)
    if problems:
        return Routing(), problems
    steps = (EscalationStep(int(s.after * 1000), s.level, s.queue) for s in data.escalation)
    routing = Routing(
        rules=tuple(_rule(q) for q in data.queues),
        escalation=tuple(sorted(steps, key=lambda s: s.level)),
        agents=tuple(
            Agent(a.id, a.name or a.id, frozenset(a.skills), a.capacity, a.level)
            for a in data.agents
        ),
        default_queue=data.default.queue,
        default_skill=data.default.skill,
    )
    return routing, []


def _looks_wrapped(value: object) -> bool:
    """A customer whose details are themselves customers: a wrapping key such as `customers:`."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(inner, dict | None) for inner in value.values())
        and not set(value) & set(Customer.model_fields)
    )


def read_customers(path: Path) -> tuple[dict[str, Customer], list[ConfigProblem]]:
    """Return the customers in `path` by id and every problem in it (with problems, none)."""
    source, problems = read_yaml_source(path)
    if source is None:
        return {}, problems
    customers: dict[str, Customer] = {}
    for customer_id, details in source.data.items():
        if _looks_wrapped(details):
            message = (
                "looks like a wrapping key: the file maps customer ids straight to their "
                f"details (remove `{customer_id}:` and unindent what it holds)"
            )
            problems.append(source.problem((customer_id,), message, key=True))
            continue
        try:
            customers[customer_id] = Customer.model_validate(details or {})
        except ValidationError as exc:
            problems.extend(validation_problems(exc, Customer, source, (customer_id,)))
    return ({} if problems else customers), problems


@dataclass(frozen=True)
class ServiceFileCheck:
    """The outcome of reading one service file, for the log and for `frontline check`."""

    setting: str  # actions.routing | actions.customers
    path: Path | None
    problems: list[ConfigProblem]
    #: what loaded ("7 queue rule(s), ..."), or why nothing did
    summary: str
    #: set when a default path is absent (nothing loaded, but not an error)
    warning: str | None = None


#: what an absent (or unset) optional file means
ABSENT_MEANING = {
    "actions.routing": "every ticket goes to the default queue and no agent is assigned",
    "actions.customers": "tickets carry no customer details",
}


def _absent(
    setting: str, path: Path, default: Path | None, required: bool | None
) -> ServiceFileCheck:
    """A file that does not exist: an error unless it is the optional default path."""
    where = str(path) if path.is_absolute() else f"{path} (in {Path.cwd()})"
    if required or (required is None and path != default):
        return ServiceFileCheck(
            setting, path, [ConfigProblem(setting, "file not found", where)], "not found"
        )
    meaning = ABSENT_MEANING[setting]
    return ServiceFileCheck(
        setting, path, [], f"not found: {meaning}", f"{setting}: {where} not found: {meaning}"
    )


def _check_routing(path: Path | None, required: bool | None) -> tuple[Routing, ServiceFileCheck]:
    setting = "actions.routing"
    if path is None:
        return Routing(), ServiceFileCheck(setting, None, [], f"not set: {ABSENT_MEANING[setting]}")
    if not path.exists():
        return Routing(), _absent(setting, path, DEFAULT_ROUTING, required)
    routing, problems = read_routing(path)
    summary = (
        f"{len(routing.rules)} queue rule(s), {len(routing.escalation)} escalation step(s), "
        f"{len(routing.agents)} agent(s)"
    )
    return routing, ServiceFileCheck(setting, path, problems, summary)


def _check_customers(
    path: Path | None, required: bool | None
) -> tuple[dict[str, Customer], ServiceFileCheck]:
    setting = "actions.customers"
    if path is None:
        return {}, ServiceFileCheck(setting, None, [], f"not set: {ABSENT_MEANING[setting]}")
    if not path.exists():
        return {}, _absent(setting, path, DEFAULT_CUSTOMERS, required)
    customers, problems = read_customers(path)
    return customers, ServiceFileCheck(setting, path, problems, f"{len(customers)} customer(s)")


def _report(check: ServiceFileCheck) -> None:
    if check.problems:
        raise ConfigInvalid(check.problems)
    if check.warning:
        log.warning("%s", check.warning)
    else:
        log.info("%s %s: %s", check.setting, check.path, check.summary)


def load_routing(path: Path | None, *, required: bool | None = None) -> Routing:
    """Return the routing in `path`; raise ConfigInvalid with every problem.

    No path means one default queue and no agents. A missing file is an error when `required`,
    or (None) when it is not the default path; else a warning. The outcome is logged.
    """
    routing, check = _check_routing(path, required)
    _report(check)
    return routing


def load_customers(path: Path | None, *, required: bool | None = None) -> dict[str, Customer]:
    """Return the customers in `path` by id; raise ConfigInvalid with every problem.

    A missing file is treated as in `load_routing`. The outcome is logged.
    """
    customers, check = _check_customers(path, required)
    _report(check)
    return customers


def check_service_files(
    routing: Path | None,
    customers: Path | None,
    *,
    require_routing: bool | None = None,
    require_customers: bool | None = None,
) -> list[ServiceFileCheck]:
    """Return what loading both files would say, without raising or logging (`frontline check`).

    `require_*` as `required` in `load_routing`.
    """
    return [
        _check_routing(routing, require_routing)[1],
        _check_customers(customers, require_customers)[1],
    ]


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
