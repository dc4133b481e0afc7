"""The pure engine: device contexts (liveness with outage grace), matching, group evaluation,
explanations and replay, stepped through explicit times."""

from __future__ import annotations

import pytest

from daemon.core.alerts import AlertParams, AlertState, Phase, identity
from daemon.core.engine import DeviceContext, Watch, evaluate_group, explain_rule, matches
from daemon.core.replay import replay
from daemon.core.rulefmt import Group, Rule, parse_rule_file
from daemon.core.twin import DeviceTwin
from daemon.core.windows import SeriesWindows

S = 1000
T0 = 1_800_000_000_000


def twin(**kw: object) -> DeviceTwin:
    # Announced by its LWT (`online`): liveness is watched only for devices that announced
    # themselves (tests/test_bounds_alerts.py has the ones that did not).
    defaults: dict[str, object] = {"id": "d1", "first_seen_ms": T0 - 3600 * S, "status": "online"}
    defaults.update(kw)
    return DeviceTwin(**defaults)  # type: ignore[arg-type]


# (description, twin fields, watch, now offset s, expected offline_for)
ALWAYS = Watch(True, T0 - 3600 * S, 0)  # watching for an hour, no grace left
OFFLINE_CASES = [
    ("recently heard", {"last_seen_ms": T0 - 10 * S}, Watch(True, T0 - 3600 * S, 0), 0, 0.0),
    ("silent past timeout", {"last_seen_ms": T0 - 700 * S}, ALWAYS, 0, 100.0),
    ("LWT offline", {"last_seen_ms": T0 - 100 * S, "status": "offline", "status_ms": T0 - 60 * S},
     Watch(True, T0 - 3600 * S, 0), 0, 60.0),
    ("telemetry after LWT",
     {"last_seen_ms": T0 - 5 * S, "status": "offline", "status_ms": T0 - 60 * S}, ALWAYS, 0, 0.0),
    ("not watching", {"last_seen_ms": T0 - 9000 * S}, Watch(False, T0 - 3600 * S, 0), 0, None),
    ("silence from before our outage is unknown during the grace",
     {"last_seen_ms": T0 - 9000 * S}, Watch(True, T0 - 30 * S, 60 * S), 0, None),
    ("then it counts from resume + grace, not from the last message",
     {"last_seen_ms": T0 - 9000 * S}, Watch(True, T0 - 700 * S, 60 * S), 0, 40.0),
    ("LWT burst during grace is deferred",
     {"last_seen_ms": T0 - 9000 * S, "status": "offline", "status_ms": T0 - 5 * S},
     Watch(True, T0 - 10 * S, 60 * S), 0, None),
    ("meta timeout override", {"last_seen_ms": T0 - 100 * S, "meta": {"inactivity_timeout": 30}},
     Watch(True, T0 - 3600 * S, 0), 0, 70.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "watch", "later_s", "expected"),
    [case[1:] for case in OFFLINE_CASES],
    ids=[case[0] for case in OFFLINE_CASES],
)
def test_offline_for(
    fields: dict[str, object], watch: Watch, later_s: int, expected: float | None
) -> None:
    """Test that offline_for follows the LWT, inactivity and the outage grace."""
    ctx = DeviceContext(twin(**fields), SeriesWindows(), T0 + later_s * S, watch, 600.0)
    assert ctx.offline_for() == expected


def _firing_offline_after_restart(now_s: int, heard_again_s: int | None = None) -> Phase:
    """An offline alert that fired before a restart, evaluated `now_s` after the restart."""
    text = (
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: Gone\n        expr: offline(10m)\n        for: 1m\n"
    )
    groups, problems = parse_rule_file(text, "r.yaml", lambda _ref: True)
    assert not problems
    (group,) = groups
    rule = group.rules[0]
    resumed = T0 - 600 * S  # daemon back (after kill -9) 10 min before T0; 2 min of grace
    device = twin(
        last_seen_ms=T0 - 3600 * S if heard_again_s is None else resumed + heard_again_s * S,
        status="offline",
        status_ms=T0 - 3600 * S,
    )
    now = resumed + now_s * S
    ctx = DeviceContext(device, SeriesWindows(), now, Watch(True, resumed, 120 * S), 600.0)
    key = identity("d1", rule.alert, rule.labels)
    firing = AlertState(key, "d1", rule.alert, {}, Phase.FIRING, T0 - 3000 * S, T0 - 2900 * S)
    updates, _ = evaluate_group(group, now, [ctx], {key: firing}, lambda _r: AlertParams())
    state = updates.get(key, firing)
    return Phase.INACTIVE if state is None else state.phase


def test_offline_alert_firing_before_a_restart_does_not_resolve_on_the_grace() -> None:
    """Test that silence counted from our own outage never resolves an offline alert."""
    assert _firing_offline_after_restart(60) is Phase.FIRING  # in the grace: unknown
    assert _firing_offline_after_restart(300) is Phase.FIRING  # 3 min counted: no evidence
    assert _firing_offline_after_restart(900) is Phase.FIRING  # 13 min counted: true
    # The device spoke after the grace: that is evidence, and it resolves.
    assert _firing_offline_after_restart(300, heard_again_s=200) is Phase.RESOLVED


def test_absent_for_counts_silence_of_one_metric() -> None:
    """Test that absent_for measures from the metric's last sample, not the device's."""
    windows = SeriesWindows({"level": 600})
    windows.add("d1", "level", T0 - 90 * S, 1.0)
    device = twin(last_seen_ms=T0, metrics={"temp": (T0, 20.0)})
    ctx = DeviceContext(device, windows, T0, Watch(True, T0 - 3600 * S, 0), 600.0)
    assert ctx.absent_for("level") == 90.0
    assert ctx.absent_for("temp") == 0.0
    assert ctx.absent_for("never") == 3600.0  # counted from when watching (and grace) began


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({}, True),
        ({"model": "boiler-*"}, True),
        ({"model": "freezer-*"}, False),
        ({"labels.tier": "gold"}, True),
        ({"labels.tier": "silver"}, False),
        ({"id": "b?"}, True),
        ({"customer": "*"}, False),
    ],
)
def test_matches(match: dict[str, str], expected: bool) -> None:
    """Test that group selectors glob on meta fields, labels and the id."""
    device = DeviceTwin("b1", 0, meta={"model": "boiler-x200", "labels": {"tier": "gold"}})
    assert matches(match, device) is expected


RULES = """
groups:
  - name: g
    interval: 10s
    rules:
      - alert: Hot
        expr: avg(temp, 30s) > attr("max_temp", 80)
        for: 20s
        labels: {severity: major}
        annotations: {summary: "{{ device.id }} at {{ value | round(1) }}"}
      - alert: Watch
        expr: last(temp) > 50
        mode: dry-run
"""


def _group() -> Group:
    groups, problems = parse_rule_file(RULES, "r.yaml")
    assert problems == []
    return groups[0]


def test_evaluate_group_steps_through_time() -> None:
    """Test that a group fires after `for`, renders annotations and marks dry-run alerts."""
    group = _group()
    windows = SeriesWindows({"temp": 30})
    device = twin(last_seen_ms=T0, meta={"max_temp": 85})
    watch = Watch(True, T0 - 3600 * S, 0)
    states: dict[str, AlertState] = {}
    seen = []

    def params(rule: Rule) -> AlertParams:
        return AlertParams(for_ms=20 * S) if rule.alert == "Hot" else AlertParams()

    for step in range(6):
        now = T0 + step * 10 * S
        windows.add("d1", "temp", now, 90.0)
        device.metrics["temp"] = (now, 90.0)
        ctx = DeviceContext(device, windows, now, watch, 600.0)
        updates, transitions = evaluate_group(
            group,
            now,
            [ctx],
            states,
            lambda _r: AlertParams(for_ms=20 * S) if _r.alert == "Hot" else AlertParams(),
        )
        for key, state in updates.items():
            if state is None:
                states.pop(key, None)
            else:
                states[key] = state
        seen.extend((step, t.alert, t.to_phase.value, t.dry_run) for t in transitions)
    assert seen == [
        (0, "Hot", "pending", False), (0, "Watch", "firing", True), (2, "Hot", "firing", False),
    ]  # fmt: skip
    hot = next(s for s in states.values() if s.alert == "Hot")
    assert hot.annotations == {"summary": "d1 at 90.0"}
    assert hot.value == 90.0


def test_explain_says_how_far_from_the_threshold_and_pending_progress() -> None:
    """Test that an explanation names the comparison, its margin, and pending progress."""
    group = _group()
    rule = group.rules[0]
    windows = SeriesWindows({"temp": 30})
    windows.add("d1", "temp", T0, 70.0)
    ctx = DeviceContext(twin(last_seen_ms=T0), windows, T0, Watch(True, 0, 0), 600.0)
    verdict = explain_rule(group, rule, ctx, None, AlertParams(for_ms=20 * S))
    assert verdict.condition is False
    assert verdict.phase == "inactive"
    assert "avg(temp, 30s)" in verdict.reason
    assert "10" in verdict.reason  # 70 is 10 below 80
    windows.add("d1", "temp", T0 + 10 * S, 95.0)
    windows.add("d1", "temp", T0 + 20 * S, 95.0)
    ctx = DeviceContext(
        twin(last_seen_ms=T0 + 20 * S), windows, T0 + 20 * S, Watch(True, 0, 0), 600.0
    )
    from daemon.core.alerts import AlertState

    pending = AlertState("k", "d1", "Hot", {}, Phase.PENDING, active_since_ms=T0 + 10 * S)
    verdict = explain_rule(group, rule, ctx, pending, AlertParams(for_ms=20 * S))
    assert verdict.condition is True
    assert "pending for 10s of 20s" in verdict.details


def test_replay_reports_transitions_at_group_ticks() -> None:
    """Test that replay (behind test and backtest) fires at the first tick after `for`."""
    group = _group()
    samples = [(T0 + i * 5 * S, "d1", "temp", 60.0 if i < 6 else 95.0) for i in range(30)]
    twins = {"d1": twin()}
    result = replay(
        [group], twins, samples, T0, T0 + 150 * S, lambda _r: AlertParams(for_ms=20 * S)
    )
    hot = [(t.to_phase.value, (t.at_ms - T0) // S) for t in result.transitions if t.alert == "Hot"]
    # avg over 30s first exceeds 80 at 50s (mean of 60,60,95,95,95,95 = 83.3)
    assert hot == [("pending", 50), ("firing", 70)]


def _run_hot(temps: list[float | None]) -> tuple[list[tuple[int, str, object]], AlertState | None]:
    """Evaluate the group every 10 s over one reading per step (None = no reading)."""
    group = _group()
    windows = SeriesWindows({"temp": 30})
    device = twin(last_seen_ms=T0, meta={"max_temp": 85})
    watch = Watch(True, T0 - 3600 * S, 0)
    states: dict[str, AlertState] = {}
    seen: list[tuple[int, str, object]] = []
    for i, temp in enumerate(temps):
        now = T0 + i * 10 * S
        if temp is not None:
            windows.add("d1", "temp", now, temp)
            device.metrics["temp"] = (now, temp)
        ctx = DeviceContext(device, windows, now, watch, 600.0)
        updates, transitions = evaluate_group(
            group, now, [ctx], states, lambda _r: AlertParams(for_ms=60 * S)
        )
        for key, state in updates.items():
            if state is None:
                states.pop(key, None)
            else:
                states[key] = state
        seen.extend((i, t.to_phase.value, t.value) for t in transitions if t.alert == "Hot")
    return seen, next((s for s in states.values() if s.alert == "Hot"), None)


def test_a_pending_alert_that_clears_carries_the_clearing_value() -> None:
    """Test that pending -> inactive reports the value that cleared it, not the pending one."""
    # 30-s averages: 90, 90, 90, then 20 joins: (90 + 90 + 20) / 3 is still 66.7 < 85
    seen, state = _run_hot([90.0, 90.0, 90.0, 20.0])
    assert seen == [(0, "pending", 90.0), (3, "inactive", pytest.approx(200 / 3))]
    assert state is None


def test_a_pending_alert_value_follows_each_evaluation() -> None:
    """Test that a pending alert's value is updated at every evaluation, as a firing one's is."""
    seen, state = _run_hot([90.0, 92.0, 94.0])
    assert seen == [(0, "pending", 90.0)]
    assert state is not None
    assert state.phase is Phase.PENDING
    assert state.value == pytest.approx(92.0)  # the 30-s average of 90, 92, 94


def test_a_gap_pauses_pending_in_the_engine() -> None:
    """Test that an empty window (unknown) neither counts towards `for` nor resets it."""
    # readings at 0-20 s and from 130 s: the 30-s window is true up to 40 s, empty from 50 s to
    # 120 s. True evaluations count 40 s before the gap and reach `for: 1m` at 140 s; counting
    # through the gap used to fire at 130 s, on the first reading after it.
    seen, state = _run_hot([90.0, 90.0, 90.0, *[None] * 10, 90.0, 90.0])
    assert [(i, phase) for i, phase, _ in seen] == [(0, "pending"), (14, "firing")]
    assert state is not None


def test_explain_says_pending_is_paused_without_data() -> None:
    """Test that explain shows the `for` progress of the last evaluation when there is no data."""
    group = _group()
    rule = group.rules[0]
    now = T0 + 50 * S
    ctx = DeviceContext(twin(last_seen_ms=T0), SeriesWindows({"temp": 30}), now, ALWAYS, 600.0)
    pending = AlertState(
        "k", "d1", "Hot", {}, Phase.PENDING, active_since_ms=T0, last_true_ms=T0 + 20 * S,
        last_eval_ms=T0 + 40 * S, unknown_ms=20 * S,
    )  # fmt: skip
    verdict = explain_rule(group, rule, ctx, pending, AlertParams(for_ms=60 * S))
    assert verdict.condition is None
    assert "pending for 20s of 1m (paused: no data)" in verdict.details
