"""Learned models in the daemon: live scoring, training of untrained models, scheduled retraining.

- Scoring: every spec's `interval`, the matching devices' rows are built from the in-memory
  windows (the same aggregates as in training) and scored in batches, one model call per batch
  of devices, off the event loop. Outputs are stored as the series `model:<name>` (they plot and
  backtest) and added to the windows, where `anomaly("name")` / `rul("name")` read them.
- Training: a spec with a cron `retrain` is retrained on schedule, and one without any version
  is trained once its history suffices (`models.train_missing`); training runs in a separate
  process (`trainer.train_job`) so ingest and rules never wait for it. The daemon picks up new
  versions, and `frontline models rollback`, from the registry within a couple of seconds.
- A version that cannot be loaded (corrupt, incompatible with the spec) is refused with the
  reason, and the version that was scoring keeps scoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from daemon.adapters.model_registry import ModelRegistry
from daemon.config import Settings
from daemon.core.engine import matches
from daemon.core.modeldata import aligned, grid, live_row
from daemon.core.modelspec import RUL_UNITS, ModelSpec
from daemon.core.rul import features_at_end
from daemon.core.twin import Twins
from daemon.core.windows import SeriesWindows
from daemon.errors import ModelArtefactError, ModelFileInvalid
from daemon.learning.trained import Trained, restore
from daemon.learning.trainer import train_job
from daemon.metrics import Metrics
from daemon.ports import ModelFiles, Point, SeriesStore
from daemon.resilience import StoreHealth, persist

log = logging.getLogger(__name__)

#: a score older than this many scoring intervals is no longer read by rules
STALE_INTERVALS = 3
TOP_CONTRIBUTIONS = 3


@dataclass
class Explanation:
    """The latest scoring of one device by one model, for tickets and the API."""

    at_ms: int
    value: float
    version: int
    #: each feature's share of the anomaly (None for rul models); ranked when asked for
    shares: np.ndarray | None = None


@dataclass
class ModelStatus:
    spec: ModelSpec
    trained: Trained | None = None
    #: the last refused version and why, or why training could not run
    problem: str | None = None
    next_due_ms: int = 0
    scored_devices: int = 0
    training: bool = False
    last_train_attempt_ms: int = 0


class ModelService:
    def __init__(
        self,
        settings: Settings,
        files: ModelFiles,
        registry: ModelRegistry,
        series: SeriesStore,
        twins: Twins,
        windows: SeriesWindows,
        metrics: Metrics,
        set_horizons: Callable[[dict[str, float]], Any],
        health: StoreHealth | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._files = files
        self.registry = registry
        self._series = series
        self._twins = twins
        self._windows = windows
        self._metrics = metrics
        self._set_horizons = set_horizons
        self._health = health or StoreHealth("series", "state")
        self._clock = clock
        self.models: dict[str, ModelStatus] = {}
        self.latest: dict[tuple[str, str], Explanation] = {}
        self._stamp: object = None
        self._registry_stamp: object = None
        self._pool: ProcessPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: Any = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- loading -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the specs (invalid ones stop the start, with every problem) and their versions."""
        specs, problems = self._files.load()
        if problems:
            raise ModelFileInvalid(problems)
        self._stamp = self._files.stamp()
        if not specs:
            log.info("no model specs (models.paths): no learned models")
        await self._apply(specs)
        self._schedule_retrains()

    async def _apply(self, specs: list[ModelSpec]) -> None:
        old = self.models
        self.models = {}
        for spec in specs:
            status = ModelStatus(spec)
            previous = old.get(spec.name)
            if previous is not None and previous.spec == spec:
                status = previous
            else:
                self._load_current(status)
            self.models[spec.name] = status
        for name in set(old) - set(self.models):
            self.latest = {k: v for k, v in self.latest.items() if k[1] != name}
        self._registry_stamp = self.registry.stamp()
        await self._set_horizons(self.horizons())
        for status in self.models.values():
            log.info(
                "model %s (%s, %s): %s", status.spec.name, status.spec.kind,
                status.spec.detector,
                status.trained.describe() if status.trained else f"not trained ({status.problem})",
            )  # fmt: skip

    def _load_current(self, status: ModelStatus) -> None:
        """Load the registry's current version; if refused, keep what scores (or an older one)."""
        spec = status.spec
        current = self.registry.current(spec.name)
        if current is None:
            status.trained, status.problem = None, "no trained version yet"
            return
        if status.trained is not None and status.trained.version == current:
            return
        candidates = [current] + (
            [] if status.trained else [n for n in reversed(self.registry.numbers(spec.name))
                                       if n < current]
        )  # fmt: skip
        for number in candidates:
            try:
                meta, arrays = self.registry.load(spec.name, number)
                status.trained = restore(spec, number, meta, arrays)
            except ModelArtefactError as exc:
                status.problem = str(exc)
                self._metrics.model_load_failures.inc()
                keeps = status.trained.describe() if status.trained else "nothing"
                log.error("model version refused: %s; scoring with %s", exc, keeps)
                continue
            if number != current:
                log.warning("model %s scores with v%d (v%d refused)", spec.name, number, current)
            else:
                status.problem = None
            return

    def horizons(self) -> dict[str, float]:
        """How much history the windows must keep for the models: features and outputs."""
        needed: dict[str, float] = {}
        for status in self.models.values():
            spec = status.spec
            keep = spec.window_s + spec.interval_s
            if spec.kind == "rul":
                keep += spec.training.step_s
            for metric in spec.metrics:
                needed[metric] = max(needed.get(metric, 0.0), keep)
            needed[spec.metric] = max(
                needed.get(spec.metric, 0.0), STALE_INTERVALS * spec.interval_s
            )
        return needed

    async def reload(self, reason: str) -> list[str]:
        """Reread the specs; on any problem keep the running ones. Returns the problems."""
        specs, problems = self._files.load()
        self._stamp = self._files.stamp()
        if problems:
            text = "\n".join(str(p) for p in problems)
            log.error("model reload (%s) rejected, the previous models keep running:\n%s",
                      reason, text)  # fmt: skip
            return [str(p) for p in problems]
        await self._apply(specs)
        self._schedule_retrains()
        return []

    def refresh_versions(self) -> None:
        """Pick up versions written by `frontline train`, a retrain or a rollback."""
        stamp = self.registry.stamp()
        if stamp == self._registry_stamp:
            return
        self._registry_stamp = stamp
        for status in self.models.values():
            before = status.trained.version if status.trained else None
            self._load_current(status)
            after = status.trained.version if status.trained else None
            if after != before and after is not None:
                log.info("model %s now scores with v%d", status.spec.name, after)

    # -- scoring -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Score what is due, watch specs and versions, start due trainings; until cancelled."""
        last_check = 0.0
        try:
            while True:
                now = self._now_ms()
                for status in list(self.models.values()):
                    if status.trained is not None and now >= status.next_due_ms:
                        status.next_due_ms = now + int(status.spec.interval_s * 1000)
                        await self.score(status, now)
                if time.monotonic() - last_check >= self.settings.rules.watch_interval:
                    last_check = time.monotonic()
                    for status in list(self.models.values()):
                        # its guess walks every twin: with the other periodic checks, not at
                        # every turn of the scoring loop
                        self._maybe_train_missing(status, now)
                    self.refresh_versions()
                    if self.settings.rules.watch and self._files.stamp() != self._stamp:
                        await self.reload("spec files changed")
                await asyncio.sleep(0.5)
        finally:
            await self.close()

    async def score(self, status: ModelStatus, now_ms: int) -> int:
        """Score every matching device with enough data; returns how many were scored."""
        trained = status.trained
        assert trained is not None
        spec = status.spec
        devices = [t.id for t in self._twins if matches(spec.match, t)]
        ids: list[str] = []
        rows: list[np.ndarray] = []
        started = time.perf_counter()
        for index, device in enumerate(devices):
            row = self._row(spec, device, now_ms)
            if row is not None:
                ids.append(device)
                rows.append(row)
            if index % 500 == 499:
                await asyncio.sleep(0)  # let ingest run between chunks
        points: list[Point] = []
        batch = self.settings.models.batch
        for start in range(0, len(rows), batch):
            block = np.vstack(rows[start : start + batch])
            values, shares = await asyncio.to_thread(_predict, trained, block)
            for offset, value in enumerate(values.tolist()):
                if math.isnan(value):  # the model could not score this row
                    continue
                device = ids[start + offset]
                points.append(Point(device, spec.metric, now_ms, value))
                self.latest[(device, spec.name)] = Explanation(
                    now_ms, value, trained.version, None if shares is None else shares[offset]
                )
        if points:
            await persist(
                lambda: self._series.write(points), "storing model scores", "series", self._health
            )
            for point in points:
                self._windows.add(point.device, point.metric, point.ts_ms, point.value)
        status.scored_devices = len(points)
        self._metrics.model_scored.labels(spec.name).inc(len(points))
        self._metrics.model_score_seconds.labels(spec.name).observe(time.perf_counter() - started)
        return len(points)

    def _row(self, spec: ModelSpec, device: str, now_ms: int) -> np.ndarray | None:
        """The device's feature row now, from the windows (None: a feature has no point)."""
        window_ms = int(spec.window_s * 1000)
        windows = self._windows
        if spec.kind == "anomaly":
            values = [
                windows.arrays(device, f.metric, now_ms - window_ms, now_ms)[1]
                for f in spec.features
            ]
            row = live_row(values, spec.features)
            return None if np.isnan(row).any() else row
        step_ms = int(spec.training.step_s * 1000)
        metrics = [f.metric for f in spec.features]
        history = {}
        for metric in metrics:
            times, points = windows.arrays(device, metric, now_ms - window_ms - step_ms, now_ms)
            history[metric] = (np.frombuffer(times, dtype=np.int64),
                               np.frombuffer(points, dtype=np.float64))  # fmt: skip
        at = grid(now_ms - window_ms, now_ms, step_ms)
        matrix = aligned(history, metrics, at, window_ms)
        keep = ~np.isnan(matrix).any(axis=1)
        if keep.sum() < 2:
            return None
        unit_ms = RUL_UNITS[spec.unit] * 1000
        row = features_at_end(at[keep] / unit_ms, matrix[keep], spec.window_s * 1000 / unit_ms)
        return None if np.isnan(row).any() else row

    def explain(self, device: str, model: str) -> dict[str, Any] | None:
        """The latest scoring of `device` by `model`: value, version, top contributions."""
        found = self.latest.get((device, model))
        status = self.models.get(model)
        if found is None or status is None:
            return None
        trained = status.trained
        contributions = [] if found.shares is None else _top(status.spec, found.shares)
        return {
            "model": model,
            "kind": status.spec.kind,
            "version": found.version,
            "trained_at": trained.meta.get("trained_at") if trained else None,
            "value": round(found.value, 4),
            "threshold": 0.5 if status.spec.kind == "anomaly" else None,
            "unit": status.spec.unit if status.spec.kind == "rul" else None,
            "scored_at_ms": found.at_ms,
            "contributions": [
                {"feature": name, "share": round(share, 3)} for name, share in contributions
            ],
        }

    # -- training ------------------------------------------------------------------------------
    def _maybe_train_missing(self, status: ModelStatus, now_ms: int) -> None:
        if status.trained is not None or status.training or not self.settings.models.train_missing:
            return
        if now_ms - status.last_train_attempt_ms < self.settings.models.retry * 1000:
            return
        if self._rows_expected(status.spec, now_ms) < status.spec.training.min_samples:
            return  # cheap guess first: no training process for a history that cannot suffice
        self.start_training(status.spec.name, "no trained version")

    def _rows_expected(self, spec: ModelSpec, now_ms: int) -> float:
        """At most how many training rows the matching devices' time with us can give."""
        history_ms = spec.training.history_s * 1000
        step_ms = spec.training.step_s * 1000
        return sum(
            min(history_ms, max(0, now_ms - twin.first_seen_ms)) / step_ms
            for twin in self._twins
            if matches(spec.match, twin)
        )

    def start_training(self, name: str, reason: str) -> bool:
        """Train `name` in the training process; False if it is already training."""
        status = self.models.get(name)
        if status is None or status.training:
            return False
        task = asyncio.get_running_loop().create_task(self._train(status, reason))
        status.training = True
        status.last_train_attempt_ms = self._now_ms()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _scheduled(self, name: str, reason: str) -> None:
        """The cron job (a coroutine: the scheduler runs it on the daemon's loop)."""
        self.start_training(name, reason)

    async def _train(self, status: ModelStatus, reason: str) -> None:
        spec = status.spec
        log.info("training model %s (%s) in the training process", spec.name, reason)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._pool, train_job, self.settings, spec, self._now_ms()
            )
        except Exception as exc:  # noqa: BLE001 - a failed training must not stop the daemon
            status.problem = f"training failed: {exc!r}"
            self._metrics.model_trainings.labels(spec.name, "failed").inc()
            log.error("training model %s failed: %r", spec.name, exc)
            return
        finally:
            status.training = False
        if "error" in result:
            status.problem = str(result["error"])
            self._metrics.model_trainings.labels(spec.name, "not_enough_data").inc()
            log.warning("model %s not trained: %s", spec.name, result["error"])
            return
        self._metrics.model_trainings.labels(spec.name, "ok").inc()
        log.info(
            "model %s trained: v%s from %s rows of %s devices",
            spec.name, result["version"], result["rows"], result["devices"],
        )  # fmt: skip
        self.refresh_versions()

    def _schedule_retrains(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        if self._scheduler is None:
            self._scheduler = AsyncIOScheduler(timezone="UTC")
            self._scheduler.start()
        self._scheduler.remove_all_jobs()
        for status in self.models.values():
            spec = status.spec
            if spec.retrain:
                self._scheduler.add_job(
                    self._scheduled,
                    CronTrigger.from_crontab(spec.retrain, timezone="UTC"),
                    args=(spec.name, f"scheduled: {spec.retrain}"),
                    id=f"retrain:{spec.name}",
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=300,
                )

    async def close(self) -> None:
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for task in list(self._tasks):
            task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _predict(trained: Trained, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One model call for a batch of devices: outputs and (anomaly) contributions."""
    if trained.anomaly is not None:
        scored = trained.anomaly.score(rows)
        return scored.score, scored.contributions
    assert trained.rul is not None
    return trained.rul.predict(rows), None


def _top(spec: ModelSpec, shares: np.ndarray) -> list[tuple[str, float]]:
    names = [f.label for f in spec.features]
    order = np.argsort(-shares)[:TOP_CONTRIBUTIONS]
    return [(names[i], float(shares[i])) for i in order.tolist() if shares[i] > 0]
