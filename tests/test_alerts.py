"""The alert state machine, stepped through tables of (time, condition) -> phase and events."""

from __future__ import annotations

import pytest

from daemon.core.alerts import (
    AlertParams,
    AlertState,
    Phase,
    identity,
    pending_ms,
    resolve,
    step,
)

S = 1000
M = 60 * S


def run(
    params: AlertParams, table: list[tuple[int, bool | None]]
) -> list[tuple[int, str, str | None]]:
    """Return (time, phase after the step, transition or None) for each row."""
    state: AlertState | None = None
    out: list[tuple[int, str, str | None]] = []
    for now, condition in table:
        current = state or AlertState(identity("d", "A", {}), "d", "A", {})
        state, transition = step(current, condition, now, params)
        phase = state.phase.value if state else "gone"
        change = (
            f"{transition.from_phase.value}->{transition.to_phase.value}" if transition else None
        )
        out.append((now, phase, change))
    return out


CASES = {
    "fires after for": (
        AlertParams(for_ms=2 * M),
        [(0, True), (1 * M, True), (2 * M, True), (3 * M, True)],
        [(0, "pending", "inactive->pending"), (M, "pending", None),
         (2 * M, "firing", "pending->firing"), (3 * M, "firing", None)],
    ),
    "for zero fires at once": (
        AlertParams(),
        [(0, True), (M, False)],
        [(0, "firing", "inactive->firing"), (M, "resolved", "firing->resolved")],
    ),
    "pending cleared before for": (
        AlertParams(for_ms=5 * M),
        [(0, True), (M, False), (2 * M, False)],
        [(0, "pending", "inactive->pending"), (M, "gone", "pending->inactive"),
         (2 * M, "gone", None)],
    ),
    "keep firing for holds a brief dip, counted from the first false evaluation": (
        AlertParams(keep_firing_for_ms=2 * M),
        [(0, True), (M, False), (2 * M, True), (3 * M, False), (4 * M, False), (5 * M, False),
         (6 * M, False)],
        [(0, "firing", "inactive->firing"), (M, "firing", None), (2 * M, "firing", None),
         (3 * M, "firing", None), (4 * M, "firing", None),
         (5 * M, "resolved", "firing->resolved"), (6 * M, "resolved", None)],
    ),
    # the case: 10 s on a 10 s group resolved at the first false evaluation, then went
    # pending and fired a second time; Prometheus holds it one evaluation
    "keep firing for equal to the interval holds one evaluation": (
        AlertParams(keep_firing_for_ms=10 * S),
        [(0, True), (10 * S, False), (20 * S, True), (30 * S, False), (40 * S, False)],
        [(0, "firing", "inactive->firing"), (10 * S, "firing", None), (20 * S, "firing", None),
         (30 * S, "firing", None), (40 * S, "resolved", "firing->resolved")],
    ),
    "any keep firing for holds the first false evaluation": (
        AlertParams(keep_firing_for_ms=5 * S),
        [(0, True), (10 * S, False), (20 * S, False)],
        [(0, "firing", "inactive->firing"), (10 * S, "firing", None),
         (20 * S, "resolved", "firing->resolved")],
    ),
    "unknown evaluations do not stop the keep firing for clock": (
        AlertParams(keep_firing_for_ms=30 * S),
        [(0, True), (10 * S, False), (20 * S, None), (30 * S, None), (40 * S, False)],
        [(0, "firing", "inactive->firing"), (10 * S, "firing", None), (20 * S, "firing", None),
         (30 * S, "firing", None), (40 * S, "resolved", "firing->resolved")],
    ),
    "unknown neither fires nor resolves": (
        AlertParams(for_ms=M),
        [(0, True), (M, None), (2 * M, True), (3 * M, None), (4 * M, None)],
        [(0, "pending", "inactive->pending"), (M, "pending", None),
         (2 * M, "firing", "pending->firing"), (3 * M, "firing", None), (4 * M, "firing", None)],
    ),
    # the case: pending at 10 s, no data until 400 s, data again from 410 s; it used to
    # fire at 410 s on the first sample after the gap. Each true evaluation counts the time since
    # the evaluation before it: 410 s counts 10 s, so `for: 1m` is served at 460 s, on the
    # seventh true evaluation, as many as Prometheus needs without a gap.
    "a gap pauses for without resetting it": (
        AlertParams(for_ms=M),
        [(10 * S, True), *((t * S, None) for t in range(20, 401, 10)),
         *((t * S, True) for t in range(410, 461, 10))],
        [(10 * S, "pending", "inactive->pending"),
         *((t * S, "pending", None) for t in range(20, 451, 10)),
         (460 * S, "firing", "pending->firing")],
    ),
    "for counts the true evaluations on both sides of a gap": (
        AlertParams(for_ms=30 * S),
        [(0, True), (10 * S, True), (20 * S, None), (30 * S, True), (40 * S, True)],
        [(0, "pending", "inactive->pending"), (10 * S, "pending", None),
         (20 * S, "pending", None), (30 * S, "pending", None),
         (40 * S, "firing", "pending->firing")],
    ),
    "for fires at the first evaluation at or after it, as in Prometheus": (
        AlertParams(for_ms=25 * S),
        [(0, True), (10 * S, True), (20 * S, True), (30 * S, True)],
        [(0, "pending", "inactive->pending"), (10 * S, "pending", None),
         (20 * S, "pending", None), (30 * S, "firing", "pending->firing")],
    ),
    "resolved kept for retention then forgotten": (
        AlertParams(resolved_retention_ms=10 * M, flap_window_ms=5 * M),
        [(0, True), (M, False), (5 * M, False), (11 * M, False)],
        [(0, "firing", "inactive->firing"), (M, "resolved", "firing->resolved"),
         (5 * M, "resolved", None), (11 * M, "gone", None)],
    ),
    "cooldown blocks refiring": (
        AlertParams(cooldown_ms=5 * M),
        [(0, True), (M, False), (2 * M, True), (6 * M, True)],
        [(0, "firing", "inactive->firing"), (M, "resolved", "firing->resolved"),
         (2 * M, "resolved", None), (6 * M, "firing", "resolved->firing")],
    ),
    "cooldown outlives the resolved retention": (
        AlertParams(cooldown_ms=60 * M, resolved_retention_ms=10 * M, flap_window_ms=5 * M),
        [(0, True), (M, False), (30 * M, False), (40 * M, True), (62 * M, False), (63 * M, True)],
        [(0, "firing", "inactive->firing"), (M, "resolved", "firing->resolved"),
         (30 * M, "resolved", None), (40 * M, "resolved", None), (62 * M, "gone", None),
         (63 * M, "firing", "inactive->firing")],
    ),
    "unknown on a new identity creates nothing": (
        AlertParams(),
        [(0, None), (M, False)],
        [(0, "gone", None), (M, "gone", None)],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("params", "table", "expected"), CASES.values(), ids=CASES.keys())
def test_state_machine(
    params: AlertParams,
    table: list[tuple[int, bool | None]],
    expected: list[tuple[int, str, str | None]],
) -> None:
    """Test that each table of conditions yields the expected phases and transitions."""
    assert run(params, table) == expected


def test_flapping_alert_stays_firing_until_quiet() -> None:
    """Test that an alert firing too often is marked flapping and resolves only after a hold."""
    params = AlertParams(flap_threshold=3, flap_window_ms=60 * M, flap_hold_ms=10 * M)
    table: list[tuple[int, bool | None]] = []
    for i in range(3):  # fire, resolve, fire, resolve, fire
        table.extend([(i * 4 * M, True), (i * 4 * M + 2 * M, False)])
    results = run(params, [*table[:-1], (9 * M, False), (15 * M, False), (19 * M, False)])
    firings = [r for r in results if r[2] and r[2].endswith("->firing")]
    assert len(firings) == 3
    assert results[-3] == (9 * M, "firing", None)
    assert results[-2] == (15 * M, "firing", None)
    assert results[-1] == (19 * M, "resolved", "firing->resolved")


def test_flapping_flag_is_set_on_the_third_firing() -> None:
    """Test that the transition that crosses the flap threshold carries flapping=True."""
    params = AlertParams(flap_threshold=2, flap_window_ms=60 * M, flap_hold_ms=M)
    state = AlertState(identity("d", "A", {}), "d", "A", {})
    flags = []
    for now, condition in [(0, True), (M, False), (2 * M, True)]:
        new, transition = step(state, condition, now, params)
        assert new is not None
        state = new
        if transition:
            flags.append(transition.flapping)
    assert flags == [False, False, True]


def test_identity_depends_on_labels_not_their_order() -> None:
    """Test that identity keys are stable for equal label sets and differ otherwise."""
    assert identity("d", "A", {"a": "1", "b": "2"}) == identity("d", "A", {"b": "2", "a": "1"})
    assert identity("d", "A", {"a": "1"}) != identity("d", "A", {"a": "2"})
    assert identity("d", "A", {}) != identity("e", "A", {})


def test_state_survives_json_round_trip() -> None:
    """Test that a persisted state loads back equal (what restarts rely on)."""
    state = AlertState(
        "k", "d", "A", {"severity": "major"}, Phase.FIRING, 1, 2, None, 3, 4, None, 85.5,
        (2,), True, {"summary": "hot"}, "g", False, 7, 4,
    )  # fmt: skip
    assert AlertState.from_json(state.to_json()) == state


def test_state_persisted_before_the_gap_and_hold_fields_loads() -> None:
    """Test that a state stored without unknown_ms/keep_firing_since_ms loads with defaults."""
    stored = (
        b'{"key":"k","device":"d","alert":"A","labels":{},"phase":"pending","active_since_ms":0,'
        b'"fired_at_ms":null,"resolved_at_ms":null,"last_true_ms":0,"last_eval_ms":0,'
        b'"cooldown_until_ms":null,"value":1.0,"firings":[],"flapping":false,"annotations":{},'
        b'"group":"g","dry_run":false}'
    )
    state = AlertState.from_json(stored)
    assert (state.unknown_ms, state.keep_firing_since_ms) == (0, None)
    new, transition = step(state, True, M, AlertParams(for_ms=M))
    assert new is not None
    assert new.phase is Phase.FIRING
    assert transition is not None


def test_pending_ms_leaves_out_unknown_time() -> None:
    """Test that pending_ms counts the time since going pending minus the unknown stretches."""
    state = AlertState("k", "d", "A", {}, Phase.PENDING, active_since_ms=0, last_eval_ms=0)
    params = AlertParams(for_ms=10 * M)
    for now, condition in [(M, None), (2 * M, None), (3 * M, True)]:
        new, _ = step(state, condition, now, params)
        assert new is not None
        state = new
    assert state.unknown_ms == 2 * M
    assert pending_ms(state, 3 * M) == M


def test_resolve_on_removal_only_for_firing() -> None:
    """Test that removing a rule resolves its firing alerts and forgets pending ones."""
    firing = AlertState("k", "d", "A", {}, Phase.FIRING, fired_at_ms=0)
    new, transition = resolve(firing, 5 * M, "rule removed")
    assert new is not None
    assert new.phase is Phase.RESOLVED
    assert transition is not None
    assert transition.reason == "rule removed"
    pending = AlertState("k", "d", "A", {}, Phase.PENDING, active_since_ms=0)
    assert resolve(pending, 5 * M, "rule removed") == (None, None)
