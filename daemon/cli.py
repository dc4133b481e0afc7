"""The `frontline` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from daemon.app import App, build_series_store, build_state_store, now_ms
from daemon.config import Settings, effective_settings, load_settings
from daemon.core.durations import format_duration, parse_duration
from daemon.core.twin import DeviceTwin
from daemon.errors import FrontlineError

# Piped output (CI logs, `| tee`) gets a width that fits the demo's table instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def _echo_json(data: object) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FRONTLINE_CONFIG",
    help="YAML settings file (FRONTLINE_* environment variables override it).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Frontline: proactive service for connected devices."""
    try:
        ctx.obj = load_settings(config_path)
    except FrontlineError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon until SIGTERM/SIGINT."""
    settings = _settings(ctx)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(App(settings).run())
    except FrontlineError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective settings, secrets masked."""
    data = effective_settings(_settings(ctx))
    if as_json:
        _echo_json(data)
        return
    _print_mapping(data)


def _print_mapping(data: dict[str, Any]) -> None:
    """Print two levels of a mapping as YAML-looking text."""
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for inner, inner_value in value.items():
                click.echo(f"  {inner}: {_yaml_scalar(inner_value)}")
        else:
            click.echo(f"{key}: {_yaml_scalar(value)}")


def _yaml_scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def _load_twins(settings: Settings) -> list[DeviceTwin]:
    if not (settings.data_dir / "state.db").exists():
        return []
    state = build_state_store(settings)
    await state.open()
    try:
        return [DeviceTwin.from_dict(data) for data in await state.load_twins()]
    finally:
        await state.close()


def _device_json(twin: DeviceTwin, now: int, timeout: float) -> dict[str, object]:
    return {
        "id": twin.id,
        "online": twin.online(now, timeout),
        "status": twin.status,
        "last_seen": _iso(twin.last_seen_ms) if twin.last_seen_ms else None,
        "last_seen_ms": twin.last_seen_ms,
        "model": twin.meta.get("model"),
        "customer": twin.meta.get("customer"),
        "location": twin.meta.get("location"),
        "metrics": {name: value for name, (_, value) in sorted(twin.metrics.items())},
        "attributes": {name: text for name, (_, text) in sorted(twin.attributes.items())},
    }


@cli.group()
def devices() -> None:
    """Device twins: latest values, meta, liveness."""


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def devices_list(ctx: click.Context, as_json: bool) -> None:
    """List every known device."""
    settings = _settings(ctx)
    twins = asyncio.run(_load_twins(settings))
    now, timeout = now_ms(), settings.devices.inactivity_timeout
    rows = [_device_json(twin, now, timeout) for twin in twins]
    if as_json:
        _echo_json(rows)
        return
    table = Table("device", "online", "model", "last seen", "metrics")
    for row, twin in zip(rows, twins, strict=True):
        ago = (
            "-" if twin.last_seen_ms is None else format_duration((now - twin.last_seen_ms) / 1000)
        )
        metrics = row["metrics"]
        assert isinstance(metrics, dict)
        shown = ", ".join(f"{k}={v:g}" for k, v in list(metrics.items())[:4])
        more = f" (+{len(metrics) - 4})" if len(metrics) > 4 else ""
        online = "[green]yes[/]" if row["online"] else "[red]no[/]"
        table.add_row(twin.id, online, str(row["model"] or "-"), f"{ago} ago", shown + more)
    console.print(table)
    if not rows:
        console.print(f"no devices yet in {settings.data_dir}")


@devices.command("show")
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def devices_show(ctx: click.Context, device: str, as_json: bool) -> None:
    """Show one device's twin."""
    settings = _settings(ctx)
    twins = {twin.id: twin for twin in asyncio.run(_load_twins(settings))}
    twin = twins.get(device)
    if twin is None:
        raise click.ClickException(f"unknown device {device!r}")
    data = _device_json(twin, now_ms(), settings.devices.inactivity_timeout)
    data["meta"] = twin.meta
    data["metric_times"] = {name: _iso(ts) for name, (ts, _) in sorted(twin.metrics.items())}
    data["first_seen"] = _iso(twin.first_seen_ms)
    if as_json:
        _echo_json(data)
        return
    _print_mapping(data)


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


@cli.command()
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
    points = asyncio.run(
        _query(
            _settings(ctx), device, metric, now - int(since * 1000), now - int(until * 1000), limit
        )
    )
    if as_json:
        _echo_json([[ts, value] for ts, value in points])
        return
    table = Table("time (UTC)", metric)
    for ts, value in points:
        table.add_row(_iso(ts), f"{value:g}")
    console.print(table)
    console.print(f"{len(points)} points")


@cli.command("dead-letters")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def dead_letters(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Show the newest rejected messages with their reason and raw bytes."""
    settings = _settings(ctx)

    async def load() -> list[dict[str, object]]:
        if not (settings.data_dir / "state.db").exists():
            return []
        state = build_state_store(settings)
        await state.open()
        try:
            letters = await state.dead_letters(limit)
        finally:
            await state.close()
        return [
            {
                "received": _iso(x.received_ms),
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
        _echo_json(rows)
        return
    table = Table("received", "topic", "reason", "detail", "bytes")
    for row in rows:
        table.add_row(
            str(row["received"]),
            str(row["topic"]),
            str(row["reason"]),
            str(row["detail"])[:60],
            str(row["size"]),
        )
    console.print(table)


@cli.command()
@click.option("--devices", type=click.IntRange(1, 100_000), help="Fleet size [scenario's, or 10].")
@click.option("--interval", type=DURATION, help="Between messages per device [scenario's, or 5s].")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fault", "faults", multiple=True, help="KIND:DEVICE[:METRIC][:KEY=VALUE]...")
@click.option("--ground-truth", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--duration", type=DURATION, default=None, help="Stop after this long.")
@click.option("--seed", type=int, default=None, help="Random seed [scenario's, or 0].")
@click.pass_context
def simulate(
    ctx: click.Context,
    devices: int | None,
    interval: float | None,
    scenario: Path | None,
    faults: tuple[str, ...],
    ground_truth: Path | None,
    duration: float | None,
    seed: int | None,
) -> None:
    """Drive a simulated fleet against the configured broker (docs/simulators.md)."""
    from daemon.demo import fleet_options, run_fleet

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        options = fleet_options(
            _settings(ctx),
            scenario,
            faults,
            devices=devices,
            interval=interval,
            ground_truth=ground_truth,
            duration=duration,
            seed=seed,
        )
        asyncio.run(run_fleet(options, console))
    except ValueError as exc:  # bad flags, scenario or fault targets
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("--devices", type=click.IntRange(1, 5000), default=20, show_default=True)
@click.option("--duration", type=DURATION, default=None, help="End by itself after this long.")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--interval", type=DURATION, default=None, help="Per device [scenario's].")
@click.option("--keep", is_flag=True, help="Keep the demo's data directory.")
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "embedded"]),
    default="auto",
    show_default=True,
    help="auto: Mosquitto if installed, else the embedded Python broker.",
)
def demo(
    devices: int,
    duration: float | None,
    scenario: Path | None,
    interval: float | None,
    keep: bool,
    broker: str,
) -> None:
    """Broker + simulated fleet with faults + daemon, with a live summary."""
    from daemon.demo import Demo

    try:
        code = asyncio.run(Demo(devices, duration, scenario, interval, keep, console, broker).run())
    except (FrontlineError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


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
        detail = "\n".join(answer.get("problems", [])) or answer.get("error", exc.reason)
        raise click.ClickException(f"{detail}") from exc
    except OSError as exc:
        raise click.ClickException(
            f"daemon not reachable on {host}:{settings.http.port}: {exc}"
        ) from exc


def main() -> None:
    cli()


# The command modules register themselves on `cli` when imported.
from daemon import cli_rules, cli_tickets  # noqa: E402, F401
