"""Helpers shared by every command module: settings from the context, safe output, JSON, times,
durations, reading the state database and talking to the running daemon.

Safe output: device payloads, twin meta, ticket context, notices, labels and rule problems come
from devices and operators. They are printed as plain text, never as rich markup (a `[/x]` in a
payload used to crash `dead-letters` with a MarkupError), and control characters are shown
escaped (`\\x1b[31m` as text) so that nothing a device sends can drive the operator's terminal.
Commands build their lines from `text()` cells and `line()` parts, and print with `say()`.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from daemon.app import build_state_store
from daemon.config import Settings
from daemon.core.alerts import AlertState
from daemon.core.durations import parse_duration
from daemon.core.twin import DeviceTwin
from daemon.ports import StateStore

# Piped output (CI logs, `| tee`) gets a width that fits the demo's table instead of 80 columns.
# Markup and highlighting are off: a stray string can never be read as markup or recoloured.
console = Console(width=None if sys.stdout.isatty() else 120, markup=False, highlight=False)

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(value: object) -> str:
    """Return `value` as one line of text with every non-printable character shown as an escape.

    Escaped: C0/C1 controls (ESC starts terminal sequences), line breaks, and the invisible
    format characters such as bidirectional overrides, which reorder what the operator sees.

    >>> visible("ok \\x1b[31mred\\x1b[0m\\nnext\\u202e")
    'ok \\\\x1b[31mred\\\\x1b[0m\\\\nnext\\\\u202e'
    >>> visible("[/x] stays [bold]as is[/bold], Inès")
    '[/x] stays [bold]as is[/bold], Inès'
    """
    out = str(value)
    if out.isprintable():  # the common case, without a per-character loop
        return out
    return "".join(
        char if char.isprintable() else _NAMED.get(char) or _escape(ord(char)) for char in out
    )


def _escape(code: int) -> str:
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def text(value: object, style: str = "") -> Text:
    """Return `value` as a rich `Text` that is never parsed as markup, controls made visible."""
    return Text(visible(value), style=style)


def line(*parts: str | Text) -> Text:
    """Join parts into one line: `Text` parts keep their style, strings are plain text."""
    return Text.assemble(*(part if isinstance(part, Text) else text(part) for part in parts))


def say(*parts: str | Text) -> None:
    """Print one line made of `parts` (see `line`)."""
    console.print(line(*parts))


def echo(*parts: object, err: bool = False) -> None:
    """Print plain parts (no styles) through click, controls made visible."""
    click.echo("".join(visible(part) for part in parts), err=err)


def table(*headers: str) -> Table:
    """Return a table whose header strings are plain text; fill it with `add_row`."""
    return Table(*(Column(header=text(header)) for header in headers))


def add_row(into: Table, *cells: object) -> None:
    """Add a row of cells; anything but a `Text` is converted with `text()`."""
    into.add_row(*(cell if isinstance(cell, Text) else text(cell) for cell in cells))


def settings_of(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def echo_json(data: object) -> None:
    """Print `data` as indented JSON (orjson escapes control characters in strings)."""
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def print_mapping(data: Mapping[str, Any]) -> None:
    """Print two levels of a mapping as YAML-looking text."""
    for key, value in data.items():
        if isinstance(value, dict):
            echo(key, ":")
            for inner, inner_value in value.items():
                echo("  ", inner, ": ", yaml_scalar(inner_value))
        else:
            echo(key, ": ", yaml_scalar(value))


def yaml_scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Duration(click.ParamType):  # type: ignore[type-arg]  # generic only in stubs
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return parse_duration(value)
        except (TypeError, ValueError) as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Duration()


@asynccontextmanager
async def state_db(settings: Settings) -> AsyncIterator[StateStore | None]:
    """Open the state database for reading; None before the daemon ever wrote one."""
    if not (settings.data_dir / "state.db").exists():
        yield None
        return
    state = build_state_store(settings)
    await state.open()
    try:
        yield state
    finally:
        await state.close()


async def load_twins(settings: Settings) -> list[DeviceTwin]:
    async with state_db(settings) as state:
        if state is None:
            return []
        return [DeviceTwin.from_dict(data) for data in await state.load_twins()]


async def load_alert_states(settings: Settings) -> list[AlertState]:
    async with state_db(settings) as state:
        if state is None:
            return []
        return [AlertState.from_json(data) for data in await state.load_alerts()]


def post_to_daemon(settings: Settings, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the running daemon's API (with the token) and return its JSON answer."""
    listen = settings.http.host
    host = "127.0.0.1" if listen in {"0.0.0.0", "::"} else listen  # noqa: S104  not a bind
    request = urllib.request.Request(
        f"http://{host}:{settings.http.port}{path}",
        method="POST",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    if settings.http.token is not None:
        request.add_header("Authorization", f"Bearer {settings.http.token.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  our own daemon
            result: dict[str, Any] = orjson.loads(response.read())
            return result
    except urllib.error.HTTPError as exc:
        answer = orjson.loads(exc.read() or b"{}")
        problems = [visible(p) for p in answer.get("problems", [])]
        detail = "\n".join(problems) or visible(answer.get("error", exc.reason))
        raise click.ClickException(detail) from exc
    except OSError as exc:
        raise click.ClickException(
            f"daemon not reachable on {host}:{settings.http.port}: {exc}"
        ) from exc
