"""Trained model versions on disk: `<data_dir>/models/<name>/v0001/{model.npz,meta.json}`.

Each version is written whole into a temporary folder and renamed into place, so a crash leaves
either the complete version or none; `CURRENT` (one line: the version number) is replaced
atomically and says which version scores. Arrays are saved with `np.savez` and read with
`allow_pickle=False`, and `meta.json` carries the archive's SHA-256, so a truncated, edited or
foreign artefact is refused with a clear message instead of being half-loaded. Old versions
beyond `keep` are deleted, never the current one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.errors import ModelArtefactError

FORMAT = 1
_VERSION_DIR = re.compile(r"v(\d{4,})")


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    meta: dict[str, Any]
    current: bool = False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.numbers(p.name))

    def numbers(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = (_VERSION_DIR.fullmatch(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def current(self, name: str) -> int | None:
        """The version that scores: `CURRENT`, else the newest one."""
        try:
            text = (self.root / name / "CURRENT").read_text(encoding="utf-8").strip()
        except OSError:
            numbers = self.numbers(name)
            return numbers[-1] if numbers else None
        return int(text) if text.isdigit() else None

    def versions(self, name: str) -> list[Version]:
        """Every version with its metadata (unreadable metadata shows as an `error`)."""
        current = self.current(name)
        found = []
        for number in self.numbers(name):
            try:
                meta = self._meta(name, number)
            except ModelArtefactError as exc:
                meta = {"error": str(exc)}
            found.append(Version(name, number, meta, number == current))
        return found

    def _folder(self, name: str, number: int) -> Path:
        return self.root / name / f"v{number:04d}"

    def _meta(self, name: str, number: int) -> dict[str, Any]:
        path = self._folder(name, number) / "meta.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelArtefactError(f"{name} v{number}: no meta.json in {path.parent}") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelArtefactError(f"{name} v{number}: unreadable meta.json: {exc}") from exc
        if not isinstance(meta, dict):
            raise ModelArtefactError(f"{name} v{number}: meta.json is not an object")
        if meta.get("format") != FORMAT:
            raise ModelArtefactError(
                f"{name} v{number}: artefact format {meta.get('format')!r}, this Frontline "
                f"reads format {FORMAT}: retrain with `frontline train {name}`"
            )
        return meta

    def load(self, name: str, number: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (meta, arrays) of a version (default: the current one), verified."""
        number = self.current(name) if number is None else number
        if number is None:
            raise ModelArtefactError(f"{name}: no trained version (run `frontline train {name}`)")
        meta = self._meta(name, number)
        path = self._folder(name, number) / "model.npz"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelArtefactError(f"{name} v{number}: cannot read {path}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.get("sha256"):
            raise ModelArtefactError(
                f"{name} v{number}: {path} is corrupt (its checksum does not match meta.json)"
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ModelArtefactError(f"{name} v{number}: unreadable {path}: {exc}") from exc
        return meta, arrays

    # -- writing -------------------------------------------------------------------------------
    def save(
        self, name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], keep: int = 5
    ) -> int:
        """Write a new version, make it current, delete versions beyond `keep`; its number."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds vs allow_pickle
        data = buffer.getvalue()
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        number = (self.numbers(name) or [0])[-1] + 1
        full = {
            **meta,
            "name": name,
            "version": number,
            "format": FORMAT,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        staging = Path(tempfile.mkdtemp(prefix=f".v{number:04d}-", dir=folder))
        try:
            _write_file(staging / "model.npz", data)
            _write_file(staging / "meta.json", json.dumps(full, indent=2).encode())
            staging.rename(self._folder(name, number))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(folder)
        self.set_current(name, number)
        self._prune(name, keep)
        return number

    def set_current(self, name: str, number: int) -> None:
        if number not in self.numbers(name):
            raise ModelArtefactError(f"{name}: no version {number}")
        folder = self.root / name
        temporary = folder / "CURRENT.tmp"
        _write_file(temporary, f"{number}\n".encode())
        temporary.replace(folder / "CURRENT")
        _fsync_dir(folder)

    def rollback(self, name: str, to: int | None = None) -> int:
        """Make `to` (default: the version before the current one) current; its number."""
        numbers = self.numbers(name)
        current = self.current(name)
        if to is None:
            older = [n for n in numbers if current is not None and n < current]
            if not older:
                raise ModelArtefactError(
                    f"{name}: no version older than v{current} to roll back to"
                )
            to = older[-1]
        if to not in numbers:
            raise ModelArtefactError(f"{name}: no version {to} (there are {numbers or 'none'})")
        self.load(name, to)  # refuse to make a corrupt version current
        self.set_current(name, to)
        return to

    def _prune(self, name: str, keep: int) -> None:
        numbers = self.numbers(name)
        current = self.current(name)
        for number in numbers[: max(0, len(numbers) - keep)]:
            if number != current:
                shutil.rmtree(self._folder(name, number), ignore_errors=True)

    def stamp(self) -> tuple[tuple[str, int | None], ...]:
        """What is current, for a cheap change check (a retrain or a rollback elsewhere)."""
        return tuple((name, self.current(name)) for name in self.names())
