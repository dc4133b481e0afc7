"""Learned models through the real daemon: train from stored history, score live into a rule,
a ticket naming the contributing metric, a corrupt version refused while the previous one keeps
scoring, and a scheduled retrain in a separate process while ingest goes on without a gap."""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.adapters.model_registry import ModelRegistry
from daemon.adapters.mosquitto import MosquittoProcess
from simulators.burst import publish_burst
from tests.conftest import DaemonProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = """
models:
  - name: pair
    kind: anomaly
    match: {model: "pairs-*"}
    features: [a, b, c]
    window: 6s
    interval: 1s
    detector: pca
    training: {history: 1h, step: 4s, min_samples: 300}
    retrain: "* * * * *"
    threshold: {quantile: 0.99, factor: 1.5}
"""

RULES = """
groups:
  - name: pairs
    interval: 1s
    match: {model: "pairs-*"}
    rules:
      - alert: PairDecorrelated
        expr: anomaly("pair") > 0.5
        for: 3s
        labels: {severity: major, category: heating}
        annotations:
          summary: "{{ device.id }}: a and b no longer move together"
        ticket: always
"""


def normal(t: float, rng: random.Random) -> dict[str, float]:
    """a swings slowly; b and c follow it with a little noise: strongly correlated."""
    a = 50 + 10 * math.sin(t / 40) + rng.gauss(0, 0.3)
    b = 2 * a + rng.gauss(0, 0.6)
    return {"a": round(a, 3), "b": round(b, 3), "c": round(a + 10 + rng.gauss(0, 0.3), 3)}


def sample(device: str, ts_ms: int, values: dict[str, float]) -> tuple[str, bytes]:
    return f"devices/{device}/telemetry", orjson.dumps({"ts": ts_ms, "values": values})


class LivePublisher:
    """Publishes both devices every 0.5 s; `drift` breaks b's relation to a on pairs-2."""

    def __init__(self, broker: MosquittoProcess) -> None:
        self.broker = broker
        self.drift = 0.0
        self.stop = threading.Event()
        self.rng = random.Random(7)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            messages = []
            for device in ("pairs-1", "pairs-2"):
                values = normal(now, self.rng)
                if device == "pairs-2" and self.drift:
                    # b moves against a: each stays inside its own training range
                    values["b"] = round(100 - (values["a"] - 50) * 2 + self.drift, 3)
                messages.append(sample(device, int(now * 1000), values))
            publish_burst(self.broker.port, messages, client_id="live-pub", timeout=10)
            self.stop.wait(0.5)


@pytest.fixture
def models_daemon(broker: MosquittoProcess, tmp_path: Path) -> Iterator[DaemonProcess]:
    for name, text in (("models", SPEC), ("rules", RULES)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.yaml").write_text(text)
    daemon = DaemonProcess(
        broker,
        tmp_path / "data",
        FRONTLINE_MODELS__PATHS=json.dumps([str(tmp_path / "models")]),
        FRONTLINE_RULES__PATHS=json.dumps([str(tmp_path / "rules")]),
        FRONTLINE_RULES__OUTAGE_GRACE="0s",
    )
    yield daemon
    if daemon.running:
        daemon.kill()


def _scores(daemon: DaemonProcess, device: str) -> list[tuple[int, float]]:
    rows = daemon.cli_json("query", device, "model:pair", "--since", "10m")
    return [(int(ts), float(value)) for ts, value in rows]


def _ticket(daemon: DaemonProcess, device: str) -> dict[str, Any] | None:
    found = [t for t in daemon.cli_json("tickets", "list", "--all") if t["device"] == device]
    return found[0] if found else None


def test_models_train_score_fire_survive_corruption_and_retrain(
    broker: MosquittoProcess, models_daemon: DaemonProcess
) -> None:
    daemon = models_daemon.start()
    meta = [
        (f"devices/{d}/meta", orjson.dumps({"model": "pairs-x1"})) for d in ("pairs-1", "pairs-2")
    ]
    publish_burst(broker.port, meta, retain=True)
    # 30 minutes of backdated history, one point every 2 s per device (buffered telemetry).
    rng = random.Random(1)
    now = time.time()
    history = [
        sample(device, int((now - age) * 1000), normal(now - age, rng))
        for age in range(1800, 0, -2)
        for device in ("pairs-1", "pairs-2")
    ]
    publish_burst(broker.port, history)
    daemon.wait_for("frontline_points_written_total", 2 * len(history), timeout=60)

    out = daemon.cli("train", "pair")
    assert "pair v1" in out, out
    registry = ModelRegistry(daemon.data_dir / "models")
    assert registry.current("pair") == 1
    listed = daemon.cli_json("models", "list")
    assert listed["models"][0]["current"] == 1
    assert listed["models"][0]["rows"] >= 300

    live = LivePublisher(broker)
    live.thread.start()
    try:
        # Normal data scores below the threshold on both devices.
        wait_until(lambda: len(_scores(daemon, "pairs-1")) >= 5, 60, "live scores")
        assert max(v for _, v in _scores(daemon, "pairs-1")[-5:]) < 0.5

        # b departs from a on pairs-2: its score crosses 0.5, the rule fires, the ticket names b.
        live.drift = 1.0
        wait_until(lambda: _ticket(daemon, "pairs-2") is not None, 60, "the anomaly ticket")
        ticket = daemon.cli_json("tickets", "show", _ticket(daemon, "pairs-2")["id"])
        explained = ticket["context"]["anomaly"]["pair"]
        assert explained["version"] in registry.numbers("pair")
        assert explained["value"] > 0.5
        assert explained["contributions"][0]["feature"] == "b", explained
        assert "model:pair" in ticket["context"]["telemetry"]["series"]  # the score history
        assert f"pair v{explained['version']}" in ticket["summary"]
        assert "b " in ticket["summary"]
        assert _ticket(daemon, "pairs-1") is None  # the healthy twin raised nothing

        # A corrupt version made current is refused; v1 keeps scoring.
        # (the cron retrain may already have written v2: the damaged copy takes the next number)
        bad = registry.numbers("pair")[-1] + 1
        shutil.copytree(registry.root / "pair" / "v0001", registry.root / "pair" / f"v{bad:04d}")
        (registry.root / "pair" / f"v{bad:04d}" / "model.npz").write_bytes(b"not a model")
        registry.set_current("pair", bad)
        daemon.wait_for("frontline_model_load_failures_total", 1, timeout=30)
        since = _scores(daemon, "pairs-1")[-1][0]
        wait_until(
            lambda: _scores(daemon, "pairs-1")[-1][0] > since + 2000, 30, "scores after refusal"
        )
        assert f"pair v{bad}" in daemon.log.read_text()
        assert "corrupt" in daemon.log.read_text()

        # The cron retrain ("* * * * *") writes a new version from a separate process.
        started = time.time()
        wait_until(lambda: registry.numbers("pair")[-1] > bad, 90, "the scheduled retrain")
        wait_until(lambda: registry.current("pair") == bad + 1, 10, "the new version current")
        daemon.wait_for("frontline_model_trainings_total", 1, timeout=30)
        time.sleep(2)
    finally:
        live.stop.set()
        live.thread.join(10)
    # Ingest went on while the training process ran: no gap in pairs-1's points (from 10 s
    # before the wait for the retrain: a quick retrain leaves only a few seconds after it).
    points = daemon.cli_json(
        "query", "pairs-1", "a", "--since", f"{int(time.time() - started) + 10}s"
    )
    stamps = [int(ts) for ts, _ in points]
    assert len(stamps) >= 5
    assert max(b - a for a, b in itertools.pairwise(stamps)) < 3000
    assert "training model pair (scheduled" in daemon.log.read_text()
