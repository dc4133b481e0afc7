"""Read rule files from disk: directories, files, and the paths their rules reference."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from pathlib import Path

from apscheduler.triggers.cron import CronTrigger

from daemon.core.rulefmt import MAX_WINDOW_S, Group, RuleProblem, check_groups, parse_rule_file
from daemon.errors import RuleFileInvalid

SUFFIXES = (".yaml", ".yml")


def rule_paths(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to the rule files directly in them (their `tests/` are not rules)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found


def load_rules(
    paths: Iterable[Path], max_window_s: float | None = MAX_WINDOW_S
) -> tuple[list[Group], list[RuleProblem]]:
    """Return every group in `paths` and every problem, across all files.

    A window (or `for`) longer than `max_window_s` is a problem: pass the daemon's
    `rules.max_window` (the default is that setting's default; None checks nothing).
    """
    groups: list[Group] = []
    problems: list[RuleProblem] = []
    for path in rule_paths(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(RuleProblem(str(path), 1, 1, f"cannot read: {exc}"))
            continue
        base = path.parent

        def exists(reference: str, base: Path = base) -> bool:
            return (base / reference).is_file()

        file_groups, file_problems = parse_rule_file(text, str(path), exists, max_window_s)
        groups.extend(file_groups)
        problems.extend(file_problems)
    problems.extend(check_groups(groups))
    for group in groups:
        if group.schedule:
            try:
                CronTrigger.from_crontab(group.schedule, timezone=UTC)
            except ValueError as exc:
                problems.append(RuleProblem(group.file, group.line, 1, f"schedule: {exc}"))
    return groups, problems


def load_valid_rules(
    paths: Iterable[Path], max_window_s: float | None = MAX_WINDOW_S
) -> list[Group]:
    """Every group in `paths`; RuleFileInvalid with every problem if any file is wrong."""
    groups, problems = load_rules(paths, max_window_s)
    if problems:
        raise RuleFileInvalid(problems)
    return groups


def fingerprint(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """Return what changes when a rule file changes (for the file watcher)."""
    stamp = []
    for path in rule_paths(paths):
        try:
            stat = path.stat()
        except OSError:
            continue
        stamp.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


class RuleFileSet:
    """The `RuleFiles` port over files and directories on disk.

    With `skip_missing` (the default `rules.paths`), a path that does not exist holds no rules
    until it appears; without, it is a problem (`cannot read`).
    """

    def __init__(
        self,
        paths: Iterable[Path],
        max_window_s: float | None = MAX_WINDOW_S,
        *,
        skip_missing: bool = False,
    ) -> None:
        self._paths = tuple(paths)
        self._max_window_s = max_window_s
        self._skip_missing = skip_missing

    def _read(self) -> list[Path]:
        return [p for p in self._paths if not self._skip_missing or p.exists()]

    def names(self) -> str:
        return ", ".join(str(p) for p in self._paths)

    def present(self) -> bool:
        """Whether there is a rule file to read (or a path that is missing and not skipped)."""
        return bool(rule_paths(self._read()))

    def load(self) -> tuple[list[Group], list[RuleProblem]]:
        return load_rules(self._read(), self._max_window_s)

    def stamp(self) -> object:
        return fingerprint(self._paths)
