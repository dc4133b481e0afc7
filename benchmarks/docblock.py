"""The `--write-docs` step the benchmark scripts share: replace a marked block in a doc."""

from __future__ import annotations

import sys
from pathlib import Path


def replace_block(path: Path, start: str, end: str, block: str) -> None:
    """Replace what stands between the markers `start` and `end` in `path` with `block`."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start not in text or end not in text:
        sys.exit(f"{path}: the markers {start} ... {end} are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}", encoding="utf-8")
