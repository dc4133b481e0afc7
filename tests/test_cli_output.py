"""Device- and operator-controlled strings reach the terminal as plain, visible text.

A state database is seeded with payloads, meta, tickets, notices and alerts holding rich markup
(`[/x]` used to crash with a MarkupError, `[guidance]` used to vanish) and an ANSI escape; every
command that prints them must exit 0 and show them verbatim, the escape made visible.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.cli import cli, output
from daemon.core.alerts import AlertState, Phase
from daemon.core.tickets import Ticket
from daemon.core.twin import DeviceTwin
from daemon.ports import DeadLetter

#: markup that closes nothing, markup that would style, and a terminal escape (red)
HOSTILE = "[/x] [bold]loud[/bold] \x1b[31mred"
SHOWN = ("[/x]", "[bold]loud[/bold]", "\\x1b[31mred")


def _ticket(now: int) -> Ticket:
    return Ticket(
        id="T-1",
        key="k1",
        device="d1",
        alert="Hot",
        kind="fault",
        summary=HOSTILE,
        severity="major",
        category="heating",
        skill="heating",
        queue="service",
        created_ms=now,
        updated_ms=now,
        context={
            "device": {"id": "d1", "online": True, "metrics": {"temp": 90.0}, "meta": {}},
            "customer": {"id": "c1", "name": HOSTILE},
            "rule": {"expr": "temp > 80"},
            "remediation": [{"at_ms": now, "event": "reply", "detail": HOSTILE}],
            "runbook": {"steps": [HOSTILE]},
        },
        timeline=({"at_ms": now, "event": "opened", "by": "frontline", "detail": HOSTILE},),
    )


def _notice(now: int) -> dict[str, object]:
    return {
        "device": "d1",
        "kind": "guidance",
        "title": HOSTILE,
        "message": HOSTILE,
        "steps": [HOSTILE],
        "alert": "Hot",
        "at_ms": now,
    }


def _alert(now: int) -> AlertState:
    return AlertState(
        key="a1",
        device="d1",
        alert="Hot",
        labels={"team": HOSTILE},
        phase=Phase.FIRING,
        active_since_ms=now - 60_000,
        fired_at_ms=now - 30_000,
        value=HOSTILE,
        annotations={"summary": HOSTILE},
        group="g",
    )


def _event(now: int, index: int) -> dict[str, object]:
    return {
        "at_ms": now + index,
        "key": "a1",
        "device": "d1",
        "alert": "Hot",
        "from_phase": "pending",
        "to_phase": "firing",
        "value": HOSTILE,
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state database holding one of everything, each with the hostile string."""
    data = tmp_path_factory.mktemp("data")
    now = int(time.time() * 1000)

    async def write() -> None:
        state = SqliteStateStore(data / "state.db")
        await state.open()
        try:
            payload = HOSTILE.encode()
            letter = DeadLetter(now, "devices/d1/status", "d1", "bad_status", HOSTILE, payload, 28)
            await state.add_dead_letters([letter])
            twin = DeviceTwin("d1", now - 60_000, meta={"model": HOSTILE, "labels": {"x": HOSTILE}})
            twin.attributes["mode"] = (now, HOSTILE)
            twin.last_seen_ms = now
            await state.save_twins([twin.to_dict()])
            ticket = _ticket(now)
            row = (ticket.id, ticket.key, ticket.status.value, now, ticket.to_json())
            notice = json.dumps(_notice(now)).encode()
            await state.save_actions({}, [row], [], [("d1", now, notice)])
            events = [_event(now, i) for i in range(3)]
            await state.save_alerts({"a1": _alert(now).to_json()}, events)
        finally:
            await state.close()

    asyncio.run(write())
    return data


def _run(data: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"FRONTLINE_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    "args",
    [
        ("dead-letters",),
        ("devices", "show", "d1"),
        ("devices", "list"),
        ("tickets", "show", "T-1"),
        ("tickets", "list"),
        ("notices",),
        ("alerts",),
        ("alerts", "--history"),
    ],
    ids=" ".join,
)
def test_hostile_strings_print_verbatim_and_escaped(data_dir: Path, args: tuple[str, ...]) -> None:
    """Test that markup and an ANSI escape in stored strings are printed as visible text."""
    out = _run(data_dir, *args)
    assert "\x1b" not in out, "a raw escape reached the terminal"
    for shown in SHOWN:
        assert shown in out, f"{shown!r} missing from:\n{out}"


def test_notice_kind_is_visible(data_dir: Path) -> None:
    """Test that `notices` shows the kind `[guidance]` instead of swallowing it as markup."""
    assert "[guidance]" in _run(data_dir, "notices")


def test_json_output_keeps_the_strings_exact(data_dir: Path) -> None:
    """Test that --json carries the stored string unchanged (escaped by JSON, not by the CLI)."""
    out = _run(data_dir, "dead-letters", "--json")
    assert "\x1b" not in out
    assert json.loads(out)[0]["detail"] == HOSTILE


def test_history_says_when_the_limit_cut_it(data_dir: Path) -> None:
    """Test that `alerts --history --limit` says when older transitions were left out."""
    cut = _run(data_dir, "alerts", "--history", "--limit", "2")
    assert "showing the newest 2 transitions of more; use --limit" in cut
    assert cut.count("pending -> firing") == 2
    whole = _run(data_dir, "alerts", "--history", "--limit", "3")
    assert "use --limit" not in whole
    assert whole.count("pending -> firing") == 3


def test_history_json_stays_parseable_when_cut(data_dir: Path) -> None:
    """Test that the cut notice of `alerts --history --json` goes to stderr, not into the JSON."""
    result = CliRunner().invoke(
        cli,
        ["alerts", "--history", "--limit", "1", "--json"],
        env={"FRONTLINE_DATA_DIR": str(data_dir)},
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 1
    assert "use --limit" in result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain text, Inès", "plain text, Inès"),
        ("[bold]x[/]", "[bold]x[/]"),
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
        ("line\nfake line\r\t", "line\\nfake line\\r\\t"),
        ("\x07\x9b", "\\x07\\x9b"),
        ("abc\u202edcba", "abc\\u202edcba"),
        (42.5, "42.5"),
    ],
)
def test_visible_escapes_only_what_is_not_printable(value: object, expected: str) -> None:
    """Test that `visible` escapes controls, line breaks and bidi overrides, and nothing else."""
    assert output.visible(value) == expected


def test_text_is_never_markup() -> None:
    """Test that a `text()` cell renders its markup characters literally."""
    rendered = output.text("[bold]x[/bold] [/x]").plain
    assert rendered == "[bold]x[/bold] [/x]"


def test_output_doctests_pass() -> None:
    """Test that the docstring examples of the output helpers pass."""
    result = doctest.testmod(output, verbose=False, report=False)
    assert result.attempted >= 1
    assert result.failed == 0
