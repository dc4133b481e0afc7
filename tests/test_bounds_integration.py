"""Integration: floods of malformed payloads and of new device ids stay within the configured
bounds, against a real Mosquitto and `frontline run` (acceptance 3 of issue #8, at small bounds;
benchmarks/flood.py runs the full-size floods against the defaults)."""

from __future__ import annotations

import json
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
MIB = 1024 * 1024
#: SQLite's own share of state.db beyond what the bounds count: page and row overhead, the
#: schema, indexes, a few twins (measured: 0.06 MiB over a 4 MiB bound)
SQLITE_ALLOWANCE = 1 * MIB
#: the WAL (state.db-wal) holds the pages written since the last checkpoint: SQLite's 1,000-page
#: (4 MiB) auto-checkpoint plus one transaction (at most 4 MiB of letters, and the pages their
#: deletion touches); it is truncated back to 8 MiB after a checkpoint, whatever the bound
WAL_ALLOWANCE = 10 * MIB
#: the daemon's peak resident memory: about 80 MiB of code and settled state, plus what is in
#: flight (measured: 92 MiB for the malformed flood, 80 MiB for the id flood)
RSS_BUDGET_MIB = 256


def peak_rss_mib(daemon: DaemonProcess) -> float:
    """The daemon's peak resident memory (VmHWM) in MiB."""
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def disk(data_dir: Path, name: str) -> tuple[int, int]:
    """Bytes of an SQLite file and of its WAL."""
    main, wal = data_dir / name, data_dir / f"{name}-wal"
    return main.stat().st_size, wal.stat().st_size if wal.exists() else 0


def serving(daemon: DaemonProcess) -> bool:
    return daemon.get("/healthz")[0] == 200 and daemon.get("/readyz")[0] == 200


def test_malformed_flood_keeps_dead_letters_within_their_byte_bound(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that 3,000 malformed 200 KB payloads leave state.db within the dead-letter bound."""
    count, size, bound = 3_000, 200 * 1024, 4 * MIB  # 600 MB through the broker, 4 MiB kept
    daemon = DaemonProcess(
        broker, tmp_path / "data",
        FRONTLINE_INGEST__DEAD_LETTER_MAX_BYTES=str(bound), FRONTLINE_LOG_LEVEL="WARNING",
    ).start()  # fmt: skip
    garbage = b"<" + b"\x00not json\xff" * (size // 10)

    def flood() -> Iterator[tuple[str, bytes]]:
        for i in range(count):
            yield f"devices/junk-{i % 50}/telemetry", garbage

    try:
        publish_burst(broker.port, flood())
        wait_until(
            lambda: daemon.metric("frontline_messages_rejected_total", {"reason": "not_json"})
            >= count,
            timeout=90, what=f"{count} rejections",
        )  # fmt: skip
        dropped = daemon.metric("frontline_dead_letters_dropped_total")
        kept = len(daemon.cli_json("dead-letters", "--limit", "100000"))
        assert kept + dropped == count
        assert kept * 64 * 1024 <= bound  # each letter keeps 64 KiB of its payload
        assert kept >= 50
        main, wal = disk(daemon.data_dir, "state.db")
        assert main <= bound + SQLITE_ALLOWANCE, f"state.db is {main / MIB:.1f} MiB"
        assert wal <= WAL_ALLOWANCE, f"state.db-wal is {wal / MIB:.1f} MiB"
        assert peak_rss_mib(daemon) <= RSS_BUDGET_MIB, f"peak RSS {peak_rss_mib(daemon):.0f} MiB"
        assert serving(daemon)
    finally:
        daemon.kill()


def announce(device: str, inactivity_timeout: float = 3600) -> list[tuple[str, bytes]]:
    meta = {"model": "boiler-x200", "inactivity_timeout": inactivity_timeout}
    return [(f"devices/{device}/meta", orjson.dumps(meta)), (f"devices/{device}/status", b"online")]


def reading(device: str, value: float, metric: str = "temperature") -> tuple[str, bytes]:
    return f"devices/{device}/telemetry", orjson.dumps({metric: value})


def test_flood_of_new_device_ids_is_capped_and_raises_no_offline_alert(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """Test that 20,000 new ids past a cap of 1,000 are refused, known devices flow, and no
    offline alert comes of the flood while a silent announced device does alert."""
    cap, flood, known = 1_000, 20_000, ["known-1", "known-2", "known-3"]
    daemon = DaemonProcess(
        broker, tmp_path / "data",
        FRONTLINE_DEVICES__MAX_KNOWN=str(cap),
        FRONTLINE_INGEST__DEAD_LETTER_MAX_ROWS="5000",
        FRONTLINE_DEVICES__INACTIVITY_TIMEOUT="2s",  # offline within seconds, if it were watched
        FRONTLINE_RULES__OUTAGE_GRACE="1s",
        FRONTLINE_RULES__PATHS=json.dumps([str(ROOT / "rules")]),  # the shipped fleet rules
        FRONTLINE_LOG_LEVEL="WARNING",
    ).start()  # fmt: skip
    try:
        # One announced device that then falls silent: the alert that must still fire.
        early = [m for d in known for m in announce(d)] + announce("silent", 2)
        early += [reading(d, 60.0) for d in [*known, "silent"]]
        publish_burst(broker.port, early)
        wait_until(lambda: daemon.metric("frontline_devices_known") == 4, what="4 devices")
        publish_burst(broker.port, (reading(f"flood-{i:05d}", 1.0) for i in range(flood)))
        refused = flood - (cap - 4)
        wait_until(
            lambda: daemon.metric("frontline_messages_rejected_total", {"reason": "cardinality"})
            >= refused,
            timeout=60, what=f"{refused} cardinality rejections",
        )  # fmt: skip
        assert daemon.metric("frontline_devices_known") == cap
        assert daemon.metric("frontline_dead_letters_dropped_total") == refused - 5000
        stored = daemon.metric("frontline_points_written_total")
        publish_burst(broker.port, [reading(d, 61.0) for d in known])  # known devices flow
        wait_until(
            lambda: daemon.metric("frontline_points_written_total") >= stored + len(known),
            what="the known devices' readings",
        )  # fmt: skip
        assert daemon.metric("frontline_messages_rejected_total", {"reason": "cardinality"}) == (
            refused
        )

        def offline() -> set[str]:
            alerts = daemon.cli_json("alerts", "--all")
            return {a["device"] for a in alerts if a["alert"].startswith("DeviceOffline")}

        # inactivity 2 s + offline(5s) + the group's 5 s interval: the silent device fires; a
        # flood device would have fired on the same rounds.
        wait_until(lambda: "silent" in offline(), timeout=30, what="the silent device offline")
        time.sleep(6)  # one more round of the fleet group (5 s) over every device
        assert offline() == {"silent"}
        main, wal = disk(daemon.data_dir, "state.db")
        # 1,000 twins and 5,000 small letters: about 1.3 MiB (and its WAL)
        assert main <= 4 * MIB, f"state.db is {main / MIB:.1f} MiB"
        assert wal <= WAL_ALLOWANCE, f"state.db-wal is {wal / MIB:.1f} MiB"
        assert peak_rss_mib(daemon) <= RSS_BUDGET_MIB, f"peak RSS {peak_rss_mib(daemon):.0f} MiB"
        assert serving(daemon)
    finally:
        daemon.kill()
