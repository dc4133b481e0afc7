"""Proactive tickets (H2H): one per alert identity and episode, routed, escalated, auto-resolved.

Pure: every function takes `now` and the data and returns the new ticket plus the event that
the sinks (ticket store, webhook, MQTT) publish. Routing matches category / severity / customer
tier / kind / alert, the remediation outcome and the predicted time to customer impact
(daemon.core.urgency) to a queue, a required skill and optionally a priority; assignment picks
the least loaded agent with the skill. A fault ticket is routed again while it is open as the
prediction and the remediation outcome change (`reroute`): it moves only to a more urgent route.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

import orjson

PRIORITY = {"critical": "P1", "major": "P2", "minor": "P3", "info": "P4"}
SEVERITY_RANK = {"info": 0, "minor": 1, "major": 2, "critical": 3}
PRIORITIES = ("P1", "P2", "P3", "P4")  # P1 is the most urgent


class TicketStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class RoutingRule:
    #: keys: category, severity, tier, kind, alert, remediation; values: globs, a|b
    match: Mapping[str, str]
    queue: str
    skill: str
    #: matches only while customer impact is predicted within this many seconds
    impact_within_s: float | None = None
    #: the ticket's priority when this rule decides (default: from the severity)
    priority: str | None = None
    #: the customer gets the rule's `safety` steps when this rule decides
    safety_steps: bool = False


@dataclass(frozen=True)
class EscalationStep:
    after_ms: int  # unacknowledged this long after opening (or the previous escalation)
    level: int
    queue: str | None = None


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    skills: frozenset[str]
    capacity: int = 5
    level: int = 1


@dataclass(frozen=True)
class Routing:
    rules: tuple[RoutingRule, ...] = ()
    escalation: tuple[EscalationStep, ...] = ()
    agents: tuple[Agent, ...] = ()
    default_queue: str = "service"
    default_skill: str = "general"


def _matches(pattern: str, value: str) -> bool:
    return any(fnmatchcase(value, p.strip()) for p in pattern.split("|"))


@dataclass(frozen=True)
class Decision:
    """Where routing sends a ticket: queue, skill, priority override and the rule that decided."""

    queue: str
    skill: str
    priority: str | None = None
    #: index of the deciding rule in `Routing.rules`; None for the default
    rule: int | None = None
    safety_steps: bool = False

    @property
    def source(self) -> str:
        """The deciding rule as the operator finds it in routing.yaml."""
        return "default" if self.rule is None else f"queues[{self.rule}]"


def _rule_matches(rule: RoutingRule, facts: Mapping[str, str], impact_s: float | None) -> bool:
    if rule.impact_within_s is not None and (impact_s is None or impact_s > rule.impact_within_s):
        return False
    return all(_matches(p, facts.get(k, "")) for k, p in rule.match.items())


def decide(routing: Routing, facts: Mapping[str, str], impact_s: float | None = None) -> Decision:
    """Return the decision of the first routing rule whose every key matches.

    `impact_s` is the time left until customer impact (None: no prediction, which no
    `impact_within` matches).

    >>> urgent = RoutingRule({"remediation": "refused"}, "field", "heating", 3600.0, "P1", True)
    >>> r = Routing((urgent,))
    >>> [decide(r, {"remediation": "refused"}, s).source for s in (420.0, 7200.0, None)]
    ['queues[0]', 'default', 'default']
    """
    for index, rule in enumerate(routing.rules):
        if _rule_matches(rule, facts, impact_s):
            return Decision(rule.queue, rule.skill, rule.priority, index, rule.safety_steps)
    return Decision(routing.default_queue, routing.default_skill)


def route(
    routing: Routing, facts: Mapping[str, str], impact_s: float | None = None
) -> tuple[str, str]:
    """Return (queue, skill) of the first routing rule whose every key matches `facts`.

    >>> rule = RoutingRule({"category": "heating", "severity": "major|critical"}, "l2", "heating")
    >>> r = Routing((rule,))
    >>> route(r, {"category": "heating", "severity": "critical"}), route(r, {"category": "x"})
    (('l2', 'heating'), ('service', 'general'))
    """
    decision = decide(routing, facts, impact_s)
    return decision.queue, decision.skill


def _priority_level(priority: str) -> int:
    return PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES)


def _rank(priority: str, rule: int | None, rules: int) -> tuple[int, int]:
    """Urgency, lower is more urgent: the priority first, then the rule's place in the file
    (first match wins, so the operator puts the specific, urgent rules first)."""
    return _priority_level(priority), rules if rule is None else rule


def pick_agent(
    agents: Sequence[Agent], skill: str, level: int, load: Mapping[str, int]
) -> str | None:
    """Return the least loaded agent with `skill` and at least `level` who has capacity left."""
    fit = [
        a
        for a in agents
        if skill in a.skills and a.level >= level and load.get(a.id, 0) < a.capacity
    ]
    if not fit:
        return None
    return min(fit, key=lambda a: (load.get(a.id, 0) / a.capacity, a.level, a.id)).id


@dataclass(frozen=True)
class Ticket:
    id: str
    key: str
    device: str
    alert: str
    kind: str  # fault | approval | advisory
    summary: str
    severity: str
    category: str
    skill: str
    queue: str
    created_ms: int
    updated_ms: int
    status: TicketStatus = TicketStatus.OPEN
    priority: str = "P3"
    #: the routing rule that placed the ticket (`queues[N]`), None for the default; a reroute
    #: must be more urgent than it
    routed_by: int | None = None
    assignee: str | None = None
    level: int = 1
    acked_ms: int | None = None
    resolved_ms: int | None = None
    escalated_ms: int | None = None
    resolution: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    timeline: tuple[Mapping[str, Any], ...] = ()

    @property
    def open(self) -> bool:
        return self.status is not TicketStatus.RESOLVED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Ticket:
        raw: dict[str, Any] = orjson.loads(data)
        raw["status"] = TicketStatus(raw["status"])
        raw["timeline"] = tuple(raw["timeline"])
        return cls(**raw)


def ticket_id(key: str, episode: int) -> str:
    """A stable id per identity and episode, so a retried open never makes two tickets."""
    return "T-" + hashlib.sha256(f"{key}|{episode}".encode()).hexdigest()[:10]


def _event(
    ticket: Ticket, kind: str, now_ms: int, detail: str, who: str = "frontline"
) -> tuple[Ticket, dict[str, Any]]:
    entry = {"at_ms": now_ms, "event": kind, "detail": detail, "by": who}
    ticket = replace(ticket, updated_ms=now_ms, timeline=(*ticket.timeline, entry))
    event = {
        "event": kind,
        "ticket_id": ticket.id,
        "at_ms": now_ms,
        "detail": detail,
        "by": who,
        "seq": len(ticket.timeline),
        "ticket": ticket.to_dict(),
    }
    return ticket, event


def open_ticket(
    *,
    key: str,
    episode: int,
    device: str,
    alert: str,
    kind: str,
    summary: str,
    labels: Mapping[str, str],
    tier: str,
    context: Mapping[str, Any],
    routing: Routing,
    load: Mapping[str, int],
    now_ms: int,
    reason: str,
    remediation: str = "none",
    impact_s: float | None = None,
) -> tuple[Ticket, dict[str, Any]]:
    """Open a ticket routed on the alert's labels, the customer's tier, what remediation
    achieved (`remediation`, see daemon.core.urgency.OUTCOMES) and the time left until customer
    impact (`impact_s`, None when nothing predicts it)."""
    severity = labels.get("severity", "minor")
    category = labels.get("category", "general")
    facts = routing_facts(alert, kind, labels, tier, remediation)
    decision = decide(routing, facts, impact_s)
    skill = labels.get("skill", decision.skill) if kind == "fault" else decision.skill
    ticket = Ticket(
        id=ticket_id(key, episode),
        key=key,
        device=device,
        alert=alert,
        kind=kind,
        summary=summary,
        severity=severity,
        category=category,
        skill=skill,
        queue=decision.queue,
        created_ms=now_ms,
        updated_ms=now_ms,
        priority=decision.priority or PRIORITY.get(severity, "P3"),
        routed_by=decision.rule,
        assignee=pick_agent(routing.agents, skill, 1, load),
        context=dict(context),
    )
    return _event(ticket, "opened", now_ms, reason)


def routing_facts(
    alert: str, kind: str, labels: Mapping[str, str], tier: str, remediation: str
) -> dict[str, str]:
    """Return the text facts routing's `match` globs are tried against."""
    return {
        "category": labels.get("category", "general"),
        "severity": labels.get("severity", "minor"),
        "tier": tier,
        "kind": kind,
        "alert": alert,
        "remediation": remediation,
    }


def reroute(
    ticket: Ticket,
    decision: Decision,
    rules: int,
    now_ms: int,
    why: str,
) -> tuple[Ticket, dict[str, Any] | None]:
    """Move an open ticket to `decision` when it is more urgent than where the ticket is.

    More urgent: a higher priority, or the same priority from a rule earlier in the file
    (`rules` is how many there are). Urgency only rises by itself: a prediction that recedes,
    or wobbles around a threshold, never sends a ticket back and forth between queues (people
    may already be on their way); an agent resolves it, or it resolves itself. The priority
    never falls; the assignee and the level stay. Returns no event when nothing moves, and none
    either when only the deciding rule changes (a ticket stored before `routed_by` existed).
    """
    if not ticket.open:
        return ticket, None
    wanted = decision.priority or PRIORITY.get(ticket.severity, ticket.priority)
    if _rank(wanted, decision.rule, rules) >= _rank(ticket.priority, ticket.routed_by, rules):
        return ticket, None
    priority = min(wanted, ticket.priority, key=_priority_level)
    moved = replace(ticket, queue=decision.queue, priority=priority, routed_by=decision.rule)
    if (moved.queue, moved.priority) == (ticket.queue, ticket.priority) and not (
        decision.safety_steps
    ):
        return moved, None
    detail = (
        f"{why}: queue {ticket.queue} -> {moved.queue}, priority {ticket.priority} -> "
        f"{moved.priority} (routing {decision.source})"
    )
    return _event(moved, "rerouted", now_ms, detail)


def update(
    ticket: Ticket,
    now_ms: int,
    detail: str,
    severity: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> tuple[Ticket, dict[str, Any]]:
    """A repeat of the same problem: note it; the priority may rise, never fall."""
    if severity is not None and SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(
        ticket.severity, 0
    ):
        ticket = replace(
            ticket, severity=severity, priority=PRIORITY.get(severity, ticket.priority)
        )
        detail = f"{detail}; severity raised to {severity}"
    if context is not None:
        ticket = replace(ticket, context={**ticket.context, **context})
    return _event(ticket, "updated", now_ms, detail)


def acknowledge(ticket: Ticket, who: str, now_ms: int) -> tuple[Ticket, dict[str, Any]]:
    ticket = replace(ticket, status=TicketStatus.ACKNOWLEDGED, acked_ms=now_ms)
    if ticket.assignee is None:
        ticket = replace(ticket, assignee=who)
    return _event(ticket, "acknowledged", now_ms, f"acknowledged by {who}", who)


def assign(ticket: Ticket, agent: str, who: str, now_ms: int) -> tuple[Ticket, dict[str, Any]]:
    return _event(replace(ticket, assignee=agent), "assigned", now_ms, f"assigned to {agent}", who)


def comment(ticket: Ticket, who: str, text: str, now_ms: int) -> tuple[Ticket, dict[str, Any]]:
    return _event(ticket, "commented", now_ms, text, who)


def resolve(ticket: Ticket, who: str, reason: str, now_ms: int) -> tuple[Ticket, dict[str, Any]]:
    ticket = replace(ticket, status=TicketStatus.RESOLVED, resolved_ms=now_ms, resolution=reason)
    return _event(ticket, "resolved", now_ms, reason, who)


def escalate_due(
    ticket: Ticket, routing: Routing, load: Mapping[str, int], now_ms: int
) -> tuple[Ticket, dict[str, Any] | None]:
    """Move an unacknowledged ticket up the ladder when its next step is due."""
    if ticket.status is not TicketStatus.OPEN:
        return ticket, None
    since = ticket.escalated_ms or ticket.created_ms
    for step in routing.escalation:
        if step.level > ticket.level and now_ms - since >= step.after_ms:
            queue = step.queue or ticket.queue
            agent = pick_agent(routing.agents, ticket.skill, step.level, load) or ticket.assignee
            ticket = replace(
                ticket, level=step.level, queue=queue, assignee=agent, escalated_ms=now_ms
            )
            waited = (now_ms - since) // 60000
            detail = f"unacknowledged for {waited} min: level {step.level}, queue {queue}"
            return _event(ticket, "escalated", now_ms, detail)
    return ticket, None
