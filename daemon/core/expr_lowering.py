"""Lowering of expression trees into nested closures, for fast repeated evaluation.

Each node becomes a small Python function of the context that calls its operands' functions:
no code generation, no per-node dispatch at run time, and constants and window lengths are
bound once. `daemon.core.expr_eval.evaluate` caches the result per tree.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.core.expr import COMPARISONS, Bool, Call, Duration, Name, Node, Number, String, Unary
from daemon.core.expr_functions import (
    ARITHMETIC,
    COMPARE,
    REDUCERS,
    EvalContext,
    Value,
    arithmetic,
    compare,
    logic_not,
    meta_value,
    number,
    truth,
    window_forecast,
    window_quantile,
    window_time_to,
)
from daemon.core.expr_syntax import literal_seconds

Fn = Callable[[EvalContext], Value]


def _constant(value: Value) -> Fn:
    return lambda _ctx: value


def lower(node: Node) -> Fn:  # noqa: PLR0911  one branch per node type reads best
    """Return a function of the context that computes `node`."""
    if isinstance(node, Number | Bool | String):
        return _constant(node.value)
    if isinstance(node, Duration):
        return _constant(node.seconds)
    if isinstance(node, Name):
        return _latest(node.name)
    if isinstance(node, Unary):
        return _lower_unary(node.op, lower(node.operand))
    if isinstance(node, Call):
        return _BUILDERS[node.func](node)
    left, right = lower(node.left), lower(node.right)
    if node.op == "and":
        return _lower_and(left, right)
    if node.op == "or":
        return _lower_or(left, right)
    if node.op in COMPARISONS:
        return _lower_compare(node.op, left, right)
    return _lower_arithmetic(node.op, left, right)


def _lower_unary(op: str, operand: Fn) -> Fn:
    if op == "not":
        return lambda ctx: logic_not(operand(ctx))

    def negate(ctx: EvalContext) -> Value:
        value = number(operand(ctx))
        return None if value is None else -value

    return negate


def _lower_and(left: Fn, right: Fn) -> Fn:
    def run(ctx: EvalContext) -> Value:
        a = truth(left(ctx))
        if a is False:  # short circuit: false and anything is false
            return False
        b = truth(right(ctx))
        if b is False:
            return False
        return None if a is None or b is None else True

    return run


def _lower_or(left: Fn, right: Fn) -> Fn:
    def run(ctx: EvalContext) -> Value:
        a = truth(left(ctx))
        if a is True:
            return True
        b = truth(right(ctx))
        if b is True:
            return True
        return None if a is None or b is None else False

    return run


def _lower_compare(op: str, left: Fn, right: Fn) -> Fn:
    fast = COMPARE[op]

    def run(ctx: EvalContext) -> Value:
        a, b = left(ctx), right(ctx)
        if a.__class__ is float and b.__class__ is float:
            return fast(a, b)
        return compare(op, a, b)

    return run


def _lower_arithmetic(op: str, left: Fn, right: Fn) -> Fn:
    fast = ARITHMETIC[op]

    def run(ctx: EvalContext) -> Value:
        a = left(ctx)
        if a is None:
            return None
        b = right(ctx)
        if a.__class__ is float and b.__class__ is float:
            return fast(a, b)
        return arithmetic(op, a, b)

    return run


def _latest(metric: str) -> Fn:
    def run(ctx: EvalContext) -> Value:
        point = ctx.last(metric)
        return None if point is None else number(point[1])

    return run


def literal_value(node: Node) -> float:
    """The seconds of a checked duration or number literal argument."""
    seconds = literal_seconds(node)
    if seconds is None:  # parse_expr never builds this
        raise TypeError(f"not a checked duration literal: {node!r}")
    return seconds


def _metric_args(node: Call) -> tuple[str, float]:
    return _metric_name(node), literal_value(node.args[1])


def _keyword(node: Call, name: str) -> Node:
    return next(value for key, value in node.kwargs if key == name)


def string_arg(node: Call) -> str:
    """The first argument of a call, a checked string literal."""
    arg = node.args[0]
    assert isinstance(arg, String)  # checked by the parser
    return arg.value


def _build_reducer(node: Call) -> Fn:
    reduce = REDUCERS[node.func]
    metric, seconds = _metric_args(node)
    return lambda ctx: reduce(ctx.window(metric, seconds))


def _build_last(node: Call) -> Fn:
    if len(node.args) == 1:
        return _latest(_metric_name(node))
    metric, seconds = _metric_args(node)
    span_ms = seconds * 1000.0

    def run(ctx: EvalContext) -> Value:
        point = ctx.last(metric)
        if point is None or point[0] <= ctx.now_ms - span_ms:
            return None
        return number(point[1])

    return run


def _metric_name(node: Call) -> str:
    metric = node.args[0]
    assert isinstance(metric, Name)  # checked by the parser
    return metric.name


def _build_quantile(node: Call) -> Fn:
    metric, seconds = _metric_args(node)
    q = literal_value(node.args[2])
    return lambda ctx: window_quantile(ctx.window(metric, seconds), q)


def _build_forecast(node: Call) -> Fn:
    metric, seconds = _metric_args(node)
    horizon_ms = literal_value(_keyword(node, "horizon")) * 1000.0
    return lambda ctx: window_forecast(ctx.window(metric, seconds), ctx.now_ms + horizon_ms)


def _build_time_to(node: Call) -> Fn:
    metric, seconds = _metric_args(node)
    threshold = lower(node.args[2])

    def run(ctx: EvalContext) -> Value:
        limit = number(threshold(ctx))
        if limit is None:
            return None
        return window_time_to(ctx.window(metric, seconds), ctx.now_ms, limit)

    return run


def _build_offline(node: Call) -> Fn:
    seconds = literal_value(node.args[0])

    def run(ctx: EvalContext) -> Value:
        offline = ctx.offline_for()
        if offline is None:
            return None
        if offline >= seconds:
            return True
        # Silence counted from the end of our own outage says nothing yet (see engine).
        return None if ctx.silence_clamped() else False

    return run


def _build_absent(node: Call) -> Fn:
    metric, seconds = _metric_args(node)

    def run(ctx: EvalContext) -> Value:
        absent = ctx.absent_for(metric)
        if absent is None:
            return None
        if absent >= seconds:
            return True
        return None if ctx.silence_clamped(metric) else False

    return run


def _build_attr(node: Call) -> Fn:
    name = string_arg(node)
    default = lower(node.args[1]) if len(node.args) > 1 else _constant(None)

    def run(ctx: EvalContext) -> Value:
        value = ctx.attr(name)
        return default(ctx) if value is None else meta_value(value)

    return run


def _build_state(node: Call) -> Fn:
    name = string_arg(node)
    return lambda ctx: ctx.state(name)


def _build_anomaly(node: Call) -> Fn:
    model = string_arg(node)
    return lambda ctx: number(ctx.anomaly(model))


def _build_rul(node: Call) -> Fn:
    model = string_arg(node)
    return lambda ctx: number(ctx.rul(model))


def _build_abs(node: Call) -> Fn:
    operand = lower(node.args[0])

    def run(ctx: EvalContext) -> Value:
        value = number(operand(ctx))
        return None if value is None else abs(value)

    return run


_BUILDERS: dict[str, Callable[[Call], Fn]] = {
    **dict.fromkeys(REDUCERS, _build_reducer),
    "last": _build_last,
    "quantile": _build_quantile,
    "forecast": _build_forecast,
    "time_to": _build_time_to,
    "offline": _build_offline,
    "absent": _build_absent,
    "attr": _build_attr,
    "state": _build_state,
    "anomaly": _build_anomaly,
    "rul": _build_rul,
    "abs": _build_abs,
}
