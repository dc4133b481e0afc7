"""The rule expression language: parser, static checks and what a tree needs to be evaluated.

Expressions are data. `parse_expr` turns text into a tree of frozen nodes with our own lexer and
recursive-descent parser (tokens and nodes live in `expr_syntax`, function signatures in
`expr_signatures`); `daemon.core.expr_eval` walks that tree with our own code. Neither uses
Python's `eval`, `exec`, `compile` or `ast` on user input.

Grammar, lowest precedence first::

    expr       := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]    # a < b < c is an error
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | DURATION | STRING | "true" | "false" | NAME
                | NAME "(" [arg ("," arg)*] ")" | "(" expr ")"
    arg        := expr | NAME "=" expr

>>> tree = parse_expr("avg(t, 5m) > 80 and not offline(10m)")
>>> tree.op, referenced_metrics(tree), uses_liveness(tree)
('and', {'t': 300.0}, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from daemon.core.expr_signatures import (
    BOOL,
    FUNCTIONS,
    KIND_NAMES,
    LIVENESS_FUNCTIONS,
    NUM,
    STR,
    Signature,
    check_call,
    did_you_mean,
)
from daemon.core.expr_syntax import (
    ARITHMETIC,
    COMPARISONS,
    MAX_DEPTH,
    MAX_NESTING,
    ORDERINGS,
    Binary,
    Bool,
    Call,
    Duration,
    ExprError,
    Name,
    Node,
    Number,
    String,
    Token,
    Unary,
    literal_seconds,
    tokenize,
    walk,
)
from daemon.core.modelspec import score_metric
from daemon.core.payloads import canonical_name

__all__ = [
    "ARITHMETIC",
    "COMPARISONS",
    "FUNCTIONS",
    "Binary",
    "Bool",
    "Call",
    "Duration",
    "ExprError",
    "Name",
    "Node",
    "Number",
    "Signature",
    "String",
    "Unary",
    "anomaly_models",
    "model_refs",
    "parse_expr",
    "referenced_metrics",
    "source",
    "uses_liveness",
    "walk",
]


def _describe(token: Token) -> str:
    return "end of input" if token.kind == "end" else f"'{token.text}'"


# --------------------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.nesting = 0
        # Static kind and depth of each node built so far, by identity (nodes live until the end).
        self.info: dict[int, tuple[str, int]] = {}

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    def kind(self, node: Node) -> str:
        return self.info[id(node)][0]

    def made(self, node: Node, kind: str, *children: Node) -> Node:
        depth = 1 + max((self.info[id(child)][1] for child in children), default=0)
        if depth > MAX_DEPTH:
            raise ExprError(
                f"expression too deeply nested (more than {MAX_DEPTH} levels)",
                node.start,
                node.end - node.start,
            )
        self.info[id(node)] = (kind, depth)
        return node

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ExprError("empty expression", 0, len(self.text) or 1)
        node = self.expression()
        token = self.peek()
        if token.kind != "end":
            hint = {")": " (no matching '(')", "=": " (use '==' to compare)"}.get(token.text)
            raise ExprError(
                f"unexpected {_describe(token)}{hint or ' (expected an operator)'}",
                token.start,
                token.end - token.start,
            )
        return node

    def expression(self) -> Node:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            token = self.peek()
            raise ExprError(
                f"expression too deeply nested (more than {MAX_NESTING} levels of brackets)",
                token.start,
                token.end - token.start,
            )
        node = self.logical("or", self.conjunction)
        self.nesting -= 1
        return node

    def conjunction(self) -> Node:
        return self.logical("and", self.negation)

    def logical(self, op: str, operand: Callable[[], Node]) -> Node:
        left = operand()
        while self.at("kw", op):
            self.advance()
            right = operand()
            for side in (left, right):
                self.check_condition(side, f"'{op}' needs a condition on each side")
            left = self.made(Binary(op, left, right, left.start, right.end), BOOL, left, right)
        return left

    def check_condition(self, node: Node, what: str) -> None:
        kind = self.kind(node)
        if kind in {NUM, STR}:
            written = self.text[node.start : node.end]
            hint = f" (compare it, e.g. {written} > 0)" if kind == NUM and len(written) < 40 else ""
            message = f"{what}, not {KIND_NAMES[kind]}{hint}"
            raise ExprError(message, node.start, node.end - node.start)

    def negation(self) -> Node:
        nots = []
        while self.at("kw", "not"):
            nots.append(self.advance())
        node = self.comparison()
        for token in reversed(nots):
            self.check_condition(node, "'not' needs a condition")
            node = self.made(Unary("not", node, token.start, node.end), BOOL, node)
        return node

    def comparison(self) -> Node:
        left = self.arithmetic(("+", "-"), self.product)
        token = self.peek()
        if token.kind != "op" or token.text not in COMPARISONS:
            return left
        self.advance()
        right = self.arithmetic(("+", "-"), self.product)
        kinds = {self.kind(left), self.kind(right)}
        if STR in kinds and kinds & {NUM, BOOL}:
            raise ExprError(
                f"cannot compare a string with a number using '{token.text}'",
                token.start,
                token.end - token.start,
            )
        if kinds == {STR} and token.text in ORDERINGS:
            raise ExprError(
                "strings can only be compared with == or !=", token.start, token.end - token.start
            )
        node = self.made(Binary(token.text, left, right, left.start, right.end), BOOL, left, right)
        after = self.peek()
        if after.kind == "op" and after.text in COMPARISONS:
            raise ExprError(
                "comparisons cannot be chained (use 'and')", after.start, after.end - after.start
            )
        return node

    def product(self) -> Node:
        return self.arithmetic(("*", "/", "%"), self.unary)

    def arithmetic(self, ops: tuple[str, ...], operand: Callable[[], Node]) -> Node:
        left = operand()
        while self.peek().kind == "op" and self.peek().text in ops:
            op = self.advance().text
            right = operand()
            for side in (left, right):
                self.check_number(side, f"'{op}'")
            left = self.made(Binary(op, left, right, left.start, right.end), NUM, left, right)
        return left

    def check_number(self, node: Node, what: str) -> None:
        if self.kind(node) == STR:
            raise ExprError(
                f"{what} needs a number, not a string", node.start, node.end - node.start
            )

    def unary(self) -> Node:
        minuses = []
        while self.at("op", "-"):
            minuses.append(self.advance())
        node = self.primary()
        for token in reversed(minuses):
            self.check_number(node, "'-'")
            node = self.made(Unary("-", node, token.start, node.end), NUM, node)
        return node

    def primary(self) -> Node:
        token = self.advance()
        start, end = token.start, token.end
        literal = _literal(token)
        if literal is not None:
            return self.made(*literal)
        if token.kind == "name":
            if token.text == "metric" and self.at("op", "("):
                return self.quoted_metric(token)
            if self.at("op", "("):
                return self.call(token)
            canonical = canonical_name(token.text)
            if canonical != token.text:
                raise ExprError(
                    f"metric names are stored in canonical form: write {canonical}"
                    f' (or metric("{token.text}"))',
                    start,
                    end - start,
                )
            return self.made(Name(token.text, start, end), NUM)
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            close = self.peek()
            if not self.at("op", ")"):
                raise ExprError(
                    f"expected ')' to close '(' at {start + 1}, got {_describe(close)}",
                    close.start,
                    close.end - close.start,
                )
            self.advance()
            # The brackets belong to the span, so `source()` of an operand reads as written.
            kind = self.kind(inner)
            return self.made(dataclasses.replace(inner, start=start, end=close.end), kind, inner)
        raise ExprError(f"unexpected {_describe(token)} (expected a value)", start, end - start)

    def quoted_metric(self, name: Token) -> Node:
        """`metric("flow rate")`: any name a device sends, read under its canonical name."""
        self.advance()
        text = self.advance()
        close = self.peek()
        if text.kind != "str" or not self.at("op", ")"):
            raise ExprError(
                'metric() takes one quoted name, e.g. metric("flow rate")',
                name.start,
                close.end - name.start,
            )
        self.advance()
        quoted = str(text.value)
        if not quoted:
            raise ExprError("metric() needs a name", text.start, text.end - text.start)
        node = Name(canonical_name(quoted), name.start, close.end, quoted)
        return self.made(node, NUM)

    def call(self, name: Token) -> Node:
        signature = FUNCTIONS.get(name.text)
        if signature is None:
            raise ExprError(
                f"unknown function '{name.text}'{did_you_mean(name.text, FUNCTIONS)}",
                name.start,
                name.end - name.start,
            )
        opening = self.advance()
        args: list[Node] = []
        kwargs: list[tuple[Token, Node]] = []
        while not self.at("op", ")"):
            token = self.peek()
            if token.kind == "name" and self.peek(1).text == "=" and self.peek(1).kind == "op":
                self.advance()
                self.advance()
                kwargs.append((token, self.expression()))
            else:
                arg = self.expression()
                if kwargs:
                    raise ExprError(
                        "positional argument after keyword argument",
                        arg.start,
                        arg.end - arg.start,
                    )
                args.append(arg)
            if self.at("op", ","):
                self.advance()
                if self.at("op", ")"):
                    after = self.peek()
                    raise ExprError("unexpected ')' (expected a value)", after.start, 1)
                continue
            if not self.at("op", ")"):
                after = self.peek()
                raise ExprError(
                    f"expected ',' or ')' to close '{name.text}(' at {opening.start + 1},"
                    f" got {_describe(after)}",
                    after.start,
                    after.end - after.start,
                )
        close = self.advance()
        check_call(name, signature, args, kwargs, close, self.kind)
        node = Call(
            name.text,
            tuple(args),
            tuple((key.text, value) for key, value in kwargs),
            name.start,
            close.end,
        )
        return self.made(node, signature.result, *args, *(value for _, value in kwargs))


def _literal(token: Token) -> tuple[Node, str] | None:
    start, end = token.start, token.end
    if token.kind == "num":
        return Number(float(token.value), start, end), NUM
    if token.kind == "dur":
        return Duration(float(token.value), start, end), NUM
    if token.kind == "str":
        return String(str(token.value), start, end), STR
    if token.kind == "kw" and token.text in {"true", "false"}:
        return Bool(token.text == "true", start, end), BOOL
    return None


# ------------------------------------------------------------------------------------ public API
def parse_expr(text: str) -> Node:
    """Parse `text` into a checked tree; raise ExprError at the first problem."""
    return _Parser(text).parse()


def referenced_metrics(node: Node) -> dict[str, float]:
    """Return each metric read with the longest window it needs (0.0: the last value only)."""
    found: dict[str, float] = {}
    for current in walk(node):
        if isinstance(current, Name):
            found.setdefault(current.name, 0.0)
        elif isinstance(current, Call) and current.args and isinstance(current.args[0], Name):
            signature = FUNCTIONS.get(current.func)
            if signature is None or signature.params[0] != "metric":
                continue
            seconds = 0.0
            if current.func != "absent" and len(current.args) > 1:  # absent() needs no samples
                seconds = literal_seconds(current.args[1]) or 0.0
            metric = current.args[0].name
            found[metric] = max(found.get(metric, 0.0), seconds)
        elif isinstance(current, Call) and current.func in MODEL_FUNCTIONS and current.args:
            model = current.args[0]
            if isinstance(model, String):  # the model's live output, stored as a series
                found.setdefault(score_metric(model.value), 0.0)
    return found


def uses_liveness(node: Node) -> bool:
    """Return whether the expression contains offline() or absent()."""
    return any(isinstance(n, Call) and n.func in LIVENESS_FUNCTIONS for n in walk(node))


MODEL_FUNCTIONS = {"anomaly": "anomaly", "rul": "rul"}  # function -> the model kind it reads


def model_refs(node: Node) -> dict[str, str]:
    """Return model name -> the function that reads it (`anomaly` or `rul`)."""
    return {
        n.args[0].value: n.func
        for n in walk(node)
        if isinstance(n, Call)
        and n.func in MODEL_FUNCTIONS
        and n.args
        and isinstance(n.args[0], String)
    }


def anomaly_models(node: Node) -> set[str]:
    """Return the model names used in anomaly("...")."""
    return {name for name, func in model_refs(node).items() if func == "anomaly"}


def quoted_metrics(node: Node) -> dict[str, str]:
    """Return each name written as `metric("...")` -> the canonical name it reads."""
    return {n.quoted: n.name for n in walk(node) if isinstance(n, Name) and n.quoted is not None}


def source(node: Node, text: str) -> str:
    """Return the text of `node` as written in `text` (the text it was parsed from)."""
    return text[node.start : node.end]
