"""The action service: consumes persisted alert transitions and composes the concerns.

Input is the rule runtime's `alert_events` table, read through a persisted cursor: each round
commits its effects (remediation states, tickets, notices, pending decisions, the messages it owes
the broker) together with the cursor of the last event it consumed, in one transaction. A crash
before that commit replays the round on start-up; after it, the round is never repeated. So
every FIRING/RESOLVED transition is acted on exactly once, across crashes, restarts and bursts.
Replies and agents' actions are committed before they are acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import orjson

from daemon.actions import advisories, guidance, tickets
from daemon.actions.advisories import Advisories
from daemon.actions.guidance import Guidance
from daemon.actions.publishing import CommandRouter, Outbound
from daemon.actions.remediation import Remediator
from daemon.actions.tickets import TicketDesk
from daemon.actions.work import Work
from daemon.config import ActionsSettings
from daemon.core.alerts import Phase, Transition
from daemon.core.mappings import MappingSet
from daemon.core.messages import Reply
from daemon.core.remediation import Fixed, Policy, Remediation
from daemon.core.rulefmt import Group, Rule
from daemon.core.tickets import Ticket, resolve
from daemon.core.twin import Twins
from daemon.metrics import Metrics
from daemon.ports import (
    ACTIONS_CURSOR,
    ModelLookup,
    Publisher,
    RuleLookup,
    SeriesStore,
    ServiceFiles,
    StateStore,
    TicketSink,
)
from daemon.resilience import StoreHealth, persist

log = logging.getLogger(__name__)
TICK_S = 1.0
#: alert events consumed per transaction while catching up
BATCH = 200
_TRANSITION_FIELDS = {f.name for f in fields(Transition)}


def transition_of(event: dict[str, Any]) -> Transition:
    """The transition an `alert_events` row records."""
    data = {k: v for k, v in event.items() if k in _TRANSITION_FIELDS}
    data["from_phase"] = Phase(data["from_phase"])
    data["to_phase"] = Phase(data["to_phase"])
    return Transition(**data)


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
        files: ServiceFiles,
        health: StoreHealth,
        sink: TicketSink | None = None,
        topic_prefix: str = "devices",
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        mappings: MappingSet | None = None,
    ) -> None:
        self.settings = settings
        self._rules = rules
        self._state = state
        self._metrics = metrics
        self._files = files
        self._health = health
        self._sink = sink
        self._now = clock
        router = CommandRouter(topic_prefix, twins, mappings)
        self.remediator = Remediator(
            Policy(
                max_sends=settings.max_sends,
                command_ttl_ms=int(settings.command_ttl * 1000),
                budget_per_hour=settings.budget_per_hour,
            ),
            settings.allowlist,
            frozenset(settings.approval_required),
            twins,
            self._firing,
            default_timeout_s,
            router,
        )
        self.desk = TicketDesk(
            settings,
            rules,
            twins,
            series,
            files,
            metrics,
            health,
            self.remediator.log_of,
            default_timeout_s,
        )
        self.guidance = Guidance(
            files, int(settings.guidance_timeout * 1000), self._firing, self._clearing
        )
        self.advisories = Advisories()
        self.outbound = Outbound(publisher, state, health, router)
        self.cursor = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def tickets(self) -> dict[str, Ticket]:
        return self.desk.tickets

    @property
    def models(self) -> ModelLookup | None:
        return self.desk.models

    @models.setter
    def models(self, lookup: ModelLookup | None) -> None:
        self.desk.models = lookup

    @property
    def remediations(self) -> dict[str, Remediation]:
        return self.remediator.remediations

    # -- start-up ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore state and the cursor. Call before the rule runtime commits anything."""
        state = self._state
        under_way = self.remediator.restore(await state.load_remediations())
        self.desk.restore(
            await state.load_tickets(open_only=True), await state.values(tickets.PREFIX)
        )
        self.guidance.restore(await state.values(guidance.PREFIX))
        self.advisories.restore(await state.values(advisories.PREFIX))
        saved = await state.get_value(ACTIONS_CURSOR)
        last = await state.last_alert_event_id()
        if saved is None:
            # A state DB from before the outbox (or a new one): act on what comes from now on,
            # not on its whole history. Persisted at once, so a crash cannot skip events.
            self.cursor = last
            await state.save_actions({}, [], [], [], cursor=self.cursor)
        else:
            self.cursor = int(saved)
        behind = last - self.cursor
        routing = self._files.routing()
        log.info(
            "actions: %d remediations under way, %d open tickets, %d customers awaiting their "
            "guidance, %d alert events to catch up on; %d routing rules, %d agents, %d customers",
            under_way,
            len(self.desk.tickets),
            len(self.guidance.guided),
            behind,
            len(routing.rules),
            len(routing.agents),
            self._files.customer_count(),
        )

    # -- inputs ------------------------------------------------------------------------------
    def wake(self, _transitions: object = None) -> None:
        """New alert events were committed (a rule-runtime listener)."""
        self._wake.set()

    async def handle_reply(self, reply: Reply, received_ms: int) -> None:
        """Apply a device's reply to its command and commit it (before it is acknowledged)."""
        async with self._lock:
            work = Work()
            self.remediator.on_reply(reply, received_ms, self._now(), work)
            await self._commit(work)

    # -- loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.outbound.resend_leftovers()
        while True:
            await self.catch_up()
            if self.settings.enabled:
                await self.tick()
            await self.outbound.confirm()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()

    async def catch_up(self) -> int:
        """Act on every committed alert event after the cursor; return how many."""
        done = 0
        while True:
            events = await persist(
                functools.partial(self._state.alert_events_after, self.cursor, BATCH),
                "reading alert events",
                "state",
                self._health,
                write=False,
            )
            if not events:
                return done
            async with self._lock:
                work = Work()
                for event_id, event in events:
                    work.alerts.append(event)
                    work.cursor = event_id
                    transition = transition_of(event)
                    if self.settings.enabled and not transition.dry_run:
                        try:
                            await self._on_transition(transition, work)
                        except Exception:  # one bad event must not stop every later one
                            log.exception("acting on %s failed; moving on", event)
                            self._metrics.action_errors.inc()
                await self._commit(work)
            done += len(events)

    async def tick(self) -> None:
        async with self._lock:
            work = Work()
            now = self._now()
            self.remediator.tick(now, work)
            for key in self.guidance.due(now, lambda k: self.desk.open_for(k) is not None, work):
                await self._guidance_late(key, now, work)
            self.desk.tick(now, self._firing, work)
            await self._commit(work)

    # -- alerts ------------------------------------------------------------------------------
    def _firing(self, key: str) -> bool:
        state = self._rules.states.get(key)
        return state is not None and state.phase is Phase.FIRING

    def _clearing(self, key: str) -> bool:
        """True when the alert fires only by keep_firing_for (its condition turned false)."""
        state = self._rules.states.get(key)
        return (
            state is not None
            and state.phase is Phase.FIRING
            and state.keep_firing_since_ms is not None
        )

    async def _on_transition(self, t: Transition, work: Work) -> None:
        state = self._rules.states.get(t.key)
        rule = self._rules.rule_for(state.group, t.alert) if state else None
        if t.to_phase is Phase.RESOLVED:
            self.desk.alert_resolved(t.key, t.at_ms, work)
            return
        if t.to_phase is not Phase.FIRING or rule is None or state is None:
            return
        group = self._rules.group(state.group)
        if group is not None and group.schedule:
            self.desk.mark_unhealthy(t.key, work)
            await self._advise(t, rule, group, work)
            return
        self.desk.alert_fired(t.key, t.at_ms, t.labels.get("severity"), t.alert, work)
        now = self._now()
        if rule.remediate:
            self.remediator.begin(t.key, t.device, t.alert, t.at_ms, rule.remediate, now, work)
        if rule.guide:
            self.guidance.guide(t, rule, now, work)
        if self.desk.open_for(t.key) is not None:
            return
        if rule.ticket == "always":
            await self.desk.open(t.key, "fault", "opened by policy (ticket: always)", now, work)
        elif rule.ticket == "on_failure" and not rule.remediate and not rule.guide:
            reason = "no remote fix or customer guidance for this fault"
            await self.desk.open(t.key, "fault", reason, now, work)

    async def _advise(self, t: Transition, rule: Rule, group: Group, work: Work) -> None:
        """Usage (customer-success) findings: an advisory, at most one per device per period."""
        if not self.advisories.claim(t, int(group.advisory_period_s * 1000), work):
            return
        now = self._now()
        if rule.guide:
            self.guidance.guide(t, rule, now, work)
        if rule.ticket != "never":
            await self.desk.open(t.key, "advisory", f"usage finding: {t.alert}", now, work)

    async def _guidance_late(self, key: str, now: int, work: Work) -> None:
        state = self._rules.states.get(key)
        rule = self._rules.rule_for(state.group, state.alert) if state else None
        if rule is not None and rule.ticket != "never" and not rule.remediate:
            minutes = int(self.guidance.timeout_ms / 60000)
            reason = f"customer guidance did not clear it in {minutes} min"
            await self.desk.open(key, "fault", reason, now, work)

    def _fixed(self, fixed: Fixed, now: int, work: Work) -> None:
        """A verified remote fix: tell the customer, close the ticket if one was opened."""
        state = self._rules.states.get(fixed.key)
        summary = state.annotations.get("summary", fixed.alert) if state else fixed.alert
        message = (
            f"We noticed this problem and already fixed it remotely ({fixed.method}). "
            "No action is needed."
        )
        work.notice(fixed.device, "fixed", f"Fixed: {summary}", message, [], fixed.alert, now)
        self._metrics.remediations_cleared.inc()
        self.desk.resolve_fixed(fixed.key, fixed.method, now, work)

    # -- commit ------------------------------------------------------------------------------
    async def _commit(self, work: Work) -> None:
        now = self._now()
        # Effects that open tickets or notices need the state at hand: resolve them first.
        for key, kind, reason in work.opens:
            await self.desk.open(key, kind, reason, now, work)
        for fixed in work.fixed:
            self._fixed(fixed, now, work)
        for key in work.remediations:
            self.desk.refresh_remediation(key, work)
        if self._sink is not None:
            # The webhook's outbox first, with a key that a replay reproduces (ticket id +
            # sequence): a crash between the two writes repeats an event the outbox ignores.
            for event in work.events:
                await self._enqueue(event)
        if work.empty:
            return  # an idle tick: no write, so no false news about the store's health
        messages = self.outbound.messages(work)
        ids = await persist(
            lambda: self._state.save_actions(
                work.remediations,
                [
                    (t.id, t.key, t.status.value, t.created_ms, t.to_json())
                    for t in work.tickets.values()
                ],
                [(e["ticket_id"], e["at_ms"], orjson.dumps(e)) for e in work.events],
                [(n["device"], n["at_ms"], orjson.dumps(n)) for n in work.notices],
                decisions=work.decisions,
                outgoing=messages,
                cursor=work.cursor,
            ),
            "writing actions",
            "state",
            self._health,
        )
        if work.cursor is not None:
            self.cursor = work.cursor
        self.desk.closed(work)
        self.outbound.send(ids, messages)
        for command in work.commands:
            self._metrics.commands_sent.inc()
            log.info("command %s %s sent to %s", command.command_id, command.method, command.device)
        for notice in work.notices:
            self._metrics.notices_sent.labels(notice["kind"]).inc()

    async def _enqueue(self, event: dict[str, Any]) -> None:
        sink = self._sink
        assert sink is not None
        key = f"{event['ticket_id']}:{event['seq']}"
        await persist(
            lambda: sink.enqueue(event["ticket_id"], event, key),
            "queueing webhook events",
            "outbox",
            self._health,
        )

    # -- agents (HTTP API / CLI) -------------------------------------------------------------
    async def ticket_action(self, ticket_id: str, action: str, who: str, arg: str = "") -> Ticket:
        async with self._lock:
            ticket = self.desk.tickets.get(ticket_id)
            if ticket is None:
                raise KeyError(ticket_id)
            now = self._now()
            work = Work()
            if action == "approve":
                self.remediator.approve(ticket.key, now, who, work)
                ticket, event = resolve(ticket, who, f"approved by {who}", now)
                self.desk.store(ticket, event, work)
            else:
                ticket = self.desk.act(ticket, action, who, arg, now, work)
            await self._commit(work)
            return ticket
