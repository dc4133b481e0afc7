"""The operator's files at their default paths, which a fresh directory does not have yet.

By default the settings look for `rules/`, `models/`, `rules/service/routing.yaml`,
`rules/service/customers.yaml` and `mappings/`, relative to the working directory. A default path
that does not exist holds nothing: the daemon runs without it and says so (a warning at start-up,
and `warnings` in `/readyz`). A path the operator set, in the settings file or the environment,
must exist (the mapping files' own loader skips a missing one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from daemon.adapters.service_files import ABSENT_MEANING
from daemon.config import Settings

INIT_HINT = "`frontline init` writes a starter layout"


def explicit(section: BaseModel, field: str) -> bool:
    """Whether the operator set `field` of `section` (in the settings file or the environment)."""
    return field in section.model_fields_set


def paths_to_read(section: BaseModel, field: str) -> list[Path]:
    """The paths of a `paths` setting to read: all of those the operator set, else those that exist.

    A path the operator set and that does not exist is then reported by whoever reads it.
    """
    paths: list[Path] = list(getattr(section, field))
    return paths if explicit(section, field) else [p for p in paths if p.exists()]


@dataclass(frozen=True)
class Absent:
    """A default path that does not exist."""

    setting: str
    path: Path
    meaning: str
    #: the daemon reads it again when it appears (rules, models); else only at start-up
    reloaded: bool

    @property
    def said_by_loader(self) -> bool:
        """Whether its own loader warns about it (the service files); else the caller does."""
        return self.setting in ABSENT_MEANING

    @property
    def text(self) -> str:
        where = self.path if self.path.is_absolute() else f"{self.path} (in {Path.cwd()})"
        return f"{self.setting}: {where} not found: {self.meaning}"


def absent_defaults(settings: Settings) -> list[Absent]:
    """Every default path (not set by the operator) that does not exist, in settings order."""
    rules, models, actions = settings.rules, settings.models, settings.actions
    candidates: list[tuple[BaseModel, str, str, tuple[Path | None, ...], str, bool]] = [
        (rules, "paths", "rules.paths", rules.paths, f"no rules are evaluated ({INIT_HINT})", True),
    ]
    if models.enabled:
        meaning = "no learned models"
        candidates.append((models, "paths", "models.paths", models.paths, meaning, True))
    for field, path in (("routing", actions.routing), ("customers", actions.customers)):
        setting = f"actions.{field}"
        candidates.append((actions, field, setting, (path,), ABSENT_MEANING[setting], False))
    mappings = settings.mappings
    meaning = "devices are read in the native topic layout and the mappings.presets only"
    candidates.append((mappings, "paths", "mappings.paths", mappings.paths, meaning, False))
    return [
        Absent(setting, path, meaning, reloaded)
        for section, field, setting, paths, meaning, reloaded in candidates
        if not explicit(section, field)
        for path in paths
        if path is not None and not path.exists()
    ]


def still_absent(absent: list[Absent]) -> list[Absent]:
    """Those of `absent` the daemon still runs without: missing, or read only at start-up."""
    return [a for a in absent if not (a.reloaded and a.path.exists())]
