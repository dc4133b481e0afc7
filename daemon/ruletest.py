"""`frontline test`: operator rule tests in YAML, in the spirit of `promtool test rules`.

A test feeds series per device (compact notation, see daemon/core/notation.py) through the real
engine, evaluating every group on its own interval from t=0, and compares the alerts at given times
with what the test expects. Failures print what was expected and what happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from daemon.adapters.rule_files import load_rules
from daemon.config import RulesSettings
from daemon.core.alerts import AlertState, Phase
from daemon.core.durations import format_duration, parse_duration
from daemon.core.notation import expand_series
from daemon.core.replay import replay
from daemon.core.rulefmt import Group
from daemon.core.twin import DeviceTwin
from daemon.rules import alert_params

#: tests run on a fixed calendar so that results never depend on the day they run
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class RuleTestInvalid(ValueError):
    """A test file that cannot run (bad YAML, missing keys, bad series)."""


@dataclass
class DeviceInput:
    meta: dict[str, Any]
    series: dict[str, list[float | None]]
    status: dict[int, str]  # offset ms -> online/offline


@dataclass
class Expectation:
    at_ms: int
    firing: list[dict[str, Any]] | None
    pending: list[dict[str, Any]] | None


@dataclass
class Case:
    name: str
    interval_ms: int
    devices: dict[str, DeviceInput]
    expectations: list[Expectation]


@dataclass
class CaseResult:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _ms(value: object, what: str) -> int:
    try:
        return int(parse_duration(value) * 1000)  # type: ignore[arg-type]
    except ValueError as exc:
        raise RuleTestInvalid(f"{what}: {exc}") from exc


def _parse_case(raw: dict[str, Any], index: int) -> Case:
    name = str(raw.get("name", f"test #{index + 1}"))
    interval_ms = _ms(raw.get("interval", "1m"), f"{name}: interval")
    devices: dict[str, DeviceInput] = {}
    for device, given in (raw.get("devices") or {}).items():
        spec = given or {}
        try:
            series = {m: expand_series(str(v)) for m, v in (spec.get("series") or {}).items()}
        except ValueError as exc:
            raise RuleTestInvalid(f"{name}: {device}: {exc}") from exc
        status = {_ms(k, f"{name}: status"): str(v) for k, v in (spec.get("status") or {}).items()}
        devices[str(device)] = DeviceInput(dict(spec.get("meta") or {}), series, status)
    expectations = []
    for check in raw.get("alerts") or []:
        if "at" not in check:
            raise RuleTestInvalid(f"{name}: every entry under alerts needs `at:`")
        expectations.append(
            Expectation(_ms(check["at"], f"{name}: at"), check.get("firing"), check.get("pending"))
        )
    if not expectations:
        raise RuleTestInvalid(f"{name}: no `alerts:` expectations")
    return Case(name, interval_ms, devices, expectations)


def read_test_file(path: Path) -> tuple[list[Path], list[Case]]:
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as exc:
        raise RuleTestInvalid(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or "rule_files" not in data or "tests" not in data:
        raise RuleTestInvalid(f"{path}: needs `rule_files:` and `tests:`")
    rule_files = [path.parent / str(p) for p in data["rule_files"]]
    return rule_files, [_parse_case(raw or {}, i) for i, raw in enumerate(data["tests"])]


def _simulate(
    groups: list[Group], case: Case, settings: RulesSettings
) -> dict[int, dict[str, AlertState]]:
    """Run the engine over the case; return the alert states at each expectation time."""
    twins = {
        device: DeviceTwin(device, first_seen_ms=BASE_MS, meta=spec.meta)
        for device, spec in case.devices.items()
    }
    samples = sorted(
        (BASE_MS + i * case.interval_ms, device, metric, value)
        for device, spec in case.devices.items()
        for metric, values in spec.series.items()
        for i, value in enumerate(values)
        if value is not None
    )
    statuses = [
        (BASE_MS + offset, device, status)
        for device, spec in case.devices.items()
        for offset, status in spec.status.items()
    ]
    checkpoints = [BASE_MS + e.at_ms for e in case.expectations]
    result = replay(
        groups, twins, samples, BASE_MS, max(checkpoints),
        lambda rule: alert_params(settings, rule), checkpoints, statuses,
    )  # fmt: skip
    return {at - BASE_MS: states for at, states in result.snapshots.items()}


def _describe(entry: dict[str, Any]) -> str:
    labels = entry.get("labels")
    suffix = f" {labels}" if labels else ""
    return f"{entry.get('alert')} on {entry.get('device')}{suffix}"


def _compare(
    phase: Phase, expected: list[dict[str, Any]], got: list[AlertState], at: str
) -> list[str]:
    failures = []
    remaining = list(got)
    for want in expected:
        match = next(
            (
                s
                for s in remaining
                if s.alert == want.get("alert") and s.device == want.get("device")
            ),
            None,
        )
        if match is None:
            failures.append(f"at {at}: expected {phase.value} {_describe(want)}, but it is not")
            continue
        remaining.remove(match)
        for kind in ("labels", "annotations"):
            for key, value in (want.get(kind) or {}).items():
                actual = getattr(match, kind).get(key)
                if actual != str(value):
                    failures.append(
                        f"at {at}: {_describe(want)}: {kind}.{key}\n"
                        f"    expected: {value!r}\n         got: {actual!r}"
                    )
    for extra in remaining:
        failures.append(
            f"at {at}: unexpected {phase.value} {extra.alert} on {extra.device} "
            f"(value {extra.value})"
        )
    return failures


def run_case(groups: list[Group], case: Case, settings: RulesSettings, file: str) -> CaseResult:
    result = CaseResult(file, case.name)
    snapshots = _simulate(groups, case, settings)
    for expectation in case.expectations:
        states = snapshots.get(expectation.at_ms, {})
        at = format_duration(expectation.at_ms / 1000) or "0s"
        for phase, expected in (
            (Phase.FIRING, expectation.firing),
            (Phase.PENDING, expectation.pending),
        ):
            if expected is None:
                continue
            got = [s for s in states.values() if s.phase is phase]
            result.failures.extend(_compare(phase, list(expected), got, at))
    return result


def run_test_files(paths: Iterable[Path]) -> list[CaseResult]:
    """Run every test in `paths` (files or directories of *.yaml)."""
    results: list[CaseResult] = []
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.y*ml")) if path.is_dir() else [path])
    for file in files:
        try:
            rule_files, cases = read_test_file(file)
        except RuleTestInvalid as exc:
            results.append(CaseResult(str(file), "(file)", [str(exc)]))
            continue
        groups, problems = load_rules(rule_files)
        if problems:
            results.append(CaseResult(str(file), "(rules)", [str(p) for p in problems]))
            continue
        settings = RulesSettings()
        results.extend(run_case(groups, case, settings, str(file)) for case in cases)
    return results
