"""Training a model from stored history into the registry: the same code for `frontline train`
and for the daemon's scheduled retraining (which runs it in a separate process, `train_job`).

Anomaly models learn from rows sampled every `training.step` over `training.history` on every
matching device (each row: the features' aggregates over the window ending there). `rul` models
learn from the devices' lives: their history on a grid of `training.step`, cut into lives at the
spec's failure condition (daemon/core/modeldata.py: `episodes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from daemon.adapters.model_registry import ModelRegistry
from daemon.config import Settings
from daemon.core.engine import matches
from daemon.core.modeldata import Series, aligned, episodes, failed, feature_rows, grid, series_of
from daemon.core.modelspec import RUL_UNITS, ModelSpec
from daemon.core.twin import DeviceTwin
from daemon.errors import FrontlineError
from daemon.ports import SeriesStore

Progress = Callable[[int, int], None]


class NotEnoughData(FrontlineError):
    """The stored history cannot train the model yet (too few rows or no failures)."""


@dataclass
class Dataset:
    """What a model learns from, and where it came from (for the registry's metadata)."""

    devices: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    dropped: int = 0  # rows with a feature missing
    #: rul: one (times in the spec's unit, values (n, f), ended in failure) per life
    lives: list[tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=list)
    _blocks: list[np.ndarray] = field(default_factory=list, repr=False)

    def add_device(
        self, spec: ModelSpec, history: dict[str, Series], start_ms: int, now_ms: int
    ) -> None:
        """Shape one device's history (metric -> series since `start_ms` less a window) for
        the model's kind: rows every `training.step` (anomaly) or lives (rul)."""
        first = min((int(t[0]) for t, _ in history.values() if len(t)), default=None)
        if first is None:
            return
        at = grid(max(start_ms, first), now_ms, int(spec.training.step_s * 1000))
        if spec.kind == "anomaly":
            rows = feature_rows(history, spec.features, int(spec.window_s * 1000), at)
            keep = ~np.isnan(rows).any(axis=1)
            self.dropped += int((~keep).sum())
            self._blocks.append(rows[keep])
        else:
            self.lives += _lives(spec, history, at)

    def finish(self) -> Dataset:
        """Stack the devices' rows into `rows`; returns the dataset."""
        if self._blocks:
            self.rows = np.vstack(self._blocks)
            self._blocks = []
        return self


async def _history(
    store: SeriesStore, device: str, metrics: list[str], start_ms: int, end_ms: int
) -> dict[str, Series]:
    return {m: series_of(await store.query_range(device, m, start_ms, end_ms)) for m in metrics}


async def gather(
    spec: ModelSpec,
    store: SeriesStore,
    twins: list[DeviceTwin],
    now_ms: int,
    progress: Progress | None = None,
) -> Dataset:
    """Read the history of every matching device and shape it for the model's kind."""
    devices = [t for t in twins if matches(spec.match, t)]
    window_ms = int(spec.window_s * 1000)
    start_ms = now_ms - int(spec.training.history_s * 1000)
    data = Dataset(devices=len(devices))
    for done, twin in enumerate(devices, 1):
        history = await _history(store, twin.id, spec.metrics, start_ms - window_ms, now_ms)
        data.add_device(spec, history, start_ms, now_ms)
        if progress is not None:
            progress(done, len(devices))
    return data.finish()


def _lives(
    spec: ModelSpec, history: dict[str, Series], at: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """A device's history on the grid (latest value, forward-filled up to a window), in lives."""
    assert spec.failure is not None
    metrics = [f.metric for f in spec.features]
    max_age = int(spec.window_s * 1000)
    values = aligned(history, metrics, at, max_age)
    state = aligned(history, [spec.failure.metric], at, max_age)[:, 0]
    unit_ms = RUL_UNITS[spec.unit] * 1000
    lives = []
    for start, end, ended_failed in episodes(failed(state, spec.failure)):
        rows = values[start:end]
        keep = ~np.isnan(rows).any(axis=1)
        if keep.sum() >= 2:
            lives.append(((at[start:end][keep] / unit_ms), rows[keep], ended_failed))
    return lives


def fit(spec: ModelSpec, data: Dataset, now_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the spec's model on `data`: (metadata, arrays) for the registry."""
    from daemon.learning.trained import fit_model

    if spec.kind == "anomaly":
        count = len(data.rows)
        if count < spec.training.min_samples:
            raise NotEnoughData(
                f"{spec.name}: {count} complete rows from {data.devices} device(s) in the last "
                f"{spec.training.history_s:g} s, {spec.training.min_samples} needed "
                f"(training.min_samples)"
            )
    else:
        failures = sum(1 for *_, ended in data.lives if ended)
        rows = sum(len(t) for t, _, _ in data.lives)
        if failures < 2 or rows < spec.training.min_samples:
            condition = spec.failure.describe() if spec.failure else "?"
            raise NotEnoughData(
                f"{spec.name}: {failures} run(s) to failure ({condition})"
                f" and {rows} rows from {data.devices} device(s); at least 2 failures and "
                f"{spec.training.min_samples} rows needed"
            )
        count = rows
    started = time.perf_counter()
    model_meta, arrays = fit_model(spec, data)
    meta = {
        "model": spec.name,
        "kind": spec.kind,
        "trained_at": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(),
        "rows": count,
        "devices": data.devices,
        "dropped_rows": data.dropped,
        "lives": len(data.lives) if spec.kind == "rul" else None,
        "features": [f.label for f in spec.features],
        "fingerprint": spec.fingerprint(),
        "fit_seconds": round(time.perf_counter() - started, 3),
        "params": model_meta,
    }
    return meta, arrays


async def train(
    spec: ModelSpec,
    store: SeriesStore,
    twins: list[DeviceTwin],
    registry: ModelRegistry,
    keep: int,
    now_ms: int,
    progress: Progress | None = None,
) -> tuple[int, dict[str, Any]]:
    """Gather, fit and save a new version; its number and metadata."""
    data = await gather(spec, store, twins, now_ms, progress)
    meta, arrays = await asyncio.to_thread(fit, spec, data, now_ms)
    version = await asyncio.to_thread(registry.save, spec.name, meta, arrays, keep)
    return version, meta


def train_job(settings: Settings, spec: ModelSpec, now_ms: int) -> dict[str, Any]:
    """Entry point of the training process the daemon starts (never runs on its event loop)."""
    from daemon.app import build_series_store, build_state_store

    async def run() -> dict[str, Any]:
        store, state = build_series_store(settings), build_state_store(settings)
        await store.open()
        await state.open()
        try:
            twins = [DeviceTwin.from_dict(d) for d in await state.load_twins()]
            registry = ModelRegistry(settings.data_dir / "models")
            version, meta = await train(
                spec, store, twins, registry, settings.models.keep_versions, now_ms
            )
        except NotEnoughData as exc:
            return {"error": str(exc), "not_enough_data": True}
        finally:
            await state.close()
            await store.close()
        return {"version": version, "rows": meta["rows"], "devices": meta["devices"]}

    return asyncio.run(run())
