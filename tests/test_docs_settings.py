"""docs/operations.md lists every setting of the Settings model with its default, and a bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, BeforeValidator

from daemon.config import Settings
from daemon.core.durations import format_duration

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """Every setting as (`section.key`, its default as the docs write it)."""
    found = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found += leaves(kind, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        duration = any(isinstance(m, BeforeValidator) for m in field.metadata)
        found.append((prefix + name, written(default, duration)))
    return found


def written(default: object, duration: bool) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if duration:
        assert isinstance(default, int | float)
        return format_duration(default)
    if isinstance(default, tuple | list):
        return json.dumps([str(item) for item in default])
    if isinstance(default, dict):
        return json.dumps(default)
    return str(default)


def rows() -> dict[str, str]:
    """Each documented key -> the default cell of its row in the settings table."""
    found: dict[str, str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        for key in cells[0].split(","):
            found.setdefault(key.strip().strip("`"), cells[1])
    return found


SETTINGS = leaves(Settings)


def test_the_walk_finds_every_section() -> None:
    """Test that the walk reaches nested sections, webhook included (it is not vacuous)."""
    keys = {key for key, _ in SETTINGS}
    assert {"data_dir", "mqtt.port", "ingest.dead_letter_max_bytes", "webhook.secret"} <= keys
    assert ("store.history_retention", "90d") in SETTINGS
    assert len(keys) > 50


@pytest.mark.parametrize(("key", "default"), SETTINGS, ids=[key for key, _ in SETTINGS])
def test_every_setting_is_documented_with_its_default(key: str, default: str) -> None:
    """Test that each setting has a row in docs/operations.md that shows its default."""
    documented = rows()
    assert key in documented, f"{key} is missing from {DOC.name}"
    assert f"`{default}`" in documented[key] or (default == "none" and "none" in documented[key]), (
        f"{key}: the docs say {documented[key]!r}, the default is {default!r}"
    )


@pytest.mark.parametrize(
    "key",
    [
        "ingest.dead_letter_max_rows",
        "ingest.dead_letter_max_bytes",
        "devices.max_known",
        "devices.max_metrics",
        "store.history_retention",
        "store.retention",
        "rules.max_window",
    ],
)
def test_every_bound_setting_is_in_the_bounds_section(key: str) -> None:
    """Test that each bound's setting appears in the Bounds section, not only in the table."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Bounds") :]
    section = section[: section.index("\n## ", 1)]
    assert f"`{key}`" in section
