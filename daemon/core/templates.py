"""Annotation templates: Jinja syntax in a sandbox, so operators' text can never run code."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateInvalid(ValueError):
    """A template that does not parse; `line` is 1-based within the template text."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


@lru_cache(maxsize=4096)
def _compiled(text: str):  # type: ignore[no-untyped-def]  # jinja's Template is untyped here
    return _ENV.from_string(text)


def check_template(text: str) -> None:
    """Raise TemplateInvalid if `text` is not a valid template."""
    try:
        _compiled(text)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(exc.message or "invalid template", exc.lineno) from exc


def render_template(text: str, context: Mapping[str, object]) -> str:
    """Render `text`; a failure renders as a visible marker rather than losing the alert.

    >>> context = {"device": {"id": "b1"}, "value": 85.26}
    >>> render_template("{{ device.id }} at {{ value | round(1) }}", context)
    'b1 at 85.3'
    """
    if "{" not in text:
        return text
    try:
        return str(_compiled(text).render(**context))
    except (UndefinedError, SecurityError, TypeError, ValueError, TemplateSyntaxError) as exc:
        return f"{text} [template error: {exc}]"
