"""`config show`: the effective settings, secrets masked."""

from __future__ import annotations

import click

from daemon.cli.output import echo_json, print_mapping, settings_of
from daemon.config import effective_settings


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective settings, secrets masked."""
    data = effective_settings(settings_of(ctx))
    if as_json:
        echo_json(data)
        return
    print_mapping(data)
