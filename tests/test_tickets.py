"""Tickets: routing, assignment, one ticket per episode, updates, escalation, resolution."""

from __future__ import annotations

import pytest

from daemon.core.tickets import (
    Agent,
    EscalationStep,
    Routing,
    RoutingRule,
    Ticket,
    TicketStatus,
    acknowledge,
    escalate_due,
    open_ticket,
    pick_agent,
    resolve,
    route,
    ticket_id,
    update,
)

M = 60_000
ROUTING = Routing(
    rules=(
        RoutingRule({"category": "heating", "severity": "critical|major"}, "heating-l2", "heating"),
        RoutingRule({"category": "heating"}, "heating-l1", "heating"),
        RoutingRule({"kind": "advisory"}, "customer-success", "customer-success"),
        RoutingRule({"tier": "gold"}, "vip", "general"),
    ),
    escalation=(EscalationStep(30 * M, 2, "heating-l3"), EscalationStep(90 * M, 3)),
    agents=(
        Agent("alice", "Alice", frozenset({"heating"}), capacity=2, level=1),
        Agent("bob", "Bob", frozenset({"heating", "connectivity"}), capacity=4, level=2),
        Agent("carol", "Carol", frozenset({"customer-success"}), capacity=10, level=1),
    ),
)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"category": "heating", "severity": "critical"}, ("heating-l2", "heating")),
        ({"category": "heating", "severity": "minor"}, ("heating-l1", "heating")),
        ({"category": "usage", "kind": "advisory"}, ("customer-success", "customer-success")),
        ({"category": "cooling", "tier": "gold"}, ("vip", "general")),
        ({"category": "cooling", "tier": "bronze"}, ("service", "general")),
    ],
)
def test_route(facts: dict[str, str], expected: tuple[str, str]) -> None:
    """Test that the first matching routing rule decides queue and skill."""
    assert route(ROUTING, facts) == expected


@pytest.mark.parametrize(
    ("skill", "level", "load", "expected"),
    [
        ("heating", 1, {}, "alice"),  # both free: lower load ratio tie -> lower level first
        ("heating", 1, {"alice": 1}, "bob"),  # alice half full, bob empty
        ("heating", 2, {}, "bob"),
        ("heating", 1, {"alice": 2, "bob": 4}, None),  # everyone at capacity
        ("refrigeration", 1, {}, None),
    ],
)
def test_pick_agent(skill: str, level: int, load: dict[str, int], expected: str | None) -> None:
    """Test that assignment picks the least loaded agent with the skill and level."""
    assert pick_agent(ROUTING.agents, skill, level, load) == expected


def _open(now: int = 0, severity: str = "major") -> Ticket:
    ticket, event = open_ticket(
        key="b1/Hot/x",
        episode=1000,
        device="b1",
        alert="Hot",
        kind="fault",
        summary="hot",
        labels={"severity": severity, "category": "heating", "skill": "heating"},
        tier="silver",
        context={"device": {"id": "b1"}},
        routing=ROUTING,
        load={},
        now_ms=now,
        reason="remediation failed",
    )
    assert event["event"] == "opened"
    assert event["ticket"]["id"] == ticket.id
    return ticket


def test_open_ticket_routes_prioritises_and_assigns() -> None:
    """Test that a new ticket carries queue, skill, priority, assignee and its first event."""
    ticket = _open()
    assert (ticket.queue, ticket.skill, ticket.priority, ticket.assignee) == (
        "heating-l2",
        "heating",
        "P2",
        "alice",
    )
    assert ticket.id == ticket_id("b1/Hot/x", 1000)
    assert [e["event"] for e in ticket.timeline] == ["opened"]


def test_update_raises_priority_but_never_lowers_it() -> None:
    """Test that a repeat at a higher severity raises the priority; a lower one does not."""
    ticket, _ = update(_open(), M, "fired again", severity="critical")
    assert ticket.priority == "P1"
    ticket, event = update(ticket, 2 * M, "fired again", severity="minor")
    assert ticket.priority == "P1"
    assert event["seq"] == 3


def test_escalation_ladder_for_unacknowledged_tickets() -> None:
    """Test that an unacknowledged ticket moves up after the configured delays, not before."""
    ticket = _open()
    ticket, event = escalate_due(ticket, ROUTING, {}, 29 * M)
    assert event is None
    ticket, event = escalate_due(ticket, ROUTING, {}, 30 * M)
    assert event is not None
    assert (ticket.level, ticket.queue, ticket.assignee) == (2, "heating-l3", "bob")
    ticket, event = escalate_due(ticket, ROUTING, {}, 100 * M)
    assert event is None  # the next step counts from the last escalation
    ticket, event = escalate_due(ticket, ROUTING, {}, 120 * M)
    assert ticket.level == 3


def test_acknowledged_tickets_do_not_escalate() -> None:
    """Test that acknowledging stops the ladder."""
    ticket, _ = acknowledge(_open(), "alice", M)
    assert ticket.status is TicketStatus.ACKNOWLEDGED
    assert escalate_due(ticket, ROUTING, {}, 200 * M) == (ticket, None)


def test_resolve_and_round_trip() -> None:
    """Test that resolving records who and why, and a ticket survives JSON."""
    ticket, event = resolve(_open(), "frontline", "healthy for 10 min", 5 * M)
    assert not ticket.open
    assert event["event"] == "resolved"
    assert Ticket.from_json(ticket.to_json()) == ticket
