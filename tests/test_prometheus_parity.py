"""Frontline's rule semantics next to Prometheus 2.42, one pair of rule tests per behaviour.

Each `Pair` is one series and one rule, written once: the module turns it into a promtool rule
file and test (`promtool test rules`, the binary from Debian's `prometheus` package) and into a
Frontline rule file and test (`frontline test`), each expecting the phases the pair states for
its system. Where the two agree there is one timeline; where Frontline differs on purpose it has
its own, and docs/rules.md ("Coming from Prometheus") explains why, naming the pair.

A timeline has one character per evaluation from t=0: `.` inactive (or resolved), `p` pending,
`F` firing, for the alert `A` on the device `d` (the series label `device="d"` in Prometheus).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from daemon.ruletest import run_test_files
from tests.conftest import require_binary

PHASES = {".": "inactive", "p": "pending", "F": "firing"}


@dataclass(frozen=True)
class Pair:
    id: str
    promql: str
    expr: str  # the same condition in Frontline's language
    series: Mapping[str, str]  # metric -> values, in the notation both tools share
    prometheus: str  # timeline under promtool
    frontline: str | None = None  # timeline under `frontline test`, when it differs
    interval_s: int = 10  # the group's interval
    spacing_s: int = 10  # the test's `interval`: time between the series' values
    rule: Mapping[str, str] = field(default_factory=dict)  # for, keep_firing_for (both tools)
    frontline_only: Mapping[str, str] = field(default_factory=dict)  # e.g. cooldown
    evaluation_interval_s: int | None = None  # promtool's, when not the group's interval
    frontline_error: str = ""  # the Frontline test file is rejected, saying this

    @property
    def step_s(self) -> int:
        """The time between two characters of a timeline: promtool's evaluation grid."""
        return self.evaluation_interval_s or self.interval_s


PAIRS = [
    # -- agreements ------------------------------------------------------------------------
    Pair(
        "for-fires-at-the-first-evaluation-at-or-after-it",
        "x > 5", "x > 5", {"x": "0 9x6"}, ".pppFFF", rule={"for": "25s"},
    ),
    Pair(
        "a-false-evaluation-drops-a-pending-alert",
        "x > 5", "x > 5", {"x": "9 9 0 9 9 9 9"}, "pp.ppFF", rule={"for": "20s"},
    ),
    Pair(
        "keep-firing-for-equal-to-the-interval-holds-one-evaluation",
        "x > 5", "x > 5", {"x": "9 9 0 0 0"}, "FFF..", rule={"keep_firing_for": "10s"},
    ),
    Pair(
        "keep-firing-for-shorter-than-the-interval-still-holds-one-evaluation",
        "x > 5", "x > 5", {"x": "9 0 0"}, "FF.", rule={"keep_firing_for": "5s"},
    ),
    Pair(
        "keep-firing-for-counts-from-the-first-false-evaluation-and-restarts-on-a-true-one",
        "x > 5", "x > 5", {"x": "9 0 0 9 0 0 0 0 0"}, "FFFFFFF..",
        rule={"keep_firing_for": "30s"},
    ),
    Pair(
        # `_x3` is three missing samples in both (Frontline used to read four)
        "missing-samples-notation",
        "count_over_time(x[5s]) > 0", "count(x, 5s) > 0", {"x": "9 _x3 9 9"}, "F...FF",
    ),
    # -- differences -----------------------------------------------------------------------
    Pair(
        # Prometheus: no data is false and drops the pending alert, which starts over at 50 s.
        # Frontline: no data is unknown; `for` pauses at 20-40 s and resumes, counting the true
        # evaluations 10 s and 50-70 s.
        "a-gap-pauses-a-pending-alert-instead-of-dropping-it",
        "max_over_time(x[5s]) > 5", "max(x, 5s) > 5", {"x": "0 9 _x3 9x4"},
        ".p...pppF", ".ppppppFF", rule={"for": "30s"},
    ),
    Pair(
        # Prometheus resolves a firing alert when its data stop; Frontline waits for a false
        # evaluation (here the 0 at 60 s)
        "a-firing-alert-does-not-resolve-on-missing-data",
        "max_over_time(x[5s]) > 5", "max(x, 5s) > 5", {"x": "9 9 _x4 0"}, "FF.....", "FFFFFF.",
    ),
    Pair(
        # a 20-s window at t holds the samples in [t-20s, t] in Prometheus 2.x, (t-20s, t] in
        # Frontline (and in Prometheus 3): a sample exactly 20 s old is left out
        "window-edges",
        "count_over_time(x[20s]) >= 3", "count(x, 20s) >= 3", {"x": "1x6"}, "..FFFF", "......",
    ),
    Pair(
        # a bare metric is the latest sample within the 5-minute lookback in Prometheus, the
        # latest value ever received in Frontline (use last(x, 5m) for a lookback)
        "a-bare-metric-has-no-lookback-limit",
        "x > 5", "x > 5", {"x": "9 _x7"}, "FFFFFF..", "FFFFFFFF",
        interval_s=60, spacing_s=60,
    ),
    Pair(
        # rate() in Prometheus divides by the window, extrapolating towards its edges; Frontline
        # divides by the time its points span (0.1/s as soon as it has two points)
        "rate-does-not-extrapolate",
        "rate(c[30s]) > 0.08", "rate(c, 30s) > 0.08", {"c": "0+1x5"}, "...FFF", ".FFFFF",
    ),
    Pair(
        # the fourth firing within rules.flap_window (1 h) marks the alert flapping: it then
        # resolves only after rules.flap_hold (15 min) of false evaluations
        "flap-damping",
        "x > 5", "x > 5", {"x": "9 0 9 0 9 0 9 0x16"},
        "F.F.F.F.................", "F.F.F.FFFFFFFFFFFFFFFF..",
        interval_s=60, spacing_s=60,
    ),
    Pair(
        # cooldown (Frontline only): after resolving at 10 s, no new firing before 40 s
        "cooldown",
        "x > 5", "x > 5", {"x": "9 0 9 9 9 0"}, "F.FFF.", "F...F.",
        frontline_only={"cooldown": "30s"},
    ),
    Pair(
        # promtool evaluates every group at the test's evaluation_interval (10 s here) whatever
        # its own interval (30 s); `frontline test` evaluates each group at its own interval
        "test-runners-evaluate-on-different-grids",
        "x > 5", "x > 5", {"x": "0 0 9x10"}, "..pppFFF", "...pppFF",
        interval_s=30, evaluation_interval_s=10, rule={"for": "30s"},
    ),
    Pair(
        # a staleness marker ends a series at once in Prometheus; Frontline has no staleness
        # markers, and its notation rejects `stale`
        "staleness-markers",
        "x > 5", "x > 5", {"x": "9 9 stale 9"}, "FF.F", frontline_error="no staleness markers",
    ),
]  # fmt: skip


def _dump(path: Path, data: Any) -> Path:
    yaml = YAML()
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def _rule(pair: Pair, expr: str, extra: Mapping[str, str]) -> dict[str, Any]:
    return {"alert": "A", "expr": expr, **pair.rule, **extra}


def write_promtool_files(pair: Pair, directory: Path) -> Path:
    """Write the pair as a Prometheus rule file and a promtool test; return the test's path."""
    group = {"name": "parity", "interval": _duration(pair.interval_s)}
    _dump(directory / "prometheus_rules.yaml", {"groups": [{**group, "rules": [
        _rule(pair, pair.promql, {})
    ]}]})  # fmt: skip
    times = [i * pair.step_s for i in range(len(pair.prometheus))]
    firing = [
        {
            "eval_time": _duration(t),
            "alertname": "A",
            "exp_alerts": [{"exp_labels": {"device": "d"}}] if phase == "F" else [],
        }
        for t, phase in zip(times, pair.prometheus, strict=True)
    ]
    # alert_rule_test sees firing alerts only: pending ones are read from the ALERTS series
    pending_labels = 'ALERTS{alertname="A", alertstate="pending", device="d"}'
    pending = [
        {
            "expr": 'ALERTS{alertstate="pending"}',
            "eval_time": _duration(t),
            "exp_samples": [{"labels": pending_labels, "value": 1}] if phase == "p" else [],
        }
        for t, phase in zip(times, pair.prometheus, strict=True)
    ]
    test = {
        "interval": _duration(pair.spacing_s),
        "input_series": [
            {"series": f'{metric}{{device="d"}}', "values": values}
            for metric, values in pair.series.items()
        ],
        "alert_rule_test": firing,
        "promql_expr_test": pending,
    }
    return _dump(directory / "prometheus_test.yaml", {
        "rule_files": ["prometheus_rules.yaml"],
        "evaluation_interval": _duration(pair.step_s),
        "tests": [test],
    })  # fmt: skip


def write_frontline_files(pair: Pair, directory: Path) -> Path:
    """Write the pair as a Frontline rule file and rule test; return the test's path."""
    timeline = pair.frontline or pair.prometheus
    group = {"name": "parity", "interval": _duration(pair.interval_s)}
    _dump(directory / "frontline_rules.yaml", {"groups": [{**group, "rules": [
        _rule(pair, pair.expr, pair.frontline_only)
    ]}]})  # fmt: skip
    checks = [
        {
            "at": _duration(i * pair.step_s),
            "firing": [{"alert": "A", "device": "d"}] if phase == "F" else [],
            "pending": [{"alert": "A", "device": "d"}] if phase == "p" else [],
        }
        for i, phase in enumerate(timeline)
    ]
    test = {
        "name": pair.id,
        "interval": _duration(pair.spacing_s),
        "devices": {"d": {"meta": {}, "series": dict(pair.series)}},
        "alerts": checks,
    }
    return _dump(directory / "frontline_test.yaml", {
        "rule_files": ["frontline_rules.yaml"], "tests": [test],
    })  # fmt: skip


IDS = [pair.id for pair in PAIRS]


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_frontline_side(pair: Pair, tmp_path: Path) -> None:
    """Test that `frontline test` passes the pair's Frontline timeline (or rejects it as stated)."""
    results = run_test_files([write_frontline_files(pair, tmp_path)])
    failures = [f"{r.name}: {failure}" for r in results for failure in r.failures]
    if pair.frontline_error:
        assert any(pair.frontline_error in failure for failure in failures), failures
    else:
        assert [r.name for r in results] == [pair.id]
        assert failures == []


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_promtool_side(pair: Pair, tmp_path: Path) -> None:
    """Test that `promtool test rules` (Prometheus 2.42) passes the pair's Prometheus timeline."""
    promtool = require_binary("promtool")
    test_file = write_promtool_files(pair, tmp_path)
    run = subprocess.run(
        [promtool, "test", "rules", test_file.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_pairs_are_well_formed() -> None:
    """Test that every timeline uses the known phases, and a differing one really differs."""
    assert len(set(IDS)) == len(IDS)
    for pair in PAIRS:
        assert set(pair.prometheus) <= PHASES.keys(), pair.id
        if pair.frontline is not None:
            assert set(pair.frontline) <= PHASES.keys(), pair.id
            assert len(pair.frontline) == len(pair.prometheus), pair.id
            assert pair.frontline != pair.prometheus, pair.id
