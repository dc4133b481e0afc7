"""`frontline check` validates the routing and customers files along with the rule files."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from daemon.cli import cli

RULES = """\
groups:
  - name: boilers
    match: {model: "boiler-*"}
    rules:
      - alert: Hot
        expr: avg(temp, 1m) > 80
"""
ROUTING = """\
queues:
  - {match: {category: heating}, queue: heating, skill: heating}
agents:
  - {id: alice, skills: [heating]}
"""
CUSTOMERS = "c1: {name: Jane Doe, tier: gold}\n"


def _check(tmp_path: Path, *args: str, **env: str) -> Result:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES)
    return CliRunner().invoke(cli, ["check", str(rules), *args], env=env)


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def test_check_reports_service_file_problems_with_position(tmp_path: Path) -> None:
    """Test that every routing and customers problem is printed with file:line:col, exit 1."""
    routing = _write(tmp_path, "routing.yaml", "queues:\n  - {match: {catgory: x}, queue: q}\n")
    customers = _write(tmp_path, "customers.yaml", "customers:\n  c1: {name: A}\n")
    result = _check(tmp_path, "--routing", routing, "--customers", customers)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        f"{routing}:2:5: queues.0.skill: required key missing",
        f"{routing}:2:14: queues.0.match.catgory: unknown match key (expected one of: alert, "
        "category, severity, tier, kind, remediation, impact_within)",
        f"{customers}:1:1: customers: looks like a wrapping key: the file maps customer ids "
        "straight to their details (remove `customers:` and unindent what it holds)",
        "OK: 1 file(s), 1 group(s), 1 rule(s)",
    ]
    assert "3 problem(s) in the routing and customers files" in result.stderr


def test_check_reads_the_files_named_by_the_settings(tmp_path: Path) -> None:
    """Test that without options, check validates actions.routing and actions.customers."""
    routing = _write(tmp_path, "routing.yaml", ROUTING)
    customers = _write(tmp_path, "customers.yaml", "c1: {name: A, teir: gold}\n")
    result = _check(
        tmp_path, FRONTLINE_ACTIONS__ROUTING=routing, FRONTLINE_ACTIONS__CUSTOMERS=customers
    )
    assert result.exit_code == 1, result.output
    assert f"OK: actions.routing {routing}: 1 queue rule(s), 0 escalation step(s), 1 agent(s)" in (
        result.stdout
    )
    assert f"{customers}:1:15: c1.teir: unknown key" in result.stdout


def test_check_passes_valid_service_files(tmp_path: Path) -> None:
    """Test that valid files give exit 0 and say how much they hold."""
    routing = _write(tmp_path, "routing.yaml", ROUTING)
    customers = _write(tmp_path, "customers.yaml", CUSTOMERS)
    result = _check(tmp_path, "--routing", routing, "--customers", customers)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "OK: 1 file(s), 1 group(s), 1 rule(s)",
        f"OK: actions.routing {routing}: 1 queue rule(s), 0 escalation step(s), 1 agent(s)",
        f"OK: actions.customers {customers}: 1 customer(s)",
    ]


@pytest.mark.parametrize("option", ["--routing", "--customers"])
def test_check_fails_on_a_named_file_that_is_missing(tmp_path: Path, option: str) -> None:
    """Test that a file named on the command line (or configured) that is absent is an error."""
    missing = str(tmp_path / "missing.yaml")
    result = _check(tmp_path, option, missing)
    assert result.exit_code == 1, result.output
    assert f"{missing}: actions.{option[2:]}: file not found" in result.stdout


def test_check_fails_on_a_configured_file_that_is_missing(tmp_path: Path) -> None:
    """Test that a misspelled actions.routing path fails the check instead of passing silently."""
    missing = str(tmp_path / "routng.yaml")
    result = _check(tmp_path, FRONTLINE_ACTIONS__ROUTING=missing)
    assert result.exit_code == 1, result.output
    assert f"{missing}: actions.routing: file not found" in result.stdout


def test_check_warns_when_the_default_files_are_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that absent default paths are a warning, relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    result = _check(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["OK: 1 file(s), 1 group(s), 1 rule(s)"]
    assert (
        f"warning: actions.routing: rules/service/routing.yaml (in {tmp_path}) not found: "
        "every ticket goes to the default queue and no agent is assigned"
    ) in result.stderr
    assert "warning: actions.customers: rules/service/customers.yaml" in result.stderr


def test_check_applies_the_configured_window_bound(tmp_path: Path) -> None:
    """Test that check refuses a window longer than rules.max_window as the daemon would."""
    routing = _write(tmp_path, "routing.yaml", ROUTING)
    customers = _write(tmp_path, "customers.yaml", CUSTOMERS)
    args = ("--routing", routing, "--customers", customers)
    assert _check(tmp_path, *args).exit_code == 0
    result = _check(tmp_path, *args, FRONTLINE_RULES__MAX_WINDOW="30s")
    assert result.exit_code == 1, result.output
    assert "r.yaml:6:25: [Hot] window 1m is longer than rules.max_window" in result.output
    assert "rules.max_window" in result.output


def test_check_validates_mapping_files_with_positions(tmp_path: Path) -> None:
    """Test that a file with `mappings:` is checked as a mapping, problems with file:line:col."""
    good = _write(
        tmp_path, "m.yaml", "mappings:\n  - name: plant\n    routes:\n      - topic: p/{device}\n"
    )
    result = CliRunner().invoke(cli, ["check", good])
    assert result.exit_code == 0, result.output
    assert "OK: 1 mapping(s) (plant), 1 route(s)" in result.output
    bad = _write(
        tmp_path, "b.yaml", "mappings:\n  - name: plant\n    routes:\n      - topic: p/+\n"
    )
    result = CliRunner().invoke(cli, ["check", bad])
    assert result.exit_code == 1
    assert f"{bad}:4:16: mappings.0.routes.0.topic" in result.output


def test_check_validates_the_configured_presets(tmp_path: Path) -> None:
    """Test that `frontline check` loads the enabled presets and refuses unknown ones."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES)
    env = {"FRONTLINE_RULES__PATHS": f'["{rules}"]'}
    ok = CliRunner().invoke(
        cli, ["check"], env={**env, "FRONTLINE_MAPPINGS__PRESETS": '["zigbee2mqtt"]'}
    )
    assert "OK: 1 mapping(s) (zigbee2mqtt)" in ok.output
    wrong = CliRunner().invoke(
        cli, ["check"], env={**env, "FRONTLINE_MAPPINGS__PRESETS": '["zigbee3mqtt"]'}
    )
    assert wrong.exit_code == 1
    assert "unknown preset 'zigbee3mqtt'" in wrong.output


def test_check_says_which_canonical_name_a_quoted_metric_reads(tmp_path: Path) -> None:
    """Test the line `metric("Flow Rate") reads flow_rate` for every quoted name."""
    rules = tmp_path / "q"
    rules.mkdir()
    (rules / "q.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: LowFlow\n"
        '        expr: avg(metric("Volume Flow RateRMS"), 1m) < 10\n'
    )
    result = CliRunner().invoke(cli, ["check", str(rules)])
    assert result.exit_code == 0, result.output
    assert 'LowFlow: metric("Volume Flow RateRMS") reads volume_flow_raterms' in result.output
