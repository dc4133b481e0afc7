"""Urgency from prediction: the rule's `impact`, the remediation outcome, and the routing
decisions made on both (opening, re-routing while open, the shipped routing file)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest

from daemon.adapters.service_files import read_routing
from daemon.core.alerts import AlertParams, Phase
from daemon.core.engine import DeviceContext, Watch, evaluate_group
from daemon.core.remediation import (
    DeviceView,
    Policy,
    Remediation,
    advance,
    on_reply,
    start,
)
from daemon.core.rulefmt import Group, RemediationStep, parse_rule_file
from daemon.core.tickets import (
    Agent,
    Decision,
    Routing,
    RoutingRule,
    Ticket,
    decide,
    open_ticket,
    reroute,
    resolve,
    routing_facts,
)
from daemon.core.twin import DeviceTwin
from daemon.core.urgency import (
    format_impact,
    impact_left,
    predicted_impact,
    prediction_moved,
    remediation_outcome,
    urgency_context,
)
from daemon.core.windows import SeriesWindows
from tests.conftest import ROOT

S = 1000
M = 60 * S
T0 = 1_800_000_000_000

# --------------------------------------------------------------------------- the rule's `impact`

RULE = """\
groups:
  - name: boilers
    interval: 5s
    rules:
      - alert: Hot
        expr: avg(temperature, 30s) > 75
        impact: {impact}
        safety: safety.md
"""


def _rules(impact: str, max_window_s: float | None = None) -> tuple[list[Group], list[str]]:
    groups, problems = parse_rule_file(
        RULE.format(impact=impact), "r.yaml", lambda path: path == "safety.md", max_window_s
    )
    return list(groups), [str(p) for p in problems]


def test_impact_and_safety_are_read_with_the_rule() -> None:
    """Test that `impact` keeps its text and tree, `safety` its path, and both change the rule."""
    groups, problems = _rules('time_to(temperature, 1m, attr("impact_temp", 85))')
    assert problems == []
    rule = groups[0].rules[0]
    assert rule.impact_text == 'time_to(temperature, 1m, attr("impact_temp", 85))'
    assert rule.safety == "safety.md"
    assert len(rule.expressions()) == 2
    other = _rules('rul("wear") * 1h')[0][0].rules[0]
    assert rule.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(
    ("impact", "expected"),
    [
        ("time_to(temperature, 1m, 85) < 1h", "r.yaml:7:17: [Hot] impact must give a number"),
        ('state("mode")', "r.yaml:7:17: [Hot] impact must give a number of seconds, not a string"),
        ("offline(5m)", "r.yaml:7:17: [Hot] impact must give a number of seconds, not a condition"),
        ('"time_to(temperature, 1m, 85) +"', "r.yaml:7:48: [Hot] impact: "),
        ("time_to(temprature 1m, 85)", "r.yaml:7:36: [Hot] impact: "),
        ("true", "r.yaml:7:17: [Hot] impact must be an expression of seconds"),
        ("time_to(temperature, 30d, 85)", "r.yaml:7:38: [Hot] window 30d is longer than"),
    ],
)
def test_impact_mistakes_are_located(impact: str, expected: str) -> None:
    """Test that a wrong `impact` is one problem at its file:line:col inside the expression."""
    _, problems = _rules(impact, max_window_s=7 * 86400)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_a_missing_safety_file_is_a_problem() -> None:
    """Test that `safety` must name an existing file, like `guide`."""
    text = RULE.format(impact="10m").replace("safety.md", "nowhere.md")
    _, problems = parse_rule_file(text, "r.yaml", lambda path: path == "safety.md")
    assert [str(p) for p in problems] == ["r.yaml:8:17: [Hot] safety 'nowhere.md' not found"]


def _evaluate(impact: str, temps: list[float], step_s: int = 5) -> float | None:
    """Fire `Hot` on a boiler whose temperature followed `temps` (one reading per step)."""
    groups, problems = _rules(impact)
    assert problems == []
    group = groups[0]
    windows = SeriesWindows({"temperature": 3600.0})
    now = T0
    for i, value in enumerate(temps):
        now = T0 + i * step_s * S
        windows.add("b1", "temperature", now, value)
    twin = DeviceTwin(id="b1", first_seen_ms=T0 - 3600 * S, status="online", meta={})
    ctx = DeviceContext(twin, windows, now, Watch(True, T0 - 3600 * S, 0), 600.0)
    updates, _ = evaluate_group(group, now, [ctx], {}, lambda _r: AlertParams())
    (state,) = updates.values()
    assert state is not None
    assert state.phase is Phase.FIRING
    return state.impact_s


def test_the_engine_stores_the_predicted_impact_with_the_alert() -> None:
    """Test that a firing alert carries its rule's `impact` in seconds, as of the evaluation."""
    rising = [70.0 + i for i in range(13)]  # +1 °C every 5 s: 82 °C now, 85 °C in 15 s
    assert _evaluate("time_to(temperature, 1m, 85)", rising) == pytest.approx(15.0)
    assert _evaluate("time_to(temperature, 1m, 85) * 2", rising) == pytest.approx(30.0)
    assert _evaluate("20m", rising) == 1200.0


def test_no_prediction_and_the_past_read_as_unknown_and_now() -> None:
    """Test that an unknown impact (trend moving away) is None and a negative one is 0 (now)."""
    cooling = [90.0 - i * 0.5 for i in range(13)]
    assert _evaluate("time_to(temperature, 1m, 95)", cooling) is None
    assert _evaluate("last(temperature) - 100", cooling) == 0.0
    assert _evaluate("1 / 0", cooling) is None


def test_predicted_impact_without_an_impact_is_none() -> None:
    """Test that a rule without `impact` predicts nothing."""
    twin = DeviceTwin(id="b1", first_seen_ms=T0, status="online", meta={})
    ctx = DeviceContext(twin, SeriesWindows(), T0, Watch(True, T0, 0), 600.0)
    assert predicted_impact(None, ctx) is None


def test_a_prediction_ages_with_the_clock() -> None:
    """Test the time left: predicted 10 min at T0, 4 min later 6 min are left; never below 0."""
    assert impact_left(600.0, T0, T0 + 4 * M) == 360.0
    assert impact_left(60.0, T0, T0 + 4 * M) == 0.0
    assert impact_left(None, T0, T0) is None
    assert impact_left(600.0, None, T0) is None


# ---------------------------------------------------------------------- the remediation outcome

POLICY = Policy(max_sends=2, command_ttl_ms=600 * S, retry_base_ms=10 * S, budget_per_hour=6)
FIRING = DeviceView(online=True, firing=True, model="boiler-x200")
OFFLINE = DeviceView(online=False, firing=True, model="boiler-x200")
CLEARED = DeviceView(online=True, firing=False, model="boiler-x200")
REDUCE = RemediationStep("reduce_power", {"percent": 30}, timeout_s=30, verify_s=120)
REBOOT = RemediationStep("reboot", {}, timeout_s=30, verify_s=60)


def _log(rem: Remediation) -> list[dict[str, object]]:
    return [asdict(entry) for entry in rem.log]


def _sent(*steps: RemediationStep) -> Remediation:
    rem, _ = advance(start("k", "b1", "Hot", 0, steps, 0), 0, FIRING, POLICY)
    return rem


def _reply(rem: Remediation, status: str, at_s: int, message: str = "") -> Remediation:
    assert rem.command_id is not None
    rem, _ = on_reply(rem, rem.command_id, status, message, at_s * S, POLICY)
    return rem


def test_every_command_refused_is_refused() -> None:
    """Test that a device refusing every step is `refused` (the reported case), step by step."""
    rem = _sent(REDUCE, REBOOT)
    assert remediation_outcome(_log(rem))[0] == "pending"
    rem = _reply(rem, "rejected", 1, "remote reduce_power is locked")
    assert remediation_outcome(_log(rem)) == (
        "refused",
        "the device refused reduce_power (remote reduce_power is locked)",
    )
    rem, _ = advance(rem, 2 * S, FIRING, POLICY)
    rem = _reply(rem, "rejected", 3, "remote reboot is locked")
    assert rem.done
    assert remediation_outcome(_log(rem)) == (
        "refused",
        "the device refused reduce_power, reboot (remote reboot is locked)",
    )


def test_an_accepted_command_is_pending_then_verified_or_unverified() -> None:
    """Test ok + cleared (verified) and ok + still firing after `verify` (unverified)."""
    rem = _reply(_sent(REDUCE), "ok", 1)
    assert remediation_outcome(_log(rem)) == ("pending", "verifying reduce_power")
    fixed, _ = advance(rem, 60 * S, CLEARED, POLICY)
    assert remediation_outcome(_log(fixed))[0] == "verified"
    kept_failing, _ = advance(rem, 200 * S, FIRING, POLICY)
    assert kept_failing.done
    assert remediation_outcome(_log(kept_failing)) == (
        "unverified",
        "the device accepted reduce_power but the alert still fires",
    )


def test_a_refusal_after_an_accepted_command_is_not_refused() -> None:
    """Test that a cooperative device (it accepted a command) is never called `refused`."""
    rem = _reply(_sent(REDUCE, REBOOT), "ok", 1)
    rem, _ = advance(rem, 200 * S, FIRING, POLICY)  # verify ran out: next step
    rem, _ = advance(rem, 201 * S, FIRING, POLICY)
    rem = _reply(rem, "rejected", 202)
    assert remediation_outcome(_log(rem))[0] == "unverified"


def test_silence_errors_and_expiry_are_failed() -> None:
    """Test that no reply after every send, an error reply, and expiry offline are `failed`."""
    silent = _sent(REDUCE)
    silent, _ = advance(silent, 31 * S, FIRING, POLICY)  # sent again
    silent, _ = advance(silent, 62 * S, FIRING, POLICY)  # no reply to 2 sends
    assert remediation_outcome(_log(silent)) == ("failed", "no reply to 2 sends; no step left")
    error = _reply(_sent(REDUCE), "error", 1, "bad params")
    assert remediation_outcome(_log(error))[0] == "failed"
    waiting, _ = advance(start("k", "b1", "Hot", 0, (REDUCE,), 0), 0, OFFLINE, POLICY)
    assert remediation_outcome(_log(waiting)) == ("pending", "reduce_power waiting for the device")
    expired, _ = advance(waiting, 601 * S, OFFLINE, POLICY)
    assert remediation_outcome(_log(expired))[0] == "failed"


def test_no_remediation_and_not_needed_are_none() -> None:
    """Test that a rule without `remediate`, or an alert that cleared first, is `none`."""
    assert remediation_outcome([])[0] == "none"
    rem, _ = advance(start("k", "b1", "Hot", 0, (REDUCE,), 0), 0, CLEARED, POLICY)
    assert remediation_outcome(_log(rem))[0] == "none"


# ---------------------------------------------------------------------------- routing decisions

FIELD = RoutingRule(
    {"kind": "fault", "remediation": "refused|failed|unverified"},
    "field-service",
    "general",
    impact_within_s=3600.0,
    priority="P1",
    safety_steps=True,
)
ROUTING = Routing(
    rules=(
        RoutingRule({"kind": "approval"}, "approvals", "general"),
        FIELD,
        RoutingRule({"category": "heating", "severity": "critical|major"}, "heating-l2", "heating"),
        RoutingRule({"category": "heating"}, "heating-l1", "heating"),
    ),
    agents=(Agent("alice", "Alice", frozenset({"heating"}), capacity=5),),
    default_queue="service",
)
LABELS = {"severity": "major", "category": "heating", "skill": "heating"}


def _facts(remediation: str, kind: str = "fault", **labels: str) -> dict[str, str]:
    return routing_facts("BoilerOverheating", kind, {**LABELS, **labels}, "standard", remediation)


@pytest.mark.parametrize(
    ("remediation", "impact_s", "expected"),
    [
        ("refused", 420.0, ("field-service", "P1", 1, True)),  # the reported case
        ("refused", 3600.0, ("field-service", "P1", 1, True)),  # the bound is included
        ("refused", 3601.0, ("heating-l2", None, 2, False)),
        ("refused", None, ("heating-l2", None, 2, False)),  # no prediction matches no bound
        ("failed", 0.0, ("field-service", "P1", 1, True)),
        ("unverified", 60.0, ("field-service", "P1", 1, True)),
        ("pending", 60.0, ("heating-l2", None, 2, False)),  # the fix may still work
        ("verified", 60.0, ("heating-l2", None, 2, False)),
        ("none", 60.0, ("heating-l2", None, 2, False)),
    ],
)
def test_routing_matches_the_outcome_and_the_impact_together(
    remediation: str, impact_s: float | None, expected: tuple[str, str | None, int, bool]
) -> None:
    """Test that `remediation` and `impact_within` must both hold for the urgent route."""
    decision = decide(ROUTING, _facts(remediation), impact_s)
    assert (decision.queue, decision.priority, decision.rule, decision.safety_steps) == expected


def test_a_kind_that_matches_no_rule_takes_the_default() -> None:
    """Test that the default decision has no rule, priority or safety steps."""
    decision = decide(ROUTING, _facts("refused", kind="advisory", category="usage"), 60.0)
    assert decision == Decision("service", "general")
    assert decision.source == "default"


def _open(remediation: str, impact_s: float | None, severity: str = "major") -> Ticket:
    ticket, event = open_ticket(
        key="b1/Hot/x",
        episode=T0,
        device="b1",
        alert="BoilerOverheating",
        kind="fault",
        summary="Boiler b1 at 81 °C",
        labels={**LABELS, "severity": severity},
        tier="standard",
        context={},
        routing=ROUTING,
        load={},
        now_ms=T0,
        reason="opened by policy",
        remediation=remediation,
        impact_s=impact_s,
    )
    assert event["event"] == "opened"
    return ticket


def test_a_ticket_opens_on_the_urgent_route_with_its_priority() -> None:
    """Test that the opening decision takes the route's priority over the severity's."""
    urgent = _open("refused", 420.0)
    assert (urgent.queue, urgent.priority, urgent.routed_by, urgent.skill) == (
        "field-service",
        "P1",
        1,
        "heating",  # a fault ticket keeps its rule's skill
    )
    normal = _open("pending", 420.0)
    assert (normal.queue, normal.priority, normal.routed_by) == ("heating-l2", "P2", 2)


def _decide(remediation: str, impact_s: float | None) -> Decision:
    return decide(ROUTING, _facts(remediation), impact_s)


def test_the_ticket_follows_a_more_urgent_route_in_place() -> None:
    """Test the reported case while open: pending in heating-l2, then refused with the lockout
    7 minutes away: the same ticket moves to field-service at P1, with a `rerouted` event."""
    ticket = _open("pending", 420.0)
    assert ticket.assignee == "alice"
    moved, event = reroute(
        ticket, _decide("refused", 420.0), len(ROUTING.rules), T0 + 5 * S, "remediation refused"
    )
    assert event is not None
    assert (moved.id, moved.queue, moved.priority, moved.routed_by) == (
        ticket.id,
        "field-service",
        "P1",
        1,
    )
    assert moved.assignee == "alice"  # who has it keeps it
    assert event["event"] == "rerouted"
    assert event["detail"] == (
        "remediation refused: queue heating-l2 -> field-service, priority P2 -> P1 "
        "(routing queues[1])"
    )
    assert [e["event"] for e in moved.timeline] == ["opened", "rerouted"]
    assert event["ticket"]["queue"] == "field-service"


def test_urgency_only_rises_by_itself() -> None:
    """Test that a receding or wobbling prediction never moves the ticket back (no ping-pong),
    and that the same decision twice moves it once."""
    ticket = _open("pending", 420.0)
    moves = []
    for outcome, impact in [
        ("refused", 420.0),  # urgent
        ("refused", 3700.0),  # receded past the hour
        ("refused", 3500.0),  # back within it: already there
        ("refused", None),  # no prediction
        ("pending", 60.0),
    ]:
        ticket, event = reroute(ticket, _decide(outcome, impact), len(ROUTING.rules), T0, "x")
        moves.append(None if event is None else ticket.queue)
    assert moves == ["field-service", None, None, None, None]
    assert (ticket.queue, ticket.priority) == ("field-service", "P1")


def test_the_priority_never_falls_and_a_resolved_ticket_never_moves() -> None:
    """Test that a same-or-earlier route with a lower priority keeps the higher one, and that
    nothing moves a resolved ticket."""
    critical = _open("pending", None, severity="critical")  # heating-l2, P1 from the severity
    rules = (RoutingRule({"remediation": "refused"}, "callback", "general", priority="P3"),)
    lower = Routing(rules=rules + ROUTING.rules)
    stays, event = reroute(
        replace(critical, routed_by=3), decide(lower, _facts("refused"), None), 5, T0, "x"
    )
    assert event is None
    assert stays.queue == "heating-l2"
    done, _ = resolve(critical, "frontline", "fixed", T0)
    still, event = reroute(done, _decide("refused", 60.0), len(ROUTING.rules), T0, "x")
    assert event is None
    assert still.queue == "heating-l2"


def test_a_ticket_without_a_recorded_route_adopts_it_silently() -> None:
    """Test that a ticket stored before `routed_by` existed takes its rule without an event
    when nothing visible changes."""
    old = replace(_open("pending", None), routed_by=None)
    adopted, event = reroute(old, _decide("pending", None), len(ROUTING.rules), T0, "x")
    assert event is None
    assert (adopted.queue, adopted.routed_by) == ("heating-l2", 2)


# ------------------------------------------------------------------------ what the agent reads


def test_the_urgency_context_says_both_facts_in_one_sentence() -> None:
    """Test `context.urgency`: the time left aged to now, the moment, the outcome and why."""
    context = urgency_context(
        impact_expr="time_to(temperature, 1m, 85)",
        impact_s=480.0,
        predicted_at_ms=T0,
        outcome="refused",
        detail="the device refused reduce_power (locked)",
        now_ms=T0 + M,
    )
    assert context["impact_in_s"] == 420.0
    assert context["impact_at_ms"] == T0 + 8 * M
    assert context["text"].startswith("Customer impact predicted in about 7 min (around 20")
    assert context["text"].endswith(
        "Remediation: refused: the device refused reduce_power (locked)."
    )
    none = urgency_context(
        impact_expr=None, impact_s=None, predicted_at_ms=None, outcome="none",
        detail="no remote fix for this fault", now_ms=T0,
    )  # fmt: skip
    assert none["impact_in_s"] is None
    assert none["text"].startswith("Customer impact: not predicted (the rule has no impact).")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, "not predicted"), (0.0, "now"), (45.0, "in under a minute"), (420.0, "in about 7 min"),
     (3 * 3600.0, "in about 3 h"), (5 * 86400.0, "in about 5 days")],
)  # fmt: skip
def test_format_impact(seconds: float | None, expected: str) -> None:
    """Test the words for the time left."""
    assert format_impact(seconds) == expected


def test_a_steady_prediction_is_not_rewritten() -> None:
    """Test that only a known/unknown change or a real move of the predicted moment counts."""
    assert not prediction_moved(T0 + 10 * M, T0 + 10 * M + 30 * S, T0)
    assert not prediction_moved(T0 + 40 * M, T0 + 48 * M, T0)  # 8 of 40 min: under a quarter
    assert prediction_moved(T0 + 40 * M, T0 + 20 * M, T0)
    assert prediction_moved(None, T0, T0)
    assert prediction_moved(T0, None, T0)
    assert not prediction_moved(None, None, T0)


# ----------------------------------------------------------------------- the routing file keys

URGENT_ROUTING = """\
queues:
  - match: {kind: fault, remediation: "refused|failed", impact_within: 1h}
    queue: field-service
    skill: general
    priority: P1
    safety_steps: true
  - {match: {impact_within: 900}, queue: soon, skill: general}
  - {match: {category: heating}, queue: heating, skill: heating}
"""


def test_the_urgency_keys_are_read(tmp_path: Path) -> None:
    """Test `impact_within` (a duration, or seconds), `remediation`, `priority`, `safety_steps`."""
    path = tmp_path / "routing.yaml"
    path.write_text(URGENT_ROUTING)
    routing, problems = read_routing(path)
    assert problems == []
    urgent, soon, heating = routing.rules
    assert dict(urgent.match) == {"kind": "fault", "remediation": "refused|failed"}
    assert (urgent.impact_within_s, urgent.priority, urgent.safety_steps) == (3600.0, "P1", True)
    assert (soon.impact_within_s, soon.priority, soon.safety_steps) == (900.0, None, False)
    assert heating.impact_within_s is None


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ("{match: {impact_within: soon}, queue: q, skill: s}",
         "routing.yaml:2:29: queues.0.match.impact_within: not a duration: 'soon'"),
        ("{match: {impact_within: 0s}, queue: q, skill: s}",
         "routing.yaml:2:29: queues.0.match.impact_within: impact_within must be longer than 0s"),
        ("{match: {impact_within: 1h|2h}, queue: q, skill: s}",
         "routing.yaml:2:29: queues.0.match.impact_within: not a duration: '1h|2h'"),
        ("{match: {remediation: refusd}, queue: q, skill: s}",
         "routing.yaml:2:27: queues.0.match.remediation: matches no outcome (the outcomes are "
         "none, pending, refused, failed, unverified, verified)"),
        ("{match: {}, queue: q, skill: s, priority: P0}",
         "routing.yaml:2:47: queues.0.priority: Input should be 'P1', 'P2', 'P3' or 'P4'"),
        ("{match: {}, queue: q, skill: s, safety_steps: maybe}",
         "routing.yaml:2:51: queues.0.safety_steps: Input should be a valid boolean"),
        ("{match: {impact: 1h}, queue: q, skill: s}",
         "routing.yaml:2:14: queues.0.match.impact: unknown match key (expected one of: alert, "
         "category, severity, tier, kind, remediation, impact_within)"),
    ],
)  # fmt: skip
def test_urgency_key_mistakes_are_located(tmp_path: Path, queue: str, expected: str) -> None:
    """Test that each mistake in the new keys is one problem at its file:line:col."""
    path = tmp_path / "routing.yaml"
    path.write_text(f"queues:\n  - {queue}\n")
    routing, problems = read_routing(path)
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(str(tmp_path / expected)), problems[0]
    assert routing.rules == ()


def test_the_shipped_routing_sends_the_reported_case_to_field_service() -> None:
    """Test the shipped files: BoilerOverheating refused with the lockout 7 min away goes to
    field-service at P1 with safety steps; the same fault while its fix runs stays heating-l2."""
    routing, problems = read_routing(ROOT / "rules" / "service" / "routing.yaml")
    assert problems == []
    groups, rule_problems = parse_rule_file(
        (ROOT / "rules" / "boilers.yaml").read_text(),
        str(ROOT / "rules" / "boilers.yaml"),
        lambda path: (ROOT / "rules" / path).exists(),
    )
    assert rule_problems == []
    rule = next(r for g in groups for r in g.rules if r.alert == "BoilerOverheating")
    assert rule.impact is not None
    assert rule.safety is not None
    assert rule.remediate
    assert (ROOT / "rules" / rule.safety).exists()
    facts = routing_facts(rule.alert, "fault", rule.labels, "standard", "refused")
    urgent = decide(routing, facts, 420.0)
    assert (urgent.queue, urgent.priority, urgent.safety_steps) == ("field-service", "P1", True)
    pending = routing_facts(rule.alert, "fault", rule.labels, "standard", "pending")
    assert decide(routing, pending, 420.0).queue == "heating-l2"
    assert decide(routing, facts, None).queue == "heating-l2"
