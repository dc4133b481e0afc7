"""Rule files: the YAML format operators write, validated in one place with every error located.

Pure: `parse_rule_file(text, filename, exists)` takes the text and a function that says whether
a referenced file (runbook, guide) exists; reading files is the loader's job (adapters).
Validation never stops at the first problem: operators fix a file in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from daemon.core.durations import format_duration, parse_duration
from daemon.core.expr import (
    ARITHMETIC,
    FUNCTIONS,
    Binary,
    Bool,
    Call,
    ExprError,
    Node,
    String,
    Unary,
    parse_expr,
    referenced_metrics,
    walk,
)
from daemon.core.expr_signatures import BOOL, STR
from daemon.core.expr_syntax import literal_seconds
from daemon.core.payloads import CANONICAL, canonical_name
from daemon.core.templates import TemplateInvalid, check_template
from daemon.core.units import UnitError, check_unit

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
COMMAND = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
TICKET_POLICIES = ("on_failure", "always", "never")
MODES = ("live", "dry-run")
DEFAULT_INTERVAL_S = 30.0
#: default of `rules.max_window`: the longest history a rule may read (docs/operations.md)
MAX_WINDOW_S = 7 * 86400.0

Mode = Literal["live", "dry-run"]


@dataclass(frozen=True)
class RuleProblem:
    file: str
    line: int
    col: int
    message: str
    rule: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return (
            f"{where}: {self.message}"
            if self.rule is None
            else f"{where}: [{self.rule}] {self.message}"
        )


@dataclass(frozen=True)
class RemediationStep:
    command: str
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0
    verify_s: float = 600.0
    max_attempts: int = 1


@dataclass(frozen=True)
class Rule:
    alert: str
    expr_text: str
    expr: Node
    group: str
    file: str
    line: int
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    cooldown_s: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    remediate: tuple[RemediationStep, ...] = ()
    guide: str | None = None
    ticket: str = "on_failure"
    mode: Mode = "live"
    #: seconds until the customer feels the fault (`impact:`), evaluated with the rule while the
    #: alert is active; routing matches it (`impact_within`) so urgency follows the prediction
    impact_text: str | None = None
    impact: Node | None = None
    #: a Markdown file of steps that keep the customer safe until help comes; sent when the
    #: ticket's route says so (`safety_steps: true` in routing.yaml)
    safety: str | None = None
    #: metric (canonical name) -> the unit the rule reads it in; a device that declared another
    #: unit is converted on read, or refused if it cannot be (docs/devices.md, "Units")
    units: Mapping[str, str] = field(default_factory=dict)

    def fingerprint(self) -> tuple[object, ...]:
        """What makes two versions of a rule the same rule (for reload)."""
        return (
            self.alert, self.expr_text, self.for_s, self.keep_firing_for_s, self.cooldown_s,
            tuple(sorted(self.labels.items())), tuple(sorted(self.annotations.items())),
            self.remediate, self.guide, self.ticket, self.mode, self.impact_text, self.safety,
            tuple(sorted(self.units.items())),
        )  # fmt: skip

    def expressions(self) -> tuple[Node, ...]:
        """Every expression the rule evaluates (its condition, then its impact, if any)."""
        return (self.expr,) if self.impact is None else (self.expr, self.impact)


@dataclass(frozen=True)
class Group:
    name: str
    interval_s: float
    match: Mapping[str, str]
    rules: tuple[Rule, ...]
    file: str
    line: int
    mode: Mode = "live"
    #: cron (5 fields, UTC): evaluate on this schedule over stored history instead of every
    #: `interval` over in-memory windows; for usage (customer-success) rules over long windows
    schedule: str | None = None
    #: scheduled groups: at most one advisory per device and alert within this period
    advisory_period_s: float = 30 * 86400.0


_GROUP_KEYS = {"name", "interval", "match", "rules", "mode", "schedule", "advisory_period"}
_CRON_FIELD = re.compile(r"[0-9*/,\-]+|[A-Za-z]{3}(-[A-Za-z]{3})?")
_RULE_KEYS = {
    "alert", "expr", "for", "keep_firing_for", "cooldown", "labels", "annotations",
    "remediate", "guide", "ticket", "mode", "impact", "safety", "units",
}  # fmt: skip
_STEP_KEYS = {"command", "params", "timeout", "verify", "max_attempts"}


class _Checker:
    def __init__(
        self,
        filename: str,
        lines: list[str],
        exists: Callable[[str], bool],
        max_window_s: float | None = None,
    ) -> None:
        self.file = filename
        self.lines = lines
        self.exists = exists
        self.max_window_s = max_window_s
        self.problems: list[RuleProblem] = []
        self.rule: str | None = None

    def add(self, pos: tuple[int, int], message: str) -> None:
        self.problems.append(RuleProblem(self.file, pos[0] + 1, pos[1] + 1, message, self.rule))

    @staticmethod
    def key_pos(node: CommentedMap, key: str) -> tuple[int, int]:
        try:
            return tuple(node.lc.key(key))
        except (KeyError, TypeError):
            return (node.lc.line, node.lc.col)

    @staticmethod
    def value_pos(node: CommentedMap, key: str) -> tuple[int, int]:
        try:
            return tuple(node.lc.value(key))
        except (KeyError, TypeError):
            return (node.lc.line, node.lc.col)

    def mapping(self, node: object, pos: tuple[int, int], what: str) -> CommentedMap | None:
        if isinstance(node, CommentedMap):
            return node
        self.add(pos, f"{what} must be a mapping")
        return None

    def unknown_keys(self, node: CommentedMap, allowed: set[str], what: str) -> None:
        for key in node:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.add(
                    self.key_pos(node, key), f"unknown key {key!r} in {what} (allowed: {hint})"
                )

    def duration(self, node: CommentedMap, key: str, default: float) -> float:
        if key not in node:
            return default
        try:
            return parse_duration(node[key])
        except ValueError as exc:
            self.add(self.value_pos(node, key), f"{key}: {exc}")
            return default

    def string_map(self, node: CommentedMap, key: str) -> dict[str, str]:
        if key not in node or node[key] is None:
            return {}
        value = self.mapping(node[key], self.value_pos(node, key), key)
        if value is None:
            return {}
        out: dict[str, str] = {}
        for inner, text in value.items():
            # match keys may be dotted (labels.tier); label and annotation keys are names
            valid = isinstance(inner, str) and (key == "match" or LABEL_KEY.fullmatch(inner))
            if not valid:
                self.add(self.key_pos(value, inner), f"{key}: {inner!r} is not a valid name")
                continue
            if isinstance(text, bool) or not isinstance(text, str | int | float):
                self.add(self.value_pos(value, inner), f"{key}.{inner} must be a string")
                continue
            out[inner] = str(text)
        return out

    def expr_position(self, node: CommentedMap, offset: int, key: str = "expr") -> tuple[int, int]:
        """Return the file position of `offset` within the rule's `expr` (or `key`) scalar."""
        line, col = self.value_pos(node, key)
        text = self.lines[line] if line < len(self.lines) else ""
        marker = text[col] if col < len(text) else ""
        if marker in {'"', "'"}:
            return (line, col + 1 + offset)  # quoted: the expression starts after the quote
        if marker in {"|", ">"}:
            before = str(node[key])[:offset]  # block scalar: starts on the next line
            row = line + 1 + before.count("\n")
            return (row, _indent(self.lines, row) + len(before) - before.rfind("\n") - 1)
        return (line, col + offset)


def _indent(lines: list[str], index: int) -> int:
    if index >= len(lines):
        return 0
    return len(lines[index]) - len(lines[index].lstrip(" "))


def _parse_step(c: _Checker, node: object, pos: tuple[int, int]) -> RemediationStep | None:
    step = c.mapping(node, pos, "a remediate step")
    if step is None:
        return None
    c.unknown_keys(step, _STEP_KEYS, "a remediate step")
    command = step.get("command")
    if not isinstance(command, str) or COMMAND.fullmatch(command) is None:
        c.add(c.value_pos(step, "command") if "command" in step else pos,
              "remediate step needs `command: <method name>`")  # fmt: skip
        return None
    params = step.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, CommentedMap):
        c.add(c.value_pos(step, "params"), "params must be a mapping")
        params = {}
    attempts = step.get("max_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 20:
        c.add(c.value_pos(step, "max_attempts"), "max_attempts must be an integer from 1 to 20")
        attempts = 1
    return RemediationStep(
        command=command,
        params=_plain(params),
        timeout_s=c.duration(step, "timeout", 30.0),
        verify_s=c.duration(step, "verify", 600.0),
        max_attempts=attempts,
    )


def _plain(node: object) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _parse_annotations(c: _Checker, rule: CommentedMap) -> dict[str, str]:
    annotations = c.string_map(rule, "annotations")
    node = rule.get("annotations")
    for key, text in annotations.items():
        assert isinstance(node, CommentedMap)
        try:
            check_template(text)
        except TemplateInvalid as exc:
            c.add(c.value_pos(node, key), f"annotations.{key}: template: {exc}")
        if key == "runbook" and "{" not in text and not c.exists(text):
            c.add(c.value_pos(node, key), f"runbook {text!r} not found")
    return annotations


def _parse_steps(c: _Checker, rule: CommentedMap) -> list[RemediationStep]:
    remediate = rule.get("remediate")
    if remediate is None:
        return []
    if not isinstance(remediate, CommentedSeq):
        c.add(c.value_pos(rule, "remediate"), "remediate must be a list of steps")
        return []
    steps = []
    for index, item in enumerate(remediate):
        step = _parse_step(c, item, tuple(remediate.lc.item(index)))
        if step is not None:
            steps.append(step)
    return steps


def _number_kind(node: Node) -> str | None:
    """Return what an `impact` tree gives when it is not a number (a condition, a string)."""
    if isinstance(node, Binary):
        return None if node.op in ARITHMETIC else "a condition"
    if isinstance(node, Unary):
        return None if node.op == "-" else "a condition"
    if isinstance(node, Bool):
        return "a condition"
    if isinstance(node, String):
        return "a string"
    if isinstance(node, Call):
        result = FUNCTIONS[node.func].result if node.func in FUNCTIONS else None
        return {BOOL: "a condition", STR: "a string"}.get(result or "")
    return None


def _parse_impact(c: _Checker, rule: CommentedMap) -> tuple[str | None, Node | None]:
    """Parse `impact:`, an expression of the seconds left until the customer feels the fault.

    Checked like `expr` (positions inside the scalar), and it must give a number: a condition
    such as `time_to(...) < 1h` would read as 1 or 0 seconds, i.e. "the customer feels it now".
    """
    text = rule.get("impact")
    if text is None:
        return None, None
    if isinstance(text, bool) or not isinstance(text, str | int | float) or not str(text).strip():
        c.add(c.value_pos(rule, "impact"), "impact must be an expression of seconds, "
              'e.g. time_to(temperature, 1m, attr("impact_temp", 85))')  # fmt: skip
        return None, None
    text = str(text)
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    try:
        node = parse_expr(stripped)
    except ExprError as exc:
        c.add(c.expr_position(rule, exc.offset + lead, "impact"), f"impact: {exc.message}")
        return None, None
    kind = _number_kind(node)
    if kind is not None:
        c.add(
            c.expr_position(rule, node.start + lead, "impact"),
            f"impact must give a number of seconds, not {kind} "
            "(write the time left, e.g. time_to(m, 10m, 85), not a comparison)",
        )
        return None, None
    return stripped, node


def _parse_units(c: _Checker, rule: CommentedMap, reads: set[str] | None) -> dict[str, str]:
    """Parse `units: {metric: unit}`: canonical names the rule reads, units pint knows.

    `reads` is the metrics the rule's expressions read (None: they did not parse).
    """
    node = rule.get("units")
    if node is None:
        return {}
    if not isinstance(node, CommentedMap):
        c.add(c.value_pos(rule, "units"), "units must be a mapping of metric -> unit, "
              "e.g. {temperature: degC}")  # fmt: skip
        return {}
    out: dict[str, str] = {}
    for metric, unit in node.items():
        name = str(metric)
        if CANONICAL.fullmatch(name) is None:
            c.add(c.key_pos(node, metric), f"units: {name!r} is not a canonical metric name "
                  f"(write {canonical_name(name)})")  # fmt: skip
            continue
        if reads is not None and name not in reads:
            c.add(c.key_pos(node, metric), f"units: the rule does not read {name}")
            continue
        if not isinstance(unit, str):
            c.add(c.value_pos(node, metric), f"units.{name} must be a unit, e.g. degC")
            continue
        try:
            check_unit(unit)
        except UnitError as exc:
            c.add(c.value_pos(node, metric), f"units.{name}: {exc}")
            continue
        out[name] = unit
    return out


def _parse_rule(
    c: _Checker, node: object, pos: tuple[int, int], group: str, mode: Mode
) -> Rule | None:
    rule = c.mapping(node, pos, "a rule")
    if rule is None:
        return None
    alert = rule.get("alert")
    c.rule = alert if isinstance(alert, str) else None
    c.unknown_keys(rule, _RULE_KEYS, "a rule")
    ok = True
    if not isinstance(alert, str) or NAME.fullmatch(alert) is None:
        c.add(c.value_pos(rule, "alert") if "alert" in rule else pos,
              "a rule needs `alert: Name` (letters, digits, _)")  # fmt: skip
        ok = False
    expr_text = rule.get("expr")
    expr: Node | None = None
    if not isinstance(expr_text, str) or not expr_text.strip():
        c.add(c.value_pos(rule, "expr") if "expr" in rule else pos, "a rule needs `expr:`")
    else:
        stripped = expr_text.strip()
        lead = len(expr_text) - len(expr_text.lstrip())
        try:
            expr = parse_expr(stripped)  # the stored text is what spans and explanations use
        except ExprError as exc:
            c.add(c.expr_position(rule, exc.offset + lead), f"expr: {exc.message}")
    labels = c.string_map(rule, "labels")
    annotations = _parse_annotations(c, rule)
    steps = _parse_steps(c, rule)
    guide = rule.get("guide")
    if guide is not None and (not isinstance(guide, str) or not c.exists(guide)):
        c.add(c.value_pos(rule, "guide"), f"guide {guide!r} not found")
    impact_text, impact = _parse_impact(c, rule)
    safety = rule.get("safety")
    if safety is not None and (not isinstance(safety, str) or not c.exists(safety)):
        c.add(c.value_pos(rule, "safety"), f"safety {safety!r} not found")
    ticket = rule.get("ticket", "on_failure")
    if ticket not in TICKET_POLICIES:
        c.add(c.value_pos(rule, "ticket"), f"ticket must be one of {', '.join(TICKET_POLICIES)}")
    rule_mode = rule.get("mode", mode)
    if rule_mode not in MODES:
        c.add(c.value_pos(rule, "mode"), "mode must be live or dry-run")
        rule_mode = mode
    for_s = c.duration(rule, "for", 0.0)
    keep = c.duration(rule, "keep_firing_for", 0.0)
    cooldown = c.duration(rule, "cooldown", 0.0)
    _check_window_bound(c, rule, expr, {"for": for_s, "keep_firing_for": keep})
    _check_window_bound(c, rule, impact, {}, "impact")
    reads = None
    if expr is not None and (impact is not None or "impact" not in rule):
        reads = {m for n in (expr, impact) if n is not None for m in referenced_metrics(n)}
    units = _parse_units(c, rule, reads)
    c.rule = None
    if not ok or expr is None or not isinstance(alert, str) or not isinstance(expr_text, str):
        return None
    return Rule(
        alert=alert, expr_text=expr_text.strip(), expr=expr, group=group, file=c.file,
        line=pos[0] + 1, for_s=for_s, keep_firing_for_s=keep, cooldown_s=cooldown,
        labels=labels, annotations=annotations, remediate=tuple(steps),
        guide=guide if isinstance(guide, str) else None,
        ticket=ticket if ticket in TICKET_POLICIES else "on_failure", mode=rule_mode,
        impact_text=impact_text, impact=impact,
        safety=safety if isinstance(safety, str) else None, units=units,
    )  # fmt: skip


def _check_window_bound(
    c: _Checker,
    rule: CommentedMap,
    expr: Node | None,
    durations: Mapping[str, float],
    key: str = "expr",
) -> None:
    """Report every window (and `for`, `keep_firing_for`) longer than `rules.max_window`.

    Rule windows live in memory for every device and are filled from the store: an unbounded
    window (`10000w`) would pull the whole history in. `rules.max_window` is itself at most
    `store.retention`, so a window past the history that is kept is refused here too.
    """
    limit = c.max_window_s
    if limit is None:
        return
    bound = f"longer than rules.max_window ({format_duration(limit)})"
    if expr is not None:
        text = str(rule[key])
        lead = len(text) - len(text.lstrip())
        for node in walk(expr):
            if not isinstance(node, Call) or node.func == "absent" or len(node.args) < 2:
                continue  # absent() and offline() measure silence: they read no history
            signature = FUNCTIONS.get(node.func)
            if signature is None or signature.params[:2] != ("metric", "window"):
                continue
            window = node.args[1]
            seconds = literal_seconds(window)
            if seconds is not None and seconds > limit:
                written = text.strip()[window.start : window.end]
                c.add(
                    c.expr_position(rule, window.start + lead, key), f"window {written} is {bound}"
                )
    for name, seconds in durations.items():
        if seconds > limit:
            c.add(c.value_pos(rule, name), f"{name} {rule[name]} is {bound}")


def _parse_group(c: _Checker, node: object, pos: tuple[int, int]) -> Group | None:
    group = c.mapping(node, pos, "a group")
    if group is None:
        return None
    c.unknown_keys(group, _GROUP_KEYS, "a group")
    name = group.get("name")
    if not isinstance(name, str) or not name.strip():
        c.add(c.value_pos(group, "name") if "name" in group else pos, "a group needs `name:`")
        name = f"<group at line {pos[0] + 1}>"
    interval = c.duration(group, "interval", DEFAULT_INTERVAL_S)
    if interval < 1:
        c.add(c.value_pos(group, "interval"), "interval must be at least 1s")
        interval = DEFAULT_INTERVAL_S
    match = c.string_map(group, "match")
    schedule = group.get("schedule")
    if schedule is not None:
        fields = str(schedule).split()
        if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
            c.add(
                c.value_pos(group, "schedule"), "schedule must be a 5-field cron, e.g. '0 3 * * *'"
            )
            schedule = None
        else:
            schedule = " ".join(fields)
    advisory = c.duration(group, "advisory_period", 30 * 86400.0)
    mode = group.get("mode", "live")
    if mode not in MODES:
        c.add(c.value_pos(group, "mode"), "mode must be live or dry-run")
        mode = "live"
    rules_node = group.get("rules")
    rules: list[Rule] = []
    if not isinstance(rules_node, CommentedSeq) or not rules_node:
        c.add(
            c.value_pos(group, "rules") if "rules" in group else pos,
            "a group needs a list of `rules:`",
        )
    else:
        seen: dict[str, int] = {}
        for index, item in enumerate(rules_node):
            item_pos: tuple[int, int] = tuple(rules_node.lc.item(index))
            rule = _parse_rule(c, item, item_pos, name, mode)
            if rule is None:
                continue
            if rule.alert in seen:
                c.rule = rule.alert
                first = seen[rule.alert]
                c.add(item_pos, f"duplicate alert {rule.alert!r} in group {name!r} (line {first})")
                c.rule = None
                continue
            seen[rule.alert] = item_pos[0] + 1
            rules.append(rule)
    return Group(name, interval, match, tuple(rules), c.file, pos[0] + 1, mode, schedule, advisory)


def parse_rule_file(
    text: str,
    filename: str,
    exists: Callable[[str], bool] = lambda _path: True,
    max_window_s: float | None = None,
) -> tuple[list[Group], list[RuleProblem]]:
    """Return the groups of one rule file and every problem found in it.

    With `max_window_s` (the daemon's `rules.max_window`), longer windows are problems too.
    """
    c = _Checker(filename, text.splitlines(), exists, max_window_s)
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line, mark.column) if mark is not None else (0, 0)
        c.add((line, col), f"not valid YAML: {exc.problem or exc}")
        return [], c.problems
    except YAMLError as exc:
        c.add((0, 0), f"not valid YAML: {exc}")
        return [], c.problems
    if data is None:
        return [], []
    top = c.mapping(data, (0, 0), "a rule file")
    if top is None:
        return [], c.problems
    c.unknown_keys(top, {"groups"}, "a rule file")
    groups_node = top.get("groups")
    groups: list[Group] = []
    if not isinstance(groups_node, CommentedSeq):
        c.add(
            c.value_pos(top, "groups") if "groups" in top else (0, 0),
            "a rule file needs `groups:` (a list)",
        )
        return [], c.problems
    for index, item in enumerate(groups_node):
        group = _parse_group(c, item, tuple(groups_node.lc.item(index)))
        if group is not None:
            groups.append(group)
    return groups, sorted(c.problems, key=lambda p: (p.line, p.col))


def check_groups(groups: list[Group]) -> list[RuleProblem]:
    """Return problems that span files: group names must be unique."""
    problems = []
    first: dict[str, Group] = {}
    for group in groups:
        if group.name in first:
            other = first[group.name]
            problems.append(RuleProblem(
                group.file, group.line, 1,
                f"duplicate group name {group.name!r} (also {other.file}:{other.line})",
            ))  # fmt: skip
        else:
            first[group.name] = group
    return problems
