"""Syntax of the rule expression language: errors, tree nodes and tokens.

`daemon.core.expr` parses with these; `daemon.core.expr_eval` evaluates the nodes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from daemon.core.durations import parse_duration
from daemon.errors import FrontlineError

MAX_NESTING = 32  # parentheses and calls inside each other: bounds the parser's recursion
MAX_DEPTH = 96  # tree depth (long operator chains too): bounds the evaluator's recursion


class ExprError(FrontlineError):
    """An expression that does not parse or check; `offset` (0-based) and `length` locate it."""

    def __init__(self, message: str, offset: int, length: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.length = max(1, length)


# Nodes. `weakref_slot` lets the evaluator cache a tree's lowered form without keeping it alive.
@dataclass(frozen=True, slots=True, weakref_slot=True)
class Number:
    """A number literal."""

    value: float
    start: int
    end: int


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Duration:
    """A duration literal such as `5m` or `1h30m`, in seconds."""

    seconds: float
    start: int
    end: int


@dataclass(frozen=True, slots=True, weakref_slot=True)
class String:
    """A string literal."""

    value: str
    start: int
    end: int


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Bool:
    """`true` or `false`."""

    value: bool
    start: int
    end: int


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Name:
    """A metric: its latest value. `quoted` is the name as written in `metric("...")`."""

    name: str
    start: int
    end: int
    quoted: str | None = None


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Call:
    """A function call; keyword arguments keep their order of writing."""

    func: str
    args: tuple[Node, ...]
    kwargs: tuple[tuple[str, Node], ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Unary:
    """`-x` or `not x`."""

    op: str
    operand: Node
    start: int
    end: int


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Binary:
    """An arithmetic, comparison or logical operator."""

    op: str
    left: Node
    right: Node
    start: int
    end: int


Node = Number | Duration | String | Bool | Name | Call | Unary | Binary

COMPARISONS = frozenset({">", ">=", "<", "<=", "==", "!="})
ORDERINGS = frozenset({">", ">=", "<", "<="})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})


# ---------------------------------------------------------------------------------------- lexer
class Token(NamedTuple):
    """One lexical token; `end` tokens sit at the end of the text."""

    kind: str  # num | dur | str | name | kw | op | end
    text: str
    start: int
    end: int
    value: float | str


_KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+(?![\w.])")
_NUMBER = re.compile(r"(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?(?![\w.])")
_WORD = re.compile(r"[\w.]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",", "=")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}
_HINTS = {"&": " (use 'and')", "|": " (use 'or')", "!": " (use 'not' or '!=')"}


def _read_string(text: str, start: int) -> Token:
    quote, i = text[start], start + 1
    chars: list[str] = []
    while i < len(text):
        char = text[i]
        if char == quote:
            return Token("str", text[start : i + 1], start, i + 1, "".join(chars))
        if char == "\\" and i + 1 < len(text):
            escaped = _ESCAPES.get(text[i + 1])
            if escaped is None:
                raise ExprError(f"unknown escape '\\{text[i + 1]}' in string", i, 2)
            chars.append(escaped)
            i += 2
            continue
        chars.append(char)
        i += 1
    raise ExprError("unterminated string", start, len(text) - start)


def _read_number(text: str, start: int) -> Token:
    if match := _DURATION.match(text, start):
        kind = "dur"
        try:
            value = parse_duration(match.group())
        except ValueError:  # the only ValueError the pattern lets through: too large to be finite
            value = math.inf
    elif match := _NUMBER.match(text, start):
        kind, value = "num", float(match.group())
    else:
        word = _WORD.match(text, start)
        assert word is not None  # a digit or a dot followed by a digit is a word character
        # `1e` is a broken exponent, `5min` or `5m30` a broken duration.
        broken_exponent = re.fullmatch(r"[\d.]*[eE]", word.group()) is not None
        what = (
            "duration"
            if re.search(r"\d[A-Za-z]", word.group()) and not broken_exponent
            else "number"
        )
        hint = " (use e.g. 30s, 5m, 2h, 7d, 1h30m)" if what == "duration" else ""
        raise ExprError(f"invalid {what} '{word.group()}'{hint}", start, word.end() - start)
    if not math.isfinite(value):
        raise ExprError(f"number out of range '{match.group()}'", start, match.end() - start)
    return Token(kind, match.group(), start, match.end(), value)


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens, ending with an `end` token at `len(text)`."""
    tokens: list[Token] = []
    i, size = 0, len(text)
    while i < size:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char in "\"'":
            token = _read_string(text, i)
        elif char.isdigit() or (char == "." and text[i + 1 : i + 2].isdigit()):
            token = _read_number(text, i)
        elif match := _NAME.match(text, i):
            word = match.group()
            token = Token("kw" if word in _KEYWORDS else "name", word, i, match.end(), word)
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                raise ExprError(f"unexpected character {char!r}{_HINTS.get(char, '')}", i, 1)
            token = Token("op", op, i, i + len(op), op)
        tokens.append(token)
        i = token.end
    tokens.append(Token("end", "", size, size, ""))
    return tokens


def _describe(token: Token) -> str:
    return "end of input" if token.kind == "end" else f"'{token.text}'"


def literal_seconds(node: Node) -> float | None:
    """The seconds of a duration or number literal, else None."""
    if isinstance(node, Duration):
        return node.seconds
    if isinstance(node, Number):
        return node.value
    return None


def walk(node: Node) -> Iterator[Node]:
    """Yield `node` and every node under it, parents first, left to right."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, Call):
            stack.extend(reversed([*current.args, *(value for _, value in current.kwargs)]))
        elif isinstance(current, Unary):
            stack.append(current.operand)
        elif isinstance(current, Binary):
            stack.extend((current.right, current.left))
