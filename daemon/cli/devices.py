"""Data commands: device twins (`devices list|show`), stored points (`query`), `dead-letters`."""

from __future__ import annotations

import asyncio

import click

from daemon.app import build_series_store, now_ms
from daemon.cli.output import (
    DURATION,
    add_row,
    console,
    echo_json,
    iso,
    load_twins,
    print_mapping,
    say,
    settings_of,
    state_db,
    table,
    text,
)
from daemon.config import Settings
from daemon.core.durations import format_duration
from daemon.core.twin import DeviceTwin

JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _device_json(twin: DeviceTwin, now: int, timeout: float) -> dict[str, object]:
    return {
        "id": twin.id,
        "online": twin.online(now, timeout),
        "status": twin.status,
        "last_seen": iso(twin.last_seen_ms) if twin.last_seen_ms else None,
        "last_seen_ms": twin.last_seen_ms,
        "model": twin.meta.get("model"),
        "customer": twin.meta.get("customer"),
        "location": twin.meta.get("location"),
        "metrics": {name: value for name, (_, value) in sorted(twin.metrics.items())},
        "attributes": {name: text for name, (_, text) in sorted(twin.attributes.items())},
    }


@click.group()
def devices() -> None:
    """Device twins: latest values, meta, liveness."""


@devices.command("list")
@JSON
@click.pass_context
def devices_list(ctx: click.Context, as_json: bool) -> None:
    """List every known device."""
    settings = settings_of(ctx)
    twins = asyncio.run(load_twins(settings))
    now, timeout = now_ms(), settings.devices.inactivity_timeout
    rows = [_device_json(twin, now, timeout) for twin in twins]
    if as_json:
        echo_json(rows)
        return
    shown = table("device", "online", "model", "last seen", "metrics")
    for row, twin in zip(rows, twins, strict=True):
        ago = (
            "-" if twin.last_seen_ms is None else format_duration((now - twin.last_seen_ms) / 1000)
        )
        metrics = row["metrics"]
        assert isinstance(metrics, dict)
        values = ", ".join(f"{k}={v:g}" for k, v in list(metrics.items())[:4])
        more = f" (+{len(metrics) - 4})" if len(metrics) > 4 else ""
        online = text("yes", "green") if row["online"] else text("no", "red")
        add_row(shown, twin.id, online, row["model"] or "-", f"{ago} ago", values + more)
    console.print(shown)
    if not rows:
        say(f"no devices yet in {settings.data_dir}")


@devices.command("show")
@click.argument("device")
@JSON
@click.pass_context
def devices_show(ctx: click.Context, device: str, as_json: bool) -> None:
    """Show one device's twin."""
    settings = settings_of(ctx)
    twins = {twin.id: twin for twin in asyncio.run(load_twins(settings))}
    twin = twins.get(device)
    if twin is None:
        raise click.ClickException(f"unknown device {device!r}")
    data = _device_json(twin, now_ms(), settings.devices.inactivity_timeout)
    data["meta"] = twin.meta
    data["metric_times"] = {name: iso(ts) for name, (ts, _) in sorted(twin.metrics.items())}
    data["first_seen"] = iso(twin.first_seen_ms)
    # What the device sent under other names, in other units, or that was not stored.
    data["sent_as"] = dict(sorted(twin.names.items()))
    data["units"] = dict(sorted(twin.units.items()))
    data["dropped_fields"] = {
        name: {"reason": reason, "count": count, "last": iso(last_ms)}
        for name, (reason, count, last_ms) in twin.dropped.items()
    }
    if twin.origin is not None:
        data["mapping"] = twin.origin.mapping
        data["topic_segments"] = dict(twin.origin.segments)
    if as_json:
        echo_json(data)
        return
    print_mapping(data)


async def _query(
    settings: Settings, device: str, metric: str, start: int, end: int, limit: int | None
) -> list[tuple[int, float]]:
    if not (settings.data_dir / "series.db").exists():
        return []
    store = build_series_store(settings)
    await store.open()
    try:
        return await store.query_range(device, metric, start, end, limit)
    finally:
        await store.close()


@click.command()
@click.argument("device")
@click.argument("metric")
@click.option("--since", type=DURATION, default="1h", show_default=True, help="How far back.")
@click.option("--until", type=DURATION, default="0s", show_default=True, help="Up to how long ago.")
@click.option("--limit", type=int, default=None, help="At most this many points.")
@click.option("--json", "as_json", is_flag=True, help="JSON list of [ts_ms, value] pairs.")
@click.pass_context
def query(
    ctx: click.Context,
    device: str,
    metric: str,
    since: float,
    until: float,
    limit: int | None,
    as_json: bool,
) -> None:
    """Print stored points of DEVICE's METRIC."""
    now = now_ms()
    start, end = now - int(since * 1000), now - int(until * 1000)
    points = asyncio.run(_query(settings_of(ctx), device, metric, start, end, limit))
    if as_json:
        echo_json([[ts, value] for ts, value in points])
        return
    shown = table("time (UTC)", metric)
    for ts, value in points:
        add_row(shown, iso(ts), f"{value:g}")
    console.print(shown)
    say(f"{len(points)} points")


@click.command("dead-letters")
@click.option("--limit", type=int, default=50, show_default=True)
@JSON
@click.pass_context
def dead_letters(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Show the newest rejected messages with their reason and raw bytes."""
    settings = settings_of(ctx)

    async def load() -> list[dict[str, object]]:
        async with state_db(settings) as state:
            letters = [] if state is None else await state.dead_letters(limit)
        return [
            {
                "received": iso(x.received_ms),
                "topic": x.topic,
                "device": x.device,
                "reason": x.reason,
                "detail": x.detail,
                "size": x.size,
                "payload": x.payload[:200].decode("utf-8", errors="replace"),
            }
            for x in letters
        ]

    rows = asyncio.run(load())
    if as_json:
        echo_json(rows)
        return
    shown = table("received", "topic", "reason", "detail", "bytes", "payload")
    for row in rows:
        detail, payload = str(row["detail"])[:60], str(row["payload"])[:60]
        add_row(shown, row["received"], row["topic"], row["reason"], detail, row["size"], payload)
    console.print(shown)
