"""Pure bounds of the core: rule windows in memory, and the longest window a rule may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.adapters.rule_files import load_rules, load_valid_rules
from daemon.config import RulesSettings, load_settings
from daemon.core.rulefmt import parse_rule_file
from daemon.core.windows import SeriesWindows
from daemon.errors import ConfigInvalid, RuleFileInvalid

S = 1000
T0 = 1_800_000_000_000
DAY = 86_400.0


def test_trim_drops_series_left_empty() -> None:
    """Test that a series whose points all aged out is dropped, not kept empty for ever."""
    windows = SeriesWindows({"temp": 60})
    windows.add("gone", "temp", T0, 1.0)
    windows.add("alive", "temp", T0, 1.0)
    windows.add("alive", "temp", T0 + 100 * S, 2.0)
    assert windows.series_count == 2
    assert windows.trim(T0 + 120 * S) == 2
    assert windows.series_count == 1
    assert windows.window("alive", "temp", T0, T0 + 120 * S) == [(T0 + 100 * S, 2.0)]
    assert windows.window("gone", "temp", T0 - 1, T0 + 120 * S) == []
    windows.add("gone", "temp", T0 + 130 * S, 3.0)  # a device that comes back starts afresh
    assert windows.last("gone", "temp", T0 + 130 * S) == (T0 + 130 * S, 3.0)


def rules(expr: str, extra: str = "", group_extra: str = "") -> str:
    return (
        "groups:\n"
        "  - name: g\n"
        f"{group_extra}"
        "    rules:\n"
        "      - alert: A\n"
        f"        expr: {expr}\n"
        f"{extra}"
    )


# (description, rule file text, expected problems as (line, col, words in the message))
WINDOW_CASES = [
    ("within the bound", rules("avg(t, 7d) > 1"), []),
    ("a window past the bound", rules("avg(t, 8d) > 1"),
     [(5, 22, "window 8d is longer than rules.max_window (7d)")]),
    ("10000w, the whole history", rules("max(t, 10000w) > 1 and avg(t, 5m) > 0"),
     [(5, 22, "window 10000w")]),
    ("each window is located", rules("avg(t, 8d) > 1 and slope(u, 9d) > 0"),
     [(5, 22, "8d"), (5, 43, "9d")]),
    ("quoted expression", rules('"count(t, 2w) > 3"'), [(5, 25, "2w")]),
    ("block scalar", rules("|\n          avg(t, 5m) > 1\n          and avg(t, 8d) > 1"),
     [(7, 22, "8d")]),
    ("forecast history", rules("forecast(p, 30d, horizon=1d) < 1"), [(5, 27, "30d")]),
    ("the horizon is no history", rules("forecast(p, 6h, horizon=30d) < 1"), []),
    ("offline() and absent() read no history", rules("offline(60d) or absent(t, 60d)"), []),
    ("for past the bound", rules("t > 1", "        for: 10d\n"), [(6, 14, "for 10d")]),
    ("keep_firing_for past the bound", rules("t > 1", "        keep_firing_for: 8d\n"),
     [(6, 26, "keep_firing_for 8d")]),
    ("scheduled groups are bounded too",
     rules("max(on, 14d) == 0", "", '    schedule: "0 3 * * *"\n'), [(6, 23, "14d")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in WINDOW_CASES],
    ids=[case[0] for case in WINDOW_CASES],
)
def test_window_bound_is_a_located_rule_problem(
    text: str, expected: list[tuple[int, int, str]]
) -> None:
    """Test that windows and `for` past the bound are rule problems at the duration's position."""
    groups, problems = parse_rule_file(text, "r.yaml", max_window_s=7 * DAY)
    found = [(p.line, p.col, p.message) for p in problems]
    assert len(found) == len(expected), found
    for (line, col, message), (want_line, want_col, words) in zip(found, expected, strict=True):
        assert (line, col) == (want_line, want_col), message
        assert words in message
        assert "rules.max_window (7d)" in message
    assert all(p.rule == "A" for p in problems)
    assert len(groups) == 1  # the file still parses: the problem refuses the load, like others


def test_without_a_limit_no_window_is_refused() -> None:
    """Test that parsing without a limit (tests of the language itself) accepts long windows."""
    _, problems = parse_rule_file(rules("avg(t, 10000w) > 1"), "r.yaml")
    assert problems == []


def test_loading_rule_files_refuses_a_window_past_the_configured_bound(tmp_path: Path) -> None:
    """Test that load_rules and the daemon's loader report the window with file:line:col."""
    path = tmp_path / "long.yaml"
    path.write_text(rules("avg(t, 3d) > 1"))
    _, problems = load_rules([path], RulesSettings(max_window=2 * DAY).max_window)
    assert [str(p) for p in problems] == [
        f"{path}:5:22: [A] window 3d is longer than rules.max_window (2d)"
    ]
    assert load_rules([path])[1] == []  # the default bound, 7d
    with pytest.raises(RuleFileInvalid):
        load_valid_rules([path], 2 * DAY)


def test_max_window_may_not_exceed_the_store_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a bound past the history kept is a configuration problem on rules.max_window."""
    monkeypatch.setenv("FRONTLINE_STORE__RETENTION", "3d")
    with pytest.raises(ConfigInvalid) as caught:
        load_settings()
    [problem] = caught.value.problems
    assert problem.key == "rules.max_window"
    assert "longer than store.retention (3d)" in problem.message
    monkeypatch.setenv("FRONTLINE_RULES__MAX_WINDOW", "3d")
    assert load_settings().rules.max_window == 3 * DAY
