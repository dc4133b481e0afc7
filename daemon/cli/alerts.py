"""`alerts`: pending and firing alerts from the state database, or their transition history."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from daemon.app import now_ms
from daemon.cli.output import (
    add_row,
    console,
    echo,
    echo_json,
    iso,
    load_alert_states,
    say,
    settings_of,
    state_db,
    table,
)
from daemon.config import Settings
from daemon.core.alerts import AlertState, Phase
from daemon.core.durations import format_duration


def _alert_row(alert: AlertState, now: int) -> dict[str, object]:
    since = alert.fired_at_ms if alert.phase is Phase.FIRING else alert.active_since_ms
    if alert.phase is Phase.RESOLVED:
        since = alert.resolved_at_ms
    return {
        "alert": alert.alert,
        "device": alert.device,
        "phase": alert.phase.value,
        "since": iso(since),
        "for": format_duration((now - since) / 1000) if since else None,
        "value": alert.value,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "flapping": alert.flapping,
        "dry_run": alert.dry_run,
        "group": alert.group,
    }


async def _history(
    settings: Settings, limit: int, device: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """Return the newest `limit` transitions, oldest first, and whether older ones exist."""
    async with state_db(settings) as state:
        if state is None:
            return [], False
        # One more than asked for tells whether the limit cut the list.
        events = await state.alert_events(limit + 1, device)
    return list(reversed(events[:limit])), len(events) > limit


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include resolved alerts.")
@click.option("--history", is_flag=True, help="Show the latest transitions instead.")
@click.option("--device", help="With --history: only this device.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="With --history: at most this many transitions (the newest).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def alerts(
    ctx: click.Context,
    show_all: bool,
    history: bool,
    device: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List pending and firing alerts (or, with --history, their transitions)."""
    if history:
        _print_history(settings_of(ctx), limit, device, as_json)
        return
    states = asyncio.run(load_alert_states(settings_of(ctx)))
    shown = {Phase.PENDING, Phase.FIRING} | ({Phase.RESOLVED} if show_all else set())
    now = now_ms()
    rows = [
        _alert_row(a, now)
        for a in sorted(states, key=lambda a: (a.device, a.alert))
        if a.phase in shown
    ]
    if as_json:
        echo_json(rows)
        return
    listing = table("alert", "device", "phase", "for", "value", "labels", "summary")
    for row in rows:
        labels = row["labels"]
        annotations = row["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        phase = (
            str(row["phase"])
            + (" (flapping)" if row["flapping"] else "")
            + (" (dry-run)" if row["dry_run"] else "")
        )
        add_row(
            listing,
            row["alert"],
            row["device"],
            phase,
            row["for"] or "-",
            row["value"],
            ", ".join(f"{k}={v}" for k, v in labels.items()),
            annotations.get("summary", ""),
        )
    console.print(listing)
    if not rows:
        say("no alerts")


def _print_history(settings: Settings, limit: int, device: str | None, as_json: bool) -> None:
    events, cut = asyncio.run(_history(settings, limit, device))
    if as_json:
        echo_json(events)
    else:
        listing = table("time (UTC)", "alert", "device", "transition", "value")
        for e in events:
            change = f"{e['from_phase']} -> {e['to_phase']}"
            add_row(listing, iso(e["at_ms"]), e["alert"], e["device"], change, e["value"])
        console.print(listing)
    if cut:
        # On stderr with --json, so that the JSON stays parseable.
        echo(f"showing the newest {limit} transitions of more; use --limit", err=as_json)
