"""Frontline's error types: few, each meaningful, carrying what went wrong as attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.core.rulefmt import RuleProblem


class FrontlineError(Exception):
    """Base of every error Frontline raises on purpose."""


class PayloadRejected(FrontlineError):
    """An MQTT message that cannot be accepted; `reason` is a short stable label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration source: which key, what is wrong, where it came from."""

    key: str
    message: str
    source: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}"


class ConfigInvalid(FrontlineError):
    """The configuration (file or environment) does not validate; lists every problem."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class StoreUnavailable(FrontlineError):
    """The series or state store cannot be reached or written."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"store {url} unavailable: {detail}")
        self.url = url
        self.detail = detail


class BrokerUnavailable(FrontlineError):
    """The MQTT broker cannot be started or reached."""


class RuleFileInvalid(FrontlineError):
    """Rule files that do not validate; `problems` has every one, with file:line:col."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class ModelFileInvalid(FrontlineError):
    """Model spec files that do not validate; `problems` has every one, with file:line:col."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class MappingFileInvalid(FrontlineError):
    """Mapping files (or presets) that do not validate; every problem, with file:line:col."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class ModelArtefactError(FrontlineError):
    """A saved model (meta + arrays) that cannot be used: missing or misshapen arrays, an
    unknown format version or detector. The caller keeps its previous model."""
