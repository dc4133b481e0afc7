"""Acting on alerts, cheapest first: M2M remediation, H2M guidance, H2H tickets.

The decisions are the pure state machines in `daemon.core.remediation` and `daemon.core.tickets`;
this runtime feeds them alert transitions, device replies and the clock, carries out their effects
(publish a command, a notice, a ticket event), and persists everything in the state database
before anything leaves the process, so that a restart resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

import orjson

from daemon.adapters.service_files import Customer, load_customers, load_routing, runbook_steps
from daemon.config import ActionsSettings
from daemon.core.alerts import AlertState, Phase, Transition
from daemon.core.expr import referenced_metrics
from daemon.core.messages import Reply
from daemon.core.remediation import (
    DeviceView,
    Effect,
    Escalate,
    Fixed,
    NeedApproval,
    Policy,
    Remediation,
    SendCommand,
    advance,
    approve,
    on_reply,
    start,
)
from daemon.core.rulefmt import Group, Rule
from daemon.core.tickets import (
    Routing,
    Ticket,
    acknowledge,
    assign,
    comment,
    escalate_due,
    open_ticket,
    resolve,
    update,
)
from daemon.core.twin import Twins
from daemon.metrics import Metrics
from daemon.ports import SeriesStore, StateStore

log = logging.getLogger(__name__)
TICK_S = 1.0


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None: ...


class TicketSink(Protocol):
    async def enqueue(
        self, ticket_id: str, event: Mapping[str, Any], idempotency_key: str
    ) -> None: ...


class RuleLookup(Protocol):
    states: dict[str, AlertState]

    def group(self, name: str) -> Group | None: ...

    def rule_for(self, group: str, alert: str) -> Rule | None: ...


def iso(ms: int | None) -> str | None:
    return (
        None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    )


@dataclass
class _Pending:
    """What one round of work changed, to be persisted together and then published."""

    remediations: dict[str, bytes | None] = field(default_factory=dict)
    tickets: dict[str, Ticket] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    commands: list[SendCommand] = field(default_factory=list)
    opens: list[tuple[str, str, str]] = field(default_factory=list)  # key, kind, reason
    fixed: list[Fixed] = field(default_factory=list)


class ActionService:
    def __init__(
        self,
        settings: ActionsSettings,
        rules: RuleLookup,
        twins: Twins,
        series: SeriesStore,
        state: StateStore,
        publisher: Publisher,
        metrics: Metrics,
        default_timeout_s: float,
        sink: TicketSink | None = None,
        topic_prefix: str = "devices",
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self._rules = rules
        self._twins = twins
        self._series = series
        self._state = state
        self._publisher = publisher
        self._metrics = metrics
        self._timeout_s = default_timeout_s
        self._sink = sink
        self._prefix = topic_prefix
        self._now = clock
        self.policy = Policy(
            max_sends=settings.max_sends,
            command_ttl_ms=int(settings.command_ttl * 1000),
            budget_per_hour=settings.budget_per_hour,
        )
        self.routing = Routing()
        self.customers: dict[str, Customer] = {}
        self.remediations: dict[str, Remediation] = {}
        self.tickets: dict[str, Ticket] = {}
        self._guided: dict[str, tuple[int, int]] = {}  # key -> (episode, guided at)
        self._healthy_since: dict[str, int] = {}
        self._sent: dict[str, deque[int]] = {}
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._lock = asyncio.Lock()

    # -- start-up ----------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.routing = load_routing(s.routing)
        self.customers = load_customers(s.customers)
        for data in await self._state.load_remediations():
            rem = Remediation.from_json(data)
            self.remediations[rem.key] = rem
            for entry in rem.log:
                if entry.event in {"sent", "no reply: sent again"}:
                    self._sent.setdefault(rem.device, deque()).append(entry.at_ms)
        for data in await self._state.load_tickets(open_only=True):
            ticket = Ticket.from_json(data)
            self.tickets[ticket.id] = ticket
        log.info(
            "actions: %d remediations, %d open tickets restored; %d routing rules, %d agents",
            sum(1 for r in self.remediations.values() if not r.done),
            len(self.tickets),
            len(self.routing.rules),
            len(self.routing.agents),
        )

    # -- inputs (called from other tasks; never block) ----------------------------------------
    def on_transitions(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            if not transition.dry_run:
                self._put(("transition", transition))

    def on_reply(self, reply: Reply, received_ms: int) -> None:
        self._put(("reply", (reply, received_ms)))

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._inbox.put_nowait(item)
        except asyncio.QueueFull:
            log.error(
                "action inbox full: dropped %s (the tick loop will catch up on alerts)", item[0]
            )

    # -- loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                item = await asyncio.wait_for(self._inbox.get(), timeout=TICK_S)
                await self._handle(item)
                while not self._inbox.empty():
                    await self._handle(self._inbox.get_nowait())
            await self.tick()

    async def _handle(self, item: tuple[str, Any]) -> None:
        async with self._lock:
            work = _Pending()
            kind, payload = item
            if kind == "transition":
                await self._on_transition(payload, work)
            else:
                reply, received_ms = payload
                self._on_reply(reply, received_ms, work)
            await self._commit(work)

    async def tick(self) -> None:
        async with self._lock:
            work = _Pending()
            now = self._now()
            for rem in list(self.remediations.values()):
                if not rem.done:
                    self._advance(rem, now, work)
            await self._guidance_timeouts(now, work)
            self._tickets_tick(now, work)
            await self._commit(work)

    # -- alerts ------------------------------------------------------------------------------
    def _firing(self, key: str) -> bool:
        state = self._rules.states.get(key)
        return state is not None and state.phase is Phase.FIRING

    def _clearing(self, key: str) -> bool:
        """True when the alert fires but its condition was false at the last evaluation."""
        state = self._rules.states.get(key)
        return (
            state is not None
            and state.phase is Phase.FIRING
            and state.last_true_ms is not None
            and state.last_eval_ms is not None
            and state.last_true_ms < state.last_eval_ms
        )

    def _open_ticket_for(self, key: str) -> Ticket | None:
        return next((t for t in self.tickets.values() if t.key == key and t.open), None)

    async def _on_transition(self, t: Transition, work: _Pending) -> None:
        state = self._rules.states.get(t.key)
        rule = self._rules.rule_for(state.group, t.alert) if state else None
        if t.to_phase is Phase.RESOLVED:
            self._healthy_since[t.key] = t.at_ms
            return
        if t.to_phase is not Phase.FIRING or rule is None or state is None:
            return
        self._healthy_since.pop(t.key, None)
        group = self._rules.group(state.group)
        if group is not None and group.schedule:
            await self._advise(t, rule, group, work)
            return
        existing = self._open_ticket_for(t.key)
        if existing is not None:
            ticket, event = update(
                existing, t.at_ms, f"{t.alert} fired again", t.labels.get("severity")
            )
            self._store(ticket, event, work)
        if rule.remediate:
            current = self.remediations.get(t.key)
            if current is None or current.done:
                rem = start(t.key, t.device, t.alert, t.at_ms, rule.remediate, t.at_ms)
                self._advance(rem, self._now(), work)
        if rule.guide:
            self._guide(t, rule, work)
        if rule.ticket == "always" and self._open_ticket_for(t.key) is None:
            await self._open(t.key, "fault", "opened by policy (ticket: always)", work)
        elif (
            rule.ticket == "on_failure"
            and not rule.remediate
            and not rule.guide
            and self._open_ticket_for(t.key) is None
        ):
            reason = "no remote fix or customer guidance for this fault"
            await self._open(t.key, "fault", reason, work)

    async def _advise(self, t: Transition, rule: Rule, group: Group, work: _Pending) -> None:
        """Usage (customer-success) findings: an advisory, at most one per device per period."""
        marker = f"advisory:{t.device}:{t.alert}"
        last = await self._state.get_value(marker)
        if last is not None and t.at_ms - int(last) < group.advisory_period_s * 1000:
            log.info(
                "advisory %s for %s skipped: one was sent within the period", t.alert, t.device
            )
            return
        await self._state.set_value(marker, str(t.at_ms).encode())
        if rule.guide:
            self._guide(t, rule, work)
        if rule.ticket != "never":
            await self._open(t.key, "advisory", f"usage finding: {t.alert}", work)

    def _guide(self, t: Transition, rule: Rule, work: _Pending) -> None:
        assert rule.guide is not None
        steps = runbook_steps(Path(rule.file).parent / rule.guide)
        summary = t.annotations.get("summary", t.alert)
        self._notice(t.device, "guidance", f"We noticed a problem: {summary}",
                     "A few steps usually fix this:", steps, t.alert, work)  # fmt: skip
        self._guided[t.key] = (t.at_ms, self._now())

    async def _guidance_timeouts(self, now: int, work: _Pending) -> None:
        timeout = int(self.settings.guidance_timeout * 1000)
        for key, (_, since) in list(self._guided.items()):
            if not self._firing(key):
                del self._guided[key]
            elif self._clearing(key):
                # Held only by keep_firing_for: the customer's fix may be taking hold. The ticket
                # waits; it opens if the condition comes back while the alert still fires.
                continue
            elif now - since >= timeout and self._open_ticket_for(key) is None:
                del self._guided[key]
                state = self._rules.states.get(key)
                rule = self._rules.rule_for(state.group, state.alert) if state else None
                if rule is not None and rule.ticket != "never" and not rule.remediate:
                    minutes = int(timeout / 60000)
                    await self._open(
                        key, "fault", f"customer guidance did not clear it in {minutes} min", work
                    )

    # -- remediation -------------------------------------------------------------------------
    def _view(self, rem: Remediation, now: int) -> DeviceView:
        twin = self._twins.get(rem.device)
        online = twin is not None and twin.online(now, self._timeout_s)
        model = str(twin.meta.get("model", "")) if twin else ""
        sent = self._sent.setdefault(rem.device, deque())
        while sent and now - sent[0] > 3600_000:
            sent.popleft()
        return DeviceView(online, self._firing(rem.key), model, len(sent))

    def _allowed(self, model: str) -> frozenset[str] | None:
        for pattern, methods in self.settings.allowlist.items():
            if fnmatchcase(model, pattern):
                return frozenset(methods)
        return None

    def _advance(self, rem: Remediation, now: int, work: _Pending) -> None:
        view = self._view(rem, now)
        new, effects = advance(
            rem,
            now,
            view,
            self.policy,
            self._allowed(view.model),
            frozenset(self.settings.approval_required),
        )
        self._apply(new, effects, work)

    def _on_reply(self, reply: Reply, received_ms: int, work: _Pending) -> None:
        try:
            body = orjson.loads(reply.payload)
            status, message = str(body.get("status", "error")), str(body.get("message", ""))
        except (orjson.JSONDecodeError, AttributeError):
            status, message = "error", "unreadable reply"
        for rem in self.remediations.values():
            if rem.device == reply.device and rem.command_id == reply.command_id:
                new, effects = on_reply(
                    rem, reply.command_id, status, message, received_ms, self.policy
                )
                self._apply(new, effects, work)
                return
        log.info(
            "reply to unknown or finished command %s from %s: %s",
            reply.command_id,
            reply.device,
            status,
        )

    def _apply(self, rem: Remediation, effects: list[Effect], work: _Pending) -> None:
        if rem != self.remediations.get(rem.key):
            self.remediations[rem.key] = rem
            work.remediations[rem.key] = rem.to_json()
            ticket = self._open_ticket_for(rem.key)
            if ticket is not None:  # the agent sees the remediation log as it grows
                self.tickets[ticket.id] = ticket.__class__(
                    **{
                        **ticket.__dict__,
                        "context": {**ticket.context, "remediation": [e.__dict__ for e in rem.log]},
                    }
                )
                work.tickets[ticket.id] = self.tickets[ticket.id]
        for effect in effects:
            if isinstance(effect, SendCommand):
                work.commands.append(effect)
                self._sent.setdefault(effect.device, deque()).append(self._now())
                self._metrics.commands_sent.inc()
            elif isinstance(effect, Fixed):
                work.fixed.append(effect)
            elif isinstance(effect, Escalate):
                work.opens.append((effect.key, "fault", effect.reason))
            elif isinstance(effect, NeedApproval):
                reason = f"approval needed before sending {effect.method} {dict(effect.params)}"
                work.opens.append((effect.key, "approval", reason))

    # -- tickets -----------------------------------------------------------------------------
    def _load(self) -> dict[str, int]:
        load: dict[str, int] = {}
        for ticket in self.tickets.values():
            if ticket.open and ticket.assignee:
                load[ticket.assignee] = load.get(ticket.assignee, 0) + 1
        return load

    async def _open(self, key: str, kind: str, reason: str, work: _Pending) -> Ticket | None:
        state = self._rules.states.get(key)
        if state is None:
            return None
        rule = self._rules.rule_for(state.group, state.alert)
        if rule is None:
            return None
        twin = self._twins.get(state.device)
        customer_id = str(twin.meta.get("customer", "")) if twin else ""
        customer = self.customers.get(customer_id)
        tier = customer.tier if customer else _label(twin.meta if twin else {}, "tier")
        context = await self._context(state, rule, customer_id, customer)
        summary = state.annotations.get("summary") or f"{state.alert} on {state.device}"
        if kind == "approval":
            summary = f"Approval needed: {summary}"
        episode = state.fired_at_ms or self._now()
        ticket, event = open_ticket(
            key=key,
            episode=episode,
            device=state.device,
            alert=state.alert,
            kind=kind,
            summary=summary,
            labels=dict(rule.labels),
            tier=tier,
            context=context,
            routing=self.routing,
            load=self._load(),
            now_ms=self._now(),
            reason=reason,
        )
        if ticket.id in self.tickets:  # the same episode already has its ticket
            return self.tickets[ticket.id]
        self._store(ticket, event, work)
        self._metrics.tickets_opened.labels(kind).inc()
        log.info("ticket %s opened for %s on %s: %s", ticket.id, state.alert, state.device, reason)
        return ticket

    async def _context(
        self, state: AlertState, rule: Rule, customer_id: str, customer: Customer | None
    ) -> dict[str, Any]:
        now = self._now()
        twin = self._twins.get(state.device)
        onset = state.active_since_ms or state.fired_at_ms or now
        half = int(self.settings.context_window * 500)
        telemetry: dict[str, list[list[float]]] = {}
        for metric in referenced_metrics(rule.expr):
            points = await self._series.query_range(state.device, metric, onset - half, now)
            telemetry[metric] = [[ts, value] for ts, value in points]
        rem = self.remediations.get(state.key)
        runbook = rule.annotations.get("runbook")
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
            "anomaly": {},
            "remediation": [e.__dict__ for e in rem.log] if rem else [],
            "customer": {
                "id": customer_id or None,
                **(customer.model_dump() if customer else {}),
                "location": (
                    customer.location
                    if customer and customer.location
                    else (twin.meta.get("location") if twin else None)
                ),
            },
            "runbook": {
                "path": runbook,
                "steps": runbook_steps(Path(rule.file).parent / runbook) if runbook else [],
            },
        }

    def _store(self, ticket: Ticket, event: dict[str, Any], work: _Pending) -> None:
        self.tickets[ticket.id] = ticket
        work.tickets[ticket.id] = ticket
        work.events.append(event)

    def _tickets_tick(self, now: int, work: _Pending) -> None:
        quiet = int(self.settings.quiet_period * 1000)
        load = self._load()
        for current in list(self.tickets.values()):
            if not current.open:
                continue
            ticket, event = escalate_due(current, self.routing, load, now)
            if event is not None:
                self._store(ticket, event, work)
                self._metrics.tickets_escalated.inc()
            if ticket.kind == "approval":
                continue
            healthy = self._healthy_since.get(ticket.key)
            if (
                healthy is None
                and not self._firing(ticket.key)
                and ticket.key not in self._rules.states
            ):
                healthy = self._healthy_since.setdefault(ticket.key, now)
            if healthy is not None and not self._firing(ticket.key) and now - healthy >= quiet:
                minutes = int(quiet / 60000)
                ticket, event = resolve(
                    ticket, "frontline", f"device healthy for {minutes} min", now
                )
                self._store(ticket, event, work)
                self._notice(ticket.device, "resolved", f"Resolved: {ticket.summary}",
                             "We detected this problem and it is now fixed. No action is needed.",
                             [], ticket.alert, work)  # fmt: skip

    # -- notices -----------------------------------------------------------------------------
    def _notice(self, device: str, kind: str, title: str, message: str, steps: list[str],
                alert: str, work: _Pending) -> None:  # fmt: skip
        work.notices.append({
            "device": device, "kind": kind, "title": title, "message": message,
            "steps": steps, "alert": alert, "at_ms": self._now(),
        })  # fmt: skip

    # -- commit ------------------------------------------------------------------------------
    async def _commit(self, work: _Pending) -> None:
        # Effects that open tickets or notices need the state at hand: resolve them first.
        for key, kind, reason in work.opens:
            await self._open(key, kind, reason, work)
        for fixed in work.fixed:
            self._fixed(fixed, work)
        notices, events = work.notices, work.events
        if self._sink is not None:
            # The outbox first, with a key that a replay would reproduce (ticket id + sequence):
            # a crash between the two writes then repeats an event the outbox ignores, rather
            # than losing one the helpdesk never hears about.
            for event in events:
                key = f"{event['ticket_id']}:{event['seq']}"
                await self._sink.enqueue(event["ticket_id"], event, key)
        await self._state.save_actions(
            work.remediations,
            [
                (t.id, t.key, t.status.value, t.created_ms, t.to_json())
                for t in work.tickets.values()
            ],
            [(e["ticket_id"], e["at_ms"], orjson.dumps(e)) for e in events],
            [(n["device"], n["at_ms"], orjson.dumps(n)) for n in notices],
        )
        for ticket in work.tickets.values():
            if not ticket.open:
                self.tickets.pop(ticket.id, None)
        for command in work.commands:
            payload = {
                "method": command.method,
                "params": dict(command.params),
                "expires_at": iso(command.expires_at_ms),
            }
            topic = f"{self._prefix}/{command.device}/commands/{command.command_id}"
            self._publisher.publish(topic, orjson.dumps(payload))
            log.info("command %s %s sent to %s", command.command_id, command.method, command.device)
        for notice in notices:
            self._publisher.publish(f"frontline/notices/{notice['device']}", orjson.dumps(notice))
            self._metrics.notices_sent.labels(notice["kind"]).inc()
        for event in events:
            body = orjson.dumps(event)
            self._publisher.publish(f"frontline/tickets/{event['ticket_id']}", body)

    def _fixed(self, fixed: Fixed, work: _Pending) -> None:
        """A verified remote fix: tell the customer, close the ticket if one was opened."""
        state = self._rules.states.get(fixed.key)
        summary = state.annotations.get("summary", fixed.alert) if state else fixed.alert
        message = (
            f"We noticed this problem and already fixed it remotely ({fixed.method}). "
            "No action is needed."
        )
        self._notice(fixed.device, "fixed", f"Fixed: {summary}", message, [], fixed.alert, work)
        self._metrics.remediations_cleared.inc()
        ticket = self._open_ticket_for(fixed.key)
        if ticket is not None:
            reason = f"fixed remotely by {fixed.method} (verified)"
            ticket, event = resolve(ticket, "frontline", reason, self._now())
            self._store(ticket, event, work)

    # -- agents (HTTP API / CLI) -------------------------------------------------------------
    async def ticket_action(self, ticket_id: str, action: str, who: str, arg: str = "") -> Ticket:
        async with self._lock:
            ticket = self.tickets.get(ticket_id)
            if ticket is None:
                raise KeyError(ticket_id)
            now = self._now()
            work = _Pending()
            if action == "ack":
                ticket, event = acknowledge(ticket, who, now)
            elif action == "assign":
                ticket, event = assign(ticket, arg, who, now)
            elif action == "comment":
                ticket, event = comment(ticket, who, arg, now)
            elif action == "resolve":
                ticket, event = resolve(ticket, who, arg or "resolved by an agent", now)
            elif action == "approve":
                rem = self.remediations.get(ticket.key)
                if rem is None:
                    raise ValueError("no remediation waits for approval on this ticket")
                self._apply(approve(rem, now, who), [], work)
                ticket, event = resolve(ticket, who, f"approved by {who}", now)
            else:
                raise ValueError(f"unknown action {action!r}")
            self._store(ticket, event, work)
            await self._commit(work)
            return ticket


def _label(meta: Mapping[str, object], name: str, default: str = "standard") -> str:
    labels = meta.get("labels")
    if isinstance(labels, dict) and name in labels:
        return str(labels[name])
    return default
