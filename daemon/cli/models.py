"""Model commands: `frontline train [MODEL]` and `frontline models list|show|rollback`.

They work on the data dir directly (the series store for history, `<data_dir>/models` for the
registry), with or without the daemon running; a running daemon picks up a new current version
within a couple of seconds (docs/models.md).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from daemon.adapters.layout import paths_to_read
from daemon.adapters.model_files import load_models
from daemon.adapters.model_registry import ModelRegistry
from daemon.app import build_series_store, now_ms
from daemon.cli.output import (
    add_row,
    console,
    echo,
    echo_json,
    load_twins,
    say,
    settings_of,
    table,
    text,
)
from daemon.config import Settings
from daemon.core.modelspec import ModelSpec
from daemon.errors import ModelArtefactError
from daemon.learning.trainer import NotEnoughData, train


def _specs_or_exit(settings: Settings, paths: tuple[Path, ...] = ()) -> list[ModelSpec]:
    chosen = paths or paths_to_read(settings.models, "paths")
    specs, problems = load_models(chosen, settings.rules.max_window)
    for problem in problems:
        echo(problem, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in the model specs")
    return specs


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.data_dir / "models")


@click.command("train")
@click.argument("names", nargs=-1)
@click.option("--models", "paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Spec files or folders [models.paths].")  # fmt: skip
@click.pass_context
def train_command(ctx: click.Context, names: tuple[str, ...], paths: tuple[Path, ...]) -> None:
    """Train models (default: every spec) from the stored history into the registry.

    Each model gets a new version that becomes current; a running daemon scores with it within
    seconds. A model whose history does not suffice yet is reported and left as it was."""
    settings = settings_of(ctx)
    specs = _specs_or_exit(settings, paths)
    if names:
        unknown = sorted(set(names) - {s.name for s in specs})
        if unknown:
            known = ", ".join(s.name for s in specs) or "none"
            raise click.ClickException(f"no model {', '.join(unknown)} (the specs have: {known})")
        specs = [s for s in specs if s.name in names]
    if not specs:
        raise click.ClickException("no model specs to train")
    failed = asyncio.run(_train_all(settings, specs))
    if failed:
        sys.exit(1)


async def _train_all(settings: Settings, specs: list[ModelSpec]) -> int:
    store = build_series_store(settings)
    await store.open()
    registry = _registry(settings)
    twins = await load_twins(settings)
    failed = 0
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("devices"), TimeElapsedColumn(), console=console, transient=False,
        ) as progress:  # fmt: skip
            for spec in specs:
                task = progress.add_task(f"{spec.name:<24}", total=None)

                def advance(done: int, total: int, task: Any = task) -> None:
                    progress.update(task, completed=done, total=total)

                try:
                    version, meta = await train(
                        spec, store, twins, registry, settings.models.keep_versions, now_ms(),
                        advance,
                    )  # fmt: skip
                except NotEnoughData as exc:
                    progress.update(task, description=f"{spec.name:<24} [yellow]not trained")
                    progress.console.print(f"  {exc}")
                    failed += 1
                    continue
                quality = _quality(meta)
                progress.update(task, description=f"{spec.name:<24} [green]v{version}")
                progress.console.print(
                    f"  {spec.name} v{version}: {meta['rows']} rows from {meta['devices']} "
                    f"device(s), fitted in {meta['fit_seconds']} s{quality}"
                )
    finally:
        await store.close()
    return failed


def _quality(meta: dict[str, Any]) -> str:
    quality = meta.get("params", {}).get("quality") or {}
    if not isinstance(quality, dict) or not quality:
        return ""
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in quality.items()]
    return "; " + ", ".join(parts[:4])


@click.group()
def models() -> None:
    """Trained models: list, show, roll back."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Every spec with its current version (and trained versions without a spec)."""
    settings = settings_of(ctx)
    specs = _specs_or_exit(settings)
    registry = _registry(settings)
    rows = []
    for spec in specs:
        versions = registry.versions(spec.name)
        current = next((v for v in versions if v.current), None)
        meta = current.meta if current else {}
        rows.append({
            "name": spec.name, "kind": spec.kind, "detector": spec.detector,
            "current": current.number if current else None, "versions": len(versions),
            "trained_at": meta.get("trained_at"), "rows": meta.get("rows"),
            "devices": meta.get("devices"), "error": meta.get("error"),
        })  # fmt: skip
    orphans = sorted(set(registry.names()) - {s.name for s in specs})
    if as_json:
        echo_json({"models": rows, "without_spec": orphans})
        return
    out = table("model", "kind", "detector", "current", "versions", "trained at", "rows", "devices")
    for row in rows:
        number = f"v{row['current']}" if row["current"] else text("untrained", "yellow")
        add_row(out, row["name"], row["kind"], row["detector"], number, row["versions"],
                row["trained_at"] or "-", row["rows"] or "-", row["devices"] or "-")  # fmt: skip
    console.print(out)
    for name in orphans:
        say(f"{name}: trained versions without a spec (ignored)")


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def models_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """One model: its spec and every version with its metadata and quality figures."""
    settings = settings_of(ctx)
    spec = next((s for s in _specs_or_exit(settings) if s.name == name), None)
    registry = _registry(settings)
    versions = registry.versions(name)
    if spec is None and not versions:
        raise click.ClickException(f"no model {name!r}")
    data = {
        "name": name,
        "spec": None if spec is None else _spec_dict(spec),
        "versions": [{"version": v.number, "current": v.current, **v.meta} for v in versions],
    }
    if as_json:
        echo_json(data)
        return
    if spec is not None:
        say(text(name, "bold"), f" ({spec.kind}, {spec.detector}) from {spec.source}")
        features = ", ".join(f.label for f in spec.features)
        say(f"  devices: {spec.match or 'all'}; features: {features}")
        say(f"  window {spec.window_s:g} s, scored every {spec.interval_s:g} s, "
            f"retrain {spec.retrain or 'never (manual)'}")  # fmt: skip
    else:
        say(text(name, "bold"), " (no spec: its versions are not used)")
    if not versions:
        say("  no trained version (run `frontline train " + name + "`)")
    for version in versions:
        meta = version.meta
        mark = "*" if version.current else " "
        if "error" in meta:
            say(f" {mark} v{version.number}: ", text(meta["error"], "red"))
            continue
        say(
            f" {mark} v{version.number}: trained {meta.get('trained_at')}, {meta.get('rows')} rows "
            f"from {meta.get('devices')} device(s){_quality(meta)}"
        )


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    return {
        "kind": spec.kind, "match": spec.match, "features": [f.label for f in spec.features],
        "window_s": spec.window_s, "interval_s": spec.interval_s, "detector": spec.detector,
        "params": spec.params, "retrain": spec.retrain, "source": spec.source,
        "threshold": {"quantile": spec.threshold.quantile, "factor": spec.threshold.factor},
        "unit": spec.unit if spec.kind == "rul" else None,
        "failure": spec.failure.describe() if spec.failure else None,
    }  # fmt: skip


@models.command("rollback")
@click.argument("name")
@click.option("--to", "version", type=int, help="The version to make current [the previous one].")
@click.pass_context
def models_rollback(ctx: click.Context, name: str, version: int | None) -> None:
    """Make an earlier version current (a running daemon switches within seconds)."""
    registry = _registry(settings_of(ctx))
    before = registry.current(name)
    try:
        number = registry.rollback(name, version)
    except ModelArtefactError as exc:
        raise click.ClickException(str(exc)) from exc
    say(f"{name}: v{number} is current (was v{before})")
