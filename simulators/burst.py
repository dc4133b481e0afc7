"""Publish a burst of prepared messages as fast as one paho client can (tests and benchmarks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

# paho scans its whole outgoing queue on every acknowledgement (quadratic for long queues), so
# the publisher keeps at most this many messages unacknowledged.
WINDOW = 1000


def publish_burst(
    port: int,
    messages: Iterable[tuple[str, bytes]],
    qos: int = 1,
    host: str = "127.0.0.1",
    client_id: str = "burst-publisher",
    timeout: float = 600.0,
    *,
    username: str | None = None,
    password: str | None = None,
    retain: bool = False,
) -> tuple[int, float]:
    """Publish every (topic, payload); return (count, seconds) once the broker acknowledged all.

    ``messages`` may be a generator: it is consumed as the window allows, so the messages are
    never all in memory at once.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if username is not None:
        client.username_pw_set(username, password)
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    window = threading.Semaphore(WINDOW)
    lock = threading.Lock()
    acked = 0

    def on_publish(*_args: object) -> None:
        nonlocal acked
        with lock:
            acked += 1
        window.release()

    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    started = time.perf_counter()
    count = 0
    try:
        for topic, payload in messages:
            if not window.acquire(timeout=timeout):
                raise TimeoutError("broker stopped acknowledging")
            client.publish(topic, payload, qos=qos, retain=retain)
            count += 1
        deadline = time.monotonic() + timeout
        while qos and acked < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count - acked} messages unacknowledged")
            time.sleep(0.005)
        return count, time.perf_counter() - started
    finally:
        client.loop_stop()
        client.disconnect()
