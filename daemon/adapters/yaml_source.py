"""A YAML file read with the position of every key and value, for problems with file:line:col.

Used by the operator's files that are validated by pydantic models (`service_files`): the model
says what is wrong and where in the data (`loc`); this module turns `loc` into `file:line:col`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from daemon.errors import ConfigProblem

#: a place in the data: mapping keys and list indices
Loc = tuple[str | int, ...]


@dataclass
class YamlSource:
    """A YAML file's plain data with the position of every key and value (1-based)."""

    path: Path
    data: Any
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def where(self, loc: Loc, *, key: bool = False) -> str:
        """Return `file:line:col` of the key (or value) at `loc`, else of its nearest parent."""
        for depth in range(len(loc), 0, -1):
            found = (self.keys if key else self.values).get(loc[:depth]) or self.keys.get(
                loc[:depth]
            )
            if found is not None:
                return f"{self.path}:{found[0]}:{found[1]}"
        return f"{self.path}:1:1"

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> ConfigProblem:
        return ConfigProblem(
            ".".join(str(p) for p in loc) or "-", message, self.where(loc, key=key)
        )


def _plain(node: Any, loc: Loc, source: YamlSource) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            inner = (*loc, str(key))
            line, col = node.lc.key(key)
            source.keys[inner] = (line + 1, col + 1)
            line, col = node.lc.value(key)
            source.values[inner] = (line + 1, col + 1)
            out[str(key)] = _plain(value, inner, source)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            source.keys[(*loc, index)] = source.values[(*loc, index)] = (line + 1, col + 1)
            items.append(_plain(value, (*loc, index), source))
        return items
    return node


def read_yaml_source(path: Path) -> tuple[YamlSource | None, list[ConfigProblem]]:
    """Parse the mapping in `path` with positions.

    A file that cannot be read, is not YAML or is not a mapping gives no source and one problem.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, [ConfigProblem("-", f"cannot read: {reason}", f"{path}:1:1")]
    try:
        node = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else f"{path}:1:1"
        return None, [ConfigProblem("-", f"not valid YAML: {getattr(exc, 'problem', exc)}", where)]
    source = YamlSource(path, None)
    source.data = _plain(node, (), source) if node is not None else {}
    if not isinstance(source.data, dict):
        return None, [ConfigProblem("-", "the file must be a mapping of keys", f"{path}:1:1")]
    return source, []


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Return the keys the model allows at `loc` (for "unknown key" messages)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = current.model_fields if _is_model(current) else {}
        if part not in fields:
            return []
        annotation = fields[part].annotation
        current = next((a for a in (annotation, *get_args(annotation)) if _is_model(a)), None)
    return list(current.model_fields) if _is_model(current) else []


def _is_model(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def validation_problems(
    exc: ValidationError, model: type[BaseModel], source: YamlSource, prefix: Loc = ()
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        loc: Loc = (*prefix, *error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = _fields_at(model, tuple(error["loc"][:-1]))
            hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
            problems.append(source.problem(loc, f"unknown key{hint}", key=True))
        elif error["type"] == "model_type":
            keys = ", ".join(_fields_at(model, tuple(error["loc"])))
            problems.append(source.problem(loc, f"must be a mapping of keys ({keys})"))
        elif error["type"] == "missing":
            problems.append(source.problem(loc, "required key missing"))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(source.problem(loc, message))
    return problems


def file_order(problem: ConfigProblem) -> tuple[int, ...]:
    """Sort key: file order of `file:line:col` sources."""
    return tuple(int(part) for part in problem.source.rsplit(":", 2)[1:] if part.isdigit())


class Named(Protocol):
    """Something an operator's file names, and where (`file:line:col`)."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...


N = TypeVar("N", bound=Named)


def first_of_each_name(items: list[N], what: str) -> tuple[list[N], list[ConfigProblem]]:
    """Keep the first item of each name; each later one is a problem naming the first."""
    kept: list[N] = []
    problems: list[ConfigProblem] = []
    seen: dict[str, str] = {}
    for item in items:
        if item.name in seen:
            message = f"duplicate {what} name {item.name!r} (first at {seen[item.name]})"
            problems.append(ConfigProblem("name", message, item.source))
            continue
        seen[item.name] = item.source
        kept.append(item)
    return kept, problems
