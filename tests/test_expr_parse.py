"""Table-driven tests of the expression parser: precedence, literals, errors, what a tree needs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core.expr import (
    Binary,
    Bool,
    Call,
    Duration,
    ExprError,
    Name,
    Node,
    Number,
    String,
    Unary,
    anomaly_models,
    parse_expr,
    quoted_metrics,
    referenced_metrics,
    source,
    uses_liveness,
    walk,
)
from daemon.errors import FrontlineError

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def render(node: Node) -> str:
    """Render a tree fully parenthesised, so precedence and associativity are visible."""
    if isinstance(node, Number):
        return f"{node.value:g}"
    if isinstance(node, Duration):
        return f"{node.seconds:g}s"
    if isinstance(node, String):
        return repr(node.value)
    if isinstance(node, Bool):
        return "true" if node.value else "false"
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Call):
        args = [render(arg) for arg in node.args]
        args += [f"{key}={render(value)}" for key, value in node.kwargs]
        return f"{node.func}({', '.join(args)})"
    if isinstance(node, Unary):
        return f"(not {render(node.operand)})" if node.op == "not" else f"(-{render(node.operand)})"
    return f"({render(node.left)} {node.op} {render(node.right)})"


PRECEDENCE = [
    pytest.param("a + b * c", "(a + (b * c))", id="mul-over-add"),
    pytest.param("a * b + c", "((a * b) + c)", id="mul-first"),
    pytest.param("a - b - c", "((a - b) - c)", id="sub-left-assoc"),
    pytest.param("a / b / c", "((a / b) / c)", id="div-left-assoc"),
    pytest.param("a % b * c", "((a % b) * c)", id="mod-same-level-as-mul"),
    pytest.param("a + b - c", "((a + b) - c)", id="add-sub-left-assoc"),
    pytest.param("-a * b", "((-a) * b)", id="unary-minus-over-mul"),
    pytest.param("a * -b", "(a * (-b))", id="unary-minus-operand"),
    pytest.param("--a", "(-(-a))", id="double-minus"),
    pytest.param("a - -b", "(a - (-b))", id="minus-minus"),
    pytest.param("(a + b) * c", "((a + b) * c)", id="parentheses"),
    pytest.param("a + b > c * d", "((a + b) > (c * d))", id="arith-over-comparison"),
    pytest.param("a > b and c < d", "((a > b) and (c < d))", id="comparison-over-and"),
    pytest.param(
        "a > 1 or b > 2 and c > 3", "((a > 1) or ((b > 2) and (c > 3)))", id="and-over-or"
    ),
    pytest.param("a > 1 and b > 2 or c > 3", "(((a > 1) and (b > 2)) or (c > 3))", id="and-first"),
    pytest.param(
        "a > 1 or b > 2 or c > 3", "(((a > 1) or (b > 2)) or (c > 3))", id="or-left-assoc"
    ),
    pytest.param("not a > 1", "(not (a > 1))", id="not-under-comparison"),
    pytest.param("not a > 1 and b > 2", "((not (a > 1)) and (b > 2))", id="not-over-and"),
    pytest.param("not not a > 1", "(not (not (a > 1)))", id="double-not"),
    pytest.param("a > 1 and not b > 2", "((a > 1) and (not (b > 2)))", id="and-not"),
    pytest.param("(a > 1) == (b > 2)", "((a > 1) == (b > 2))", id="bracketed-comparisons"),
    pytest.param("a >= 1", "(a >= 1)", id="ge"),
    pytest.param("a <= 1", "(a <= 1)", id="le"),
    pytest.param("a != 1", "(a != 1)", id="ne"),
    pytest.param("a == 1", "(a == 1)", id="eq"),
    pytest.param("-abs(a)", "(-abs(a))", id="minus-call"),
    pytest.param(
        'avg(temperature, 5m) > attr("max_temp", 85) and slope(temperature, 15m) > 0',
        "((avg(temperature, 300s) > attr('max_temp', 85)) and (slope(temperature, 900s) > 0))",
        id="design-example",
    ),
    pytest.param(
        "forecast(pressure, 6h, horizon=24h) < 0.8",
        "(forecast(pressure, 21600s, horizon=86400s) < 0.8)",
        id="forecast-keyword",
    ),
    pytest.param("time_to(p, 6h, 0.8) < 24h", "(time_to(p, 21600s, 0.8) < 86400s)", id="time-to"),
    pytest.param("offline(10m)", "offline(600s)", id="offline"),
    pytest.param(
        'anomaly("pump-vibration") > 0.99', "(anomaly('pump-vibration') > 0.99)", id="anomaly"
    ),
    pytest.param("last(t)", "last(t)", id="last-one-arg"),
    pytest.param("last(t, 1m)", "last(t, 60s)", id="last-two-args"),
    pytest.param("quantile(t, 1h, 0.95)", "quantile(t, 3600s, 0.95)", id="quantile"),
    pytest.param("avg(t, 300)", "avg(t, 300)", id="window-as-number"),
    pytest.param("abs(a - b) > 3", "(abs((a - b)) > 3)", id="abs-expression"),
    pytest.param(
        'attr("labels.tier") == "gold"', "(attr('labels.tier') == 'gold')", id="attr-string"
    ),
    pytest.param('state("mode") != "eco"', "(state('mode') != 'eco')", id="state"),
    pytest.param("  a>1  ", "(a > 1)", id="spacing"),
    pytest.param("count", "count", id="function-name-as-metric"),
]


@pytest.mark.parametrize(("text", "expected"), PRECEDENCE)
def test_precedence_and_associativity(text: str, expected: str) -> None:
    """Test that operators bind by the documented precedence and associate as documented."""
    assert render(parse_expr(text)) == expected


LITERALS = [
    pytest.param("85", Number(85.0, 0, 2), id="integer"),
    pytest.param("0.8", Number(0.8, 0, 3), id="decimal"),
    pytest.param(".5", Number(0.5, 0, 2), id="leading-dot"),
    pytest.param("1e3", Number(1000.0, 0, 3), id="exponent"),
    pytest.param("2.5E-2", Number(0.025, 0, 6), id="negative-exponent"),
    pytest.param("250ms", Duration(0.25, 0, 5), id="milliseconds"),
    pytest.param("30s", Duration(30.0, 0, 3), id="seconds"),
    pytest.param("5m", Duration(300.0, 0, 2), id="minutes"),
    pytest.param("2h", Duration(7200.0, 0, 2), id="hours"),
    pytest.param("7d", Duration(604800.0, 0, 2), id="days"),
    pytest.param("1w", Duration(604800.0, 0, 2), id="weeks"),
    pytest.param("1h30m", Duration(5400.0, 0, 5), id="compound"),
    pytest.param("1.5h", Duration(5400.0, 0, 4), id="fractional-duration"),
    pytest.param('"eco"', String("eco", 0, 5), id="double-quoted"),
    pytest.param("'eco'", String("eco", 0, 5), id="single-quoted"),
    pytest.param(r'"say \"hi\""', String('say "hi"', 0, 12), id="escaped-quote"),
    pytest.param(r"'it\'s'", String("it's", 0, 7), id="escaped-single-quote"),
    pytest.param(r'"a\\b"', String("a\\b", 0, 6), id="escaped-backslash"),
    pytest.param(r'"tab\there"', String("tab\there", 0, 11), id="escaped-tab"),
    pytest.param('""', String("", 0, 2), id="empty-string"),
    pytest.param("true", Bool(True, 0, 4), id="true"),
    pytest.param("false", Bool(False, 0, 5), id="false"),
    pytest.param("temperature", Name("temperature", 0, 11), id="metric"),
    pytest.param("_x9", Name("_x9", 0, 3), id="underscore-metric"),
    pytest.param(" (5m) ", Duration(300.0, 1, 5), id="bracketed-span"),
]


@pytest.mark.parametrize(("text", "expected"), LITERALS)
def test_literals(text: str, expected: Node) -> None:
    """Test that every literal kind parses to its node with its value and source span."""
    assert parse_expr(text) == expected


ERRORS = [
    pytest.param("", 0, "empty expression", id="empty"),
    pytest.param("   ", 0, "empty expression", id="blank"),
    pytest.param("a $ b", 2, "unexpected character '$'", id="bad-character"),
    pytest.param("a && b", 2, "use 'and'", id="c-and"),
    pytest.param("a || b", 2, "use 'or'", id="c-or"),
    pytest.param("!a", 0, "use 'not'", id="c-not"),
    pytest.param('state("mode) == 1', 6, "unterminated string", id="unterminated-string"),
    pytest.param(r'"a\qb"', 2, "unknown escape", id="bad-escape"),
    pytest.param("5min", 0, "invalid duration '5min'", id="bad-duration-unit"),
    pytest.param("a > 5m30", 4, "invalid duration '5m30'", id="bad-compound-duration"),
    pytest.param("1e", 0, "invalid number '1e'", id="bad-exponent"),
    pytest.param("1.2.3", 0, "invalid number", id="two-dots"),
    pytest.param("1e999", 0, "number out of range", id="overflow"),
    pytest.param("x > " + "9" * 400 + "h", 4, "number out of range", id="duration-overflow"),
    pytest.param("(a + b", 6, "expected ')' to close '(' at 1", id="unclosed-paren-end"),
    pytest.param("x + (a + b c", 11, "expected ')' to close '(' at 5", id="unclosed-paren-token"),
    pytest.param("a +", 3, "unexpected end of input", id="dangling-operator"),
    pytest.param("a + * b", 4, "unexpected '*'", id="two-operators"),
    pytest.param("a b", 2, "unexpected 'b' (expected an operator)", id="two-values"),
    pytest.param("a > 1)", 5, "no matching '('", id="extra-close"),
    pytest.param("a = 1", 2, "use '=='", id="single-equals"),
    pytest.param("a > and", 4, "unexpected 'and'", id="keyword-as-value"),
    pytest.param("()", 1, "unexpected ')'", id="empty-brackets"),
    pytest.param("avgg(t, 5m)", 0, "unknown function 'avgg' (did you mean 'avg'?)", id="typo"),
    pytest.param("frobnicate(t)", 0, "unknown function 'frobnicate'", id="unknown-function"),
    pytest.param("avg(t)", 5, "avg() takes 2 arguments", id="too-few-args"),
    pytest.param("avg(t, 5m, 3)", 11, "avg() takes 2 arguments", id="too-many-args"),
    pytest.param("last(t, 5m, 1)", 12, "last() takes 1 or 2 arguments", id="too-many-last"),
    pytest.param("offline()", 8, "offline() takes 1 argument (", id="no-args"),
    pytest.param("avg(t 5m)", 6, "expected ',' or ')' to close 'avg(' at 4", id="missing-comma"),
    pytest.param("avg(t, 5m", 9, "expected ',' or ')'", id="unclosed-call"),
    pytest.param("avg(t,)", 6, "unexpected ')' (expected a value)", id="trailing-comma"),
    pytest.param("avg(1, 5m)", 4, "needs a metric name", id="number-as-metric"),
    pytest.param("avg(last(t), 5m)", 4, "needs a metric name", id="call-as-metric"),
    pytest.param('absent("t", 5m)', 7, "needs a metric name", id="string-as-metric"),
    pytest.param("avg(t, w)", 7, "needs a duration literal", id="metric-as-window"),
    pytest.param("avg(t, 5m * 2)", 7, "needs a duration literal", id="expression-as-window"),
    pytest.param("avg(t, 0s)", 7, "greater than 0", id="zero-window"),
    pytest.param("avg(t, -5m)", 7, "greater than 0", id="negative-window"),
    pytest.param("offline(x)", 8, "needs a duration literal", id="offline-window"),
    pytest.param("quantile(t, 5m, 1.5)", 16, "from 0 to 1", id="quantile-range"),
    pytest.param("quantile(t, 5m, q)", 16, "from 0 to 1", id="quantile-not-literal"),
    pytest.param("forecast(p, 6h)", 14, "needs horizon=", id="missing-horizon"),
    pytest.param("forecast(p, 6h, horizn=1h)", 16, "did you mean 'horizon'", id="unknown-keyword"),
    pytest.param("forecast(p, 6h, horizon=x)", 24, "needs a duration literal", id="bad-horizon"),
    pytest.param("forecast(p, 6h, horizon=-1h)", 24, "at least 0", id="negative-horizon"),
    pytest.param(
        "forecast(p, 6h, horizon=1h, horizon=2h)", 28, "given twice", id="duplicate-keyword"
    ),
    pytest.param(
        "forecast(p, 6h, 1h)", 16, "forecast() takes 2 arguments", id="positional-horizon"
    ),
    pytest.param("avg(t, window=5m)", 7, "takes no keyword arguments", id="keyword-on-avg"),
    pytest.param("forecast(p, horizon=1h, 6h)", 24, "positional argument after", id="kw-order"),
    pytest.param("attr(max_temp)", 5, "needs a string literal", id="attr-name-not-string"),
    pytest.param("anomaly(pump)", 8, "needs a string literal", id="anomaly-model-not-string"),
    pytest.param('abs("x")', 4, "needs a number", id="abs-string"),
    pytest.param('time_to(p, 1h, "x")', 15, "needs a number", id="time-to-string-threshold"),
    pytest.param("a < b < c", 6, "cannot be chained", id="chained-comparison"),
    pytest.param("a == b != c", 7, "cannot be chained", id="chained-equality"),
    pytest.param('state("m") > 3', 11, "cannot compare a string with a number", id="str-gt-num"),
    pytest.param('"a" == 1', 4, "cannot compare a string with a number", id="str-eq-num"),
    pytest.param('"a" < "b"', 4, "only be compared with == or !=", id="str-ordering"),
    pytest.param('"a" + 1', 0, "'+' needs a number, not a string", id="str-arith"),
    pytest.param('1 * state("m")', 4, "'*' needs a number", id="arith-str-right"),
    pytest.param('-"a"', 1, "'-' needs a number", id="negate-string"),
    pytest.param("a and b > 1", 0, "'and' needs a condition on each side", id="number-in-and"),
    pytest.param("a > 1 or 3", 9, "'or' needs a condition", id="number-in-or"),
    pytest.param("not a", 4, "'not' needs a condition", id="not-number"),
    pytest.param("(" * 40 + "a" + ")" * 40, 32, "too deeply nested", id="deep-brackets"),
    pytest.param("+".join(["a"] * 120), 0, "too deeply nested", id="long-chain"),
]


@pytest.mark.parametrize(("text", "offset", "fragment"), ERRORS)
def test_errors(text: str, offset: int, fragment: str) -> None:
    """Test that each kind of mistake raises ExprError with its message at the exact offset."""
    with pytest.raises(ExprError) as caught:
        parse_expr(text)
    error = caught.value
    assert fragment in error.message
    assert str(error) == error.message
    assert (error.offset, error.length >= 1) == (offset, True)
    assert isinstance(error, FrontlineError)


SPANS = [
    pytest.param("avgg(t, 5m)  >  80", 0, 4, "avgg", id="function-name"),
    pytest.param("a + b c", 6, 1, "c", id="extra-value"),
    pytest.param('state("mode) > 1', 6, 10, '"mode) > 1', id="unterminated-to-end"),
    pytest.param("avg(t, 5m, 3, 4)", 11, 4, "3, 4", id="all-extra-arguments"),
    pytest.param("avg(a + b, 5m)", 4, 5, "a + b", id="whole-bad-argument"),
    pytest.param("x > 5min", 4, 4, "5min", id="whole-bad-duration"),
    pytest.param("a <= b >= c", 7, 2, ">=", id="two-char-operator"),
]


@pytest.mark.parametrize(("text", "offset", "length", "marked"), SPANS)
def test_error_spans(text: str, offset: int, length: int, marked: str) -> None:
    """Test that an error's offset and length mark exactly the offending text."""
    with pytest.raises(ExprError) as caught:
        parse_expr(text)
    assert (caught.value.offset, caught.value.length) == (offset, length)
    assert text[offset : offset + length] == marked


def test_source_spans() -> None:
    """Test that source() returns each sub-expression as written, brackets included."""
    text = 'avg(temperature, 5m) > attr("max_temp", 85) and (slope(t, 15m) > 0)'
    tree = parse_expr(text)
    assert isinstance(tree, Binary)
    assert source(tree, text) == text
    assert source(tree.left, text) == 'avg(temperature, 5m) > attr("max_temp", 85)'
    assert source(tree.right, text) == "(slope(t, 15m) > 0)"
    texts = [source(node, text) for node in walk(tree)]
    assert "5m" in texts
    assert '"max_temp"' in texts
    assert "slope(t, 15m)" in texts


METRICS = [
    pytest.param("temperature > 3", {"temperature": 0.0}, id="bare-name"),
    pytest.param("avg(t, 5m) > 1 and max(t, 1h) > 2", {"t": 3600.0}, id="longest-window"),
    pytest.param("max(t, 1h) > 1 and t > 2", {"t": 3600.0}, id="bare-after-window"),
    pytest.param("last(t) > 1", {"t": 0.0}, id="last-value"),
    pytest.param("last(t, 2m) > 1", {"t": 120.0}, id="last-window"),
    pytest.param("avg(t, 300) > 1", {"t": 300.0}, id="number-window"),
    pytest.param("forecast(p, 6h, horizon=24h) < 1", {"p": 21600.0}, id="horizon-needs-no-data"),
    pytest.param("time_to(p, 6h, q) < 1h", {"p": 21600.0, "q": 0.0}, id="threshold-metric"),
    pytest.param("absent(p, 10m)", {"p": 0.0}, id="absent-needs-no-window"),
    pytest.param("offline(10m)", {}, id="no-metric"),
    pytest.param('attr("max", 3) > 1', {}, id="attr-not-a-metric"),
    pytest.param('state("mode") == "eco"', {}, id="state-not-a-metric"),
    pytest.param(
        "abs(rate(c, 5m)) > quantile(d, 1d, 0.5)", {"c": 300.0, "d": 86400.0}, id="nested"
    ),
]


@pytest.mark.parametrize(("text", "expected"), METRICS)
def test_referenced_metrics(text: str, expected: dict[str, float]) -> None:
    """Test that referenced_metrics gives every metric with the longest window it needs."""
    assert referenced_metrics(parse_expr(text)) == expected


LIVENESS = [
    pytest.param("offline(10m)", True, id="offline"),
    pytest.param("t > 1 and absent(t, 5m)", True, id="absent-nested"),
    pytest.param("not offline(1m) and t > 1", True, id="under-not"),
    pytest.param("avg(t, 5m) > 1", False, id="window-only"),
    pytest.param("offline > 1", False, id="metric-named-offline"),
]


@pytest.mark.parametrize(("text", "expected"), LIVENESS)
def test_uses_liveness(text: str, expected: bool) -> None:
    """Test that uses_liveness is true exactly when offline() or absent() appears."""
    assert uses_liveness(parse_expr(text)) is expected


MODELS = [
    pytest.param('anomaly("pump") > 0.9', {"pump"}, id="one"),
    pytest.param('anomaly("a") > 0.9 or anomaly("b") > anomaly("a")', {"a", "b"}, id="several"),
    pytest.param("t > 1", set(), id="none"),
    pytest.param("anomaly > 1", set(), id="metric-named-anomaly"),
]


@pytest.mark.parametrize(("text", "expected"), MODELS)
def test_anomaly_models(text: str, expected: set[str]) -> None:
    """Test that anomaly_models collects every model name used in anomaly()."""
    assert anomaly_models(parse_expr(text)) == expected


# ---------------------------------------------------------------------------- property tests
def _call(name: str, args: list[str]) -> str:
    return f"{name}({', '.join(args)})"


_atoms = st.one_of(
    st.sampled_from(["t", "p", "count", "x_1"]),
    st.sampled_from(["0", "1", "85", "0.8", "1e3", ".5", "-2"]),
    st.sampled_from(["5m", "30s", "1h30m", "250ms", "0s", "5min"]),
    st.sampled_from(['"eco"', "'a'", '"bad', "true", "false"]),
)
_functions = st.sampled_from(
    ["avg", "last", "quantile", "forecast", "time_to", "offline", "absent", "attr", "abs", "avgg"]
)


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        ops = st.sampled_from(["+", "-", "*", "/", "%", ">", ">=", "<", "==", "!=", "and", "or"])
        return st.one_of(
            st.builds("{} {} {}".format, inner, ops, inner),
            st.builds("({})".format, inner),
            st.builds("-{}".format, inner),
            st.builds("not {}".format, inner),
            st.builds(_call, _functions, st.lists(inner, max_size=4)),
            st.builds("{}=24h".format, st.sampled_from(["horizon", "h"])),
        )

    return st.recursive(_atoms, extend, max_leaves=12)


_TOKENS = [
    "t", "avg", "(", ")", ",", "5m", "1", "0.5", '"s"', "'", '"', "and", "or", "not", ">", "<=",
    "==", "!=", "=", "+", "-", "*", "/", "%", "$", "&", "|", "!", ".", "1e", "horizon", "true",
    "\\", "\n", "é", "offline", "1h30m", "quantile", "9" * 400 + "h", "1e308",
]  # fmt: skip


def _parse_or_error(text: str) -> Node | ExprError:
    try:
        return parse_expr(text)
    except ExprError as error:
        return error


def _assert_parses_or_points_inside(text: str) -> None:
    outcome = _parse_or_error(text)  # any other exception fails the test
    if isinstance(outcome, ExprError):
        assert 0 <= outcome.offset <= len(text)
        assert outcome.length >= 1
        assert outcome.message
    else:
        assert 0 <= outcome.start <= outcome.end <= len(text)


@FAST
@given(_expressions())
def test_random_expressions_parse_or_raise_expr_error(text: str) -> None:
    """Test that grammar-built expressions parse or raise ExprError pointing into the text."""
    _assert_parses_or_points_inside(text)


@FAST
@given(st.lists(st.sampled_from(_TOKENS), max_size=25), st.sampled_from(["", " "]))
def test_token_soup_raises_only_expr_error(tokens: list[str], separator: str) -> None:
    """Test that any sequence of tokens parses or raises ExprError, never anything else."""
    _assert_parses_or_points_inside(separator.join(tokens))


@FAST
@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_expr_error(text: str) -> None:
    """Test that arbitrary text parses or raises ExprError, never anything else."""
    _assert_parses_or_points_inside(text)


# ----------------------------------------------------------------------------------- safety
EXPR_MODULES = sorted((ROOT / "daemon" / "core").glob("expr*.py"))


def test_expression_modules_exist() -> None:
    """Test that the safety scan below has the expression modules to look at."""
    assert {path.name for path in EXPR_MODULES} >= {"expr.py", "expr_eval.py"}


@pytest.mark.parametrize("path", EXPR_MODULES, ids=lambda path: path.name)
def test_no_eval_exec_compile_or_ast(path: Path) -> None:
    """Test that the expression modules never name eval, exec, compile or import ast."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    forbidden = {"eval", "exec", "compile", "__import__"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            assert node.id not in forbidden, f"{path.name}:{node.lineno} uses {node.id}"
        if isinstance(node, ast.Attribute) and node.attr in forbidden:
            # re.compile builds our own lexer's patterns from constants, never from user input.
            is_regex = isinstance(node.value, ast.Name) and node.value.id == "re"
            assert is_regex, f"{path.name}:{node.lineno} uses .{node.attr}"
            assert node.attr == "compile", f"{path.name}:{node.lineno} uses .{node.attr}"
        if isinstance(node, ast.Import):
            assert all(alias.name != "ast" for alias in node.names), path.name
        if isinstance(node, ast.ImportFrom):
            assert node.module != "ast", path.name


# -- metric("...") and canonical names (docs/devices.md, "Names") ------------------------------


QUOTED = [
    pytest.param('metric("flow rate") > 3', {"flow_rate": 0.0}, id="bare"),
    pytest.param(
        'avg(metric("Volume Flow RateRMS"), 5m) < 40', {"volume_flow_raterms": 300.0}, id="window"
    ),
    pytest.param(
        'metric("ENERGY.Total") - energy_total == 0', {"energy_total": 0.0}, id="same-series"
    ),
    pytest.param("metric('outdoor-temp') < 0", {"outdoor_temp": 0.0}, id="single-quotes"),
]


@pytest.mark.parametrize(("text", "metrics"), QUOTED)
def test_quoted_metric_names_read_their_canonical_series(
    text: str, metrics: dict[str, float]
) -> None:
    """Test that metric("...") reads the canonical name and remembers how it was written."""
    tree = parse_expr(text)
    assert referenced_metrics(tree) == metrics
    quoted = quoted_metrics(tree)
    assert all(canonical in metrics for canonical in quoted.values())
    first = next(n for n in walk(tree) if isinstance(n, Name))
    assert source(first, text).startswith("metric(")


def test_a_metric_named_metric_is_still_a_bare_name() -> None:
    """Test that `metric` without brackets is an ordinary metric name."""
    assert referenced_metrics(parse_expr("metric > 1")) == {"metric": 0.0}


BAD_NAMES = [
    pytest.param("Temperature > 3", 'write temperature (or metric("Temperature"))', id="capitals"),
    pytest.param("flowRate > 3", "write flowrate", id="camel-case"),
    pytest.param("metric(5) > 1", "metric() takes one quoted name", id="number"),
    pytest.param('metric("a", 5m) > 1', "metric() takes one quoted name", id="two-args"),
    pytest.param("metric(flow) > 1", "metric() takes one quoted name", id="unquoted"),
    pytest.param('metric("") > 1', "metric() needs a name", id="empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD_NAMES)
def test_names_that_are_never_stored_are_errors(text: str, message: str) -> None:
    """Test that a non-canonical bare name (it would never match a series) is refused."""
    with pytest.raises(ExprError) as info:
        parse_expr(text)
    assert message in info.value.message
