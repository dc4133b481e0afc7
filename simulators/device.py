"""One simulated device: its own MQTT connection (and LWT), telemetry, commands and faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt
import orjson

from simulators.commands import (
    Behaviour,
    CommandOutcome,
    DeviceView,
    Effect,
    Reply,
    handle_command,
    plan_answer,
)
from simulators.faults import (
    ActiveFault,
    FaultKind,
    FaultSpec,
    apply_faults,
    blocks_telemetry,
    customer_impact_after,
    start_fault,
)
from simulators.groundtruth import (
    GroundTruthLog,
    command_event,
    fault_ended_event,
    fault_started_event,
)
from simulators.models import DeviceModel, UsageProfile, Values

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT_S = 5.0
_BACKOFF_MIN_S = 0.5
_BACKOFF_MAX_S = 10.0
_REMEMBERED_COMMANDS = 64  # replies kept to answer a redelivered (QoS 1) command without redoing it
Exit = Literal["stop", "offline", "reboot", "lost"]


@dataclass
class FleetStats:
    """Live counters; ``messages_published`` counts telemetry messages."""

    devices_connected: int = 0
    messages_published: int = 0
    faults_injected: int = 0
    faults_active: int = 0
    commands_received: int = 0
    commands_answered: int = 0
    commands_dropped: int = 0  # never answered, as the device's behaviour says
    faults_fixed: int = 0  # ended by a command or by the customer
    history_published: int = 0  # past telemetry messages of a backfill


@dataclass(frozen=True)
class Broker:
    """Where and how devices connect."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a device is: fixed for the fleet's lifetime, derived from the options and seed."""

    device_id: str
    model: DeviceModel[Any]
    flat: bool  # publishes the flat telemetry shape (no ts) instead of {"ts", "values"}
    meta: dict[str, Any]
    utc_offset_h: float
    seed: str
    usage: UsageProfile = UsageProfile.NORMAL
    behaviour: Behaviour = field(default_factory=Behaviour)


def telemetry_payload(values: Values, now: float, *, flat: bool) -> bytes:
    """Return the telemetry message for ``values`` sampled at ``now`` (epoch seconds)."""
    if flat:
        return orjson.dumps(values)
    return orjson.dumps({"ts": round(now * 1000), "values": values})


def drop_connection(client: aiomqtt.Client) -> None:
    """Cut the TCP connection without an MQTT DISCONNECT, so that the broker publishes the will.

    aiomqtt has no public call for this, so reach the socket through its paho client: after
    ``shutdown`` paho reads EOF, reports the connection lost, and the message iterator ends with
    ``MqttError`` exactly as after a real network failure.
    """
    sock = client._client.socket()  # private: see above
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already gone is just as good
            sock.shutdown(socket.SHUT_RDWR)


async def _settle(client: aiomqtt.Client) -> None:
    """Wait for the housekeeping task of a closed aiomqtt client to end.

    aiomqtt cancels it from its socket-close callback through ``call_soon_threadsafe``, so without
    this it outlives the connection by a loop iteration or two, and ``Fleet.run()`` would return
    with tasks still pending.
    """
    task = client._misc_task  # private: aiomqtt exposes no way to wait for it
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=NETWORK_TIMEOUT_S)


class SimDevice:
    """A device that publishes telemetry every ``interval`` seconds until stopped."""

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        broker: Broker,
        topic_prefix: str,
        interval: float,
        reboot_s: float,
        stats: FleetStats,
        log: GroundTruthLog,
    ) -> None:
        self.identity = identity
        self._broker = broker
        self._interval = interval
        self._reboot_s = reboot_s
        self._stats = stats
        self._log = log
        self._base = f"{topic_prefix}/{identity.device_id}"
        self._rng = random.Random(identity.seed)
        model = identity.model
        state = model.initial_state(self._rng, identity.utc_offset_h)
        self._state = model.with_usage(state, identity.usage, self._rng)
        self._phase = self._rng.uniform(0.0, interval)  # spreads the fleet's messages
        self._command_rng = random.Random(f"{identity.seed}:commands")  # drop decisions
        self._faults: dict[str, ActiveFault] = {}
        self._last_values: Values = {}
        # Replies kept for redeliveries; None marks a command the device dropped.
        self._answered: OrderedDict[str, Reply | None] = OrderedDict()
        # Tests pass time in instead of waiting, and set the clock commands are stamped with.
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.time
        self._stopping = False
        self._reboot_requested = False
        self._dropping = False
        self._wake = asyncio.Event()

    # --- state the fleet and commands change ----------------------------------------------------

    @property
    def faults(self) -> tuple[ActiveFault, ...]:
        """Return the active faults."""
        return tuple(self._faults.values())

    def stop(self) -> None:
        """Ask the device to announce offline, disconnect cleanly and return from run()."""
        self._stopping = True
        self._wake.set()

    def start_fault(self, fault_id: str, spec: FaultSpec, now: float) -> None:
        """Start a fault at ``now`` (epoch seconds) and record it in the ground truth."""
        model = self.identity.model
        fault = start_fault(fault_id, spec, model, now)
        last = self._last_values.get(spec.metric or "")
        if spec.kind is FaultKind.STUCK and isinstance(last, float | int):
            fault.frozen = float(last)
        self._faults[fault_id] = fault
        self._stats.faults_injected += 1
        self._stats.faults_active += 1
        self._log.write(
            fault_started_event(fault, model.product, customer_impact_after(model, spec))
        )
        self._wake.set()

    def end_fault(self, fault_id: str, reason: str, now: float) -> bool:
        """End an active fault and record why; False if it was not active."""
        fault = self._faults.pop(fault_id, None)
        if fault is None:
            return False
        self._stats.faults_active -= 1
        if reason.startswith("command:") or reason == "customer":
            self._stats.faults_fixed += 1
        self._log.write(fault_ended_event(fault, now, reason))
        self._wake.set()
        return True

    def next_telemetry(self, now: float) -> bytes | None:
        """Advance the signals to ``now``; return the message to publish, None during a dropout."""
        values, self._state = self.identity.model.sample(now, self._state, self._rng)
        faults = self.faults
        values = apply_faults(values, faults, now, self._rng)
        self._last_values = values
        if blocks_telemetry(faults):
            return None
        return telemetry_payload(values, now, flat=self.identity.flat)

    def _offline(self) -> bool:
        return any(f.spec.kind is FaultKind.OFFLINE for f in self._faults.values())

    def _exit_reason(self) -> Exit | None:
        if self._stopping:
            return "stop"
        if self._offline():
            return "offline"
        if self._reboot_requested:
            return "reboot"
        return None

    async def _pause(self, seconds: float | None) -> None:
        """Wait ``seconds`` or until something changes (stop, a fault starting or ending)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _pause_unless_stopped(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._stopping and (left := deadline - loop.time()) > 0:
            await self._pause(left)

    # --- I/O ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect after reboots, outages and offline faults until stopped."""
        backoff = _BACKOFF_MIN_S
        while not self._stopping:
            if self._offline():
                await self._pause(None)  # until the fault ends or the fleet stops
                continue
            reason = await self._connection()
            if reason == "lost":
                await self._pause_unless_stopped(backoff * self._rng.uniform(0.5, 1.0))
                backoff = min(backoff * 2.0, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_MIN_S
            if reason == "reboot":
                self._reboot_requested = False
                await self._pause_unless_stopped(self._reboot_s)

    async def _connection(self) -> Exit:
        """Run one connection; return why it ended."""
        reason: Exit = "lost"
        try:
            reason = await self._serve()
        except* aiomqtt.MqttError as group:
            logger.warning("device %s: connection failed or lost: %s", self._id, group.exceptions)
        return reason

    @property
    def _id(self) -> str:
        return self.identity.device_id

    async def _serve(self) -> Exit:
        status = f"{self._base}/status"
        client = aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=self._id,
            # A persistent session: commands sent while the device is away wait at the broker.
            clean_session=False,
            will=aiomqtt.Will(status, b"offline", qos=1, retain=True),
            timeout=NETWORK_TIMEOUT_S,
            keepalive=30,
        )
        self._dropping = False
        try:
            async with client:
                meta = orjson.dumps(self.identity.meta)
                await client.publish(f"{self._base}/meta", meta, qos=1, retain=True)
                await client.publish(status, b"online", qos=1, retain=True)
                await client.subscribe(f"{self._base}/commands/+", qos=1)
                self._stats.devices_connected += 1
                try:
                    return await self._serve_connected(client, status)
                finally:
                    self._stats.devices_connected -= 1
        finally:
            await _settle(client)

    async def _serve_connected(self, client: aiomqtt.Client, status: str) -> Exit:
        async with asyncio.TaskGroup() as tasks:
            telemetry = tasks.create_task(
                self._telemetry_loop(client), name=f"{self._id}-telemetry"
            )
            commands = tasks.create_task(self._command_loop(client), name=f"{self._id}-commands")
            while (reason := self._exit_reason()) is None:
                await self._pause(None)
            telemetry.cancel()
            if reason == "offline":
                self._dropping = True
                drop_connection(client)
                # The command loop returns once paho has noticed the dead socket.
                await asyncio.wait({commands}, timeout=NETWORK_TIMEOUT_S)
            commands.cancel()
            await asyncio.wait({commands})
            self._record_unhandled(client)
            if reason != "offline":
                await client.publish(status, b"offline", qos=1, retain=True)
        return reason

    async def _telemetry_loop(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._phase
        topic = f"{self._base}/telemetry"
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + self._interval, loop.time())  # fell behind: skip, don't burst
            payload = self.next_telemetry(time.time())
            if payload is not None:
                await client.publish(topic, payload, qos=1)
                self._stats.messages_published += 1

    async def _command_loop(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                await self._answer(client, str(message.topic), message.payload)
        except aiomqtt.MqttError:
            if not self._dropping:
                raise

    async def _answer(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        """Answer one command (or drop it), carry it out, and record it in the ground truth."""
        command_id = topic.rsplit("/", 1)[-1]
        self._stats.commands_received += 1
        received = self._clock()
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        if command_id in self._answered:
            await self._answer_again(client, topic, command_id, received)
            return
        active = tuple(self._faults)
        if plan_answer(self.identity.behaviour, self._command_rng).drop:
            self._remember(command_id, None)
            self._stats.commands_dropped += 1
            logger.info("device %s: command %s dropped", self._id, command_id)
            method, params = _peek(bytes(raw))
            self._log.write(
                command_event(
                    self._id, command_id, received=received, method=method, params=params,
                    effect="dropped", status=None, message=None, active=active,
                )
            )  # fmt: skip
            return
        outcome = handle_command(
            command_id, bytes(raw), self._view(), datetime.fromtimestamp(received, UTC)
        )
        replied: float | None = None
        fixed: tuple[str, ...] = ()
        try:
            delay = self.identity.behaviour.answer_delay
            if delay > 0:
                await self._sleep(delay)  # the device is busy: a late answer
            await client.publish(f"{topic}/reply", outcome.reply.to_payload(), qos=1)
            replied = self._clock()
            self._remember(command_id, outcome.reply)
            self._stats.commands_answered += 1
            logger.info("device %s: command %s -> %s", self._id, command_id, outcome.reply.status)
            fixed = self._carry_out(outcome, replied)
        finally:
            effect: Effect = outcome.effect
            if replied is None:
                effect = "interrupted"
            elif effect == "fixed" and not fixed:
                effect = "no_effect"  # the fault ended by itself in the meantime
            method, params = _peek(bytes(raw))
            self._log.write(
                command_event(
                    self._id, command_id, received=received, replied=replied, method=method,
                    params=params, effect=effect, status=outcome.reply.status,
                    message=outcome.reply.message, fixed=fixed, active=active,
                )
            )  # fmt: skip

    async def _answer_again(
        self, client: aiomqtt.Client, topic: str, command_id: str, received: float
    ) -> None:
        """Answer a redelivered command as the first time (or not at all), without redoing it."""
        reply = self._answered[command_id]
        replied = None
        if reply is not None:
            await client.publish(f"{topic}/reply", reply.to_payload(), qos=1)
            self._stats.commands_answered += 1
            replied = self._clock()
        self._log.write(
            command_event(
                self._id, command_id, received=received, replied=replied, method=None,
                params=None, effect="duplicate", status=reply.status if reply else None,
                message=reply.message if reply else None, active=tuple(self._faults),
            )
        )  # fmt: skip

    def _record_unhandled(self, client: aiomqtt.Client) -> None:
        """Record the commands delivered (and acknowledged) but never handled as interrupted.

        A device that reboots, drops off the network or stops loses what it had received but
        not yet processed, as a real one would; the ground truth still says it arrived.
        """
        queue = client._queue  # private: aiomqtt's buffer of received messages
        now = self._clock()
        while not queue.empty():
            message = queue.get_nowait()
            raw = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            method, params = _peek(bytes(raw))
            self._stats.commands_received += 1
            self._log.write(
                command_event(
                    self._id, str(message.topic).rsplit("/", 1)[-1], received=now,
                    method=method, params=params, effect="interrupted", status=None,
                    message=None, active=tuple(self._faults),
                )
            )  # fmt: skip

    def _remember(self, command_id: str, reply: Reply | None) -> None:
        self._answered[command_id] = reply
        if len(self._answered) > _REMEMBERED_COMMANDS:
            self._answered.popitem(last=False)

    def _carry_out(self, outcome: CommandOutcome, now: float) -> tuple[str, ...]:
        """Do what an answered command asks (once the reply is out: a reboot ends the connection).

        Return the ids of the faults it fixed.
        """
        if outcome.method is None:
            return ()
        model = self.identity.model
        self._state = model.apply_command(self._state, outcome.method, outcome.params, now)
        reason = f"command:{outcome.method}"
        fixed = tuple(f for f in outcome.clears if self.end_fault(f, reason, now))
        if outcome.reboot_s is not None:
            self._reboot_requested = True
            self._wake.set()
        return fixed

    def _view(self) -> DeviceView:
        model = self.identity.model
        return DeviceView(
            self._id,
            model.product,
            model.commands,
            self.faults,
            self._reboot_s,
            rejects=self.identity.behaviour.rejects,
        )


def _peek(raw: bytes) -> tuple[str | None, Any]:
    """Return the method and params of a command payload as far as they can be read."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    method = body.get("method")
    return (method if isinstance(method, str) else None), body.get("params")
