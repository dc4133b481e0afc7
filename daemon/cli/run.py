"""Process commands: the daemon itself (`run`), a simulated fleet (`simulate`) and the `demo`."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from daemon.app import App
from daemon.cli.output import DURATION, settings_of
from daemon.errors import FrontlineError


def _demo_console() -> Console:
    # The demo and the simulator style their own messages with markup; what they print comes from
    # the simulated fleet they drive, not from outside, so markup stays on here.
    return Console(width=None if sys.stdout.isatty() else 120)


@click.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon until SIGTERM/SIGINT."""
    settings = settings_of(ctx)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(App(settings).run())
    except FrontlineError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--devices", type=click.IntRange(1, 100_000), help="Fleet size [scenario's, or 10].")
@click.option("--interval", type=DURATION, help="Between messages per device [scenario's, or 5s].")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fault", "faults", multiple=True, help="KIND:DEVICE[:METRIC][:KEY=VALUE]...")
@click.option("--ground-truth", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--duration", type=DURATION, default=None, help="Stop after this long.")
@click.option("--seed", type=int, default=None, help="Random seed [scenario's, or 0].")
@click.option(
    "--history",
    "history_mode",
    type=click.Choice(["before", "only", "skip"]),
    default=None,
    help="The scenario's past telemetry: publish it before the live run [before], only it, "
    "or skip it.",
)
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
    history_mode: str | None,
) -> None:
    """Drive a simulated fleet against the configured broker (docs/simulators.md)."""
    from daemon.demo import fleet_options, run_fleet

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        options = fleet_options(
            settings_of(ctx),
            scenario,
            faults,
            devices=devices,
            interval=interval,
            ground_truth=ground_truth,
            duration=duration,
            seed=seed,
            history_mode=history_mode,
        )
        asyncio.run(run_fleet(options, _demo_console()))
    except (ValueError, ConnectionError) as exc:  # bad flags, scenario, targets; no broker
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


@click.command()
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

    console = _demo_console()
    try:
        code = asyncio.run(Demo(devices, duration, scenario, interval, keep, console, broker).run())
    except (FrontlineError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
