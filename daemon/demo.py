"""`frontline demo` and `frontline simulate`: broker, simulated fleet and daemon, watched live.

The daemon runs as a child process exactly as `frontline run` would, so the demo shows the real
thing; the broker is Mosquitto started from the project's `mosquitto.conf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from daemon.adapters.embedded_broker import EmbeddedBrokerProcess
from daemon.adapters.mosquitto import MosquittoProcess, free_port, mosquitto_installed
from daemon.config import Settings
from daemon.metrics import Snapshot, parse_metrics
from simulators.fleet import Fleet, FleetOptions, plan_devices
from simulators.scenario import load_scenario, parse_fault_flag

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCENARIO = ROOT / "simulators" / "scenarios" / "demo.yaml"
DEMO_RULES = ROOT / "rules"
DEMO_MODELS = ROOT / "models"
_PHASE_STYLE = {"pending": "yellow", "firing": "bold red", "resolved": "green"}


def fleet_options(
    settings: Settings,
    scenario: Path | None,
    faults: tuple[str, ...] = (),
    **overrides: object,
) -> FleetOptions:
    """Return fleet options: broker from the settings, then the scenario, then explicit flags.

    `overrides` are FleetOptions fields given on the command line; None means "not given".
    """
    m = settings.mqtt
    password = m.password.get_secret_value() if m.password else None
    options = FleetOptions(
        host=m.host,
        port=m.port,
        username=m.username,
        password=password,
        topic_prefix=m.topic_prefix,
    )
    if scenario is not None:
        options = load_scenario(scenario).options(options)
    given = {key: value for key, value in overrides.items() if value is not None}
    options = replace(options, **given)  # type: ignore[arg-type]  # keys are FleetOptions fields
    extra = tuple(parse_fault_flag(text) for text in faults)
    return replace(options, faults=options.faults + extra)


async def run_fleet(options: FleetOptions, console: Console) -> None:
    fleet = Fleet(options)
    task = asyncio.create_task(fleet.run(), name="fleet")
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=5.0)
            stats = fleet.stats
            console.print(
                f"devices {stats.devices_connected}  published {stats.messages_published}  "
                f"faults {stats.faults_injected} (active {stats.faults_active})  "
                f"commands {stats.commands_received}"
            )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def daemon_env(host: str, port: int, data_dir: Path, http_port: int) -> dict[str, str]:
    """Return the environment of a daemon child on broker `host:port`, its data in `data_dir`.

    `FRONTLINE_CONFIG` is dropped, so a config file of the caller's shell cannot leak in.
    """
    env = dict(
        os.environ,
        FRONTLINE_MQTT__HOST=host,
        FRONTLINE_MQTT__PORT=str(port),
        FRONTLINE_DATA_DIR=str(data_dir),
        FRONTLINE_HTTP__PORT=str(http_port),
        FRONTLINE_HTTP__HOST="127.0.0.1",
    )
    env.pop("FRONTLINE_CONFIG", None)
    return env


def spawn_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `frontline run` as a child process with `env`, its output in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"], env=env, stdout=log, stderr=log
        )


def wait_ready(http_port: int, daemon: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until the daemon child answers `/readyz` (broker connected, store writable).

    Raises RuntimeError if it exits first or is not ready within `timeout` seconds.
    """
    url = f"http://127.0.0.1:{http_port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode} while starting")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the daemon was not ready within {timeout:.0f} s")


def scrape(http_port: int) -> Snapshot:
    """The daemon's headline figures from its /metrics."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return parse_metrics(answer.read().decode())


async def wait_ingested(http_port: int, messages: float, limit_s: float = 300.0) -> None:
    """Wait until the daemon received `messages` in all and its stored points stopped growing."""
    deadline = time.monotonic() + limit_s
    last = -1.0
    while time.monotonic() < deadline:
        snap = await asyncio.to_thread(scrape, http_port)
        if snap.received >= messages and snap.stored == last:
            return
        last = snap.stored
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the daemon did not store the history within {limit_s:.0f} s")


async def backfill(options: FleetOptions, http_port: int) -> tuple[int, float]:
    """Publish the fleet's simulated past and wait until the daemon stored it.

    Returns (messages, seconds). The models train on this history (`frontline train`).
    """
    started = time.monotonic()
    before = (await asyncio.to_thread(scrape, http_port)).received
    fleet = Fleet(replace(options, history_mode="only"))
    await fleet.run()
    published = fleet.stats.history_published
    await wait_ingested(http_port, before + published)
    return published, time.monotonic() - started


class Demo:
    def __init__(
        self,
        devices: int | None,
        duration: float | None,
        scenario: Path | None,
        interval: float | None,
        keep: bool,
        console: Console,
        broker: str = "auto",
    ) -> None:
        self.devices = devices
        self.duration = duration
        self.scenario = scenario or DEMO_SCENARIO
        self.interval = interval
        self.keep = keep
        self.broker = broker
        self.console = console
        self._seen: set[tuple[str, str, str, str]] = set()

    async def run(self) -> int:
        workdir = Path(tempfile.mkdtemp(prefix="frontline-demo-"))
        broker = self._broker(workdir)
        daemon: subprocess.Popen[bytes] | None = None
        try:
            broker.start()
            http_port = free_port()
            env = daemon_env(broker.host, broker.port, workdir / "data", http_port)
            if isinstance(broker, EmbeddedBrokerProcess):
                env["FRONTLINE_MQTT__PROTOCOL"] = broker.protocol
            if DEMO_MODELS.is_dir():
                env["FRONTLINE_MODELS__PATHS"] = json.dumps([str(DEMO_MODELS)])
            if DEMO_RULES.is_dir():
                env["FRONTLINE_RULES__PATHS"] = json.dumps([str(DEMO_RULES)])
                env["FRONTLINE_ACTIONS__ROUTING"] = str(DEMO_RULES / "service" / "routing.yaml")
                env["FRONTLINE_ACTIONS__CUSTOMERS"] = str(DEMO_RULES / "service" / "customers.yaml")
                # The daemon starts with the fleet: without a short grace, offline and absent
                # rules could not speak within a one-minute demo.
                env["FRONTLINE_RULES__OUTAGE_GRACE"] = "5s"
                env["FRONTLINE_ACTIONS__QUIET_PERIOD"] = "20s"  # so the demo shows tickets closing
            daemon = spawn_daemon(env, workdir / "daemon.log")
            options = replace(
                fleet_options(
                    Settings(),
                    self.scenario,
                    devices=self.devices,
                    interval=self.interval,
                    ground_truth=workdir / "ground-truth.jsonl",
                ),
                host=broker.host,
                port=broker.port,
                duration=self.duration,  # the demo runs until --duration or Ctrl-C
            )
            options = self._fitting(options)
            self.console.print(
                f"[bold]Frontline demo[/]: mosquitto on {broker.port}, daemon metrics on "
                f"http://127.0.0.1:{http_port}/metrics, {self.devices} devices, "
                f"scenario {self.scenario.name}, files in {workdir}"
            )
            if options.history is not None and options.history_mode != "skip":
                await self._learn(options, http_port, daemon, env)
                options = replace(options, history_mode="skip")
            snap = await self._watch(Fleet(options), http_port, daemon)
            code = self._stop_daemon(daemon)
            daemon = None
            self.console.print(
                f"daemon exited with {code}; {snap.received:.0f} messages ingested, "
                f"{snap.stored:.0f} points stored, {snap.rejected:.0f} rejected"
            )
            return 0 if code == 0 and snap.stored > 0 else 1
        finally:
            if daemon is not None:
                self._stop_daemon(daemon)
            broker.stop()
            if self.keep:
                self.console.print(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def _fitting(self, options: FleetOptions) -> FleetOptions:
        """Drop the scenario's faults on devices a smaller `--devices` fleet does not have."""
        ids = {identity.device_id for identity in plan_devices(options)}
        kept = tuple(f for f in options.faults if f.device in ids)
        for fault in options.faults:
            if fault.device not in ids:
                self.console.print(f"no {fault.device} with --devices {options.devices}: "
                                   f"its {fault.kind} fault is left out")  # fmt: skip
        return replace(options, faults=kept)

    async def _learn(
        self,
        options: FleetOptions,
        http_port: int,
        daemon: subprocess.Popen[bytes],
        env: dict[str, str],
    ) -> None:
        """The fleet's past first (the models' training data), then `frontline train`."""
        assert options.history is not None
        await asyncio.to_thread(wait_ready, http_port, daemon)
        hours = options.history.duration / 3600
        self.console.print(f"publishing {hours:g} h of the fleet's past telemetry (training data)")
        messages, seconds = await backfill(options, http_port)
        self.console.print(f"{messages} past messages stored in {seconds:.1f} s; frontline train:")
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "daemon", "train"], env=env, check=False
        )
        if done.returncode:
            self.console.print("[yellow]some models could not be trained (see above)[/]")

    def _broker(self, workdir: Path) -> MosquittoProcess | EmbeddedBrokerProcess:
        if self.broker == "embedded" or (self.broker == "auto" and not mosquitto_installed()):
            self.console.print(
                "[yellow]Mosquitto not found: using the embedded Python broker (MQTT 3.1.1, "
                "without the queue sizing of mosquitto.conf). `./dev setup` as root installs "
                "Mosquitto.[/]"
            )
            return EmbeddedBrokerProcess()
        return MosquittoProcess(workdir / "mosquitto")

    def _stop_daemon(self, daemon: subprocess.Popen[bytes]) -> int:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                return daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
                return -9
        return daemon.returncode

    def _table(self, fleet: Fleet, snap: Snapshot, rate: float, elapsed: float) -> Table:
        stats = fleet.stats
        table = Table(title=f"Frontline demo — {elapsed:.0f}s", show_header=True)
        for column in (
            "online",
            "msg/s",
            "messages",
            "points",
            "rejected",
            "faults",
            "active",
            "pending",
            "firing",
            "commands",
            "fixed",
            "tickets",
        ):
            table.add_column(column, justify="right")
        table.add_row(
            f"{snap.online:.0f}/{self.devices}",
            f"{rate:.0f}",
            f"{snap.received:.0f}",
            f"{snap.stored:.0f}",
            f"{snap.rejected:.0f}",
            str(stats.faults_injected),
            str(stats.faults_active),
            f"{snap.pending:.0f}",
            f"{snap.firing:.0f}",
            f"{snap.commands:.0f}",
            f"{snap.fixed:.0f}",
            f"{snap.tickets:.0f}",
        )
        return table

    async def _watch(
        self, fleet: Fleet, http_port: int, daemon: subprocess.Popen[bytes]
    ) -> Snapshot:
        task = asyncio.create_task(fleet.run(), name="fleet")
        url = f"http://127.0.0.1:{http_port}/metrics"
        snap, previous, previous_t = Snapshot(), 0.0, time.monotonic()
        started = previous_t
        last_plain = 0.0
        timeout = aiohttp.ClientTimeout(total=2)
        live = Live(console=self.console, auto_refresh=False) if self.console.is_terminal else None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with live or contextlib.nullcontext():
                while not task.done() and daemon.poll() is None:
                    await asyncio.wait({task}, timeout=1.0)
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(url) as response:
                            snap = parse_metrics(await response.text())
                        await self._report_alerts(session, http_port)
                    now = time.monotonic()
                    rate = (snap.received - previous) / max(now - previous_t, 1e-6)
                    previous, previous_t = snap.received, now
                    table = self._table(fleet, snap, rate, now - started)
                    if live is not None:
                        live.update(table, refresh=True)
                    elif now - last_plain >= 5 or task.done():
                        last_plain = now
                        self.console.print(table)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if daemon.poll() is not None:
            self.console.print(f"[red]the daemon stopped unexpectedly ({daemon.returncode})[/]")
        else:
            await asyncio.sleep(1.5)  # let the last messages land before the summary
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.get(url) as r:
                        snap = parse_metrics(await r.text())
                    await self._report_alerts(session, http_port)
        stats = fleet.stats
        self.console.print(self._table(fleet, snap, 0.0, time.monotonic() - started))
        fired = sorted({(a, d) for (_, a, d, phase) in self._seen if phase == "firing"})
        self.console.print(
            f"fleet: {stats.messages_published} messages published, "
            f"{stats.faults_injected} faults injected; "
            f"{len(fired)} alerts fired: " + (", ".join(f"{a} on {d}" for a, d in fired) or "none")
        )
        return snap

    async def _report_alerts(self, session: aiohttp.ClientSession, http_port: int) -> None:
        """Print each alert transition and ticket change once, above the live table."""
        async with session.get(f"http://127.0.0.1:{http_port}/api/v1/tickets") as response:
            tickets = await response.json()
        for ticket in tickets:
            key = (ticket["id"], "ticket", ticket["device"], ticket["status"])
            if key in self._seen:
                continue
            self._seen.add(key)
            self.console.print(
                f"{time.strftime('%H:%M:%S')} [bold magenta]TICKET  [/] {ticket['id']} "
                f"{ticket['status']} {ticket['priority']} queue {ticket['queue']} "
                f"-> {ticket['assignee'] or 'unassigned'}: {escape(ticket['summary'])}",
                highlight=False,
            )
        async with session.get(f"http://127.0.0.1:{http_port}/api/v1/alerts") as response:
            states = await response.json()
        for state in states:
            key = (state["key"], state["alert"], state["device"], state["phase"])
            if key in self._seen or state["phase"] not in _PHASE_STYLE:
                continue
            self._seen.add(key)
            style = _PHASE_STYLE[state["phase"]]
            summary = state.get("annotations", {}).get("summary", "")
            value = state.get("value")
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            self.console.print(
                f"{time.strftime('%H:%M:%S')} [{style}]{state['phase'].upper():8}[/] "
                f"{state['alert']} on {state['device']} (value {shown}) {escape(summary)}",
                highlight=False,
            )
