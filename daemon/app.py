"""Composition root: builds every adapter from the settings and runs them in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from daemon.actions import ActionService
from daemon.adapters.http_api import HttpApi
from daemon.adapters.layout import absent_defaults, explicit, still_absent
from daemon.adapters.mapping_files import MappingFileSet
from daemon.adapters.model_files import ModelFileSet
from daemon.adapters.model_registry import ModelRegistry
from daemon.adapters.mqtt_ingest import MqttIngest
from daemon.adapters.outbox_sqlite import SqliteOutbox
from daemon.adapters.rule_files import RuleFileSet
from daemon.adapters.service_catalog import ServiceFileSet
from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.adapters.webhook import WebhookSink
from daemon.config import Settings
from daemon.core.alerts import Phase
from daemon.core.engine import Watch
from daemon.core.ingress import Dialect, Ingress
from daemon.core.payloads import Limits
from daemon.core.sparkplug import SparkplugDecoder
from daemon.core.twin import DeviceTwin, Twins
from daemon.core.windows import SeriesWindows
from daemon.errors import MappingFileInvalid, StoreUnavailable
from daemon.learning.service import ModelService
from daemon.metrics import Metrics
from daemon.pipeline import IngestPipeline
from daemon.ports import ACTIONS_CURSOR, SeriesStore, StateStore
from daemon.resilience import StoreHealth
from daemon.rules import RuleService

log = logging.getLogger(__name__)

MAINTENANCE_S = 600.0
#: how often the stores are probed with a real write and paho's thread is checked
HEALTH_S = 2.0
#: a store that does not answer a probe in this long is reported as not ready
PROBE_TIMEOUT_S = 5.0
#: what SIGTERM allows the last twin flush after the drain (its own budget, never cancelled
#: by a drain that ran out of time)
FINAL_FLUSH_S = 5.0


def build_series_store(settings: Settings) -> SeriesStore:
    return SqliteSeriesStore(settings.data_dir / "series.db")


def build_state_store(settings: Settings) -> StateStore:
    return SqliteStateStore(
        settings.data_dir / "state.db",
        settings.ingest.dead_letter_max_rows,
        settings.ingest.dead_letter_max_bytes,
    )


def build_ingress(s: Settings, limits: Limits) -> Ingress:
    """What ingest subscribes to and how it decodes: native topics, Sparkplug B, mappings."""
    files = MappingFileSet(
        s.mappings.paths, s.mappings.presets, require=explicit(s.mappings, "paths")
    )
    mappings, problems = files.load(limits)
    if problems:
        raise MappingFileInvalid(problems)
    dialects: list[Dialect] = []
    if s.mappings.sparkplug:
        dialects.append(SparkplugDecoder(limits))
    if mappings:
        names = ", ".join(m.name for m in mappings.mappings)
        log.info("mappings: %s (%d subscriptions)", names, len(mappings.filters()))
    return Ingress(s.mqtt.topic_prefix, limits, mappings, tuple(dialects))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class App:
    """The daemon. `run()` returns when stopped by `stop()` or a signal, after a clean shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self.http: HttpApi | None = None
        self.rules: RuleService | None = None
        self.models: ModelService | None = None
        self.actions: ActionService | None = None
        self.webhook: WebhookSink | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.twins: Twins | None = None
        self.health = StoreHealth("series", "state")
        #: default paths the daemon runs without (setting: what is missing and what it means)
        self.warnings: Callable[[], dict[str, str]] = dict

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        s = self.settings
        started = time.monotonic()
        # Default paths a fresh directory lacks: each said once here (the service files say
        # their own), and in /readyz while the daemon still runs without them.
        absent = absent_defaults(s)
        for missing in absent:
            if not missing.said_by_loader:
                log.warning("%s", missing.text)
        self.warnings = lambda: {a.setting: a.text for a in still_absent(absent)}
        rule_files = RuleFileSet(
            s.rules.paths, s.rules.max_window, skip_missing=not explicit(s.rules, "paths")
        )
        if not rule_files.present() and not any(a.setting == "rules.paths" for a in absent):
            log.warning("no rule files in %s: evaluating no rules", rule_files.names())
        series, state = build_series_store(s), build_state_store(s)
        await series.open()
        await state.open()
        try:
            twins = Twins(
                (DeviceTwin.from_dict(data) for data in await state.load_twins()),
                max_devices=s.devices.max_known,
                max_names=s.devices.max_metrics,
            )
            self.twins = twins
            limits = Limits(
                max_payload_bytes=s.ingest.max_payload_bytes,
                max_batch=s.ingest.max_batch,
                arrays=s.ingest.arrays,
            )
            ingest = MqttIngest(s.mqtt, build_ingress(s, limits))
            for dialect in ingest.ingress.dialects:
                self.metrics.count_events(
                    "frontline_sparkplug_events",
                    "Sparkplug B protocol events: seq gaps, stale deaths, unknown aliases, data"
                    " before a birth, rebirth requests (docs/devices.md)",
                    "event",
                    lambda d=dialect: d.counters,  # type: ignore[misc]
                )
            windows = SeriesWindows()
            grace_ms = int(s.rules.outage_grace * 1000)

            def watch() -> Watch:
                return Watch(ingest.connected, ingest.connected_at_ms, grace_ms)

            timeout = s.devices.inactivity_timeout
            self.rules = RuleService(
                s.rules,
                state,
                series,
                twins,
                windows,
                watch,
                self.metrics,
                timeout,
                self.health,
                files=rule_files,
            )
            outbox = SqliteOutbox(s.data_dir / "outbox.db")
            await outbox.open()
            self._closers.append(outbox.close)
            self.webhook = WebhookSink(s.webhook, outbox, self.metrics.registry)
            self.actions = ActionService(
                s.actions,
                self.rules,
                twins,
                series,
                state,
                ingest,
                self.metrics,
                timeout,
                ServiceFileSet(
                    s.actions.routing,
                    s.actions.customers,
                    require_routing=explicit(s.actions, "routing"),
                    require_customers=explicit(s.actions, "customers"),
                ),
                self.health,
                sink=self.webhook if s.webhook.enabled else None,
                topic_prefix=s.mqtt.topic_prefix,
                mappings=ingest.ingress.mappings,
            )
            # The actions' cursor exists before the rules commit anything (see ActionService).
            await self.actions.start()
            await self.rules.start()
            self.rules.listeners.append(self.actions.wake)
            if s.models.enabled:
                self.models = ModelService(
                    s,
                    ModelFileSet(
                        s.models.paths,
                        s.rules.max_window,
                        skip_missing=not explicit(s.models, "paths"),
                    ),
                    ModelRegistry(s.data_dir / "models"),
                    series,
                    twins,
                    windows,
                    self.metrics,
                    self.rules.set_extra_horizons,
                    self.health,
                )
                await self.models.start()
                self.actions.models = self.models
            pipeline = IngestPipeline(
                ingest,
                series,
                state,
                twins,
                self.metrics,
                s.store.batch_points,
                on_points=windows.add_many,
                on_reply=self.actions.handle_reply if s.actions.enabled else None,
                health=self.health,
                stamp_horizon_s=s.mqtt.session_expiry,
            )
            rules = self.rules
            self.metrics.bind(
                queue_depth=lambda: ingest.depth,
                devices_online=lambda: twins.online_count(now_ms(), timeout),
                devices_known=lambda: len(twins),
                mqtt_connected=lambda: float(ingest.connected),
            )
            for phase in (Phase.PENDING, Phase.FIRING, Phase.RESOLVED):
                self.metrics.alerts_active.labels(phase.value).set_function(
                    functools.partial(rules.count, phase)
                )
            await self._serve(ingest, pipeline, series, state)
        finally:
            for close in reversed(self._closers):
                await close()
            await series.close()
            await state.close()
        log.info(
            "frontline stopped after %.1fs: %d points stored, %d messages rejected, "
            "%d devices known (%d online)",
            time.monotonic() - started,
            pipeline.stored_points,
            pipeline.rejected,
            len(twins),
            twins.online_count(now_ms(), s.devices.inactivity_timeout),
        )

    async def _serve(
        self, ingest: MqttIngest, pipeline: IngestPipeline, series: SeriesStore, state: StateStore
    ) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._stop.set)
        rules = self.rules
        assert rules is not None
        async with asyncio.TaskGroup() as tg:
            ingest.start()
            drain = tg.create_task(pipeline.run(), name="ingest-pipeline")
            helpers = [
                tg.create_task(self._twin_flush_loop(pipeline), name="twin-flush"),
                tg.create_task(self._maintenance_loop(series, state), name="maintenance"),
                tg.create_task(rules.run(), name="rules"),
            ]
            if s.rules.watch:
                helpers.append(tg.create_task(rules.watch_files(), name="rule-files"))
            helpers.append(tg.create_task(rules.run_schedules(), name="rule-schedules"))
            if self.models is not None:
                helpers.append(tg.create_task(self.models.run(), name="models"))
            helpers.append(tg.create_task(self._health_loop(ingest, series, state), name="health"))
            if self.actions is not None:
                # Runs with actions disabled too: it publishes alert events and moves the cursor.
                helpers.append(tg.create_task(self.actions.run(), name="actions"))
            if self.webhook is not None and s.webhook.enabled:
                helpers.append(tg.create_task(self.webhook.run(), name="webhook"))

            async def reload_on_signal() -> None:
                await rules.reload("SIGHUP")

            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(
                    signal.SIGHUP,
                    lambda: helpers.append(tg.create_task(reload_on_signal(), name="rule-reload")),
                )
            if s.http.enabled:
                health = self.health
                self.http = HttpApi(
                    s.http,
                    self.metrics,
                    lambda: {
                        "broker": ingest.connected,
                        "mqtt_thread": ingest.alive,
                        **{f"{name}_store": ok for name, ok in health.checks().items()},
                    },
                    rules,
                    self.actions,
                    self.twins,
                    s.devices.inactivity_timeout,
                    health.problems,
                    self.warnings,
                )
                helpers.append(tg.create_task(self.http.run(), name="http"))
            await self._stop.wait()
            log.info("stopping: intake closed, draining")
            ingest.stop_intake()
            try:
                await asyncio.wait_for(asyncio.shield(drain), s.ingest.drain_timeout)
            except TimeoutError:
                log.warning(
                    "drain did not finish in %.0fs; the broker keeps the rest",
                    s.ingest.drain_timeout,
                )
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
            try:
                await asyncio.wait_for(pipeline.flush_twins(), FINAL_FLUSH_S)
            except TimeoutError:
                log.error("the last twin flush did not finish in %.0fs", FINAL_FLUSH_S)
            await ingest.close()
            if self.webhook is not None and s.webhook.enabled:
                await self.webhook.flush(2.0)  # what is left stays in the outbox for next time
            for task in helpers:
                task.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)

    async def _health_loop(
        self, ingest: MqttIngest, series: SeriesStore, state: StateStore
    ) -> None:
        """Probe each store with a real write; restart paho's thread if it died."""
        while True:
            for name, store in (("series", series), ("state", state)):
                try:
                    await asyncio.wait_for(store.ping(), PROBE_TIMEOUT_S)
                except StoreUnavailable as exc:
                    if self.health.healthy(name):
                        log.error("%s store failed its write probe: %s", name, exc.detail)
                    self.health.failed(name, exc.detail)
                except TimeoutError:
                    self.health.failed(name, f"no answer to a write probe in {PROBE_TIMEOUT_S}s")
                else:
                    if not self.health.healthy(name):
                        log.info("%s store takes writes again", name)
                    self.health.ok(name)
            if ingest.revive():
                self.metrics.mqtt_thread_restarts.inc()
            await asyncio.sleep(HEALTH_S)

    async def _twin_flush_loop(self, pipeline: IngestPipeline) -> None:
        while True:
            await asyncio.sleep(1.0)
            await pipeline.flush_twins()

    async def _maintenance_loop(self, series: SeriesStore, state: StateStore) -> None:
        """Apply every retention bound (docs/operations.md, "Bounds") every 10 minutes."""
        while True:
            try:
                await self._maintain(series, state)
            except StoreUnavailable as exc:  # the next round tries again; nothing is owed
                self.health.failed("state" if exc.url == state.url else "series", exc.detail)
                log.error("retention round failed (%s); trying again in %.0fs", exc, MAINTENANCE_S)
            await asyncio.sleep(MAINTENANCE_S)

    async def _maintain(self, series: SeriesStore, state: StateStore) -> None:
        s = self.settings
        retention_ms = int(s.store.retention * 1000)
        now = now_ms()
        deleted = await series.delete_before(now - retention_ms)
        if deleted:
            log.info("retention removed %d points older than %ss", deleted, s.store.retention)
        await state.delete_dead_letters_before(now - int(s.ingest.dead_letter_retention * 1000))
        # Alert events feed the actions through a persisted cursor (moved with the actions
        # off too): one they have not consumed stays, however old.
        cursor = await state.get_value(ACTIONS_CURSOR)
        consumed = int(cursor) if cursor is not None else 0
        before = now - int(s.store.history_retention * 1000)
        pruned = await state.prune_history(before, consumed)
        for table, count in pruned.items():
            self.metrics.history_pruned.labels(table).inc(count)
        if any(pruned.values()):
            removed = ", ".join(f"{count} {table}" for table, count in pruned.items() if count)
            log.info("history retention removed %s", removed)
        if self.twins is not None:
            # Devices that never sent meta, silent as long as their series are kept. Their
            # rule windows are empty by now (rules.max_window <= store.retention) and were
            # dropped by the rules' trim.
            gone = self.twins.forget(self.twins.forgettable(now - retention_ms))
            if gone:
                await state.delete_twins(gone)
                if self.rules is not None:
                    await self.rules.forget(gone, now)
                self.twins.mark_dirty(gone)  # any that came back meanwhile are saved again
                self.metrics.devices_forgotten.inc(len(gone))
                log.info(
                    "forgot %d devices without meta, silent for %ss", len(gone), s.store.retention
                )
