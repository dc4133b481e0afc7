"""A flood of device ids that publish once is no alert storm: liveness of unannounced devices is
unknown, evaluated with the shipped fleet rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.adapters.rule_files import load_rules
from daemon.config import RulesSettings
from daemon.core.alerts import AlertState, Phase
from daemon.core.engine import DeviceContext, Watch, evaluate_group
from daemon.core.messages import Meta, Status, Telemetry
from daemon.core.payloads import Sample
from daemon.core.twin import DeviceTwin, Twins
from daemon.core.windows import SeriesWindows
from daemon.rules import alert_params

ROOT = Path(__file__).resolve().parent.parent
S = 1000
T0 = 1_800_000_000_000
TIMEOUT_S = 600.0
WATCHING = Watch(True, T0 - 3600 * S, 0)


def heard_once(device: str) -> Telemetry:
    return Telemetry(device, [Sample(T0, {"temp": 20.0}, {})])


# (description, messages after the single reading, offline_for and absent_for an hour later)
LIVENESS_CASES = [
    ("telemetry only", [], None),
    ("empty meta", [Meta("d", {})], None),
    ("meta", [Meta("d", {"model": "m"})], 3600.0 - TIMEOUT_S),
    ("online status", [Status("d", "online")], 3600.0 - TIMEOUT_S),
    ("last will", [Status("d", "offline")], 3600.0),
]


@pytest.mark.parametrize(
    ("announced_by", "offline"),
    [case[1:] for case in LIVENESS_CASES],
    ids=[case[0] for case in LIVENESS_CASES],
)
def test_liveness_is_unknown_until_a_device_announces_itself(
    announced_by: list[Meta | Status], offline: float | None
) -> None:
    """Test that offline() and absent() are unknown for a device without meta or status."""
    twins = Twins()
    twins.apply(heard_once("d"), T0)
    for message in announced_by:
        twins.apply(message, T0)
    twin = twins.get("d")
    assert twin is not None
    ctx = DeviceContext(twin, SeriesWindows(), T0 + 3600 * S, WATCHING, TIMEOUT_S)
    assert ctx.offline_for() == offline
    assert (ctx.absent_for("temp") is None) is (offline is None)


def test_flood_of_ids_that_publish_once_raises_no_fleet_alert() -> None:
    """Test that 2,000 ids heard once stay silent under the fleet rules; announced ones fire."""
    groups, problems = load_rules([ROOT / "rules" / "fleet.yaml"])
    assert problems == []
    twins = Twins()
    for i in range(2_000):
        twins.apply(heard_once(f"flood-{i:04d}"), T0)
    for device in ("real-1", "real-2"):
        twins.apply(heard_once(device), T0)
        twins.apply(Meta(device, {"model": "boiler-x200"}), T0)
    states: dict[str, AlertState] = {}
    firing: set[tuple[str, str]] = set()
    settings = RulesSettings()
    for step in range(0, 2 * 3600, 300):  # two hours of silence, every 5 minutes
        now = T0 + step * S
        for group in groups:
            contexts = [DeviceContext(t, SeriesWindows(), now, WATCHING, TIMEOUT_S) for t in twins]
            updates, _ = evaluate_group(
                group, now, contexts, states, lambda rule: alert_params(settings, rule)
            )
            for key, state in updates.items():
                if state is None:
                    states.pop(key, None)
                else:
                    states[key] = state
        firing |= {(s.device, s.alert) for s in states.values() if s.phase is Phase.FIRING}
    assert firing == {
        (device, alert)
        for device in ("real-1", "real-2")
        for alert in ("DeviceOffline", "DeviceOfflineProlonged")
    }


def test_a_device_that_announces_itself_later_is_watched_from_then() -> None:
    """Test that meta arriving after the first telemetry makes the device's liveness known."""
    twin = DeviceTwin("late", T0, last_seen_ms=T0)
    ctx = DeviceContext(twin, SeriesWindows(), T0 + 900 * S, WATCHING, TIMEOUT_S)
    assert ctx.offline_for() is None
    twin.meta = {"model": "freezer-f3"}
    assert ctx.offline_for() == 300.0
