"""The command line as a user runs it: help, demo, simulate against a live daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.adapters.mosquitto import MosquittoProcess
from daemon.cli import cli
from tests.conftest import ROOT, DaemonProcess, require_binary


def test_help_lists_every_command() -> None:
    """Test that `frontline --help` lists run, demo, simulate, devices, query and config."""
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    for name in ("run", "demo", "simulate", "devices", "query", "config", "dead-letters"):
        assert f"  {name} " in commands, name


def test_query_rejects_a_bad_duration(tmp_path: Path) -> None:
    """Test that a malformed --since is a usage error naming the value."""
    result = CliRunner().invoke(
        cli,
        ["query", "dev", "temp", "--since", "yesterday"],
        env={"FRONTLINE_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "not a duration: 'yesterday'" in result.output


def test_devices_list_on_an_empty_data_dir(tmp_path: Path) -> None:
    """Test that listing devices before any data exists prints an empty JSON list."""
    result = CliRunner().invoke(
        cli, ["devices", "list", "--json"], env={"FRONTLINE_DATA_DIR": str(tmp_path / "none")}
    )
    assert result.exit_code == 0
    assert result.output.strip() == "[]"


def test_simulate_rejects_a_bad_fault_flag(tmp_path: Path) -> None:
    """Test that a malformed --fault is reported as an error, not a traceback."""
    result = CliRunner().invoke(cli, ["simulate", "--devices", "2", "--fault", "melt:nowhere"])
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert "Traceback" not in result.output


@pytest.mark.integration
def test_simulated_fleet_reaches_the_twins(
    broker: MosquittoProcess, frontline: DaemonProcess
) -> None:
    """Test that `frontline simulate` devices appear in `devices list` with their meta."""
    frontline.start()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "simulate",
            "--devices",
            "3",
            "--interval",
            "0.2s",
            "--duration",
            "3s",
        ],
        env=frontline.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    time.sleep(1.5)  # twins are persisted every second
    devices = {d["id"]: d for d in frontline.cli_json("devices", "list")}
    assert set(devices) == {"sim-boiler-0001", "sim-heat_pump-0002", "sim-freezer-0003"}
    assert devices["sim-boiler-0001"]["model"] == "boiler-x200"
    assert "temperature" in devices["sim-boiler-0001"]["metrics"]
    assert not any(d["online"] for d in devices.values()), "the fleet said offline on exit"
    shown = frontline.cli_json("devices", "show", "sim-freezer-0003")
    assert shown["meta"]["model"] == "freezer-f3"
    assert "cabinet_temp" in shown["metrics"]


def _group_members(pgid: int) -> list[str]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return members


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_for_its_duration_and_cleans_up(tmp_path: Path) -> None:
    """Test that `frontline demo --duration` exits 0, shows its summary and leaves no process."""
    require_binary("mosquitto")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTLINE_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "daemon", "demo", "--devices", "20", "--duration", "25s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        output, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    text = output.decode()
    assert demo.returncode == 0, text[-3000:]
    assert "faults injected" in text
    ingested = int(text.split("daemon exited with 0; ")[1].split(" messages ingested")[0])
    assert ingested > 100
    assert int(text.split("messages published, ")[1].split(" faults injected")[0]) >= 5
    time.sleep(0.5)
    assert _group_members(demo.pid) == [], "the demo left processes behind"


def test_readme_commands_exist() -> None:
    """Test that the README's two commands are the ones .ci/run and the dev script provide."""
    readme = (ROOT / "README.md").read_text()
    assert "./dev demo" in readme
    assert "./dev test" in readme
    assert "./dev test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.integration
def test_demo_falls_back_to_the_embedded_broker(tmp_path: Path) -> None:
    """Test that the demo runs on the embedded Python broker (MQTT 3.1.1) when asked to."""
    from daemon.adapters.embedded_broker import available

    if not available():
        pytest.skip("amqtt is not installed (pip install -e '.[broker]')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTLINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--broker", "embedded", "--devices", "6",
         "--duration", "12s"],
        env=env, capture_output=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    text = done.stdout.decode()
    assert done.returncode == 0, text[-3000:] + done.stderr.decode()[-2000:]
    assert "embedded Python broker" in text
    assert int(text.split("daemon exited with 0; ")[1].split(" messages ingested")[0]) > 20
