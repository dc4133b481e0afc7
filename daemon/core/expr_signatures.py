"""Signatures of the rule expression functions and the static checks of their arguments."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from daemon.core.expr_syntax import (
    ExprError,
    Name,
    Node,
    Number,
    String,
    Token,
    Unary,
    literal_seconds,
)

# Static kinds of values; "any" is what the parser cannot know (attr() reads device meta).
NUM, BOOL, STR, ANY = "number", "condition", "string", "any"


@dataclass(frozen=True)
class Signature:
    """What a function accepts: parameter kinds in order, how many are required, keywords."""

    params: tuple[str, ...]  # metric | window | horizon | quantile | string | number | any
    required: int
    result: str
    usage: str
    keywords: tuple[tuple[str, str], ...] = ()  # required keyword arguments: name, kind


# Functions of one metric over one window, and nothing else.
WINDOWED = ("avg", "min", "max", "sum", "count", "stddev", "rate", "delta", "slope", "changes")


def _windowed(name: str) -> Signature:
    return Signature(("metric", "window"), 2, NUM, f"{name}(metric, window)")


FUNCTIONS: dict[str, Signature] = {
    "last": Signature(("metric", "window"), 1, NUM, "last(metric) or last(metric, window)"),
    **{name: _windowed(name) for name in WINDOWED},
    "quantile": Signature(("metric", "window", "quantile"), 3, NUM, "quantile(metric, window, q)"),
    "forecast": Signature(
        ("metric", "window"),
        2,
        NUM,
        "forecast(metric, window, horizon=24h)",
        (("horizon", "horizon"),),
    ),
    "time_to": Signature(
        ("metric", "window", "number"), 3, NUM, "time_to(metric, window, threshold)"
    ),
    "offline": Signature(("window",), 1, BOOL, "offline(duration)"),
    "absent": Signature(("metric", "window"), 2, BOOL, "absent(metric, duration)"),
    "attr": Signature(("string", "any"), 1, ANY, 'attr("name") or attr("name", default)'),
    "state": Signature(("string",), 1, STR, 'state("name")'),
    "anomaly": Signature(("string",), 1, NUM, 'anomaly("model")'),
    "rul": Signature(("string",), 1, NUM, 'rul("model")'),
    "abs": Signature(("number",), 1, NUM, "abs(x)"),
}
LIVENESS_FUNCTIONS = frozenset({"offline", "absent"})

KIND_NAMES = {NUM: "a number", BOOL: "a condition", STR: "a string", ANY: "a value"}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_arg(func: str, index: int | str, param: str, node: Node, kind: str) -> None:
    where = f"argument {index}" if isinstance(index, int) else index
    span = (node.start, node.end - node.start)
    if param == "metric" and not isinstance(node, Name):
        raise ExprError(f"{func}() needs a metric name (like temperature) as {where}", *span)
    if param in {"window", "horizon"}:
        seconds = literal_seconds(node)
        negative = isinstance(node, Unary) and literal_seconds(node.operand) is not None
        if seconds is None and not negative:
            raise ExprError(f"{func}() needs a duration literal (like 5m) as {where}", *span)
        if param == "window" and (negative or (seconds is not None and seconds <= 0)):
            raise ExprError(f"{func}() needs a duration greater than 0 as {where}", *span)
        if param == "horizon" and negative:
            raise ExprError(f"{func}() needs a duration of at least 0 as {where}", *span)
    if param == "quantile" and not (isinstance(node, Number) and 0.0 <= node.value <= 1.0):
        raise ExprError(f"{func}() needs a number literal from 0 to 1 as {where}", *span)
    if param == "string" and not isinstance(node, String):
        raise ExprError(f'{func}() needs a string literal (like "name") as {where}', *span)
    if param == "number" and kind == STR:
        raise ExprError(f"{func}() needs a number as {where}, not a string", *span)


def check_call(
    name: Token,
    signature: Signature,
    args: list[Node],
    kwargs: list[tuple[Token, Node]],
    close: Token,
    kind_of: Callable[[Node], str],
) -> None:
    """Raise ExprError for the first wrong argument count, kind or keyword of a call."""
    func, most = name.text, len(signature.params)
    count = str(most) if signature.required == most else f"{signature.required} or {most}"
    plural = "" if count == "1" else "s"
    wrong_count = f"{func}() takes {count} argument{plural} ({signature.usage}), got {len(args)}"
    # Problems are reported in the order they appear in the text.
    if len(args) > most:
        extra = args[most]
        raise ExprError(wrong_count, extra.start, args[-1].end - extra.start)
    for index, (param, arg) in enumerate(zip(signature.params, args, strict=False), start=1):
        _check_arg(func, index, param, arg, kind_of(arg))
    allowed = dict(signature.keywords)
    seen: set[str] = set()
    for key, value in kwargs:
        span = (key.start, key.end - key.start)
        if key.text not in allowed:
            if not allowed:
                raise ExprError(f"{func}() takes no keyword arguments", *span)
            raise ExprError(
                f"unknown keyword '{key.text}' for {func}(){did_you_mean(key.text, list(allowed))}",
                *span,
            )
        if key.text in seen:
            raise ExprError(f"keyword '{key.text}' given twice", *span)
        seen.add(key.text)
        _check_arg(func, f"{key.text}=", allowed[key.text], value, kind_of(value))
    if len(args) < signature.required:
        raise ExprError(wrong_count, close.start, 1)
    for key_name in allowed:
        if key_name not in seen:
            raise ExprError(f"{func}() needs {key_name}=... ({signature.usage})", close.start, 1)
