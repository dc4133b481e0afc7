"""The fleet: N simulated devices, each on its own MQTT connection, plus the fault schedule.

Besides the devices, the fleet plays their customers: a customer who fixes a fault at a fixed time
after it starts, or one who follows the daemon's guidance (a notice on
``{notices_topic}/{device_id}``) when its steps fit the fault and they comply
(``simulators.customers``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import aiomqtt

from simulators.burst import publish_burst
from simulators.commands import Behaviour
from simulators.customers import Customers, parse_notice
from simulators.device import (
    NETWORK_TIMEOUT_S,
    Broker,
    DeviceIdentity,
    FleetStats,
    SimDevice,
    _settle,
)
from simulators.faults import FaultSpec, check_fault_target, fix_for
from simulators.groundtruth import (
    GroundTruthLog,
    fault_ended_event,
    fault_started_event,
    usage_profile_event,
)
from simulators.history import (
    HistoryOptions,
    carried_wear,
    history_messages,
    history_problems,
    meta_messages,
    plan_wear_runs,
    wear_run_faults,
)
from simulators.models import UsageProfile, get_model

__all__ = [
    "Customers",
    "Fleet",
    "FleetOptions",
    "FleetStats",
    "HistoryMode",
    "fault_ids",
    "fault_problems",
    "fault_schedule",
    "history_of",
    "option_problems",
    "plan_devices",
]

logger = logging.getLogger(__name__)

HistoryMode = Literal["before", "only", "skip"]
SHUTDOWN_GRACE_S = 10.0  # for every device to announce offline and disconnect
FLAT_EVERY = 5  # every 5th device publishes the flat telemetry shape
_LOCATIONS = (
    ("Lyon, FR", 1.0),
    ("Paris, FR", 1.0),
    ("Berlin, DE", 1.0),
    ("Madrid, ES", 1.0),
    ("Milan, IT", 1.0),
    ("Amsterdam, NL", 1.0),
    ("London, UK", 0.0),
    ("Lisbon, PT", 0.0),
    ("Warsaw, PL", 1.0),
    ("Helsinki, FI", 2.0),
)
_TIERS = ("gold", "silver", "bronze")
# Device ids allow ':' too, but a flag (KIND:DEVICE:...) could not name such a device.
_ID_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,100}")


@dataclass(frozen=True)
class FleetOptions:
    """Everything a fleet run needs; ``Fleet`` only stores it."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    topic_prefix: str = "devices"
    devices: int = 10
    interval: float = 5.0  # seconds between telemetry messages per device
    models: tuple[str, ...] = ("boiler", "heat_pump", "freezer")  # assigned round-robin
    id_prefix: str = "sim"  # device ids like "sim-boiler-0001"
    faults: tuple[FaultSpec, ...] = ()
    ground_truth: Path | None = None  # JSONL file appended to
    seed: int = 0
    duration: float | None = None  # seconds; None = until cancelled
    reboot_downtime: float = 3.0  # seconds a device stays offline after a reboot command
    # Per device id: how it treats commands (answer_delay, rejects, drop_commands).
    behaviours: Mapping[str, Behaviour] = field(default_factory=dict)
    # Per device id: its usage profile; the others draw one from `profiles` (weights), or are
    # normal when `profiles` is empty.
    usage: Mapping[str, UsageProfile] = field(default_factory=dict)
    profiles: Mapping[UsageProfile, float] = field(default_factory=dict)
    # Where the daemon publishes customer notices (guidance); customers who follow guidance
    # listen here.
    notices_topic: str = "frontline/notices"
    # Probability that a customer who follows guidance acts on steps that fit the fault (a
    # fault's customer_compliance overrides it).
    compliance: float = 1.0
    # The simulated past published before the live run (simulators.history), and what to run:
    # "before" (the history, then the live fleet), "only" (the history, then return) or "skip".
    history: HistoryOptions | None = None
    history_mode: HistoryMode = "before"


def plan_devices(options: FleetOptions) -> list[DeviceIdentity]:
    """Return the fleet's devices: ids, models (round-robin), shapes and meta, all from the seed."""
    if not options.models:
        raise ValueError("the fleet needs at least one device model")
    if not _ID_PREFIX.fullmatch(options.id_prefix):
        raise ValueError(
            f"id_prefix {options.id_prefix!r} must be 1-100 of A-Z a-z 0-9 _ . - "
            "(device ids become MQTT topic levels)"
        )
    models = [get_model(name) for name in options.models]
    customers = max(1, options.devices // 2)  # some customers own two devices
    identities = []
    for index in range(options.devices):
        model = models[index % len(models)]
        device_id = f"{options.id_prefix}-{model.name}-{index + 1:04d}"
        rng = random.Random(f"{options.seed}:{device_id}:meta")
        location, utc_offset_h = rng.choice(_LOCATIONS)
        meta = {
            "model": model.product,
            "firmware": rng.choice(model.firmwares),
            "customer": f"cust-{rng.randint(1, customers):04d}",
            "location": location,
            "labels": {
                "tier": rng.choices(_TIERS, weights=(1, 3, 6))[0],
                "installed": str(rng.randint(2015, 2024)),
                "simulated": "true",
            },
        }
        identities.append(
            DeviceIdentity(
                device_id=device_id,
                model=model,
                flat=index % FLAT_EVERY == FLAT_EVERY - 1,
                meta=meta,
                utc_offset_h=utc_offset_h,
                seed=f"{options.seed}:{device_id}",
                usage=_usage(options, device_id),
                behaviour=options.behaviours.get(device_id) or Behaviour(),
            )
        )
    return identities


def _usage(options: FleetOptions, device_id: str) -> UsageProfile:
    """Return the device's profile: the one named for it, else one drawn from ``profiles``."""
    named = options.usage.get(device_id)
    if named is not None:
        return UsageProfile(named)
    weights = {UsageProfile(p): w for p, w in options.profiles.items() if w > 0}
    if not weights:
        return UsageProfile.NORMAL
    rng = random.Random(f"{options.seed}:{device_id}:usage")
    profiles = sorted(weights)
    return rng.choices(profiles, weights=[weights[p] for p in profiles])[0]


def option_problems(
    options: FleetOptions, identities: Sequence[DeviceIdentity]
) -> list[tuple[tuple[str, ...], str]]:
    """Return (location, message) for each behaviour, usage or profile the fleet cannot use.

    Locations are scenario paths such as ``("behaviours", "sim-boiler-0001", "rejects")``.
    """
    by_id = {i.device_id: i for i in identities}
    problems: list[tuple[tuple[str, ...], str]] = []
    for device_id, behaviour in options.behaviours.items():
        identity = by_id.get(device_id)
        if identity is None:
            problems.append((("behaviours", device_id), f"no device {device_id!r} in this fleet"))
            continue
        unknown = sorted(behaviour.rejects - identity.model.commands)
        if unknown:
            known = ", ".join(sorted(identity.model.commands))
            problems.append(
                (
                    ("behaviours", device_id, "rejects"),
                    f"{identity.model.name} has no command {', '.join(map(repr, unknown))} "
                    f"(its commands: {known})",
                )
            )
    for device_id in options.usage:
        if device_id not in by_id:
            problems.append((("usage", device_id), f"no device {device_id!r} in this fleet"))
    if options.profiles and not any(w > 0 for w in options.profiles.values()):
        problems.append((("profiles",), "at least one profile needs a weight > 0"))
    if not 0.0 <= options.compliance <= 1.0:
        problems.append((("compliance",), f"must be between 0 and 1 (got {options.compliance})"))
    if options.history is not None:
        problems.extend(history_problems(options.history, identities, options.faults, options.seed))
    for profile, weight in options.profiles.items():
        if weight < 0:
            problems.append((("profiles", str(profile)), f"weight must be >= 0 (got {weight})"))
    return problems


def history_of(options: FleetOptions) -> HistoryOptions | None:
    """Return the history to publish before the live run, or None (none, or skipped)."""
    if options.history_mode == "skip":
        return None
    if options.history is None and options.history_mode == "only":
        raise ValueError("history only: the fleet has no history to publish (scenario `history:`)")
    return options.history


def fault_ids(faults: Sequence[FaultSpec]) -> list[str]:
    """Return each fault's id: its own, or ``f001-drift-sim-boiler-0001`` from its position."""
    ids = [spec.id or f"f{n:03d}-{spec.kind}-{spec.device}" for n, spec in enumerate(faults, 1)]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"fault ids must be unique: {', '.join(duplicates)}")
    return ids


def fault_problems(
    faults: Sequence[FaultSpec], identities: Sequence[DeviceIdentity]
) -> list[tuple[int, str, str]]:
    """Return (index, field, message) for each fault naming a device or metric the fleet lacks."""
    by_id = {i.device_id: i for i in identities}
    problems = []
    for index, spec in enumerate(faults):
        identity = by_id.get(spec.device)
        if identity is None:
            problems.append((index, "device", f"no device {spec.device!r} in this fleet"))
            continue
        try:
            check_fault_target(spec, identity.model)
        except ValueError as exc:
            problems.append((index, "metric", str(exc)))
            continue
        fix = fix_for(identity.model, spec)
        if spec.customer_fix_after is not None and fix.type != "customer":
            how = f"command {fix.method}" if fix.type == "command" else "a technician"
            problems.append(
                (
                    index,
                    "customer_fix_after",
                    f"the customer cannot fix this {spec.kind} fault on {identity.model.name} "
                    f"(it needs {how})",
                )
            )
    return problems


def _product(identities: Sequence[DeviceIdentity], device_id: str) -> str:
    return next(i.model.product for i in identities if i.device_id == device_id)


Action = Literal["end", "customer", "start"]
_ORDER: Mapping[Action, int] = {"end": 0, "customer": 1, "start": 2}


def fault_schedule(
    faults: Sequence[tuple[str, FaultSpec]],
) -> list[tuple[float, Action, str, FaultSpec]]:
    """Return (offset, action, fault id, spec) in time order, ends before starts at one offset.

    Actions: ``start``, ``end`` (its duration is over), ``customer`` (a customer who acts a fixed
    time after the start fixes it). Customers who follow guidance are not scheduled in advance.
    """
    events: list[tuple[float, Action, str, FaultSpec]] = []
    for fault_id, spec in faults:
        events.append((spec.start, "start", fault_id, spec))
        if spec.duration is not None:
            events.append((spec.start + spec.duration, "end", fault_id, spec))
        if spec.customer_fix_after is not None and spec.customer_fix_from == "start":
            events.append((spec.start + spec.customer_fix_after, "customer", fault_id, spec))
    events.sort(key=lambda event: (event[0], _ORDER[event[1]]))
    return events


class Fleet:
    """Run a simulated fleet; see ``FleetOptions``."""

    def __init__(self, options: FleetOptions) -> None:
        self.options = options
        self._stats = FleetStats()

    @property
    def stats(self) -> FleetStats:
        """Return a snapshot of the live counters."""
        return replace(self._stats)

    async def run(self) -> None:
        """Connect every device and publish until ``duration`` passes or the task is cancelled.

        Then every device announces ``offline`` (retained) and disconnects cleanly, faults still
        active end with reason ``fleet_stopped``, and no task is left behind. Raises ValueError
        before connecting anything if the options or faults are invalid.
        """
        options = self.options
        if options.devices < 1:
            raise ValueError(f"devices must be >= 1 (got {options.devices})")
        if options.interval <= 0:
            raise ValueError(f"interval must be > 0 (got {options.interval})")
        identities = plan_devices(options)
        ids = fault_ids(options.faults)
        problems = [
            f"fault {i + 1}: {text}" for i, _, text in fault_problems(options.faults, identities)
        ]
        problems += [
            f"{'.'.join(loc)}: {text}" for loc, text in option_problems(options, identities)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        history = history_of(options)
        broker = Broker(options.host, options.port, options.username, options.password)
        with GroundTruthLog(options.ground_truth) as log:
            if history is not None:
                await self._backfill(
                    history, identities, list(zip(ids, options.faults, strict=True)), log
                )
                if options.history_mode == "only":
                    return
            devices = {
                identity.device_id: SimDevice(
                    identity,
                    broker=broker,
                    topic_prefix=options.topic_prefix,
                    interval=options.interval,
                    reboot_s=options.reboot_downtime,
                    stats=self._stats,
                    log=log,
                )
                for identity in identities
            }
            now = time.time()
            for identity in identities:
                log.write(
                    usage_profile_event(
                        identity.device_id, identity.model.product, identity.usage, now
                    )
                )
            loop = asyncio.get_running_loop()
            customers = Customers(
                devices, log, loop.call_later, compliance=options.compliance, seed=options.seed
            )
            start = loop.time()
            tasks = [
                asyncio.create_task(device.run(), name=f"sim-device-{device_id}")
                for device_id, device in devices.items()
            ]
            schedule = fault_schedule(list(zip(ids, options.faults, strict=True)))
            helpers = [
                asyncio.create_task(self._fault_loop(devices, schedule, start), name="sim-faults")
            ]
            if options.faults:  # the customers read every notice, whatever it says
                helpers.append(
                    asyncio.create_task(self._notice_loop(broker, customers), name="sim-customers")
                )
            try:
                await self._wait(tasks, helpers, options.duration)
            finally:
                customers.cancel()
                await self._shutdown(devices, tasks, helpers)

    async def _backfill(
        self,
        history: HistoryOptions,
        identities: list[DeviceIdentity],
        faults: list[tuple[str, FaultSpec]],
        log: GroundTruthLog,
    ) -> None:
        """Publish the fleet's past (meta first, retained), up to now; log its wear runs.

        The messages are generated and published in a thread, as fast as the broker takes them.
        """
        options = self.options
        seed = history.seed if history.seed is not None else options.seed
        end = time.time()
        runs = plan_wear_runs(history, identities, options.faults, end, options.seed)
        past = wear_run_faults(runs, identities)
        for run_fault in past:
            fault = run_fault.fault
            part = fault.wear.part if fault.wear else ""
            logger.info("history: %s wears out (%s) on %s", fault.fault_id, part, fault.spec.device)
            log.write(fault_started_event(fault, _product(identities, fault.spec.device),
                                          fault.spec.remaining_life, history=True))  # fmt: skip
            log.write(fault_ended_event(fault, run_fault.until, "repaired", history=True))
        past += carried_wear(faults, identities, end)
        stop = threading.Event()
        messages = history_messages(
            identities, options.topic_prefix, history, end, seed, past, stop=stop
        )
        burst = partial(
            publish_burst,
            options.port,
            host=options.host,
            client_id=f"{options.id_prefix}-history-{uuid.uuid4().hex[:8]}",
            username=options.username,
            password=options.password,
        )
        started = time.monotonic()
        try:
            await asyncio.to_thread(
                burst, meta_messages(identities, options.topic_prefix), retain=True
            )
            count, _ = await asyncio.to_thread(burst, messages)
        except OSError as exc:
            raise ConnectionError(
                f"history: cannot publish to the broker at {options.host}:{options.port}: {exc}"
            ) from exc
        finally:
            stop.set()  # a cancelled backfill stops generating at the next step
        self._stats.history_published += count
        elapsed = time.monotonic() - started
        logger.info(
            "history: %d messages for %d devices over %.1f h published in %.1f s (%.0f/s), "
            "%d wear runs",
            count,
            len(identities),
            history.duration / 3600,
            elapsed,
            count / max(elapsed, 1e-9),
            len(runs),
        )

    @staticmethod
    async def _wait(
        tasks: list[asyncio.Task[None]], helpers: list[asyncio.Task[None]], duration: float | None
    ) -> None:
        """Return after ``duration``; raise at once if a task fails."""
        loop = asyncio.get_running_loop()
        deadline = None if duration is None else loop.time() + duration
        pending: set[asyncio.Task[None]] = {*tasks, *helpers}
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                return
            for task in done:
                task.result()  # a device only returns when stopped: anything else is a bug

    async def _shutdown(
        self,
        devices: dict[str, SimDevice],
        tasks: list[asyncio.Task[None]],
        helpers: list[asyncio.Task[None]],
    ) -> None:
        """Stop the schedule, let every device say offline, then end what is still active."""
        for helper in helpers:
            helper.cancel()
        for device in devices.values():
            device.stop()
        try:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
        finally:
            # Past the grace period, or cancelled again: nothing outlives run().
            for task in tasks:
                task.cancel()
        results = await asyncio.gather(*tasks, *helpers, return_exceptions=True)
        for task, result in zip([*tasks, *helpers], results, strict=True):
            if isinstance(result, Exception):
                logger.error("%s failed: %r", task.get_name(), result)
        now = time.time()
        for device in devices.values():
            for fault in device.faults:
                device.end_fault(fault.fault_id, "fleet_stopped", now)
        stats = self._stats
        logger.info(
            "fleet stopped: %d devices, %d telemetry messages, %d faults injected (%d fixed), "
            "%d commands answered, %d dropped",
            len(devices),
            stats.messages_published,
            stats.faults_injected,
            stats.faults_fixed,
            stats.commands_answered,
            stats.commands_dropped,
        )

    @staticmethod
    async def _fault_loop(
        devices: dict[str, SimDevice],
        schedule: list[tuple[float, Action, str, FaultSpec]],
        start: float,
    ) -> None:
        """Start and end each fault at its offset from the fleet's start."""
        loop = asyncio.get_running_loop()
        for offset, action, fault_id, spec in schedule:
            await asyncio.sleep(max(0.0, start + offset - loop.time()))
            device = devices[spec.device]
            if action == "start":
                logger.info("fault %s starts on %s", fault_id, spec.device)
                device.start_fault(fault_id, spec, time.time())
            elif action == "customer":
                if device.end_fault(fault_id, "customer", time.time()):
                    logger.info("customer fixed %s on %s", fault_id, spec.device)
            elif device.end_fault(fault_id, "duration", time.time()):
                logger.info("fault %s ended on %s", fault_id, spec.device)

    async def _notice_loop(self, broker: Broker, customers: Customers) -> None:
        """Listen, as the customers' apps, for notices the daemon sends; reconnect when lost."""
        options = self.options
        topic = f"{options.notices_topic}/+"
        backoff = 0.5
        while True:
            client = aiomqtt.Client(
                broker.host,
                broker.port,
                username=broker.username,
                password=broker.password,
                identifier=f"{options.id_prefix}-customers-{uuid.uuid4().hex[:8]}",
                timeout=NETWORK_TIMEOUT_S,
            )
            try:
                async with client:
                    await client.subscribe(topic, qos=1)
                    backoff = 0.5
                    async for message in client.messages:
                        device_id = str(message.topic).rsplit("/", 1)[-1]
                        raw = message.payload
                        notice = parse_notice(raw if isinstance(raw, bytes) else b"")
                        if notice is None:
                            continue
                        for fault_id, acts_at in customers.notice(device_id, time.time(), notice):
                            logger.info(
                                "customer of %s guided: fixes %s in %.0f s",
                                device_id,
                                fault_id,
                                acts_at - time.time(),
                            )
            except aiomqtt.MqttError as exc:
                logger.warning("customers' notice listener: %s; reconnecting", exc)
            finally:
                await _settle(client)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2.0, 10.0)
