"""Ticket and notice commands: list and show read the state database; actions go through the
running daemon's API, which owns the tickets."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from daemon.cli.output import (
    add_row,
    console,
    echo,
    echo_json,
    iso,
    post_to_daemon,
    say,
    settings_of,
    state_db,
    table,
    text,
)
from daemon.config import Settings
from daemon.core.tickets import Ticket


async def _tickets(settings: Settings, open_only: bool) -> list[Ticket]:
    async with state_db(settings) as state:
        if state is None:
            return []
        return [Ticket.from_json(data) for data in await state.load_tickets(open_only)]


@click.group()
def tickets() -> None:
    """Proactive service tickets: list, show, ack, assign, comment, resolve, approve."""


@tickets.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved tickets.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def tickets_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List open tickets (newest last)."""
    found = asyncio.run(_tickets(settings_of(ctx), not show_all))
    if as_json:
        echo_json([t.to_dict() for t in found])
        return
    listing = table("id", "status", "prio", "queue", "skill", "assignee", "device", "summary")
    for t in found:
        add_row(
            listing,
            t.id,
            t.status.value,
            t.priority,
            t.queue,
            t.skill,
            t.assignee or "-",
            t.device,
            t.summary,
        )
    console.print(listing)
    if not found:
        say("no tickets")


@tickets.command("show")
@click.argument("ticket_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def tickets_show(ctx: click.Context, ticket_id: str, as_json: bool) -> None:
    """Show one ticket with its full context and timeline."""
    found = {t.id: t for t in asyncio.run(_tickets(settings_of(ctx), False))}
    ticket = found.get(ticket_id)
    if ticket is None:
        raise click.ClickException(f"no ticket {ticket_id!r}")
    if as_json:
        echo_json(ticket.to_dict())
        return
    c = ticket.context
    say(text(ticket.id, "bold"), f" {ticket.priority} {ticket.status.value}: {ticket.summary}")
    say(
        f"queue {ticket.queue}, skill {ticket.skill}, assignee {ticket.assignee or '-'}, "
        f"level {ticket.level}, category {ticket.category}"
    )
    urgency = c.get("urgency") or {}
    if urgency.get("text"):
        say(f"urgency: {urgency['text']}")
    device = c.get("device", {})
    say(f"device {device.get('id')} online={device.get('online')} live: {c.get('live')}")
    say(f"  latest: {device.get('metrics')}")
    say(f"customer: {c.get('customer')}")
    say(f"rule: {c.get('rule', {}).get('expr')}  trigger: {c.get('trigger')}")
    for metric, points in c.get("telemetry", {}).get("series", {}).items():
        values = ", ".join(f"{v:g}" for _, v in points[-8:])
        say(f"  {metric} (last {min(8, len(points))} of {len(points)}): {values}")
    for name, found in (c.get("anomaly") or {}).items():
        shares = ", ".join(f"{x['feature']} {x['share']:.0%}" for x in found["contributions"])
        unit = f" {found['unit']}" if found.get("unit") else ""
        say(f"model {name} v{found['version']}: {found['value']:g}{unit}  {shares}")
    for entry in c.get("remediation", []):
        say(f"  remediation {iso(entry['at_ms'])} {entry['event']}: {entry['detail']}")
    for i, step in enumerate(c.get("runbook", {}).get("steps", []), 1):
        say(f"  runbook {i}. {step}")
    for entry in ticket.timeline:
        say(f"  {iso(entry['at_ms'])} {entry['event']} by {entry['by']}: {entry['detail']}")


def _action(action: str, help_text: str, arg: str | None = None) -> None:
    def command(ctx: click.Context, /, ticket_id: str, by: str, **kwargs: str) -> None:
        body = {"by": by, **{k: v for k, v in kwargs.items() if v}}
        ticket = post_to_daemon(settings_of(ctx), f"/api/v1/tickets/{ticket_id}/{action}", body)
        echo(f"{ticket['id']}: {ticket['status']}, assignee {ticket.get('assignee') or '-'}")

    command.__doc__ = help_text
    # Decorators apply inside out: the extra argument first, so that it follows TICKET_ID.
    if arg is not None:
        command = click.argument(arg)(command)
    command = click.option("--by", default="agent", show_default=True, help="Who does it.")(command)
    command = click.argument("ticket_id")(command)
    tickets.command(action)(click.pass_context(command))


_action("ack", "Acknowledge a ticket (stops its escalation).")
_action("assign", "Assign a ticket to an agent.", "agent")
_action("comment", "Add a comment to a ticket's timeline.", "text")
_action("resolve", "Resolve a ticket.", "reason")
_action("approve", "Approve the command a ticket asks for; it is then sent.")


@click.command()
@click.argument("device", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def notices(ctx: click.Context, device: str | None, as_json: bool) -> None:
    """Customer notices sent (guidance, fixed, resolved), newest first."""
    settings = settings_of(ctx)

    async def load() -> list[dict[str, Any]]:
        async with state_db(settings) as state:
            return [] if state is None else await state.notices(device)

    rows = asyncio.run(load())
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        say(f"{iso(row['at_ms'])} {row['device']} [{row['kind']}] {row['title']}")
        for i, step in enumerate(row.get("steps", []), 1):
            say(f"    {i}. {step}")
    if not rows:
        say("no notices")
    sys.stdout.flush()
