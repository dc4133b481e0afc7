"""H2H: proactive tickets with everything an agent needs, routed, escalated, auto-resolved.

The decisions are the pure functions of `daemon.core.tickets`; this desk keeps the open tickets,
builds each ticket's context (live device state, telemetry around the onset, the rule and values
that fired it, the remediation log, the customer, the runbook, the urgency) and records every
change in the round's work. "Healthy since" (the quiet period before a ticket resolves itself) is
a pending decision persisted with the rest (key `healthy:<alert key>`).

Urgency follows the prediction: on every tick, an open fault ticket is routed again on the
alert's predicted time to customer impact and on what remediation achieved
(`daemon.core.urgency`); it moves when that route is more urgent, and the customer gets the
rule's safety steps when the route says so. Both facts are derived from persisted state (alert
states, remediation logs, the ticket), so a crash between a change and the move only delays it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from daemon.actions.work import Work, iso
from daemon.config import ActionsSettings
from daemon.core.alerts import AlertState, Phase
from daemon.core.expr import model_refs, referenced_metrics
from daemon.core.rulefmt import Rule
from daemon.core.tickets import (
    Routing,
    Ticket,
    acknowledge,
    assign,
    comment,
    decide,
    escalate_due,
    open_ticket,
    reroute,
    resolve,
    routing_facts,
    update,
)
from daemon.core.twin import Twins
from daemon.core.urgency import (
    format_impact,
    impact_left,
    prediction_moved,
    remediation_outcome,
    urgency_context,
)
from daemon.metrics import Metrics
from daemon.ports import ModelLookup, RuleLookup, SeriesStore, ServiceFiles
from daemon.resilience import StoreHealth, persist

log = logging.getLogger(__name__)
PREFIX = "healthy:"


class TicketDesk:
    def __init__(
        self,
        settings: ActionsSettings,
        rules: RuleLookup,
        twins: Twins,
        series: SeriesStore,
        files: ServiceFiles,
        metrics: Metrics,
        health: StoreHealth,
        remediation_log: Callable[[str], list[dict[str, object]]],
        timeout_s: float,
    ) -> None:
        self.settings = settings
        self._rules = rules
        self._twins = twins
        self._series = series
        self._files = files
        self._metrics = metrics
        self._health = health
        self._remediation_log = remediation_log
        self._timeout_s = timeout_s
        self.tickets: dict[str, Ticket] = {}
        self.healthy_since: dict[str, int] = {}
        #: the learned models' latest scoring, for tickets of rules that read a model
        self.models: ModelLookup | None = None

    def restore(self, open_tickets: list[bytes], values: dict[str, bytes]) -> None:
        for data in open_tickets:
            ticket = Ticket.from_json(data)
            self.tickets[ticket.id] = ticket
        for name, data in values.items():
            self.healthy_since[name.removeprefix(PREFIX)] = int(data)

    def open_for(self, key: str) -> Ticket | None:
        return next((t for t in self.tickets.values() if t.key == key and t.open), None)

    def store(self, ticket: Ticket, event: dict[str, Any], work: Work) -> None:
        self.tickets[ticket.id] = ticket
        work.tickets[ticket.id] = ticket
        work.events.append(event)

    # -- alert lifecycle ---------------------------------------------------------------------
    def alert_fired(
        self, key: str, at_ms: int, severity: str | None, alert: str, work: Work
    ) -> None:
        self._set_healthy(key, None, work)
        existing = self.open_for(key)
        if existing is not None:
            ticket, event = update(existing, at_ms, f"{alert} fired again", severity)
            self.store(ticket, event, work)

    def mark_unhealthy(self, key: str, work: Work) -> None:
        self._set_healthy(key, None, work)

    def alert_resolved(self, key: str, at_ms: int, work: Work) -> None:
        self._set_healthy(key, at_ms, work)

    def _set_healthy(self, key: str, at_ms: int | None, work: Work) -> None:
        if at_ms is None:
            if self.healthy_since.pop(key, None) is not None:
                work.decisions[PREFIX + key] = None
        else:
            self.healthy_since[key] = at_ms
            work.decisions[PREFIX + key] = str(at_ms).encode()

    # -- opening -----------------------------------------------------------------------------
    def _load(self) -> dict[str, int]:
        load: dict[str, int] = {}
        for ticket in self.tickets.values():
            if ticket.open and ticket.assignee:
                load[ticket.assignee] = load.get(ticket.assignee, 0) + 1
        return load

    async def open(self, key: str, kind: str, reason: str, now: int, work: Work) -> Ticket | None:
        state = self._rules.states.get(key)
        if state is None:
            return None
        rule = self._rules.rule_for(state.group, state.alert)
        if rule is None:
            return None
        twin = self._twins.get(state.device)
        customer_id = str(twin.meta.get("customer", "")) if twin else ""
        customer = self._files.customer(customer_id) if customer_id else None
        tier = self._tier(state.device)
        context = await self._context(state, rule, customer_id, customer, now)
        outcome, impact, context["urgency"] = self._urgency(key, state, rule, now)
        summary = state.annotations.get("summary") or f"{state.alert} on {state.device}"
        summary += _models_note(context.get("anomaly") or {})
        if kind == "approval":
            summary = f"Approval needed: {summary}"
        ticket, event = open_ticket(
            key=key,
            episode=state.fired_at_ms or now,
            device=state.device,
            alert=state.alert,
            kind=kind,
            summary=summary,
            labels=dict(rule.labels),
            tier=tier,
            context=context,
            routing=self._files.routing(),
            load=self._load(),
            now_ms=now,
            reason=reason,
            remediation=outcome,
            impact_s=impact,
        )
        if ticket.id in self.tickets:  # the same episode already has its ticket
            return self.tickets[ticket.id]
        self.store(ticket, event, work)
        self._metrics.tickets_opened.labels(kind).inc()
        log.info("ticket %s opened for %s on %s: %s", ticket.id, state.alert, state.device, reason)
        routing = self._files.routing()
        if ticket.routed_by is not None and routing.rules[ticket.routed_by].safety_steps:
            ticket = self._send_safety(ticket, rule, impact, now, work)
        return ticket

    def _tier(self, device: str) -> str:
        """The customer's tier from the customers file, else the device meta `labels.tier`."""
        twin = self._twins.get(device)
        customer_id = str(twin.meta.get("customer", "")) if twin else ""
        customer = self._files.customer(customer_id) if customer_id else None
        if customer:
            return str(customer.get("tier", "standard"))
        return _label(twin.meta if twin else {}, "tier")

    def _urgency(
        self, key: str, state: AlertState | None, rule: Rule, now: int
    ) -> tuple[str, float | None, dict[str, Any]]:
        """What remediation achieved, the seconds left until customer impact (None: no
        prediction) and the ticket's `context.urgency` that says both."""
        outcome, detail = remediation_outcome(self._remediation_log(key))
        active = state is not None and state.phase in {Phase.PENDING, Phase.FIRING}
        impact_s = state.impact_s if state is not None and active else None
        at = state.last_eval_ms if state is not None and active else None
        context = urgency_context(
            impact_expr=rule.impact_text,
            impact_s=impact_s,
            predicted_at_ms=at,
            outcome=outcome,
            detail=detail,
            now_ms=now,
        )
        return outcome, impact_left(impact_s, at, now), context

    async def _context(
        self,
        state: AlertState,
        rule: Rule,
        customer_id: str,
        customer: Mapping[str, Any] | None,
        now: int,
    ) -> dict[str, Any]:
        twin = self._twins.get(state.device)
        onset = state.active_since_ms or state.fired_at_ms or now
        half = int(self.settings.context_window * 500)
        telemetry: dict[str, list[list[float]]] = {}
        metrics = {m: 0.0 for node in rule.expressions() for m in referenced_metrics(node)}
        for metric in metrics:
            points = await persist(
                lambda metric=metric: self._series.query_range(  # type: ignore[misc]
                    state.device, metric, onset - half, now
                ),
                "reading telemetry for a ticket",
                "series",
                self._health,
                write=False,
            )
            telemetry[metric] = [[ts, value] for ts, value in points]
        runbook = rule.annotations.get("runbook")
        location = customer.get("location") if customer else None
        return {
            "device": {
                "id": state.device,
                "online": twin.online(now, self._timeout_s) if twin else False,
                "status": twin.status if twin else None,
                "last_seen": iso(twin.last_seen_ms) if twin else None,
                "metrics": {k: v for k, (_, v) in twin.metrics.items()} if twin else {},
                "attributes": {k: v for k, (_, v) in twin.attributes.items()} if twin else {},
                "meta": dict(twin.meta) if twin else {},
                "snapshot_at": iso(now),
            },
            "live": f"{self.settings.console_url}/api/v1/devices/{state.device}",
            "telemetry": {
                "from": iso(onset - half),
                "to": iso(now),
                "onset": iso(onset),
                "series": telemetry,
            },
            "rule": {
                "group": rule.group,
                "alert": rule.alert,
                "expr": rule.expr_text,
                "for": rule.for_s,
                "labels": dict(rule.labels),
                "annotations": dict(state.annotations),
                "file": rule.file,
            },
            "trigger": {
                "value": state.value,
                "fired_at": iso(state.fired_at_ms),
                "pending_since": iso(state.active_since_ms),
            },
            "anomaly": self._models_context(rule, state.device),
            "remediation": self._remediation_log(state.key),
            "customer": {
                "id": customer_id or None,
                **(dict(customer) if customer else {}),
                "location": location or (twin.meta.get("location") if twin else None),
            },
            "runbook": {
                "path": runbook,
                "steps": self._files.steps(rule.file, runbook) if runbook else [],
            },
        }

    def _models_context(self, rule: Rule, device: str) -> dict[str, Any]:
        """Each model the rule reads: its latest value, version and top contributing features."""
        if self.models is None:
            return {}
        found = {}
        for name in model_refs(rule.expr):
            explained = self.models.explain(device, name)
            if explained is not None:
                found[name] = explained
        return found

    # -- changes -----------------------------------------------------------------------------
    def refresh_remediation(self, key: str, work: Work) -> None:
        """The agent sees the remediation log as it grows."""
        ticket = self.open_for(key)
        if ticket is not None:
            context = {**ticket.context, "remediation": self._remediation_log(key)}
            updated = replace(ticket, context=context)
            self.tickets[ticket.id] = updated
            work.tickets[ticket.id] = updated

    def resolve_fixed(self, key: str, method: str, now: int, work: Work) -> None:
        ticket = self.open_for(key)
        if ticket is not None:
            reason = f"fixed remotely by {method} (verified)"
            ticket, event = resolve(ticket, "frontline", reason, now)
            self.store(ticket, event, work)

    def follow_urgency(self, now: int, work: Work) -> None:
        """Route open fault tickets again as the prediction and the remediation outcome change.

        The ticket's `context.urgency` is rewritten when the outcome changes or the predicted
        moment moves noticeably, not at every evaluation; a move is a `rerouted` event.
        """
        routing = self._files.routing()
        for ticket in list(self.tickets.values()):
            if not ticket.open or ticket.kind != "fault":
                continue
            state = self._rules.states.get(ticket.key)
            rule = self._rules.rule_for(state.group, state.alert) if state else None
            if rule is None:
                continue  # the alert is long gone: the ticket resolves by itself
            self._follow(ticket, state, rule, routing, now, work)

    def _follow(
        self,
        ticket: Ticket,
        state: AlertState | None,
        rule: Rule,
        routing: Routing,
        now: int,
        work: Work,
    ) -> None:
        outcome, impact, urgency = self._urgency(ticket.key, state, rule, now)
        old: Mapping[str, Any] = ticket.context.get("urgency") or {}
        changed = (
            old.get("remediation") != outcome
            or old.get("remediation_detail") != urgency["remediation_detail"]
            or prediction_moved(old.get("impact_at_ms"), urgency["impact_at_ms"], now)
        )
        current = ticket
        if changed:
            kept = {k: v for k, v in old.items() if k.startswith("safety")}
            current = replace(ticket, context={**ticket.context, "urgency": {**urgency, **kept}})
        labels = {"category": ticket.category, "severity": ticket.severity}
        facts = routing_facts(ticket.alert, ticket.kind, labels, self._tier(ticket.device), outcome)
        decision = decide(routing, facts, impact)
        why = f"remediation {outcome}, customer impact {format_impact(impact)}"
        current, event = reroute(current, decision, len(routing.rules), now, why)
        if event is not None:
            self.store(current, event, work)
            log.info("ticket %s %s", current.id, event["detail"])
            if decision.safety_steps:
                self._send_safety(current, rule, impact, now, work)
        elif current != ticket:
            self.tickets[current.id] = current
            work.tickets[current.id] = current

    def _send_safety(
        self, ticket: Ticket, rule: Rule, impact: float | None, now: int, work: Work
    ) -> Ticket:
        """Send the customer the rule's safety steps, once per ticket, and note it on it."""
        urgency: Mapping[str, Any] = ticket.context.get("urgency") or {}
        if urgency.get("safety_sent_at"):
            return ticket
        if rule.safety is None:
            detail = f"the route asks for safety steps but {rule.alert} has no `safety:` file"
            ticket, event = update(ticket, now, detail)
            self.store(ticket, event, work)
            return ticket
        steps = self._files.steps(rule.file, rule.safety)
        when = format_impact(impact)
        if impact is None:
            expect = ""
        elif when == "now":
            expect = "This is likely affecting you now. "
        else:
            expect = f"We expect it to affect you {when}. "
        message = f"{expect}A technician has been asked to help. Until then, for your safety:"
        title = f"Important: {ticket.summary}"
        work.notice(ticket.device, "safety", title, message, steps, ticket.alert, now)
        sent = {**urgency, "safety_sent_at": iso(now), "safety_steps": steps}
        detail = f"safety steps sent to the customer ({rule.safety})"
        ticket, event = update(ticket, now, detail, context={"urgency": sent})
        self.store(ticket, event, work)
        return ticket

    def tick(self, now: int, firing: Callable[[str], bool], work: Work) -> None:
        """Follow urgency; escalate what waits too long; resolve what stayed healthy."""
        self.follow_urgency(now, work)
        quiet = int(self.settings.quiet_period * 1000)
        load = self._load()
        for current in list(self.tickets.values()):
            if not current.open:
                continue
            ticket, event = escalate_due(current, self._files.routing(), load, now)
            if event is not None:
                self.store(ticket, event, work)
                self._metrics.tickets_escalated.inc()
            if ticket.kind == "approval":
                continue
            healthy = self.healthy_since.get(ticket.key)
            if healthy is None and not firing(ticket.key) and ticket.key not in self._rules.states:
                healthy = now
                self._set_healthy(ticket.key, now, work)
            if healthy is not None and not firing(ticket.key) and now - healthy >= quiet:
                minutes = int(quiet / 60000)
                ticket, event = resolve(
                    ticket, "frontline", f"device healthy for {minutes} min", now
                )
                self.store(ticket, event, work)
                message = "We detected this problem and it is now fixed. No action is needed."
                title = f"Resolved: {ticket.summary}"
                work.notice(ticket.device, "resolved", title, message, [], ticket.alert, now)

    def act(self, ticket: Ticket, action: str, who: str, arg: str, now: int, work: Work) -> Ticket:
        """An agent's action on an open ticket (acknowledge, assign, comment, resolve)."""
        if action == "ack":
            ticket, event = acknowledge(ticket, who, now)
        elif action == "assign":
            ticket, event = assign(ticket, arg, who, now)
        elif action == "comment":
            ticket, event = comment(ticket, who, arg, now)
        elif action == "resolve":
            ticket, event = resolve(ticket, who, arg or "resolved by an agent", now)
        else:
            raise ValueError(f"unknown action {action!r}")
        self.store(ticket, event, work)
        return ticket

    def closed(self, work: Work) -> None:
        """After a commit: resolved tickets leave memory (the state DB keeps them)."""
        for ticket in work.tickets.values():
            if not ticket.open:
                self.tickets.pop(ticket.id, None)


def _label(meta: Mapping[str, object], name: str, default: str = "standard") -> str:
    labels = meta.get("labels")
    if isinstance(labels, dict) and name in labels:
        return str(labels[name])
    return default


def _models_note(models: Mapping[str, Any]) -> str:
    """What the agent reads first about a model-driven alert: which metrics made it anomalous."""
    notes = []
    for name, found in models.items():
        shares = ", ".join(
            f"{c['feature']} {c['share']:.0%}" for c in found.get("contributions") or []
        )
        if found.get("kind") == "anomaly":
            notes.append(f"{name} v{found['version']} score {found['value']:.2f}: {shares}")
        else:
            notes.append(
                f"{name} v{found['version']} predicts {found['value']:.3g} {found['unit']}"
            )
    return f" [{'; '.join(notes)}]" if notes else ""
