"""The wheel, installed outside the checkout, runs: `frontline init`, `check` and `run` ingest.

Offline: the wheel is built with the checkout's own hatchling (no build isolation), installed
without dependencies into a fresh virtualenv that sees the test environment's packages through a
`.pth` file (not its editable install of this project: a `.pth` line adds a folder to the path
without reading the `.pth` files in it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from daemon.adapters.mosquitto import MosquittoProcess
from simulators.burst import publish_burst
from tests.conftest import DaemonProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTLINE_", "PYTHON"))}
    env["PIP_NO_INDEX"] = "1"  # never PyPI
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the project's wheel installed; returns its `bin/`."""
    root = tmp_path_factory.mktemp("install")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", root / "wheels", ROOT)  # fmt: skip
    (wheel,) = (root / "wheels").glob("frontline-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", wheel)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    (Path(site) / "test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def test_the_installed_package_is_the_wheel(installed: Path) -> None:
    """Test that the new environment imports the wheel's copy, not the checkout."""
    code = "import daemon; print(daemon.__file__)"
    where = _run(installed / "python", "-c", code, cwd=installed)  # not the checkout's folder
    assert where.startswith(str(installed.parent)), where


def test_init_and_check_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    """Test that the starter layout ships in the wheel and passes `frontline check`."""
    output = _run(installed / "frontline", "init", cwd=tmp_path)
    assert "wrote rules/starter.yaml" in output
    output = _run(installed / "frontline", "--config", "frontline.yaml", "check", cwd=tmp_path)
    assert output.startswith("OK: 1 file(s), 1 group(s), 3 rule(s)\n")


@pytest.fixture
def daemon(installed: Path, broker: MosquittoProcess, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(broker, tmp_path / "data")
    process.command = [str(installed / "frontline")]
    process.cwd = tmp_path / "empty"
    process.cwd.mkdir()
    yield process
    if process.running:
        process.kill()


def test_run_in_an_empty_directory_ingests(broker: MosquittoProcess, daemon: DaemonProcess) -> None:
    """Test that the installed `frontline run`, with nothing around it, stores a reading."""
    daemon.start()
    ts = int(time.time() * 1000)
    message = orjson.dumps({"ts": ts, "values": {"t": 4.5}})
    publish_burst(broker.port, [("devices/d1/telemetry", message)])
    wait_until(
        lambda: daemon.cli_json("query", "d1", "t") == [[ts, 4.5]], what="the reading stored"
    )
    assert daemon.stop() == 0
