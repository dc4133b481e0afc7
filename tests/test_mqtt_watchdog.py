"""Integration: paho's network thread dying is seen (`alive`), and `revive` brings ingest back."""

from __future__ import annotations

import asyncio

import pytest

from daemon.adapters.mosquitto import MosquittoProcess
from daemon.adapters.mqtt_ingest import MqttIngest
from daemon.config import MqttSettings
from daemon.core.ingress import Ingress
from daemon.core.payloads import Limits

pytestmark = pytest.mark.integration


async def _until(check: object, seconds: float = 20.0) -> bool:
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


def test_a_dead_network_thread_is_seen_and_revived(broker: MosquittoProcess) -> None:
    """Test that a crashed MQTT thread reports not alive and is restarted, connected again."""

    async def scenario() -> None:
        settings = MqttSettings(
            host=broker.host, port=broker.port, client_id="watchdog-test", reconnect_max=1.0
        )
        ingest = MqttIngest(settings, Ingress(limits=Limits()))
        original = ingest._connect_loop
        calls = 0

        def crash_once() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ValueError("a bug in the network thread")
            original()

        ingest._connect_loop = crash_once  # type: ignore[method-assign]
        ingest.start()
        assert await _until(lambda: not ingest.alive), "the thread should have died"
        assert not ingest.connected
        assert ingest.revive()
        assert await _until(lambda: ingest.connected), "revived thread did not connect"
        assert ingest.alive
        assert ingest.thread_restarts == 1
        assert not ingest.revive()  # alive: nothing to do
        ingest.stop_intake()
        await ingest.close()
        assert ingest.alive  # stopping counts as alive: no revival during shutdown

    asyncio.run(scenario())
