"""Rule commands: check, test, explain, backtest, and reload / evaluate in the running daemon."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from daemon.adapters.layout import absent_defaults, explicit, paths_to_read
from daemon.adapters.mapping_files import MappingFileSet, is_mapping_file, load_mappings
from daemon.adapters.model_files import is_model_file, load_models, model_paths
from daemon.adapters.rule_files import load_rules, load_valid_rules, rule_paths
from daemon.adapters.service_files import check_service_files
from daemon.app import build_series_store, now_ms
from daemon.cli.output import (
    DURATION,
    add_row,
    console,
    echo,
    echo_json,
    iso,
    load_alert_states,
    load_twins,
    post_to_daemon,
    say,
    settings_of,
    table,
    text,
)
from daemon.config import Settings
from daemon.core.durations import format_duration
from daemon.core.engine import DeviceContext, Verdict, Watch, explain_rule, matches
from daemon.core.expr import MODEL_FUNCTIONS, model_refs, quoted_metrics
from daemon.core.mappings import DeviceMapping, MappingSet
from daemon.core.payloads import canonical_name
from daemon.core.replay import horizons, replay
from daemon.core.twin import DeviceTwin
from daemon.core.units import UnitError, conversion
from daemon.core.windows import SeriesWindows
from daemon.errors import ConfigProblem, RuleFileInvalid
from daemon.rules import alert_params
from daemon.ruletest import run_test_files

PATHS = click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
FILE = click.Path(dir_okay=False, path_type=Path)


def _rules_or_exit(settings: Settings, paths: tuple[Path, ...]) -> list[Any]:
    try:
        chosen = paths or paths_to_read(settings.rules, "paths")
        return load_valid_rules(chosen, settings.rules.max_window)
    except RuleFileInvalid as exc:
        for problem in exc.problems:
            echo(problem, err=True)
        raise click.ClickException(f"{len(exc.problems)} problem(s) in the rule files") from exc


@click.command()
@PATHS
@click.option("--routing", type=FILE, help="Routing file to check [actions.routing].")
@click.option("--customers", type=FILE, help="Customers file to check [actions.customers].")
@click.pass_context
def check(
    ctx: click.Context, paths: tuple[Path, ...], routing: Path | None, customers: Path | None
) -> None:
    """Validate rule files and model specs (default: the configured ones) and the routing and
    customers files; print every problem with file:line:col.

    A file with a top-level `models:` key is a model spec (docs/models.md), one with `mappings:`
    a mapping (docs/devices.md), any other a rule file.
    """
    settings = settings_of(ctx)
    named = rule_paths(paths or paths_to_read(settings.rules, "paths"))
    spec_files = [p for p in named if is_model_file(p)]
    mapping_files = [p for p in named if is_mapping_file(p)]
    if not paths:
        spec_files += model_paths(paths_to_read(settings.models, "paths"))
    files = [p for p in named if p not in spec_files and p not in mapping_files]
    groups, problems = load_rules(files, settings.rules.max_window) if files else ([], [])
    for problem in problems:
        echo(problem)
    model_problems = _check_models(spec_files, settings.rules.max_window, groups)
    mapping_problems, mappings = _check_mappings(settings, mapping_files, bool(paths))
    _say_quoted(groups)
    # Rule files named alone: their units are checked against the configured mappings.
    unit_problems = _check_units(
        groups, None if paths and not mapping_files else mappings, settings
    )
    # A file named on the command line must exist; the settings' files follow the daemon's rule.
    services = check_service_files(
        routing or settings.actions.routing,
        customers or settings.actions.customers,
        require_routing=bool(routing) or explicit(settings.actions, "routing"),
        require_customers=bool(customers) or explicit(settings.actions, "customers"),
    )
    service_problems = [p for service in services for p in service.problems]
    for service_problem in service_problems:
        echo(service_problem)
    failed = bool(model_problems) or bool(mapping_problems) or bool(unit_problems)
    # Absent default folders are a warning, as for the daemon (the service files say their own).
    absent = {a.setting: a for a in ([] if paths else absent_defaults(settings))}
    for missing in absent.values():
        if not missing.said_by_loader:
            echo(f"warning: {missing.text}", err=True)
    if not files and not spec_files and not mapping_files and "rules.paths" not in absent:
        chosen = paths or settings.rules.paths
        echo(f"no rule files (*.yaml) in {', '.join(str(p) for p in chosen)}", err=True)
        failed = True
    elif files:
        failed = _report_rules(problems, files, groups) or failed
    for service in services:
        if service.warning:
            echo(f"warning: {service.warning}", err=True)
        elif not service.problems:
            echo(f"OK: {service.setting} {service.path or '-'}: {service.summary}")
    if service_problems:
        echo(f"{len(service_problems)} problem(s) in the routing and customers files", err=True)
    if failed or service_problems:
        sys.exit(1)


def _check_mappings(
    settings: Settings, named: list[Path], only_named: bool
) -> tuple[list[str], list[DeviceMapping]]:
    """Check mapping files: those named, else the configured ones and presets."""
    if only_named:
        if not named:
            return [], []
        found, problems = load_mappings(named)
    else:
        found_set, problems = _configured_mappings(settings)
        found = list(found_set.mappings)
        if not found and not problems:
            return [], []
    for problem in problems:
        echo(problem)
    if problems:
        echo(f"{len(problems)} problem(s) in the mappings", err=True)
        return [str(p) for p in problems], []
    routes = sum(len(m.routes) for m in found)
    names = ", ".join(m.name for m in found)
    echo(f"OK: {len(found)} mapping(s) ({names}), {routes} route(s)")
    return [], found


def _configured_mappings(settings: Settings) -> tuple[MappingSet, list[ConfigProblem]]:
    paths = paths_to_read(settings.mappings, "paths")
    return MappingFileSet(paths, settings.mappings.presets).load()


def _declared_units(mappings: list[DeviceMapping]) -> dict[str, dict[str, str]]:
    """Metric -> mapping -> the unit its routes give it (after `convert`).

    Under a templated prefix (`{component}`) a metric is keyed by its own name, and a rule's
    metric matches it by its end (`switch_0_apower`).
    """
    declared: dict[str, dict[str, str]] = {}
    for mapping in mappings:
        for route in mapping.routes:
            fixed = route.prefix if "{" not in route.prefix else ""
            for name, unit in route.units.items():
                key = canonical_name(f"{fixed}.{name}" if fixed else name)
                declared.setdefault(key, {})[mapping.name] = route.convert.get(name, unit)
    return declared


def _check_units(
    groups: list[Any], mappings: list[DeviceMapping] | None, settings: Settings
) -> list[str]:
    """Say where a rule's `units` convert a mapping's; a unit that cannot convert is a problem.

    `mappings` None: the configured ones (their own problems are not this check's).
    """
    if not any(rule.units for group in groups for rule in group.rules):
        return []
    if mappings is None:
        mappings = list(_configured_mappings(settings)[0].mappings)
    declared = _declared_units(mappings)
    problems = []
    for group in groups:
        for rule in group.rules:
            for metric, wanted in rule.units.items():
                found = {
                    mapping: unit
                    for key, units in declared.items()
                    if key == metric or metric.endswith(f"_{key}")
                    for mapping, unit in units.items()
                }
                for mapping, unit in found.items():
                    where = f"{rule.file}:{rule.line}: {rule.alert}: {metric}"
                    try:
                        convert = conversion(unit, wanted)
                    except UnitError as exc:
                        why = "" if exc.kind == "incompatible" else f" ({exc})"
                        said = f"in {unit} (mapping {mapping}); the rule expects {wanted}{why}"
                        problems.append(f"{where}: {said}")
                        continue
                    if unit != wanted and not convert.identity:
                        echo(f"{where}: converted from {unit} (mapping {mapping})")
    for problem in problems:
        echo(problem)
    if problems:
        echo(f"{len(problems)} problem(s) with the rules' units", err=True)
    return problems


def _say_quoted(groups: list[Any]) -> None:
    """Say which canonical name each `metric("...")` reads (docs/devices.md, "Names")."""
    for group in groups:
        for rule in group.rules:
            for quoted, canonical in quoted_metrics(rule.expr).items():
                if quoted != canonical:
                    where = f"{rule.file}:{rule.line}: {rule.alert}"
                    echo(f'{where}: metric("{quoted}") reads {canonical}')


def _report_rules(problems: list[Any], files: list[Path], groups: list[Any]) -> bool:
    """Print the rule files' outcome; return whether they failed."""
    if problems:
        echo(f"{len(problems)} problem(s) in {len(files)} file(s)", err=True)
        return True
    rules = sum(len(g.rules) for g in groups)
    echo(f"OK: {len(files)} file(s), {len(groups)} group(s), {rules} rule(s)")
    return False


def _check_models(files: list[Path], max_window: float, groups: list[Any]) -> list[str]:
    """Check model specs, and that the rules' anomaly()/rul() name models of the right kind."""
    if not files:
        return []
    specs, found = load_models(files, max_window)
    problems = [str(p) for p in found]
    if not found:
        kinds = {s.name: s.kind for s in specs}
        for group in groups:
            for rule in group.rules:
                for name, func in model_refs(rule.expr).items():
                    kind = kinds.get(name)
                    where = f"{rule.file}:{rule.line}"
                    if kind is None:
                        problems.append(
                            f"{where}: {rule.alert}: {func}({name!r}) names no model spec"
                        )
                    elif MODEL_FUNCTIONS[func] != kind:
                        problems.append(
                            f"{where}: {rule.alert}: {func}({name!r}) reads a {kind} model"
                        )
    for problem in problems:
        echo(problem)
    if problems:
        echo(f"{len(problems)} problem(s) in the model specs", err=True)
    else:
        echo(f"OK: {len(files)} model file(s), {len(specs)} model(s)")
    return problems


@click.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def test_command(paths: tuple[Path, ...]) -> None:
    """Run operator rule tests (YAML); exit 1 if any fails."""
    results = run_test_files(paths)
    failed = [r for r in results if not r.ok]
    for result in results:
        mark = text("PASS", "green") if result.ok else text("FAIL", "red")
        say(mark, f" {result.file}: {result.name}")
        for failure in result.failures:
            say(f"    {failure}")
    echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)


async def _explain(settings: Settings, device: str, alert: str | None) -> list[Verdict]:
    groups = _rules_or_exit(settings, ())
    twins, states = await load_twins(settings), await load_alert_states(settings)
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


@click.command()
@click.argument("device")
@click.argument("alert", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def explain(ctx: click.Context, device: str, alert: str | None, as_json: bool) -> None:
    """Say, for each rule matching DEVICE, why it fires or why not."""
    verdicts = asyncio.run(_explain(settings_of(ctx), device, alert))
    if as_json:
        echo_json([v.to_dict() for v in verdicts])
        return
    if not verdicts:
        echo(f"no rule matches {device}" + (f" named {alert}" if alert else ""))
        return
    for verdict in verdicts:
        colour = {"firing": "red", "pending": "yellow", "resolved": "green"}.get(
            verdict.phase, "dim"
        )
        say(
            text(verdict.alert, "bold"),
            f" ({verdict.group}) on {verdict.device}: ",
            text(verdict.phase, colour),
        )
        for detail in verdict.details:
            say(f"  {detail}")


async def _backtest(
    settings: Settings, paths: tuple[Path, ...], since: float
) -> tuple[list[dict[str, object]], int]:
    groups = _rules_or_exit(settings, paths)
    twins = await load_twins(settings)
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
    fresh = {
        d: DeviceTwin(d, first_seen_ms=start, meta=t.meta, units=t.units)
        for d, t in selected.items()
    }
    result = replay(groups, fresh, samples, start, now, lambda r: alert_params(settings.rules, r))
    rows: list[dict[str, object]] = [
        {
            "at": iso(t.at_ms),
            "alert": t.alert,
            "device": t.device,
            "from": t.from_phase.value,
            "to": t.to_phase.value,
            "value": t.value,
        }
        for t in result.transitions
    ]
    return rows, result.evaluations


@click.command()
@PATHS
@click.option("--since", type=DURATION, default="7d", show_default=True, help="How far back.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def backtest(ctx: click.Context, paths: tuple[Path, ...], since: float, as_json: bool) -> None:
    """Replay stored history through rules; print what would have fired and when."""
    rows, evaluations = asyncio.run(_backtest(settings_of(ctx), paths, since))
    if as_json:
        echo_json(rows)
        return
    shown = table("time (UTC)", "alert", "device", "transition", "value")
    for row in rows:
        change = f"{row['from']} -> {row['to']}"
        add_row(shown, row["at"], row["alert"], row["device"], change, row["value"])
    console.print(shown)
    fired = sum(1 for r in rows if r["to"] == "firing")
    over = format_duration(since)
    say(f"{evaluations} group evaluations over {over}: {fired} firing transitions")


@click.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Ask the running daemon to reload its rules (same as SIGHUP); print the outcome."""
    try:
        result = post_to_daemon(settings_of(ctx), "/api/v1/rules/reload", {})
    except click.ClickException as exc:
        for problem in str(exc.message).split("\n"):
            echo(problem, err=True)
        raise click.ClickException("reload rejected; the previous rules keep running") from exc
    echo(f"reloaded: {result['groups']} groups, {result['rules']} rules")


@click.command()
@click.argument("group")
@click.pass_context
def evaluate(ctx: click.Context, group: str) -> None:
    """Evaluate a scheduled (usage) rule group now in the running daemon."""
    result = post_to_daemon(settings_of(ctx), f"/api/v1/rules/groups/{group}/evaluate", {})
    for t in result["transitions"]:
        echo(f"{t['alert']} on {t['device']}: {t['from_phase']} -> {t['to_phase']}")
    echo(f"{len(result['transitions'])} transition(s)")
