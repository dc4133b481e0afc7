"""The alert state machine, stepped through tables of (time, condition) -> phase and events."""

from __future__ import annotations

import pytest

from daemon.core.alerts import AlertParams, AlertState, Phase, identity, resolve, step

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
    "keep firing for holds a brief dip": (
        AlertParams(keep_firing_for_ms=2 * M),
        [(0, True), (M, False), (2 * M, True), (3 * M, False), (4 * M, False), (5 * M, False)],
        [(0, "firing", "inactive->firing"), (M, "firing", None), (2 * M, "firing", None),
         (3 * M, "firing", None), (4 * M, "resolved", "firing->resolved"),
         (5 * M, "resolved", None)],
    ),
    "unknown neither fires nor resolves": (
        AlertParams(for_ms=M),
        [(0, True), (M, None), (2 * M, True), (3 * M, None), (4 * M, None)],
        [(0, "pending", "inactive->pending"), (M, "pending", None),
         (2 * M, "firing", "pending->firing"), (3 * M, "firing", None), (4 * M, "firing", None)],
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
        (2,), True, {"summary": "hot"}, "g", False,
    )  # fmt: skip
    assert AlertState.from_json(state.to_json()) == state


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
