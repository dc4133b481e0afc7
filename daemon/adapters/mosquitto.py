"""Start a Mosquitto broker from the project's `mosquitto.conf` on a free port.

Used by `frontline demo`, the test fixtures and the benchmarks, so all three run the broker
configuration a user ships, with only the listener port and the persistence directory changed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from daemon.errors import BrokerUnavailable

_LISTENER = re.compile(r"^listener\s+\d+(\s+\S+)?\s*$", re.MULTILINE)
_PERSISTENCE = re.compile(r"^persistence_location\s+.*$", re.MULTILINE)
_PIDFILE = re.compile(r"^(pid_file|log_dest)\s+.*$", re.MULTILINE)


def mosquitto_binary(name: str = "mosquitto") -> str | None:
    """Return the Mosquitto executable (Debian installs it in /usr/sbin, often not on PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def mosquitto_installed() -> bool:
    return mosquitto_binary() is not None


def find_config() -> Path:
    """Return the shipped `mosquitto.conf`: the project root's, or the copy inside the wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "mosquitto.conf", package / "_data" / "mosquitto.conf"):
        if candidate.is_file():
            return candidate
    raise BrokerUnavailable("mosquitto.conf not found next to the daemon package")


def render_config(template: str, port: int, data_dir: Path, host: str = "127.0.0.1") -> str:
    """Return `template` listening on host:port with persistence under `data_dir`."""
    if not _LISTENER.search(template):
        raise BrokerUnavailable("mosquitto.conf has no `listener PORT [HOST]` line to rewrite")
    text = _LISTENER.sub(f"listener {port} {host}", template, count=1)
    text = _PERSISTENCE.sub(f"persistence_location {data_dir}/", text)
    text = _PIDFILE.sub("", text) + "\nlog_dest stderr\n"
    if os.geteuid() == 0:
        # Mosquitto started as root drops to user `mosquitto`, which cannot write our private
        # (0700) data directory; `user root` keeps the privileges it was started with.
        text += "user root\n"
    return text


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Return True once host:port accepts TCP connections, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Terminate a child process, killing it if it does not stop within `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class MosquittoProcess:
    """A Mosquitto child process; a context manager that starts and stops it.

    `stop()` then `start()` restarts it on the same port with the same persistence, which is how
    tests simulate a broker outage.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        config: Path | None = None,
        host: str = "127.0.0.1",
        binary: str = "mosquitto",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = data_dir
        self.config = config or find_config()
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        executable = mosquitto_binary(self.binary)
        if executable is None:
            raise BrokerUnavailable(f"{self.binary} not found on PATH (apt-get install mosquitto)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(render_config(self.config.read_text(), self.port, self.data_dir, self.host))
        log = (self.data_dir / "mosquitto.log").open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603  fixed binary, our own config file
                [executable, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            tail = (self.data_dir / "mosquitto.log").read_text(errors="replace")[-2000:]
            raise BrokerUnavailable(f"mosquitto did not listen on {self.port}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout)

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL): it saves nothing on the way out."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
