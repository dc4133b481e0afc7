"""The routing and customers files: strict keys with file:line:col, missing files, what loaded."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from daemon.adapters.service_files import (
    DEFAULT_CUSTOMERS,
    DEFAULT_ROUTING,
    check_service_files,
    load_customers,
    load_routing,
    read_customers,
    read_routing,
)
from daemon.errors import ConfigInvalid
from tests.conftest import ROOT

ROUTING = """\
queues:
  - {match: {category: heating, severity: "major|critical"}, queue: heating-l2, skill: heating}
  - {match: {kind: approval}, queue: approvals, skill: general}
default: {queue: service, skill: general}
escalation:
  - {after: 2h, level: 3, queue: duty}
  - {after: 30m, level: 2}
agents:
  - {id: alice, skills: [heating], capacity: 2}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(problems: list[object]) -> list[str]:
    return [str(p) for p in problems]


def test_routing_loads_every_part(tmp_path: Path) -> None:
    """Test that queues, default, escalation (sorted by level) and agents are read."""
    routing, problems = read_routing(_write(tmp_path, "routing.yaml", ROUTING))
    assert problems == []
    assert [(r.queue, dict(r.match)) for r in routing.rules] == [
        ("heating-l2", {"category": "heating", "severity": "major|critical"}),
        ("approvals", {"kind": "approval"}),
    ]
    assert [(s.level, s.after_ms, s.queue) for s in routing.escalation] == [
        (2, 1_800_000, None),
        (3, 7_200_000, "duty"),
    ]
    (alice,) = routing.agents
    assert (alice.name, alice.skills, alice.capacity, alice.level) == (
        "alice",
        frozenset({"heating"}),
        2,
        1,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("queus: []\n", "routing.yaml:1:1: queus: unknown key (expected one of: queues,"),
        (
            "queues:\n  - {match: {catgory: heating}, queue: q, skill: s}\n",
            "routing.yaml:2:14: queues.0.match.catgory: unknown match key",
        ),
        (
            "queues:\n  - {match: {kind: advisroy}, queue: q, skill: s}\n",
            "routing.yaml:2:20: queues.0.match.kind: matches no ticket kind",
        ),
        (
            "queues:\n  - {match: {}, queue: q, skill: s, prio: 1}\n",
            "routing.yaml:2:37: queues.0.prio: unknown key (expected one of: match, queue, skill, "
            "priority, safety_steps)",
        ),
        (
            "queues:\n  - {match: {}, queue: q}\n",
            "routing.yaml:2:5: queues.0.skill: required key missing",
        ),
        (
            "escalation:\n  - {after: soon, level: 2}\n",
            "routing.yaml:2:13: escalation.0.after: not a duration: 'soon'",
        ),
        (
            "escalation:\n  - {after: 1h, level: 1}\n",
            "routing.yaml:2:24: escalation.0.level: Input should be greater than or equal to 2",
        ),
        (
            "agents:\n  - {id: a, skills: [x]}\n  - {id: a, skills: [y]}\n",
            "routing.yaml:3:10: agents.1.id: duplicate agent 'a'",
        ),
        ("default: {queue: q, skill: s, level: 2}\n", "routing.yaml:1:31: default.level: unknown"),
        ("- queues\n", "routing.yaml:1:1: -: the file must be a mapping of keys"),
        ("queues: [\n", "routing.yaml:2:1: -: not valid YAML"),
    ],
)
def test_routing_mistakes_are_located(tmp_path: Path, text: str, expected: str) -> None:
    """Test that each routing mistake is one problem at its file:line:col."""
    path = _write(tmp_path, "routing.yaml", text)
    routing, problems = read_routing(path)
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(str(tmp_path / expected)), problems[0]
    assert routing.rules == ()


def test_routing_reports_every_mistake_at_once(tmp_path: Path) -> None:
    """Test that all problems of a file are reported together, in file order."""
    text = (
        "queues:\n"
        "  - {match: {catgory: heating}, queue: q, skill: s}\n"
        "  - {match: {kind: fault}, queue: q, skill: s, prio: 1}\n"
        "agents:\n"
        "  - {id: a, skills: [x], capcity: 3}\n"
    )
    _, problems = read_routing(_write(tmp_path, "routing.yaml", text))
    assert [p.source.rsplit("/", 1)[1] for p in problems] == [
        "routing.yaml:2:14",
        "routing.yaml:3:48",
        "routing.yaml:5:26",
    ]


def test_customers_load_with_every_key(tmp_path: Path) -> None:
    """Test that every documented customer key is read."""
    text = (
        'c1: {name: Jane Doe, tier: gold, contact: sms, phone: "+33 6", email: j@x.org, '
        "location: Lyon}\nc2:\n"
    )
    customers, problems = read_customers(_write(tmp_path, "customers.yaml", text))
    assert problems == []
    assert customers["c1"].model_dump() == {
        "name": "Jane Doe",
        "tier": "gold",
        "contact": "sms",
        "phone": "+33 6",
        "email": "j@x.org",
        "location": "Lyon",
    }
    assert customers["c2"].tier == "standard"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("c1: {name: A, teir: gold}\n", "customers.yaml:1:15: c1.teir: unknown key"),
        ("c1: Jane\n", "customers.yaml:1:5: c1: must be a mapping of keys (name, tier,"),
        (
            "customers:\n  c1: {name: A}\n  c2: {name: B}\n",
            "customers.yaml:1:1: customers: looks like a wrapping key",
        ),
        ("c1: {name: A, tier: [gold]}\n", "customers.yaml:1:21: c1.tier: Input should be"),
    ],
)
def test_customer_mistakes_are_located(tmp_path: Path, text: str, expected: str) -> None:
    """Test that a misspelled key, a non-mapping and a wrapping key are located problems."""
    customers, problems = read_customers(_write(tmp_path, "customers.yaml", text))
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(str(tmp_path / expected)), problems[0]
    assert customers == {}


def test_load_raises_with_every_problem(tmp_path: Path) -> None:
    """Test that load_routing raises ConfigInvalid listing each problem."""
    path = _write(tmp_path, "routing.yaml", "queus: []\nagent: []\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_routing(path)
    assert len(caught.value.problems) == 2


def test_a_configured_file_that_is_missing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that a non-default path that does not exist is an error naming the setting."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigInvalid, match=r"actions\.routing: file not found"):
        load_routing(tmp_path / "routng.yaml")
    with pytest.raises(ConfigInvalid, match=r"actions\.customers: file not found"):
        load_customers(tmp_path / "customer.yaml")
    where = re.escape(f"routing.yaml (in {tmp_path}): actions.routing: file not found")
    with pytest.raises(ConfigInvalid, match=where):
        load_routing(DEFAULT_ROUTING, required=True)


def test_a_missing_default_file_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that the default paths may be absent: empty, with a warning naming the directory."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, "daemon.adapters.service_files"):
        routing = load_routing(DEFAULT_ROUTING)
        customers = load_customers(DEFAULT_CUSTOMERS)
    assert (routing.rules, routing.agents, customers) == ((), (), {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert f"rules/service/routing.yaml (in {tmp_path}) not found" in warnings[0]
    assert "tickets carry no customer details" in warnings[1]


def test_no_path_means_no_file() -> None:
    """Test that an unset path (null) loads the default routing and no customers."""
    assert load_routing(None).rules == ()
    assert load_customers(None) == {}


def test_loading_logs_what_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Test that loading logs the number of queue rules, escalation steps, agents, customers."""
    routing = _write(tmp_path, "routing.yaml", ROUTING)
    customers = _write(tmp_path, "customers.yaml", "c1: {name: A}\nc2: {name: B}\n")
    with caplog.at_level(logging.INFO, "daemon.adapters.service_files"):
        load_routing(routing)
        load_customers(customers)
    messages = [r.getMessage() for r in caplog.records]
    assert f"actions.routing {routing}: 2 queue rule(s), 2 escalation step(s), 1 agent(s)" in (
        messages
    )
    assert f"actions.customers {customers}: 2 customer(s)" in messages


def test_check_service_files_collects_without_raising(tmp_path: Path) -> None:
    """Test that check_service_files returns each file's problems and summary."""
    routing = _write(tmp_path, "routing.yaml", "queus: []\n")
    routing_check, customers_check = check_service_files(
        routing, tmp_path / "none.yaml", require_customers=True
    )
    assert len(routing_check.problems) == 1
    assert _problems(customers_check.problems)[0].endswith("actions.customers: file not found")


def test_shipped_service_files_are_valid() -> None:
    """Test that rules/service/routing.yaml and customers.yaml load without a problem."""
    routing, problems = read_routing(ROOT / "rules" / "service" / "routing.yaml")
    assert problems == []
    assert len(routing.rules) >= 5
    assert len(routing.agents) >= 5
    customers, problems = read_customers(ROOT / "rules" / "service" / "customers.yaml")
    assert problems == []
    assert len(customers) >= 10
