"""Evaluation and explanation of parsed rule expressions.

`evaluate` runs for every device and rule each round, so a tree is lowered once into nested
closures (plain Python functions, no code generation) and cached per tree; each call is then a
walk over closures with no per-node dispatch. `explain` walks the tree itself, slower and richer,
keeping every sub-expression's value and a note; `summarize` turns that into one line.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

from daemon.core.durations import format_duration
from daemon.core.expr import ARITHMETIC as ARITHMETIC_OPS
from daemon.core.expr import (
    COMPARISONS,
    FUNCTIONS,
    Binary,
    Bool,
    Call,
    Duration,
    Name,
    Node,
    Number,
    String,
    Unary,
    source,
)
from daemon.core.expr_functions import (
    NEEDS_TWO,
    EvalContext,
    Points,
    Value,
    arithmetic,
    compare,
    logic_and,
    logic_not,
    logic_or,
    number,
    truth,
    window_slope,
)
from daemon.core.expr_lowering import Fn, literal_value, lower, string_arg

__all__ = ["EvalContext", "Explanation", "Value", "evaluate", "explain", "summarize"]


# ------------------------------------------------------------------------------------ evaluate
def evaluate(node: Node, ctx: EvalContext) -> Value:
    """Return the value of `node` for the device and instant of `ctx` (None = unknown)."""
    entry = _LOWERED.get(id(node))
    if entry is None or entry[0]() is not node:
        return _lowered(node)(ctx)
    return entry[1](ctx)


# id(tree) -> (weak reference to the tree, its closure). Weak, so reloaded rule sets free theirs;
# the reference is checked on use because an id can be reused once its tree is gone.
_LOWERED: dict[int, tuple[weakref.ref[Node], Fn]] = {}


def _lowered(node: Node) -> Fn:
    key = id(node)

    def forget(ref: weakref.ref[Node]) -> None:
        entry = _LOWERED.get(key)
        if entry is not None and entry[0] is ref:
            del _LOWERED[key]

    fn = lower(node)
    _LOWERED[key] = (weakref.ref(node, forget), fn)
    return fn


# ------------------------------------------------------------------------------------- explain
@dataclass(frozen=True)
class Explanation:
    """One sub-expression's source, value and note, with its operands' explanations."""

    text: str
    value: Value
    children: tuple[Explanation, ...]
    note: str = ""
    # What the node is: an operator ("and", ">", "-"), a function name, "metric", "duration" or
    # "literal"; `summarize` needs it to know which child decided.
    op: str = ""


def explain(node: Node, ctx: EvalContext, text: str) -> Explanation:  # noqa: PLR0911  per node type
    """Evaluate `node` keeping every sub-expression's value; `text` is what it was parsed from."""
    src = source(node, text)
    if isinstance(node, Duration):
        return Explanation(src, node.seconds, (), op="duration")
    if isinstance(node, Name):
        point = ctx.last(node.name)
        if point is None:
            return Explanation(src, None, (), f"no data for {node.name}", "metric")
        return Explanation(src, number(point[1]), (), op="metric")
    if isinstance(node, Call):
        return _explain_call(node, ctx, text, src)
    if isinstance(node, Unary):
        child = explain(node.operand, ctx, text)
        operand = number(child.value)
        if node.op == "not":
            return Explanation(src, logic_not(child.value), (child,), op="not")
        return Explanation(src, None if operand is None else -operand, (child,), op="-")
    if isinstance(node, Binary):
        return _explain_binary(node, ctx, text, src)
    return Explanation(src, node.value, (), op="literal")


def _explain_binary(node: Binary, ctx: EvalContext, text: str, src: str) -> Explanation:
    left, right = explain(node.left, ctx, text), explain(node.right, ctx, text)
    a, b = left.value, right.value
    note = ""
    value: Value
    if node.op in {"and", "or"}:
        value = logic_and(a, b) if node.op == "and" else logic_or(a, b)
    elif node.op in COMPARISONS:
        value = compare(node.op, a, b)
        note = _comparison_note(left, right, value)
    else:
        value = arithmetic(node.op, a, b)
        if value is None and a is not None and b is not None:
            if isinstance(a, str) or isinstance(b, str):
                note = "not a number"
            elif node.op in {"/", "%"} and number(b) == 0:
                note = "division by zero"
            else:
                note = "out of range"
    return Explanation(src, value, (left, right), note, node.op)


def _explain_call(node: Call, ctx: EvalContext, text: str, src: str) -> Explanation:
    value = evaluate(node, ctx)
    func = node.func
    # Operands that are expressions of their own (a threshold, a default, abs's argument); the
    # metric, window and name arguments are part of this call's note instead.
    children = tuple(
        explain(arg, ctx, text)
        for param, arg in zip(FUNCTIONS[func].params, node.args, strict=False)
        if param in {"number", "any"} and not isinstance(arg, Number | Duration | String | Bool)
    )
    if func == "time_to" and children and children[0].value is None:
        return Explanation(src, value, children, "threshold unknown", func)
    if func in {"attr", "state", "anomaly", "rul"}:
        name = string_arg(node)
        return Explanation(src, value, children, _lookup_note(func, name, node, ctx, value), func)
    if func == "offline":
        offline = ctx.offline_for()
        note = (
            "liveness unknown (not watching)"
            if offline is None
            else "online"
            if offline == 0
            else f"offline for {format_duration(offline)}"
        )
        return Explanation(src, value, children, note, func)
    if func == "abs":
        return Explanation(src, value, children, op=func)
    metric = node.args[0]
    assert isinstance(metric, Name)  # checked by the parser
    if func == "absent":
        absent = ctx.absent_for(metric.name)
        note = (
            "unknown (not watching)"
            if absent is None
            else f"no sample for {format_duration(absent)}"
        )
        return Explanation(src, value, children, note, func)
    window = source(node.args[1], text) if len(node.args) > 1 else ""
    points: Points = ctx.window(metric.name, literal_value(node.args[1])) if window else ()
    return Explanation(
        src, value, children, _window_note(func, metric.name, window, points, value), func
    )


def _lookup_note(func: str, name: str, node: Call, ctx: EvalContext, value: Value) -> str:
    if func == "attr":
        if ctx.attr(name) is not None:
            return "from device meta"
        return f"{name!r} not in device meta" + (", default used" if len(node.args) > 1 else "")
    if value is None:
        if func == "state":
            return f"no state {name!r}"
        return f"no {'prediction' if func == 'rul' else 'score'} from model {name!r}"
    return ""


def _window_note(  # noqa: PLR0911  one early answer per case reads best
    func: str, metric: str, window: str, points: Points, value: Value
) -> str:
    count = len(points)
    if not window:  # last(m)
        return f"no data for {metric}" if value is None else ""
    if value is not None:
        return f"{count} point{'' if count == 1 else 's'} in {window}"
    if count == 0:
        return f"no data for {metric} in {window}"
    if func in NEEDS_TWO and count < 2:
        return f"only 1 point for {metric} in {window} (needs 2)"
    if func == "time_to" and (slope := window_slope(points)) is not None:
        if slope == 0:
            return f"{metric} is flat in {window}"
        return f"{metric} in {window} moves away from the threshold"
    if func == "last":
        return f"no data for {metric} in {window}"
    return f"all points of {metric} in {window} have the same time"


def _comparison_note(left: Explanation, right: Explanation, value: Value) -> str:
    if value is None:
        if left.value is None or right.value is None:
            return ""
        return f"cannot compare {format_value(left.value)} with {format_value(right.value)}"
    time = _as_time(left, right)
    relation = _relation(left, right)
    return f"{format_value(left.value, time)} {relation} {format_value(right.value, time)}"


def _as_time(*sides: Explanation) -> bool:
    return any(side.op in {"duration", "time_to"} for side in sides)


def _relation(left: Explanation, right: Explanation) -> str:
    """'is 2.9 below', 'equals', 'is not': how two comparable values relate."""
    a, b = left.value, right.value
    if isinstance(a, str) or isinstance(b, str):
        return "equals" if a == b else "is not"
    x, y = number(a), number(b)
    assert x is not None  # compare() gave a result
    assert y is not None
    if x == y:
        return "equals"
    margin = format_value(abs(x - y), _as_time(left, right))
    return f"is {margin} {'above' if x > y else 'below'}"


def format_value(value: Value, time: bool = False) -> str:
    """Render a value for people: `82.1`, `85`, `true`, `"eco"`, `unknown`, `1h30m`."""
    if value is None or isinstance(value, bool):
        return _VERDICTS[value]
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if not math.isfinite(value):  # only a context handing out inf/nan gets here
        return str(value)
    if time:
        return ("-" if value < 0 else "") + (format_duration(abs(value)) if value else "0s")
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.0f}" if 1e6 <= abs(value) < 1e15 else f"{value:.6g}"


# ----------------------------------------------------------------------------------- summarize
_VERDICTS: dict[object, str] = {True: "true", False: "false", None: "unknown"}


def summarize(explanation: Explanation) -> str:
    """One line: whether the expression holds and which sub-expression decided, with its margin."""
    value = explanation.value
    verdict = _VERDICTS[value] if value is None or isinstance(value, bool) else "value"
    return f"{verdict}: {'; '.join(_reasons(explanation))}"


def _reasons(e: Explanation) -> list[str]:  # noqa: PLR0911  one early answer per node kind
    if e.op in {"and", "or"}:
        value = truth(e.value)
        decider = e.op == "or"  # the operand value that alone decides: false for and, true for or
        if value is None:
            picked = [c for c in e.children if truth(c.value) is None]
        elif value is decider:
            picked = [c for c in e.children if truth(c.value) is decider]
        else:
            picked = list(e.children)  # every operand took part
        return [reason for child in picked for reason in _reasons(child)]
    if e.op == "not":
        return _reasons(e.children[0])
    if e.value is None:
        unknown = [child for child in e.children if child.value is None]
        if unknown:
            return _reasons(unknown[0])
        if e.op in COMPARISONS or e.op in ARITHMETIC_OPS:
            return [f"{e.text}: {e.note}" if e.note else f"{e.text} is unknown"]
        return [e.note or f"{e.text} is unknown"]
    if e.op in COMPARISONS:
        left, right = e.children
        time = _as_time(left, right)
        return [f"{_side(left, time)} {_relation(left, right)} {_side(right, time)}"]
    note = f" ({e.note})" if e.note else ""
    return [f"{_side(e, e.op == 'time_to')}{note}"]


def _side(e: Explanation, time: bool) -> str:
    """`text = value`, or just the text for a literal (its value is its text)."""
    if e.op in {"literal", "duration"}:
        return e.text
    return f"{e.text} = {format_value(e.value, time)}"
