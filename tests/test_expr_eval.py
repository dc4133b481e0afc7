"""Table-driven tests of expression evaluation, explanations and summaries on hand-computed data."""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core import expr_eval
from daemon.core.expr import ExprError, parse_expr
from daemon.core.expr_eval import EvalContext, Explanation, Value, evaluate, explain, summarize

NOW = 1_700_000_000_000
MIN = 60_000


@dataclass
class Context:
    """An in-memory EvalContext: points per metric, meta, string attributes and liveness."""

    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    meta: dict[str, float | str | bool] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    offline: float | None = 0.0
    absent: dict[str, float | None] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    now_ms: int = NOW

    def window(self, metric: str, seconds: float) -> Sequence[tuple[int, float]]:
        start = self.now_ms - seconds * 1000
        return [p for p in self.points.get(metric, []) if start < p[0] <= self.now_ms]

    def last(self, metric: str) -> tuple[int, float] | None:
        seen = [p for p in self.points.get(metric, []) if p[0] <= self.now_ms]
        return seen[-1] if seen else None

    def state(self, name: str) -> str | None:
        return self.states.get(name)

    def attr(self, name: str) -> float | str | bool | None:
        return self.meta.get(name)

    def offline_for(self) -> float | None:
        return self.offline

    def absent_for(self, metric: str) -> float | None:
        return self.absent.get(metric, 0.0)

    def silence_clamped(self, metric: str | None = None) -> bool:
        return False

    def anomaly(self, model: str) -> float | None:
        return self.scores.get(model)

    def rul(self, model: str) -> float | None:
        return self.scores.get(model)


def series(*values: float, step_s: float = 60.0) -> list[tuple[int, float]]:
    """Points ending at NOW, `step_s` apart, oldest first."""
    count = len(values)
    return [(NOW - int((count - 1 - i) * step_s * 1000), v) for i, v in enumerate(values)]


def value_of(text: str, ctx: EvalContext | None = None) -> Value:
    """Evaluate `text`, checking that explain() agrees with evaluate()."""
    tree = parse_expr(text)
    ctx = ctx or Context()
    value = evaluate(tree, ctx)
    explained = explain(tree, ctx, text).value
    assert explained == value
    assert type(explained) is type(value)
    return value


def same(actual: Value, expected: Value) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return actual == pytest.approx(expected, rel=1e-9, abs=1e-12)
    return actual == expected and type(actual) is type(expected)


T = "t"
DATA = Context(points={T: series(1.0, 2.0, 4.0, 8.0)})  # at now-3m, -2m, -1m, now
ONE = Context(points={T: series(5.0)})
EMPTY = Context()
STALE = Context(points={T: [(NOW - 10 * MIN, 7.0)]})

FUNCTIONS = [
    pytest.param("t", DATA, 8.0, id="bare-name-latest"),
    pytest.param("t", EMPTY, None, id="bare-name-never-seen"),
    pytest.param("last(t)", STALE, 7.0, id="last-any-age"),
    pytest.param("last(t, 5m)", STALE, None, id="last-too-old"),
    pytest.param("last(t, 11m)", STALE, 7.0, id="last-within"),
    pytest.param("last(t, 10m)", STALE, None, id="last-at-window-edge-excluded"),
    pytest.param("avg(t, 5m)", DATA, 3.75, id="avg"),
    pytest.param("avg(t, 90s)", DATA, 6.0, id="avg-short-window"),
    pytest.param("avg(t, 3m)", DATA, 14 / 3, id="avg-edge-point-excluded"),
    pytest.param("avg(t, 5m)", EMPTY, None, id="avg-empty"),
    pytest.param("avg(t, 5m)", ONE, 5.0, id="avg-one"),
    pytest.param("min(t, 5m)", DATA, 1.0, id="min"),
    pytest.param("max(t, 5m)", DATA, 8.0, id="max"),
    pytest.param("min(t, 5m)", EMPTY, None, id="min-empty"),
    pytest.param("max(t, 5m)", EMPTY, None, id="max-empty"),
    pytest.param("sum(t, 5m)", DATA, 15.0, id="sum"),
    pytest.param("sum(t, 5m)", EMPTY, None, id="sum-empty"),
    pytest.param("count(t, 5m)", DATA, 4.0, id="count"),
    pytest.param("count(t, 5m)", EMPTY, 0.0, id="count-empty-is-zero"),
    pytest.param(
        "stddev(t, 5m)",
        DATA,
        math.sqrt((2.75**2 + 1.75**2 + 0.25**2 + 4.25**2) / 4),  # deviations from 3.75
        id="stddev-population",
    ),
    pytest.param("stddev(t, 5m)", ONE, 0.0, id="stddev-one"),
    pytest.param("stddev(t, 5m)", EMPTY, None, id="stddev-empty"),
    pytest.param("quantile(t, 5m, 0.5)", DATA, 3.0, id="median-interpolated"),
    pytest.param("quantile(t, 5m, 0.9)", DATA, 6.8, id="quantile-90"),
    pytest.param("quantile(t, 5m, 0)", DATA, 1.0, id="quantile-0-is-min"),
    pytest.param("quantile(t, 5m, 1)", DATA, 8.0, id="quantile-1-is-max"),
    pytest.param("quantile(t, 5m, 0.5)", ONE, 5.0, id="quantile-one"),
    pytest.param("quantile(t, 5m, 0.5)", EMPTY, None, id="quantile-empty"),
    pytest.param("delta(t, 5m)", DATA, 7.0, id="delta"),
    pytest.param("delta(t, 5m)", ONE, None, id="delta-one"),
    pytest.param("rate(t, 5m)", DATA, 7.0 / 180, id="rate"),
    pytest.param("rate(t, 5m)", ONE, None, id="rate-one"),
    pytest.param("rate(t, 5m)", EMPTY, None, id="rate-empty"),
    pytest.param(
        "rate(c, 5m)",
        Context(points={"c": series(10.0, 20.0, 5.0, 15.0, step_s=10)}),
        25.0 / 30,  # 10 up, reset to 0 then 5 up, 10 up: 25 over 30 s
        id="rate-counter-reset",
    ),
    pytest.param(
        "rate(c, 5m)",
        Context(points={"c": [(NOW - 1000, 1.0), (NOW - 1000, 3.0)]}),
        None,
        id="rate-same-time",
    ),
    pytest.param("slope(t, 5m)", Context(points={T: series(1, 3, 5, 7)}), 2 / 60, id="slope"),
    pytest.param("slope(t, 5m)", ONE, None, id="slope-one"),
    pytest.param(
        "slope(t, 5m)",
        Context(points={T: [(NOW, 1.0), (NOW, 2.0)]}),
        None,
        id="slope-same-time",
    ),
    pytest.param("changes(t, 5m)", DATA, 3.0, id="changes"),
    pytest.param("changes(t, 5m)", Context(points={T: series(1, 1, 2, 2, 1)}), 2.0, id="changes-2"),
    pytest.param("changes(t, 5m)", ONE, 0.0, id="changes-one"),
    pytest.param("changes(t, 5m)", EMPTY, 0.0, id="changes-empty"),
    pytest.param(
        "forecast(t, 5m, horizon=2m)",
        Context(points={T: series(1, 3, 5, 7)}),
        11.0,
        id="forecast-line",
    ),
    pytest.param(
        "forecast(t, 5m, horizon=0s)",
        Context(points={T: series(1, 3, 5, 7)}),
        7.0,
        id="forecast-now",
    ),
    pytest.param("forecast(t, 5m, horizon=1h)", ONE, None, id="forecast-one"),
    pytest.param("offline(10m)", Context(offline=600.0), True, id="offline-at-threshold"),
    pytest.param("offline(10m)", Context(offline=599.0), False, id="offline-below"),
    pytest.param("offline(10m)", Context(offline=0.0), False, id="online"),
    pytest.param("offline(10m)", Context(offline=None), None, id="offline-unknown"),
    pytest.param("absent(t, 5m)", Context(absent={T: 300.0}), True, id="absent"),
    pytest.param("absent(t, 5m)", Context(absent={T: 10.0}), False, id="present"),
    pytest.param("absent(t, 5m)", Context(absent={T: None}), None, id="absent-unknown"),
    pytest.param('attr("max_temp", 85)', EMPTY, 85.0, id="attr-default"),
    pytest.param('attr("max_temp")', EMPTY, None, id="attr-no-default"),
    pytest.param('attr("max_temp", 85)', Context(meta={"max_temp": 90}), 90.0, id="attr-int-meta"),
    pytest.param('attr("max_temp", 85)', Context(meta={"max_temp": "90"}), "90", id="attr-str"),
    pytest.param('attr("heated")', Context(meta={"heated": True}), True, id="attr-bool"),
    pytest.param('attr("labels.tier")', Context(meta={"labels.tier": "gold"}), "gold", id="label"),
    pytest.param('attr("x", t + 1)', DATA, 9.0, id="attr-default-expression"),
    pytest.param('state("mode")', Context(states={"mode": "eco"}), "eco", id="state"),
    pytest.param('state("mode")', EMPTY, None, id="state-missing"),
    pytest.param('anomaly("pump")', Context(scores={"pump": 0.995}), 0.995, id="anomaly"),
    pytest.param('anomaly("pump")', EMPTY, None, id="anomaly-missing"),
    pytest.param('rul("wear") < 2', Context(scores={"wear": 1.5}), True, id="rul"),
    pytest.param('rul("wear")', EMPTY, None, id="rul-missing"),
    pytest.param("abs(-3)", EMPTY, 3.0, id="abs"),
    pytest.param("abs(t)", EMPTY, None, id="abs-unknown"),
    pytest.param("1h30m", EMPTY, 5400.0, id="duration-is-seconds"),
]


@pytest.mark.parametrize(("text", "ctx", "expected"), FUNCTIONS)
def test_functions(text: str, ctx: Context, expected: Value) -> None:
    """Test that each function gives its hand-computed value, including empty and tiny windows."""
    assert same(value_of(text, ctx), expected), value_of(text, ctx)


def test_slope_is_least_squares_per_second() -> None:
    """Test that slope() is the closed-form least-squares slope in units per second."""
    # x = -1.5, -0.5, 0.5, 1.5 minutes around the mean; y = 1, 2, 4, 8 (mean 3.75).
    sxy = -1.5 * -2.75 + -0.5 * -1.75 + 0.5 * 0.25 + 1.5 * 4.25
    per_minute = sxy / 5.0
    assert value_of("slope(t, 5m)", DATA) == pytest.approx(per_minute / 60)


RISING = Context(points={T: series(10, 20, 30, 40)})  # +10 per minute, 40 now
FALLING = Context(points={T: series(40, 30, 20, 10)})

TIME_TO = [
    pytest.param(RISING, "100", 360.0, id="rising-towards"),
    pytest.param(FALLING, "0", 60.0, id="falling-towards"),
    pytest.param(RISING, "40", 0.0, id="at-threshold-now"),
    pytest.param(RISING, "25", 0.0, id="crossed-within-window"),
    pytest.param(FALLING, "25", 0.0, id="crossed-downwards-within-window"),
    pytest.param(RISING, "5", None, id="beyond-for-whole-window-moving-away"),
    pytest.param(FALLING, "50", None, id="above-and-falling-away"),
    pytest.param(Context(points={T: series(5, 5, 5)}), "10", None, id="flat"),
    pytest.param(ONE, "10", None, id="one-point"),
    pytest.param(EMPTY, "10", None, id="no-data"),
    pytest.param(RISING, "x", None, id="unknown-threshold"),
]


@pytest.mark.parametrize(("ctx", "threshold", "expected"), TIME_TO)
def test_time_to(ctx: Context, threshold: str, expected: float | None) -> None:
    """Test that time_to() answers seconds to go, 0 once reached, None if flat or moving away."""
    assert same(value_of(f"time_to(t, 5m, {threshold})", ctx), expected)


def test_time_to_uses_an_attr_threshold() -> None:
    """Test that time_to() takes its threshold from an expression such as attr()."""
    ctx = Context(points=RISING.points, meta={"max": 100})
    assert value_of('time_to(t, 5m, attr("max", 50)) < 24h', ctx) is True
    assert value_of('time_to(t, 5m, attr("max", 50))', ctx) == pytest.approx(360.0)


KLEENE_AND = [
    ("true", "true", True),
    ("true", "false", False),
    ("true", "u", None),
    ("false", "true", False),
    ("false", "false", False),
    ("false", "u", False),
    ("u", "true", None),
    ("u", "false", False),
    ("u", "u", None),
]
KLEENE_OR = [
    ("true", "true", True),
    ("true", "false", True),
    ("true", "u", True),
    ("false", "true", True),
    ("false", "false", False),
    ("false", "u", None),
    ("u", "true", True),
    ("u", "false", None),
    ("u", "u", None),
]
UNKNOWN = "nodata > 1"


def _operand(name: str) -> str:
    return UNKNOWN if name == "u" else name


@pytest.mark.parametrize(
    ("left", "right", "expected"), KLEENE_AND, ids=[f"{a}-and-{b}" for a, b, _ in KLEENE_AND]
)
def test_kleene_and(left: str, right: str, expected: bool | None) -> None:
    """Test that `and` follows Kleene's three-valued logic."""
    assert value_of(f"{_operand(left)} and {_operand(right)}") is expected


@pytest.mark.parametrize(
    ("left", "right", "expected"), KLEENE_OR, ids=[f"{a}-or-{b}" for a, b, _ in KLEENE_OR]
)
def test_kleene_or(left: str, right: str, expected: bool | None) -> None:
    """Test that `or` follows Kleene's three-valued logic."""
    assert value_of(f"{_operand(left)} or {_operand(right)}") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("not true", False, id="not-true"),
        pytest.param("not false", True, id="not-false"),
        pytest.param(f"not {UNKNOWN}", None, id="not-unknown"),
        pytest.param('not attr("flag")', None, id="not-missing-attr"),
        pytest.param('attr("mode", "x") and true', None, id="string-is-no-condition"),
    ],
)
def test_not_and_non_conditions(text: str, expected: bool | None) -> None:
    """Test that `not` keeps unknown unknown and that non-booleans are unknown conditions."""
    assert value_of(text) is expected


OPERATORS = [
    pytest.param("1 + 2 * 3", 7.0, id="precedence"),
    pytest.param("7 % 3", 1.0, id="modulo"),
    pytest.param("-7 % 3", 2.0, id="modulo-sign-of-divisor"),
    pytest.param("1 / 4", 0.25, id="division"),
    pytest.param("1 / 0", None, id="division-by-zero"),
    pytest.param("1 % 0", None, id="modulo-by-zero"),
    pytest.param("t / (t - t)", None, id="division-by-computed-zero"),
    pytest.param("1e308 * 10", None, id="overflow-is-unknown"),
    pytest.param("nodata + 1", None, id="unknown-plus"),
    pytest.param("1 - nodata", None, id="minus-unknown"),
    pytest.param("-nodata", None, id="negate-unknown"),
    pytest.param("nodata > 1", None, id="compare-unknown"),
    pytest.param("1 == nodata", None, id="equal-unknown"),
    pytest.param("t > 7", True, id="greater"),
    pytest.param("t >= 8", True, id="greater-equal"),
    pytest.param("t < 8", False, id="less"),
    pytest.param("t <= 8", True, id="less-equal"),
    pytest.param("t == 8", True, id="equal"),
    pytest.param("t != 8", False, id="not-equal"),
    pytest.param("true == 1", True, id="bool-equals-one"),
    pytest.param("false < 1", True, id="bool-orders-as-number"),
    pytest.param("(t > 1) + (t > 100)", 1.0, id="bool-arithmetic"),
    pytest.param('state("mode") == "eco"', True, id="string-equal"),
    pytest.param('state("mode") != "eco"', False, id="string-not-equal"),
    pytest.param('state("mode") == "boost"', False, id="string-differs"),
    pytest.param('state("other") == "eco"', None, id="string-unknown"),
    pytest.param('attr("max_temp") > 80', None, id="string-meta-orders-unknown"),
    pytest.param('attr("max_temp") == 90', None, id="string-meta-equals-number-unknown"),
    pytest.param('attr("max_temp") == "90"', True, id="string-meta-equals-string"),
    pytest.param('attr("mode") < state("mode")', None, id="string-ordering-unknown"),
    pytest.param("offline(1m) == false", True, id="condition-compares"),
]


@pytest.mark.parametrize(("text", "expected"), OPERATORS)
def test_operators(text: str, expected: Value) -> None:
    """Test that operators propagate None, give None on x/0 and order no strings."""
    ctx = Context(points={T: series(8.0)}, states={"mode": "eco"}, meta={"max_temp": "90"})
    ctx.meta["mode"] = "eco"
    assert same(value_of(text, ctx), expected)


DESIGN = 'avg(temperature, 5m) > attr("max_temp", 85) and slope(temperature, 15m) > 0'
HOT_RISING = series(*(86.0 + i for i in range(10)))
WARM = series(*([82.1] * 10))
HOT_FALLING = series(*(100.0 - i for i in range(10)))


@pytest.mark.parametrize(
    ("points", "meta", "expected"),
    [
        pytest.param(HOT_RISING, {}, True, id="hot-and-rising"),
        pytest.param(HOT_RISING, {"max_temp": 100}, False, id="below-device-threshold"),
        pytest.param(WARM, {}, False, id="below-default-threshold"),
        pytest.param(HOT_FALLING, {}, False, id="hot-but-falling"),
        pytest.param([], {}, None, id="no-data"),
        pytest.param(series(90.0), {}, None, id="hot-but-one-point-for-slope"),
        pytest.param(series(80.0), {}, False, id="cool-decides-despite-unknown-slope"),
    ],
)
def test_design_example(
    points: list[tuple[int, float]], meta: dict[str, float | str | bool], expected: bool | None
) -> None:
    """Test that the design's example rule comes out true, false and unknown as it should."""
    assert value_of(DESIGN, Context(points={"temperature": points}, meta=meta)) is expected


# ------------------------------------------------------------------------------- explanations
def test_summary_names_the_failing_comparison_and_margin() -> None:
    """Test that a false comparison's summary names both sides with their values and the margin."""
    ctx = Context(points={"temperature": WARM})
    tree = parse_expr(DESIGN)
    # The slope of a constant series is 0: not above 0, so both comparisons are false.
    assert summarize(explain(tree, ctx, DESIGN)) == (
        'false: avg(temperature, 5m) = 82.1 is 2.9 below attr("max_temp", 85) = 85; '
        "slope(temperature, 15m) = 0 equals 0"
    )


def test_summary_of_and_names_only_the_false_operand() -> None:
    """Test that for `and` the summary names the false operand, not the true one."""
    ctx = Context(points={"temperature": HOT_FALLING})
    summary = summarize(explain(parse_expr(DESIGN), ctx, DESIGN))
    assert summary.startswith("false: slope(temperature, 15m) = -0.0166667 is 0.0166667 below 0")
    assert "avg(" not in summary


def test_summary_says_no_data_when_unknown() -> None:
    """Test that an unknown result is blamed on the window without data."""
    text = "avg(temperature, 5m) > 80"
    assert summarize(explain(parse_expr(text), Context(), text)) == (
        "unknown: no data for temperature in 5m"
    )


def test_summary_of_unknown_and_names_the_unknown_operand() -> None:
    """Test that `true and unknown` is blamed on the operand that lacks data."""
    ctx = Context(points={"temperature": series(90.0)})
    summary = summarize(explain(parse_expr(DESIGN), ctx, DESIGN))
    assert summary == "unknown: only 1 point for temperature in 15m (needs 2)"


SUMMARIES = [
    pytest.param("t > 5", "true: t = 8 is 3 above 5", id="true-comparison"),
    pytest.param("t > 5 or t < 0", "true: t = 8 is 3 above 5", id="or-names-true-operand"),
    pytest.param("t < 5 or t < 0", "false: t = 8 is 3 above 5; t = 8 is 8 above 0", id="or-false"),
    pytest.param("not t > 5", "false: t = 8 is 3 above 5", id="not"),
    pytest.param("t == 8", "true: t = 8 equals 8", id="equal"),
    pytest.param(
        'state("mode") == "boost"', 'false: state("mode") = "eco" is not "boost"', id="str"
    ),
    pytest.param("offline(10m)", "true: offline(10m) = true (offline for 12m)", id="offline"),
    pytest.param("t / 0 > 1", "unknown: t / 0: division by zero", id="division-by-zero"),
    pytest.param("nodata > 1", "unknown: no data for nodata", id="missing-metric"),
    pytest.param('attr("max_temp") > 1', 'unknown: attr("max_temp") > 1: cannot compare', id="mix"),
    pytest.param(
        "time_to(r, 5m, 100) < 1h", "true: time_to(r, 5m, 100) = 6m is 54m below 1h", id="t"
    ),
    pytest.param("avg(t, 5m)", "value: avg(t, 5m) = 8 (1 point in 5m)", id="number"),
    pytest.param("time_to(r, 5m, 5) < 1h", "unknown: r in 5m moves away from", id="away"),
    pytest.param("time_to(f, 5m, 9) < 1h", "unknown: f is flat in 5m", id="flat"),
    pytest.param("time_to(r, 5m, q) < 1h", "unknown: no data for q", id="threshold-unknown"),
    pytest.param("slope(t, 5m) > 0", "unknown: only 1 point for t in 5m (needs 2)", id="one-point"),
    pytest.param("rate(s, 5m) > 0", "unknown: all points of s in 5m have the same time", id="same"),
    pytest.param("last(t, 5m) > 0", "true: last(t, 5m) = 8 is 8 above 0", id="last-window"),
    pytest.param("last(old, 5m) > 0", "unknown: no data for old in 5m", id="last-too-old"),
    pytest.param('state("x") == "a"', "unknown: no state 'x'", id="no-state"),
    pytest.param('anomaly("m") > 0.9', "unknown: no score from model 'm'", id="no-score"),
    pytest.param('rul("m") < 2', "unknown: no prediction from model 'm'", id="no-prediction"),
    pytest.param('attr("x") > 1', "unknown: 'x' not in device meta", id="no-meta"),
    pytest.param("absent(t, 5m)", "false: absent(t, 5m) = false (no sample for 2m)", id="absent"),
]


@pytest.mark.parametrize(("text", "expected"), SUMMARIES)
def test_summaries(text: str, expected: str) -> None:
    """Test that the one-line summary names each kind of deciding sub-expression."""
    ctx = Context(
        points={
            T: series(8.0),
            "r": RISING.points[T],
            "f": series(5.0, 5.0, 5.0),
            "s": [(NOW - 1000, 1.0), (NOW - 1000, 2.0)],
            "old": [(NOW - 10 * MIN, 1.0)],
        },
        states={"mode": "eco"},
        meta={"max_temp": "85"},
        offline=720.0,
        absent={T: 120.0},
    )
    assert summarize(explain(parse_expr(text), ctx, text)).startswith(expected)


def test_explanation_tree_mirrors_the_expression() -> None:
    """Test that explain() keeps each sub-expression's source, value and note."""
    ctx = Context(points={"temperature": WARM})
    tree = explain(parse_expr(DESIGN), ctx, DESIGN)
    assert tree == Explanation(DESIGN, False, tree.children, op="and")
    comparison, _ = tree.children
    avg, attr = comparison.children
    assert (avg.text, avg.note) == ("avg(temperature, 5m)", "5 points in 5m")
    assert avg.value == pytest.approx(82.1)
    assert (attr.text, attr.value, attr.note) == (
        'attr("max_temp", 85)',
        85.0,
        "'max_temp' not in device meta, default used",
    )
    assert comparison.note == "82.1 is 2.9 below 85"


# ---------------------------------------------------------------------------- property tests
_leaves = st.sampled_from(
    [
        "t", "u", "nodata", "1", "0", "2.5", "5m", "true", "false", "avg(t, 5m)", "sum(u, 1h)",
        "slope(t, 10m)", "rate(u, 10m)", "count(nodata, 5m)", "last(t, 2m)", "stddev(u, 1h)",
        "quantile(t, 1h, 0.3)", "delta(u, 1h)", "changes(t, 1h)", "forecast(t, 1h, horizon=1h)",
        "time_to(u, 1h, 3)", "offline(1m)", "absent(t, 1m)", 'attr("m", 2)', 'attr("s")',
        'anomaly("a")', "abs(t - u)",
    ]
)  # fmt: skip


def _trees(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ops = st.sampled_from(["+", "-", "*", "/", "%", ">", "<=", "==", "!=", "and", "or"])
    return st.one_of(
        st.builds("({} {} {})".format, inner, ops, inner),
        st.builds("(-{})".format, inner),
        st.builds("(not {})".format, inner),
    )


PROPERTY_CTX = Context(
    points={"t": series(3, 1, 4, 1, 5, 9, 2, 6), "u": series(10, 12, 3, 8, step_s=600)},
    meta={"m": 7, "s": "x"},
    offline=None,
    absent={"t": 90.0},
    scores={"a": 0.4},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_leaves, _trees, max_leaves=10))
def test_explain_agrees_with_evaluate(text: str) -> None:
    """Test that explain()'s value equals evaluate()'s for random well-typed-or-not expressions."""
    try:
        tree = parse_expr(text)
    except ExprError:
        return  # a statically rejected combination, e.g. `t and 1`
    value = evaluate(tree, PROPERTY_CTX)
    explained = explain(tree, PROPERTY_CTX, text)
    assert explained.value == value
    assert type(explained.value) is type(value)
    assert summarize(explained)


def test_lowered_trees_are_released_with_their_tree() -> None:
    """Test that evaluate()'s per-tree cache does not keep dropped rule sets alive."""
    gc.collect()
    before = len(expr_eval._LOWERED)
    trees = [parse_expr(f"avg(t, {n + 1}m) > {n}") for n in range(50)]
    for tree in trees:
        evaluate(tree, DATA)
    assert len(expr_eval._LOWERED) == before + 50
    del trees, tree
    gc.collect()
    assert len(expr_eval._LOWERED) == before


def test_evaluate_twice_reuses_the_lowered_tree() -> None:
    """Test that a second evaluation of the same tree gives the same answer for a new context."""
    tree = parse_expr("avg(t, 5m) > 3")
    assert evaluate(tree, DATA) is True
    assert evaluate(tree, EMPTY) is None
    assert evaluate(tree, Context(points={T: series(1.0)})) is False
