"""The chaos run of issue 8: `kill -9` the daemon again and again, then check nothing was lost.

A real Mosquitto (the shipped config), `frontline run` as a child process and the simulated fleet
of `simulators/scenarios/chaos.yaml` with its ground truth, as in the outcome benchmark
(`benchmarks/service_outcomes.py`), whose rules, routing and scoring this reuses. While the fleet
runs, a driver SIGKILLs the daemon and restarts it on the same data directory: at random moments
(drawn from the seed) and right after the log lines that mark a rule commit, a command sent or a
ticket opened, and a few milliseconds after a device replied to a command. The broker and the
fleet keep running; the daemon's persistent session queues telemetry and replies meanwhile. A
recording subscriber (`mosquitto_sub`) keeps what the broker carried: every telemetry message and
every command.

After a settle period without kills the fleet stops, the daemon stops with SIGTERM, and the
invariants are checked (tests/chaos_checks.py) against the recording, the ground truth and the
daemon's databases:

1. every telemetry point published is stored exactly once (points with their own `ts` by
   (device, metric, ts) and value; flat messages, stamped with the receive time, by count);
2. every fault whose alert fired got what its rule says: a verified remediation (command
   fixable), guidance (customer fixable) or exactly one ticket (technician), and no alert
   episode got two tickets or two guidance notices;
3. no command was carried out twice: each (alert, episode, step, attempt) has one command id,
   no episode has more attempts than its rule allows, no id is published more often than the
   policy's copies, and no device carried out one id twice;
4. no alert is left firing without its action (remediation of this episode, guidance, ticket,
   and the ticket due once guidance timed out).

Run it with pytest (`tests/test_chaos.py`), or as a script that prints the same figures:

    python -m tests.chaos [--seed N] [--kills 24] [--keep]

`FRONTLINE_CHAOS_SEED` fixes the seed in both (it is printed first, and in every failure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from daemon.adapters.mosquitto import MosquittoProcess, mosquitto_binary, stop_process
from simulators.fleet import Fleet, FleetOptions
from simulators.scenario import load_scenario
from tests.chaos_checks import Evidence, Report, check, published_points, read_records, stored_count
from tests.conftest import DaemonProcess
from tests.test_service_outcomes import so

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "simulators" / "scenarios" / "chaos.yaml"
MIN_KILLS = 20
SEED_ENV = "FRONTLINE_CHAOS_SEED"

# The log lines a targeted kill follows (daemon/rules.py, daemon/actions): a rule commit is
# logged once the alert states and transitions are stored, before actions see them; a ticket
# once it is decided, before it is stored; a command once it is stored and published.
KILL_LINES = {
    "alert-firing": re.compile(r"\balert \S+ \S+ -> firing on \S+"),
    "rule-commit": re.compile(r"\balert \S+ \S+ -> (?:pending|resolved|inactive) on \S+"),
    "command-sent": re.compile(r"\bcommand \S+ \S+ sent to \S+"),
    "ticket-opened": re.compile(r"\bticket \S+ opened for \S+ on \S+"),
}
# simulators/device.py logs this once a reply is published; the daemon gets it a moment later.
REPLY_LINE = re.compile(r"device (\S+): command (\S+) -> (\S+)")
# Targeted kills per kind: enough to hit each moment several times, few enough that the run
# still reaches every action (today a kill after a firing loses that alert's action for good).
BUDGETS = {
    "alert-firing": 6,
    "rule-commit": 3,
    "command-sent": 4,
    "ticket-opened": 4,
    "command-reply": 4,
}
PROBE_TOPIC = "chaos/probe"


@dataclass(frozen=True)
class ChaosOptions:
    seed: int
    kills: int = 24  # spread over the kill phase; fewer than MIN_KILLS fails the run
    # The scenario's alerts fire 40-125 s in, the ignored guidance turns into a ticket 45 s after
    # it: the kills cover all of it, then the settle lets retries and verifications end.
    kill_phase: float = 175.0
    # A command stored but not published before a kill goes out again after its timeout (60 s
    # for a reboot), then the fix is verified.
    settle: float = 75.0
    early: float = 0.2  # share of random kills aimed at start-up (before /readyz, the catch-up)
    budgets: Mapping[str, int] = field(default_factory=lambda: dict(BUDGETS))
    ready_timeout: float = 30.0  # a restart slower than this fails the run
    guidance_timeout: float = 45.0  # the guided customers act 30 s after the notice
    quiet: float = 60.0  # ticket quiet period


def seed_from_env() -> int:
    raw = os.environ.get(SEED_ENV, "").strip()
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


# -- the daemon, killed -------------------------------------------------------------------------
@dataclass(frozen=True)
class Kill:
    at_s: float  # since the fleet started
    kind: str  # random, startup, or a targeted kind (BUDGETS)
    detail: str = ""


class Killer:
    """Decides and carries out kills; called by the driver, the log pumps and the fleet's loop."""

    def __init__(self, options: ChaosOptions) -> None:
        self.options = options
        self.kills: list[Kill] = []
        self.killed: set[int] = set()  # pids
        self.armed = False
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._seen: set[str] = set()
        self._counts: Counter[str] = Counter()

    def watch(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._process = process

    def kill(
        self, kind: str, detail: str = "", process: subprocess.Popen[bytes] | None = None
    ) -> bool:
        """SIGKILL the current daemon (only if it still is `process`, when given)."""
        with self._lock:
            current = self._process
            if current is None or (process is not None and process is not current):
                return False
            if current.pid in self.killed or current.poll() is not None:
                return False
            if kind in self.options.budgets:
                if not self.armed or self._counts[kind] >= self.options.budgets[kind]:
                    return False
                if detail in self._seen:  # the same line again (a replay): let it through
                    return False
                self._seen.add(detail)
            current.send_signal(signal.SIGKILL)
            self.killed.add(current.pid)
            self._counts[kind] += 1
            self.kills.append(Kill(time.monotonic() - self.started, kind, detail))
            return True

    def on_daemon_line(self, process: subprocess.Popen[bytes], line: str) -> None:
        for kind, pattern in KILL_LINES.items():
            match = pattern.search(line)
            if match:
                self.kill(kind, match.group(0), process)
                return

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class ChaosDaemon(DaemonProcess):
    """`frontline run` with its output read through a pipe, so that a kill follows a line at once.

    DaemonProcess writes the output to a file: tailing it by polling would let the daemon run on
    for tens of milliseconds after the line, past the window between a commit and its effects.
    The pump thread copies every line to the same log file.
    """

    def __init__(
        self,
        broker: MosquittoProcess,
        data_dir: Path,
        on_line: Callable[[subprocess.Popen[bytes], str], None],
        **settings: str,
    ) -> None:
        super().__init__(broker, data_dir, **settings)
        self._on_line = on_line
        self._pump: threading.Thread | None = None

    def start(self, ready: bool = True) -> ChaosDaemon:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.process = process
        self._pump = threading.Thread(
            target=self._copy, args=(process,), name=f"daemon-log-{process.pid}", daemon=True
        )
        self._pump.start()
        if ready:
            self.wait_ready()
        return self

    def _copy(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with self.log.open("ab") as log, process.stdout as lines:
            for raw in lines:
                log.write(raw)
                log.flush()
                self._on_line(process, raw.decode(errors="replace"))
            code = process.wait()
            log.write(f"--- chaos: daemon {process.pid} exited with {code} ---\n".encode())

    def reap(self) -> int:
        """Wait for the daemon (killed or stopping) and its log pump; return its exit code."""
        assert self.process is not None
        code = self.process.wait(30)
        if self._pump is not None:
            self._pump.join(10)
        return code

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


# -- the recording subscriber -------------------------------------------------------------------
class Recorder:
    """`mosquitto_sub` (QoS 1) on the telemetry and the commands, one JSON object per message."""

    def __init__(self, broker: MosquittoProcess, path: Path) -> None:
        self.broker = broker
        self.path = path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        sub, pub = mosquitto_binary("mosquitto_sub"), mosquitto_binary("mosquitto_pub")
        if sub is None or pub is None:
            raise RuntimeError("mosquitto_sub not found (apt-get install mosquitto-clients)")
        where = ["-h", self.broker.host, "-p", str(self.broker.port)]
        topics = ["devices/+/telemetry", "devices/+/commands/+", PROBE_TOPIC]
        filters = [arg for topic in topics for arg in ("-t", topic)]
        with self.path.open("wb") as out:
            self._process = subprocess.Popen(
                [sub, *where, "-i", "chaos-recorder", "-q", "1", "-F", "%j", *filters],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Subscribed once a probe comes back: nothing published later can be missed.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = [pub, *where, "-q", "1", "-t", PROBE_TOPIC, "-m", "probe"]
            subprocess.run(probe, check=True, timeout=10)
            time.sleep(0.2)
            if PROBE_TOPIC.encode() in self.path.read_bytes():
                return
        raise RuntimeError("the recording subscriber did not receive its probe")

    def stop(self) -> None:
        stop_process(self._process, 5.0)
        self._process = None

    def read(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Run:
    """A chaos run: its kills and restarts, and the evidence for the checks."""

    seed: int
    kills: list[Kill]
    kills_by_kind: dict[str, int]
    restarts_s: list[float]  # spawn to /readyz, per restart that got there
    evidence: Evidence
    exit_code: int  # of the final SIGTERM
    log_tail: str


def daemon_settings(options: ChaosOptions) -> dict[str, str]:
    """The outcome benchmark's daemon set-up (benchmarks/service_outcomes.py `run`)."""
    return {
        "FRONTLINE_RULES__PATHS": json.dumps([str(so.RULES)]),
        "FRONTLINE_ACTIONS__ROUTING": str(so.SERVICE / "routing.yaml"),
        "FRONTLINE_ACTIONS__CUSTOMERS": str(so.SERVICE / "customers.yaml"),
        "FRONTLINE_RULES__OUTAGE_GRACE": "10s",
        "FRONTLINE_ACTIONS__QUIET_PERIOD": f"{options.quiet:g}s",
        "FRONTLINE_ACTIONS__GUIDANCE_TIMEOUT": f"{options.guidance_timeout:g}s",
    }


@contextlib.contextmanager
def device_replies(callback: Callable[[str], None]) -> Iterator[None]:
    """Call `callback` with every message the simulated devices log (in the fleet's loop)."""

    class Hook(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            callback(record.getMessage())

    logger = logging.getLogger("simulators.device")
    hook, level = Hook(logging.INFO), logger.level
    logger.addHandler(hook)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(hook)
        logger.setLevel(level)


class Driver:
    """Kills and restarts the daemon while the fleet runs; fails the run if it does not return."""

    def __init__(
        self,
        options: ChaosOptions,
        daemon: ChaosDaemon,
        fleet: asyncio.Task[None],
        killer: Killer,
        say: Callable[[str], None],
    ) -> None:
        self.options = options
        self.daemon = daemon
        self.fleet = fleet
        self.killer = killer
        self.say = say
        self.rng = random.Random(options.seed)
        self.restarts: list[float] = []

    def _fail(self, what: str) -> AssertionError:
        return AssertionError(f"seed {self.options.seed}: {what}\n{self.daemon.tail()}")

    @property
    def _process(self) -> subprocess.Popen[bytes]:
        assert self.daemon.process is not None
        return self.daemon.process

    def check_alive(self) -> None:
        if self.fleet.done():
            self.fleet.result()
            raise self._fail("the fleet stopped early")
        process = self._process
        if process.poll() is not None and process.pid not in self.killer.killed:
            raise self._fail(f"the daemon exited by itself with {process.returncode}")

    async def kill_phase(self) -> None:
        """Kill and restart until the phase is over; end with a ready daemon."""
        options, killer = self.options, self.killer
        end = killer.started + options.kill_phase
        reported = 0
        while True:
            now = time.monotonic()
            if self._process.pid in killer.killed:
                await self._restart(now < end)
                continue
            if now >= end:
                return
            if len(killer.kills) >= reported + 5:
                reported = len(killer.kills)
                kinds = ", ".join(f"{k} {n}" for k, n in sorted(killer.counts().items()))
                self.say(f"  {now - killer.started:5.0f} s: {reported} kills ({kinds})")
            # Random kills at the planned rate, faster if targeted ones fell short of the plan.
            mean = options.kill_phase / options.kills
            left = options.kills - len(killer.kills)
            if left > 0:
                mean = min(mean, (end - now) / left)
            gap = max(self.rng.uniform(0.4, 1.6) * mean, 0.5)
            await self._live_until(min(end, now + gap), "random")

    async def _restart(self, killing: bool) -> None:
        await asyncio.to_thread(self.daemon.reap)
        spawned = time.monotonic()
        self.daemon.start(ready=False)
        self.killer.watch(self._process)
        if killing and self.rng.random() < self.options.early:
            await self._live_until(spawned + self.rng.uniform(0.3, 1.5), "startup")
        process = self._process
        try:
            await asyncio.to_thread(self.daemon.wait_ready, self.options.ready_timeout)
        except AssertionError as exc:
            if process.pid not in self.killer.killed:
                first = str(exc).splitlines()[0]  # the rest is the log's tail, added below
                code = process.poll()
                raise self._fail(
                    f"the daemon did not come back: {first} (exit code {code})"
                ) from None
        else:
            self.restarts.append(time.monotonic() - spawned)

    async def _live_until(self, until: float, kind: str) -> None:
        """Let the daemon run until `until` (a targeted kill may come first), then kill it."""
        process = self._process
        await asyncio.to_thread(_wait_exit, process, until - time.monotonic())
        self.check_alive()
        self.killer.kill(kind, process=process)

    async def settle(self) -> None:
        end = time.monotonic() + self.options.settle
        while time.monotonic() < end:
            self.check_alive()
            await asyncio.sleep(0.5)


async def run_chaos(options: ChaosOptions, workdir: Path, say: Callable[[str], None]) -> Run:
    """Run the fleet through the daemon, killing and restarting it; return the evidence."""
    planned = load_scenario(SCENARIO).options(FleetOptions())
    killer = Killer(options)
    truth = workdir / "ground-truth.jsonl"
    loop = asyncio.get_running_loop()
    replies = random.Random(options.seed + 1)  # reply kill delays: apart from the driver's draws
    with contextlib.ExitStack() as stack:
        broker = MosquittoProcess(workdir / "mosquitto", config=ROOT / "mosquitto.conf")
        broker.start()
        stack.callback(broker.stop)
        recorder = Recorder(broker, workdir / "broker-record.jsonl")
        recorder.start()
        stack.callback(recorder.stop)
        daemon = ChaosDaemon(
            broker, workdir / "data", killer.on_daemon_line, **daemon_settings(options)
        )
        stack.callback(lambda: daemon.kill() if daemon.running else None)
        await asyncio.to_thread(daemon.start)
        assert daemon.process is not None
        killer.watch(daemon.process)

        def on_device_log(message: str) -> None:
            match = REPLY_LINE.search(message)
            if match:  # kill while the daemon handles the reply
                delay = replies.uniform(0.0, 0.05)
                loop.call_later(delay, killer.kill, "command-reply", match.group(2))

        stack.enter_context(device_replies(on_device_log))
        options_run = replace(
            planned, host=broker.host, port=broker.port, ground_truth=truth, duration=None
        )
        simulated = Fleet(options_run)
        fleet = asyncio.create_task(simulated.run(), name="fleet")
        driver = Driver(options, daemon, fleet, killer, say)
        killer.started = time.monotonic()
        killer.armed = True
        try:
            await driver.kill_phase()
            killer.armed = False
            say(f"  {len(killer.kills)} kills; {options.settle:.0f} s without kills")
            await driver.settle()
        finally:
            killer.armed = False
            fleet.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fleet
        fleet_stopped_ms = int(time.time() * 1000)
        await asyncio.to_thread(_wait_stored, daemon, recorder, 30.0)
        daemon_stopped_ms = int(time.time() * 1000)
        code = await asyncio.to_thread(daemon.stop, signal.SIGTERM, 60.0)
        await asyncio.to_thread(daemon.reap)
        recorder.stop()
        evidence = Evidence(
            recorded=recorder.read(),
            truth=[orjson.loads(x) for x in truth.read_bytes().splitlines() if x.strip()],
            rejects={d: set(b.rejects) for d, b in planned.behaviours.items()},
            data_dir=daemon.data_dir,
            fleet_published=simulated.stats.messages_published,
            fleet_stopped_ms=fleet_stopped_ms,
            daemon_stopped_ms=daemon_stopped_ms,
            guidance_timeout_s=options.guidance_timeout,
        )
    return Run(
        options.seed, killer.kills, killer.counts(), driver.restarts, evidence, code, daemon.tail()
    )


def _wait_exit(process: subprocess.Popen[bytes], seconds: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(max(seconds, 0.0))


def _wait_stored(daemon: DaemonProcess, recorder: Recorder, timeout: float) -> None:
    """Wait (bounded) until the store holds as many points as the fleet published."""
    stamped, flat = published_points(recorder.read())
    expected = sum(len(points) for points in stamped.values()) + sum(flat.values())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and stored_count(daemon.data_dir / "series.db") < expected:
        time.sleep(0.5)


# -- the whole ----------------------------------------------------------------------------------
def chaos(options: ChaosOptions, workdir: Path, say: Callable[[str], None]) -> tuple[Run, Report]:
    """Run the chaos scenario and check it."""
    say(f"chaos seed {options.seed} (replay: {SEED_ENV}={options.seed}); work dir {workdir}")
    run = asyncio.run(run_chaos(options, workdir, say))
    records = asyncio.run(read_records(run.evidence.data_dir / "state.db"))
    report = check(run.evidence, records)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(run.kills_by_kind.items()))
    restarts = sorted(run.restarts_s)
    report.figures[:0] = [
        ("kills", f"{len(run.kills)} ({kinds})"),
        (
            "restart to /readyz, median / max",
            f"{restarts[len(restarts) // 2]:.1f} s / {restarts[-1]:.1f} s" if restarts else "-",
        ),
    ]
    report.details += [f"kill at {k.at_s:5.1f} s: {k.kind} {k.detail}".rstrip() for k in run.kills]
    if len(run.kills) < MIN_KILLS:
        report.failures["kills"] = [f"{len(run.kills)} kills, fewer than {MIN_KILLS}"]
    if run.exit_code != 0:
        report.failures["clean stop"] = [f"SIGTERM: exit code {run.exit_code}\n{run.log_tail}"]
    return run, report


def summary(seed: int, report: Report) -> str:
    head = f"chaos run, seed {seed} (replay: {SEED_ENV}={seed})"
    failed = report.failed()
    verdict = f"FAILED: {'; '.join(failed)}" if failed else "all invariants hold"
    return "\n".join([head, *report.lines(), f"seed {seed}: {verdict}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help=f"default: ${SEED_ENV} or random")
    parser.add_argument("--kills", type=int, default=ChaosOptions.kills)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    seed = seed_from_env() if args.seed is None else args.seed
    workdir = Path(tempfile.mkdtemp(prefix="frontline-chaos-"))
    try:
        run, report = chaos(ChaosOptions(seed=seed, kills=args.kills), workdir, print)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(summary(run.seed, report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
