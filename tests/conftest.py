"""Shared fixtures: real Mosquitto brokers from the project's own `mosquitto.conf`.

A missing binary skips the test locally with the reason; with `CI=true` it fails instead, so CI
can never pass by skipping the tests that matter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.adapters.mosquitto import MosquittoProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `check` until it is true; fail saying `what` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def require_binary(name: str) -> str:
    """Return the path of `name`, or skip (locally) / fail (CI) with a clear reason."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found:
        return found
    reason = f"{name} is not installed (make test installs it with apt as root)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A fresh Mosquitto on a free port, from the shipped mosquitto.conf."""
    require_binary("mosquitto")
    with MosquittoProcess(tmp_path / "mosquitto", config=ROOT / "mosquitto.conf") as process:
        yield process


class DaemonProcess:
    """`frontline run` as a child process, configured through FRONTLINE_* variables like a user."""

    def __init__(self, broker: MosquittoProcess, data_dir: Path, **settings: str) -> None:
        self.http_port = free_port()
        self.data_dir = data_dir
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith("FRONTLINE_")
        }
        self.env.update(
            FRONTLINE_MQTT__HOST=broker.host,
            FRONTLINE_MQTT__PORT=str(broker.port),
            FRONTLINE_MQTT__CLIENT_ID=f"frontline-test-{broker.port}",
            FRONTLINE_MQTT__RECONNECT_MAX="1s",
            FRONTLINE_DATA_DIR=str(data_dir),
            FRONTLINE_HTTP__PORT=str(self.http_port),
        )
        self.env.update(settings)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"daemon-{broker.port}.log"
        #: the working directory of the daemon and the CLI (default: the test run's)
        self.cwd: Path | None = None
        #: how `frontline` is started (an installed copy's script, for tests/test_install.py)
        self.command = [sys.executable, "-m", "daemon"]

    def start(self, ready: bool = True) -> DaemonProcess:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, "run"],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=log,
            )
        if ready:
            self.wait_ready()
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if self.get("/readyz")[0] == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Return one sample of the daemon's /metrics (0 if absent)."""
        _, body = self.get("/metrics")
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and (labels is None or sample.labels == labels):
                    return float(sample.value)
        return 0.0

    def wait_for(self, name: str, value: float, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        current = 0.0
        while time.monotonic() < deadline:
            current = self.metric(name)
            if current >= value:
                return current
            time.sleep(0.1)
        raise AssertionError(f"{name} reached {current}, expected {value} within {timeout}s")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str) -> str:
        """Run `frontline ARGS` against this daemon's data and return its standard output."""
        result = subprocess.run(
            [*self.command, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))


@pytest.fixture
def frontline(broker: MosquittoProcess, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon (not yet started) wired to the test broker; killed at teardown if still running."""
    daemon = DaemonProcess(broker, tmp_path / "data")
    yield daemon
    if daemon.running:
        daemon.kill()
