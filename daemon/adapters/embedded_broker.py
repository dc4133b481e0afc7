"""A pure-Python MQTT broker (amqtt) for `frontline demo` where Mosquitto is not installed.

It speaks MQTT 3.1.1 only and has none of the queue sizing of the shipped mosquitto.conf, so it is
a fallback for trying Frontline out, never for production or for the tests. Run as
`python -m daemon.adapters.embedded_broker PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys

from daemon.adapters.mosquitto import free_port, stop_process, wait_for_port
from daemon.errors import BrokerUnavailable


async def serve(port: int) -> None:
    from amqtt.broker import Broker  # optional dependency: the `broker` extra

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
        "topic-check": {"enabled": False},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await broker.shutdown()


def available() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


class EmbeddedBrokerProcess:
    """The embedded broker as a child process, with MosquittoProcess's interface."""

    protocol = "3.1.1"

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        if not available():
            raise BrokerUnavailable(
                "neither mosquitto nor the embedded broker is installed "
                "(apt-get install mosquitto, or pip install 'frontline[broker]')"
            )
        self._process = subprocess.Popen(  # noqa: S603  our own interpreter and module
            [sys.executable, "-m", "daemon.adapters.embedded_broker", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerUnavailable(f"the embedded broker did not listen on {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
