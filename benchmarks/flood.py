"""Floods against the shipped defaults: disk and memory stay within the bounds, the daemon serves.

Issue #8, acceptance 3: "A flood of 1,000,000 malformed 200 KB payloads, and a flood of 100,000
new device ids, leave disk and memory within the configured bounds and the daemon serving."
Starts Mosquitto from the project's `mosquitto.conf` and `frontline run` (default settings, the
shipped rules) as children, then
  (1) publishes `--messages` malformed payloads of `--size` bytes (not JSON) at QoS 1, paced so
      the broker's queue for the daemon (`max_queued_bytes`, 1 GiB) never overflows;
  (2) on a fresh daemon, publishes one reading from each of `--devices` new ids.
Prints, per flood: the rate, what the daemon counted, the peak and final size of `state.db` (and
its WAL) against the bound, the daemon's peak RSS, and whether /healthz and /readyz answer.
Usage (the full size pushes 205 GB through the broker: about 11 minutes here):

    python benchmarks/flood.py [--messages 1000000] [--size 204800] [--devices 100000]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.adapters.mosquitto import MosquittoProcess, free_port  # noqa: E402
from daemon.config import Settings  # noqa: E402
from daemon.demo import daemon_env, spawn_daemon, wait_ready  # noqa: E402
from simulators.burst import publish_burst  # noqa: E402

MIB = 1024 * 1024
#: bytes published ahead of what the daemon has counted: far below the broker's 1 GiB queue
#: (`max_queued_bytes`) for the daemon's session, so the broker drops nothing
AHEAD_BYTES = 256 * MIB


class Child:
    """`frontline run` on the shipped defaults (its data in `data_dir`), scraped over HTTP."""

    def __init__(self, broker_port: int, data_dir: Path) -> None:
        self.broker_port = broker_port
        self.data_dir = data_dir
        self.http_port = free_port()
        env = daemon_env("127.0.0.1", broker_port, data_dir, self.http_port)
        env["FRONTLINE_LOG_LEVEL"] = "WARNING"
        data_dir.mkdir(parents=True)
        self.process = spawn_daemon(env, data_dir.parent / f"{data_dir.name}.log")
        wait_ready(self.http_port, self.process)
        self.peak_db = self.peak_wal = 0

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        text = self.get("/metrics")[1].decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def state_bytes(self) -> tuple[int, int]:
        """Bytes of state.db and of its WAL now (and their peaks so far)."""
        main, wal = self.data_dir / "state.db", self.data_dir / "state.db-wal"
        sizes = (main.stat().st_size, wal.stat().st_size if wal.exists() else 0)
        self.peak_db, self.peak_wal = max(self.peak_db, sizes[0]), max(self.peak_wal, sizes[1])
        return sizes

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def serving(self) -> str:
        return f"/healthz {self.get('/healthz')[0]}, /readyz {self.get('/readyz')[0]}"

    def stop(self) -> float:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        return time.monotonic() - started


def paced(child: Child, messages: Iterator[tuple[str, bytes]], total: int, size: int) -> float:
    """Publish `total` messages of about `size` bytes on one connection, never more than
    AHEAD_BYTES ahead of the daemon's count; return the seconds until it counted them all."""
    ahead = max(1_000, AHEAD_BYTES // max(size, 1))
    counted = "frontline_messages_received_total"
    started = time.perf_counter()

    def throttled() -> Iterator[tuple[str, bytes]]:
        for sent, message in enumerate(messages, start=1):
            yield message
            if sent % 1_000:
                continue
            while child.metric(counted) < sent - ahead:
                child.state_bytes()
                time.sleep(0.02)
            child.state_bytes()
            if sent % 100_000 == 0:
                rate = sent / (time.perf_counter() - started)
                print(f"    {sent:,} published, {rate:,.0f} msg/s", flush=True)

    publish_burst(child.broker_port, throttled(), client_id="flood-publisher")
    while child.metric(counted) < total:
        child.state_bytes()
        time.sleep(0.05)
    return time.perf_counter() - started


def malformed_flood(broker: MosquittoProcess, workdir: Path, count: int, size: int) -> None:
    defaults = Settings().ingest
    child = Child(broker.port, workdir / "malformed")
    garbage = b"<" + b"\x00not json\xff" * (size // 10)  # fails at the first byte, like junk does

    def flood() -> Iterator[tuple[str, bytes]]:
        for i in range(count):
            yield f"devices/junk-{i % 1000:04d}/telemetry", garbage

    print(f"(1) {count:,} malformed payloads of {len(garbage):,} bytes", flush=True)
    seconds = paced(child, flood(), count, len(garbage))
    main, wal = child.state_bytes()
    rejected = child.metric("frontline_messages_rejected_total", reason="not_json")
    dropped = child.metric("frontline_dead_letters_dropped_total")
    bound = defaults.dead_letter_max_bytes
    print(
        f"    {count / seconds:,.0f} msg/s ({count * len(garbage) / seconds / MIB:,.0f} MiB/s)"
        f" over {seconds:,.0f} s; rejected (not_json) {rejected:,.0f}, dead letters dropped"
        f" {dropped:,.0f}, kept {rejected - dropped:,.0f}\n"
        f"    state.db {main / MIB:.1f} MiB + WAL {wal / MIB:.1f} MiB (peaks"
        f" {child.peak_db / MIB:.1f} + {child.peak_wal / MIB:.1f} MiB) against"
        f" ingest.dead_letter_max_bytes"
        f" {bound / MIB:.0f} MiB; peak RSS {child.peak_rss_mib():.0f} MiB; {child.serving()}",
        flush=True,
    )
    print(f"    stopped (SIGTERM) in {child.stop():.1f} s", flush=True)


def device_flood(broker: MosquittoProcess, workdir: Path, count: int) -> None:
    defaults = Settings().devices
    child = Child(broker.port, workdir / "devices")
    reading = orjson.dumps({"temperature": 20.5})

    def flood() -> Iterator[tuple[str, bytes]]:
        for i in range(count):
            yield f"devices/flood-{i:07d}/telemetry", reading

    print(f"(2) {count:,} new device ids, one reading each", flush=True)
    seconds = paced(child, flood(), count, len(reading))
    time.sleep(2)  # the twins are saved every second
    main, wal = child.state_bytes()
    known = child.metric("frontline_devices_known")
    refused = child.metric("frontline_messages_rejected_total", reason="cardinality")
    alerts = child.metric("frontline_alerts", phase="pending") + child.metric(
        "frontline_alerts", phase="firing"
    )
    series = (workdir / "devices" / "series.db").stat().st_size
    print(
        f"    {count / seconds:,.0f} msg/s over {seconds:,.0f} s; devices known {known:,.0f}"
        f" (devices.max_known {defaults.max_known:,}), refused (cardinality) {refused:,.0f},"
        f" alerts pending or firing {alerts:,.0f}\n"
        f"    state.db {main / MIB:.1f} MiB + WAL {wal / MIB:.1f} MiB"
        f" ({(main + wal) / max(known, 1):,.0f} bytes a device at most), series.db"
        f" {series / MIB:.1f} MiB;"
        f" peak RSS {child.peak_rss_mib():.0f} MiB; {child.serving()}",
        flush=True,
    )
    print(f"    stopped (SIGTERM) in {child.stop():.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=200 * 1024)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="frontline-flood-"))
    try:
        with MosquittoProcess(workdir / "mosquitto") as broker:
            if args.messages:
                malformed_flood(broker, workdir, args.messages, args.size)
            if args.devices:
                device_flood(broker, workdir, args.devices)
    except subprocess.TimeoutExpired as exc:
        sys.exit(f"the daemon did not stop: {exc}")
    finally:
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
