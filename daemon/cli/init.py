"""`frontline init`: write a starter layout (settings, rules, routing, customers, presets)."""

from __future__ import annotations

import shlex
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import click

from daemon.cli.output import echo

#: the starter files, shipped in the package under daemon/starter/, written at the same paths
STARTER = (
    "frontline.yaml",
    "rules/starter.yaml",
    "rules/service/routing.yaml",
    "rules/service/customers.yaml",
)


def _package_dir(name: str) -> Traversable:
    return files("daemon").joinpath(name)


def available_presets() -> list[str]:
    """The names of the shipped presets (daemon/presets/NAME.yaml)."""
    folder = _package_dir("presets")
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def plan(directory: Path, presets: tuple[str, ...]) -> list[tuple[Traversable, Path]]:
    """(source, target) of every file to write; ClickException for an unknown preset."""
    known = available_presets()
    unknown = [name for name in presets if name not in known]
    if unknown:
        names = ", ".join(known) or "none ship with this version"
        raise click.ClickException(f"unknown preset {', '.join(unknown)} (available: {names})")
    starter = _package_dir("starter")
    written = [(starter.joinpath(name), directory / name) for name in STARTER]
    for name in dict.fromkeys(presets):
        source = _package_dir("presets").joinpath(f"{name}.yaml")
        written.append((source, directory / "mappings" / f"{name}.yaml"))
    return written


@click.command("init")
@click.argument(
    "directory", required=False, default=".", type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--preset",
    "presets",
    multiple=True,
    metavar="NAME",
    help="Copy a shipped device preset to mappings/NAME.yaml (repeatable).",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init(directory: Path, presets: tuple[str, ...], force: bool) -> None:
    """Write a starter layout into DIRECTORY (default: here): frontline.yaml, rules/starter.yaml,
    rules/service/routing.yaml and customers.yaml, and the presets named, each commented.

    Existing files are left alone, and nothing is written, unless --force."""
    files_to_write = plan(directory, presets)
    existing = [target for _, target in files_to_write if target.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise click.ClickException(f"not overwriting {names} (use --force); nothing written")
    for source, target in files_to_write:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        echo(f"wrote {target}")
    echo("next: set your broker in frontline.yaml (mqtt.host, mqtt.port), then")
    if directory.resolve() != Path.cwd().resolve():
        echo(f"  cd {shlex.quote(str(directory))}")
    echo("  frontline --config frontline.yaml check")
    echo("  frontline --config frontline.yaml run")
