"""The `frontline` command line: the root group and its commands, one module per command group.

Command modules import only `daemon.cli.output` (shared helpers), never each other; this module
puts them together.
"""

from __future__ import annotations

from pathlib import Path

import click

from daemon.cli import (
    alerts,
    config,
    detect,
    devices,
    init,
    mappings,
    models,
    replay,
    rules,
    run,
    tickets,
)
from daemon.config import load_settings
from daemon.errors import FrontlineError


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


COMMANDS = (
    init.init,
    run.run,
    run.demo,
    run.simulate,
    replay.replay_command,
    mappings.mappings,
    config.config,
    devices.devices,
    devices.query,
    devices.dead_letters,
    rules.check,
    rules.test_command,
    alerts.alerts,
    rules.explain,
    rules.backtest,
    rules.reload,
    rules.evaluate,
    tickets.tickets,
    tickets.notices,
    models.train_command,
    models.models,
    detect.detect_command,
)
for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli()


__all__ = ["cli", "main"]
