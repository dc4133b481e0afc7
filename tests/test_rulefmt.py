"""Rule files: golden error output for bad files, and the parsed form of good ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.core.rulefmt import parse_rule_file

GOLDEN = Path(__file__).parent / "golden"


def test_check_reports_every_mistake_with_position() -> None:
    """Test that five mistakes in two files are all printed with file:line:col, exit code 1."""
    result = CliRunner().invoke(cli, ["check", str(GOLDEN / "bad_rules")])
    assert result.exit_code == 1
    boilers = str(GOLDEN / "bad_rules" / "boilers.yaml")
    freezers = str(GOLDEN / "bad_rules" / "freezers.yaml")
    lines = [line for line in result.output.splitlines() if line.startswith(str(GOLDEN))]
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{boilers}:7:88",
        f"{boilers}:12:14",
        f"{boilers}:17:20",
        f"{freezers}:5:15",
        f"{freezers}:6:9",
        f"{freezers}:9:17",
    ]
    text = "\n".join(lines)
    assert "[BoilerOverheating] expr:" in text
    assert "[PressureLow] for: not a duration: 'two minutes'" in text
    assert "[BoilerOffline] runbook '../runbooks/missing.md' not found" in text
    assert "[FreezerWarm] expr: unknown function 'avgg'" in text
    assert "[FreezerWarm] unknown key 'severity' in a rule" in text
    assert "[FreezerDoor] ticket must be one of on_failure, always, never" in text
    assert "6 problem(s) in 2 file(s)" in result.output


GOOD = """\
groups:
  - name: boilers
    interval: 1m
    match: {model: "boiler-*", labels.tier: gold}
    mode: dry-run
    rules:
      - alert: BoilerOverheating
        expr: avg(temperature, 5m) > attr("max_temp", 85)
        for: 2m
        keep_firing_for: 5m
        cooldown: 10m
        labels: {severity: major, skill: heating}
        annotations:
          summary: "Boiler {{ device.id }} at {{ value | round(1) }}"
        remediate:
          - command: reduce_power
            params: {percent: 30}
            timeout: 30s
            verify: 10m
            max_attempts: 2
        ticket: always
"""


def test_good_file_parses_into_groups_and_rules() -> None:
    """Test that every field of a valid rule file arrives in the parsed rule."""
    groups, problems = parse_rule_file(GOOD, "good.yaml")
    assert problems == []
    (group,) = groups
    assert (group.name, group.interval_s, group.mode) == ("boilers", 60.0, "dry-run")
    assert group.match == {"model": "boiler-*", "labels.tier": "gold"}
    (rule,) = group.rules
    assert (rule.for_s, rule.keep_firing_for_s, rule.cooldown_s) == (120.0, 300.0, 600.0)
    assert rule.labels == {"severity": "major", "skill": "heating"}
    assert rule.mode == "dry-run"
    assert rule.ticket == "always"
    (step,) = rule.remediate
    assert (step.command, dict(step.params), step.timeout_s, step.verify_s, step.max_attempts) == (
        "reduce_power", {"percent": 30}, 30.0, 600.0, 2,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("groups: 3", "needs `groups:`"),
        ("groups:\n  - name: g\n", "needs a list of `rules:`"),
        ("groups:\n  - name: g\n    rules:\n      - expr: x > 1\n", "needs `alert: Name`"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n", "needs `expr:`"),
        ("groups: [\n", "not valid YAML"),
        (
            "groups:\n  - name: g\n    rules:\n      - {alert: A, expr: x > 1}\n"
            "      - {alert: A, expr: x > 2}\n",
            "duplicate alert 'A'",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n"
            "        annotations: {summary: '{{ broken'}\n",
            "annotations.summary: template",
        ),
        (
            "groups:\n  - name: g\n    interval: 0s\n    rules:\n      - {alert: A, expr: x > 1}\n",
            "interval must be at least 1s",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n"
            "        remediate: [{command: reboot, params: [1]}]\n",
            "params must be a mapping",
        ),
    ],
)
def test_problems(text: str, fragment: str) -> None:
    """Test that each kind of mistake is reported with a specific message."""
    _, problems = parse_rule_file(text, "f.yaml")
    assert any(fragment in str(p) for p in problems), [str(p) for p in problems]


def test_remediate_step_without_params_is_valid() -> None:
    """Test that a remediate step may omit params (most commands take none)."""
    text = (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n"
        "        remediate: [{command: reboot}]\n"
    )
    groups, problems = parse_rule_file(text, "f.yaml")
    assert problems == []
    assert groups[0].rules[0].remediate[0].params == {}


def test_block_scalar_expression_error_points_into_the_block() -> None:
    """Test that an error in a multi-line `expr: |` points at the right line and column."""
    text = (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n"
        "          x > 1 and\n          y >> 2\n"
    )
    _, problems = parse_rule_file(text, "f.yaml")
    (problem,) = problems
    assert (problem.line, problem.col) == (7, 14)


def test_scheduled_group_parses_and_bad_cron_is_reported() -> None:
    """Test that `schedule` takes a 5-field cron and `advisory_period` a duration."""
    good = (
        "groups:\n  - name: u\n    schedule: '0 3 * * *'\n    advisory_period: 7d\n"
        "    rules:\n      - {alert: A, expr: x > 1}\n"
    )
    groups, problems = parse_rule_file(good, "u.yaml")
    assert problems == []
    assert (groups[0].schedule, groups[0].advisory_period_s) == ("0 3 * * *", 7 * 86400.0)
    _, problems = parse_rule_file(good.replace("0 3 * * *", "daily"), "u.yaml")
    assert any("5-field cron" in str(p) for p in problems)


def test_cron_out_of_range_is_caught_by_the_loader(tmp_path: Path) -> None:
    """Test that `frontline check` rejects a cron the scheduler would refuse."""
    (tmp_path / "u.yaml").write_text(
        "groups:\n  - name: u\n    schedule: '61 3 * * *'\n"
        "    rules:\n      - {alert: A, expr: x > 1}\n"
    )
    result = CliRunner().invoke(cli, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "u.yaml:2:1: schedule:" in result.output
