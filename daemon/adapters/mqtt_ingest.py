"""The hot ingest path: paho-mqtt's own network thread parses messages and hands batches to asyncio.

Measured (docs/benchmarks.md): paho's thread feeding asyncio receives about
twice what aiomqtt does, so the receive loop stays in paho and only whole batches cross into the
event loop. Acknowledgements are manual: a QoS 1 message is acknowledged to the broker only after it
is stored (or dead-lettered), so neither a crash nor `kill -9` loses telemetry; the broker
redelivers what was not acknowledged. The MQTT v5 receive maximum bounds the unacknowledged
messages in flight, and so the memory held here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from daemon.config import MqttSettings
from daemon.core.backoff import backoff_delay
from daemon.core.ingress import Ingress
from daemon.core.messages import Ignored
from daemon.ports import Received

log = logging.getLogger(__name__)

STATUS_TOPIC = "frontline/status"
#: QoS 0 messages are not bounded by the receive maximum; past this, paho's thread waits.
MAX_BUFFERED = 200_000
#: and past this many payload bytes (a flood of large payloads within the receive maximum)
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
#: messages handed to the pipeline at once: a burst is worked through in slices, so the event
#: loop (HTTP health, metrics, rules) gets its turn between them
MAX_TAKE = 5_000
#: the packet id of a message decoded from the same MQTT message as the next one (a gateway's
#: payload for several devices): only the last of them acknowledges the packet
PART_MID = -1


class MqttIngest:
    """Subscribe to device topics on a persistent session; yield batches of classified messages."""

    def __init__(self, settings: MqttSettings, ingress: Ingress) -> None:
        self._settings = settings
        self.ingress = ingress
        self._buffer: list[Received] = []
        self._bytes = 0
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._stopping = threading.Event()
        self._accepting = True
        self._epoch = 0
        self._connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.connects = 0
        self.thread_restarts = 0
        self.connected_at_ms: int | None = None
        self.client = self._make_client()

    # -- paho side (network thread) -------------------------------------------------------------
    def _make_client(self) -> paho.Client:
        s = self._settings
        v5 = s.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if s.username:
            password = s.password.get_secret_value() if s.password else None
            client.username_pw_set(s.username, password)
        client.will_set(STATUS_TOPIC, b"offline", qos=1, retain=True)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._epoch += 1
            # Messages of the previous connection cannot be acknowledged on this one; the broker
            # redelivers them, and the store keeps one point per (device, metric, ts).
            self._buffer = [r for r in self._buffer if r.qos == 0 and r.mid != PART_MID]
            self._bytes = sum(r.size for r in self._buffer)
        filters = self.ingress.filters(self._settings.shared_group)
        if self._settings.protocol == "5":
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in filters])
        else:
            client.subscribe([(t, 1) for t in filters])
        client.publish(STATUS_TOPIC, b"online", qos=1, retain=True)
        self._connected = True
        self.connected_at_ms = time.time_ns() // 1_000_000
        self.connects += 1
        log.info("connected to mqtt://%s:%s", self._settings.host, self._settings.port)

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected = False
        if not self._stopping.is_set():
            log.warning("disconnected from broker: %s", reason)

    def _publish_requests(self, client: paho.Client) -> None:
        """Publish what a dialect asks of its devices (a Sparkplug rebirth request)."""
        for dialect in self.ingress.dialects:
            for topic, body in dialect.take_requests():
                client.publish(topic, body, qos=0)

    def _on_message(self, client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if not self._accepting:
            return  # left unacknowledged: the broker redelivers it to the next session
        received_ms = time.time_ns() // 1_000_000
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        messages = self.ingress.classify(msg.topic, payload, received_ms)
        size = len(payload)
        retained, epoch = bool(msg.retain), self._epoch
        items = [
            Received(message, received_ms, retained, PART_MID, 0, epoch, 0, msg.dup)
            for message in messages[:-1]
        ]
        last = messages[-1] if messages else Ignored(msg.topic)  # acknowledged in its turn
        items.append(Received(last, received_ms, retained, msg.mid, msg.qos, epoch, size, msg.dup))
        self._publish_requests(client)
        with self._lock:
            self._buffer.extend(items)
            self._bytes += size
            wake = len(self._buffer) == len(items)
            full = self._full()
        if wake and self._loop is not None:
            self._loop.call_soon_threadsafe(self._ready.set)
        while full and not self._stopping.is_set():
            # Back-pressure into TCP: QoS 0 floods, or large payloads past the byte bound. The
            # pipeline drains the buffer without this thread; its acknowledgements wait here.
            time.sleep(0.01)
            with self._lock:
                full = self._full()

    def _full(self) -> bool:
        return len(self._buffer) >= MAX_BUFFERED or self._bytes >= MAX_BUFFERED_BYTES

    def _delay(self, attempt: int) -> float:
        draw = random.random()  # noqa: S311  jitter, not cryptography
        return backoff_delay(
            attempt, self._settings.reconnect_min, self._settings.reconnect_max, draw
        )

    def _network_loop(self) -> None:
        try:
            self._connect_loop()
        except Exception:  # paho's thread must never die silently; the watchdog restarts it
            log.exception("the MQTT network thread failed and stopped")

    def _connect_loop(self) -> None:
        s = self._settings
        attempt = 0
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
        properties.SessionExpiryInterval = int(s.session_expiry)
        properties.ReceiveMaximum = s.receive_maximum
        while not self._stopping.is_set():
            try:
                if s.protocol == "5":
                    self.client.connect(
                        s.host, s.port, s.keepalive, clean_start=False, properties=properties
                    )
                else:
                    self.client.connect(s.host, s.port, s.keepalive)
            except OSError as exc:
                delay = self._delay(attempt)
                log.warning(
                    "cannot reach broker %s:%s (%s); retry in %.1fs", s.host, s.port, exc, delay
                )
                attempt += 1
                self._stopping.wait(delay)
                continue
            connects_before = self.connects
            try:
                self.client.loop_forever()
            except Exception:  # a bug in a callback must cost a reconnect, not the ingest
                log.exception("MQTT network loop failed; reconnecting")
                with contextlib.suppress(Exception):
                    self.client.disconnect()
                self._connected = False
            if self.connects > connects_before:
                attempt = 0
            if not self._stopping.is_set():
                delay = self._delay(attempt)
                attempt += 1
                self._stopping.wait(delay)

    # -- asyncio side ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def depth(self) -> int:
        """Messages received and not yet taken by the pipeline."""
        return len(self._buffer)

    @property
    def alive(self) -> bool:
        """True while paho's network thread runs (or before it was started)."""
        return self._thread is None or self._thread.is_alive() or self._stopping.is_set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._network_loop, name="mqtt-ingest", daemon=True)
        self._thread.start()

    def revive(self) -> bool:
        """Restart a dead network thread (the watchdog calls this); True if it had to."""
        if self.alive:
            return False
        log.error("the MQTT network thread died; restarting it")
        self.thread_restarts += 1
        self._connected = False
        self.client = self._make_client()
        self.start()
        return True

    async def batches(self) -> AsyncIterator[list[Received]]:
        """Yield the messages received since the last batch, until intake stops and is drained."""
        while True:
            if not self._buffer:
                if not self._accepting:
                    return
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout=0.5)
                except TimeoutError:
                    continue
            with self._lock:
                items, self._buffer = self._buffer[:MAX_TAKE], self._buffer[MAX_TAKE:]
                self._bytes -= sum(item.size for item in items)
            if items:
                yield items

    def ack(self, items: list[Received]) -> None:
        """Acknowledge stored messages to the broker, in the order they were received."""
        epoch = self._epoch
        for item in items:
            if item.qos and item.epoch == epoch:
                self.client.ack(item.mid, item.qos)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> PahoDelivery:
        """Publish at QoS 1 on the daemon's connection (paho queues it while disconnected)."""
        return PahoDelivery(self.client.publish(topic, payload, qos=1, retain=retain))

    def stop_intake(self) -> None:
        """Stop taking new messages; what was received can still be drained and acknowledged."""
        self._accepting = False
        if self._loop is not None:
            self._ready.set()

    async def close(self, grace: float = 5.0) -> None:
        """Publish `offline`, disconnect cleanly and join the network thread."""
        self._stopping.set()
        if self._connected:
            info = self.client.publish(STATUS_TOPIC, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                await asyncio.to_thread(info.wait_for_publish, grace)
        self.client.disconnect()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, grace)


class PahoDelivery:
    """Whether the broker acknowledged one publication.

    paho's `is_published()` raises for a message published while disconnected, although paho
    keeps that message and sends it after reconnecting; its acknowledgement is then recorded on
    the same info object, which is what is read here.
    """

    def __init__(self, info: paho.MQTTMessageInfo) -> None:
        self._info = info

    def is_published(self) -> bool:
        try:
            return bool(self._info.is_published())
        except (RuntimeError, ValueError):
            return bool(getattr(self._info, "_published", False))
