"""Rule commands of the CLI: check, test, alerts, explain, backtest, reload."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from daemon.adapters.rule_files import load_rules, rule_paths
from daemon.app import build_series_store, build_state_store, now_ms
from daemon.cli import DURATION, _echo_json, _iso, _settings, cli, console, post_to_daemon
from daemon.config import Settings
from daemon.core.alerts import AlertState, Phase
from daemon.core.durations import format_duration
from daemon.core.engine import DeviceContext, Verdict, Watch, explain_rule, matches
from daemon.core.replay import horizons, replay
from daemon.core.twin import DeviceTwin
from daemon.core.windows import SeriesWindows
from daemon.rules import RuleFileInvalid, alert_params, load_valid_rules
from daemon.ruletest import run_test_files

PATHS = click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))


def _rules_or_exit(settings: Settings, paths: tuple[Path, ...]) -> list[Any]:
    try:
        return load_valid_rules(paths or settings.rules.paths)
    except RuleFileInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(f"{len(exc.problems)} problem(s) in the rule files") from exc


@cli.command()
@PATHS
@click.pass_context
def check(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Validate rule files (default: the configured rules); print every problem."""
    chosen = paths or _settings(ctx).rules.paths
    groups, problems = load_rules(chosen)
    for problem in problems:
        click.echo(str(problem))
    files = rule_paths(chosen)
    rules = sum(len(g.rules) for g in groups)
    if not files:
        click.echo(f"no rule files (*.yaml) in {', '.join(str(p) for p in chosen)}", err=True)
        sys.exit(1)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {len(files)} file(s)", err=True)
        sys.exit(1)
    click.echo(f"OK: {len(files)} file(s), {len(groups)} group(s), {rules} rule(s)")


@cli.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def test_command(paths: tuple[Path, ...]) -> None:
    """Run operator rule tests (YAML); exit 1 if any fails."""
    results = run_test_files(paths)
    failed = [r for r in results if not r.ok]
    for result in results:
        mark = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
        console.print(f"{mark} {result.file}: {result.name}", highlight=False)
        for failure in result.failures:
            console.print(f"    {failure}", highlight=False, markup=False)
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)


async def _load_state(settings: Settings) -> tuple[list[DeviceTwin], list[AlertState]]:
    if not (settings.data_dir / "state.db").exists():
        return [], []
    state = build_state_store(settings)
    await state.open()
    try:
        twins = [DeviceTwin.from_dict(data) for data in await state.load_twins()]
        alerts = [AlertState.from_json(data) for data in await state.load_alerts()]
    finally:
        await state.close()
    return twins, alerts


def _alert_row(alert: AlertState, now: int) -> dict[str, object]:
    since = alert.fired_at_ms if alert.phase is Phase.FIRING else alert.active_since_ms
    if alert.phase is Phase.RESOLVED:
        since = alert.resolved_at_ms
    return {
        "alert": alert.alert, "device": alert.device, "phase": alert.phase.value,
        "since": _iso(since), "for": format_duration((now - since) / 1000) if since else None,
        "value": alert.value, "labels": dict(alert.labels), "annotations": dict(alert.annotations),
        "flapping": alert.flapping, "dry_run": alert.dry_run, "group": alert.group,
    }  # fmt: skip


async def _history(settings: Settings, limit: int, device: str | None) -> list[dict[str, Any]]:
    if not (settings.data_dir / "state.db").exists():
        return []
    state = build_state_store(settings)
    await state.open()
    try:
        return list(reversed(await state.alert_events(limit, device)))
    finally:
        await state.close()


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include resolved alerts.")
@click.option("--history", is_flag=True, help="Show the latest transitions instead.")
@click.option("--device", help="With --history: only this device.")
@click.option("--limit", type=int, default=50, show_default=True, help="With --history.")
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
        events = asyncio.run(_history(_settings(ctx), limit, device))
        if as_json:
            _echo_json(events)
            return
        table = Table("time (UTC)", "alert", "device", "transition", "value")
        for e in events:
            change = f"{e['from_phase']} -> {e['to_phase']}"
            table.add_row(_iso(e["at_ms"]), e["alert"], e["device"], change, str(e["value"]))
        console.print(table)
        return
    _, states = asyncio.run(_load_state(_settings(ctx)))
    shown = {Phase.PENDING, Phase.FIRING} | ({Phase.RESOLVED} if show_all else set())
    now = now_ms()
    rows = [
        _alert_row(a, now)
        for a in sorted(states, key=lambda a: (a.device, a.alert))
        if a.phase in shown
    ]
    if as_json:
        _echo_json(rows)
        return
    table = Table("alert", "device", "phase", "for", "value", "labels", "summary")
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
        table.add_row(
            str(row["alert"]), str(row["device"]), phase, str(row["for"] or "-"), str(row["value"]),
            ", ".join(f"{k}={v}" for k, v in labels.items()), str(annotations.get("summary", "")),
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print("no alerts")


async def _explain(settings: Settings, device: str, alert: str | None) -> list[Verdict]:
    groups = _rules_or_exit(settings, ())
    twins, states = await _load_state(settings)
    twin = next((t for t in twins if t.id == device), None)
    if twin is None:
        raise click.ClickException(f"unknown device {device!r}")
    windows = SeriesWindows(horizons(groups))
    now = now_ms()
    if (settings.data_dir / "series.db").exists():
        series = build_series_store(settings)
        await series.open()
        try:
            for metric, seconds in windows.horizons.items():
                start = now - int(max(seconds, 1.0) * 1000)
                for ts, value in await series.query_range(device, metric, start, now):
                    windows.add(device, metric, ts, value)
        finally:
            await series.close()
    # The CLI cannot see the daemon's connection; it judges liveness from the stored data.
    watch = Watch(True, 0, 0)
    context = DeviceContext(twin, windows, now, watch, settings.devices.inactivity_timeout)
    by_key = {(s.device, s.alert, tuple(sorted(s.labels.items()))): s for s in states}
    verdicts = []
    for group in groups:
        if not matches(group.match, twin):
            continue
        for rule in group.rules:
            if alert is not None and rule.alert != alert:
                continue
            state = by_key.get((device, rule.alert, tuple(sorted(rule.labels.items()))))
            params = alert_params(settings.rules, rule)
            verdicts.append(explain_rule(group, rule, context, state, params))
    return verdicts


@cli.command()
@click.argument("device")
@click.argument("alert", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def explain(ctx: click.Context, device: str, alert: str | None, as_json: bool) -> None:
    """Say, for each rule matching DEVICE, why it fires or why not."""
    verdicts = asyncio.run(_explain(_settings(ctx), device, alert))
    if as_json:
        _echo_json([v.to_dict() for v in verdicts])
        return
    if not verdicts:
        click.echo(f"no rule matches {device}" + (f" named {alert}" if alert else ""))
        return
    for verdict in verdicts:
        colour = {"firing": "red", "pending": "yellow", "resolved": "green"}.get(
            verdict.phase, "dim"
        )
        console.print(
            f"[bold]{verdict.alert}[/] ({verdict.group}) on {verdict.device}: "
            f"[{colour}]{verdict.phase}[/]",
            highlight=False,
        )
        for line in verdict.details:
            console.print(f"  {line}", highlight=False, markup=False)


async def _backtest(
    settings: Settings, paths: tuple[Path, ...], since: float
) -> tuple[list[dict[str, object]], int]:
    groups = _rules_or_exit(settings, paths)
    twins, _ = await _load_state(settings)
    needed = horizons(groups)
    now = now_ms()
    start = now - int(since * 1000)
    longest = int(max([*needed.values(), 0.0]) * 1000)
    samples: list[tuple[int, str, str, float]] = []
    selected = {t.id: t for t in twins if any(matches(g.match, t) for g in groups)}
    series = build_series_store(settings)
    await series.open()
    try:
        for device in selected:
            for metric in needed:
                points = await series.query_range(device, metric, start - longest, now)
                samples.extend((ts, device, metric, value) for ts, value in points)
    finally:
        await series.close()
    samples.sort()
    fresh = {d: DeviceTwin(d, first_seen_ms=start, meta=t.meta) for d, t in selected.items()}
    result = replay(groups, fresh, samples, start, now, lambda r: alert_params(settings.rules, r))
    rows: list[dict[str, object]] = [
        {
            "at": _iso(t.at_ms),
            "alert": t.alert,
            "device": t.device,
            "from": t.from_phase.value,
            "to": t.to_phase.value,
            "value": t.value,
        }
        for t in result.transitions
    ]
    return rows, result.evaluations


@cli.command()
@PATHS
@click.option("--since", type=DURATION, default="7d", show_default=True, help="How far back.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def backtest(ctx: click.Context, paths: tuple[Path, ...], since: float, as_json: bool) -> None:
    """Replay stored history through rules; print what would have fired and when."""
    rows, evaluations = asyncio.run(_backtest(_settings(ctx), paths, since))
    if as_json:
        _echo_json(rows)
        return
    table = Table("time (UTC)", "alert", "device", "transition", "value")
    for row in rows:
        table.add_row(
            str(row["at"]),
            str(row["alert"]),
            str(row["device"]),
            f"{row['from']} -> {row['to']}",
            str(row["value"]),
        )
    console.print(table)
    fired = sum(1 for r in rows if r["to"] == "firing")
    console.print(
        f"{evaluations} group evaluations over {format_duration(since)}: {fired} firing transitions"
    )


@cli.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Ask the running daemon to reload its rules (same as SIGHUP); print the outcome."""
    try:
        result = post_to_daemon(_settings(ctx), "/api/v1/rules/reload", {})
    except click.ClickException as exc:
        for problem in str(exc.message).split("\n"):
            click.echo(problem, err=True)
        raise click.ClickException("reload rejected; the previous rules keep running") from exc
    click.echo(f"reloaded: {result['groups']} groups, {result['rules']} rules")


@cli.command()
@click.argument("group")
@click.pass_context
def evaluate(ctx: click.Context, group: str) -> None:
    """Evaluate a scheduled (usage) rule group now in the running daemon."""
    result = post_to_daemon(_settings(ctx), f"/api/v1/rules/groups/{group}/evaluate", {})
    for t in result["transitions"]:
        click.echo(f"{t['alert']} on {t['device']}: {t['from_phase']} -> {t['to_phase']}")
    click.echo(f"{len(result['transitions'])} transition(s)")
