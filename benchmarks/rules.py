"""Rule evaluation cost: 10,000 devices x 20 rules, one group, through the real engine.

Builds device twins and in-memory windows (10 minutes of data at 10 s for 5 metrics per device),
then times evaluation rounds of `daemon.core.engine.evaluate_group`, the pure function the daemon
runs each interval. Prints device-rules per second, the round time against the group interval
(the ratio that must stay well below 1), the same for a trivial reference rule set measured in the
same run, and the memory the windows take. Usage:

    python benchmarks/rules.py [--devices 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.config import RulesSettings  # noqa: E402
from daemon.core.alerts import AlertState  # noqa: E402
from daemon.core.engine import DeviceContext, Watch, evaluate_group  # noqa: E402
from daemon.core.replay import horizons  # noqa: E402
from daemon.core.rulefmt import Group, parse_rule_file  # noqa: E402
from daemon.core.twin import DeviceTwin  # noqa: E402
from daemon.core.windows import SeriesWindows  # noqa: E402
from daemon.rules import alert_params  # noqa: E402

INTERVAL_S = 30
EXPRESSIONS = [
    'avg(temperature, 5m) > attr("max_temp", 85)',
    "avg(temperature, 5m) > 80 and slope(temperature, 10m) > 0",
    "max(temperature, 10m) > 95",
    "min(pressure, 5m) < 0.8",
    "forecast(pressure, 10m, horizon=24h) < 0.8",
    "time_to(pressure, 10m, 0.8) < 6h",
    "stddev(temperature, 10m) > 10",
    "quantile(temperature, 10m, 0.9) > 90",
    "changes(burner_on, 10m) > 20",
    "delta(pressure, 10m) < -0.3",
    "rate(energy, 10m) > 5",
    "count(temperature, 5m) < 10",
    "offline(10m)",
    "absent(pressure, 5m)",
    "last(temperature) > 100",
    "sum(burner_on, 10m) == 0",
    "abs(last(temperature) - avg(temperature, 10m)) > 15",
    "avg(power, 5m) > 90 and last(burner_on) == 1",
    'state("mode") == "eco" and avg(temperature, 5m) > 75',
    "not (last(pressure) > 0.5) or max(pressure, 5m) > 3",
]
REFERENCE = ["last(temperature) > 100"] * 20


def group_of(expressions: list[str]) -> Group:
    rules = "\n".join(
        f"      - alert: R{i}\n        expr: '{e}'\n        for: 2m"
        for i, e in enumerate(expressions)
    )
    text = f"groups:\n  - name: bench\n    interval: {INTERVAL_S}s\n    rules:\n{rules}\n"
    groups, problems = parse_rule_file(text, "bench.yaml")
    assert not problems, problems
    return groups[0]


def fleet(devices: int, now: int, group: Group) -> tuple[list[DeviceTwin], SeriesWindows]:
    rng = random.Random(1)
    windows = SeriesWindows(horizons([group]))
    twins = []
    for d in range(devices):
        twin = DeviceTwin(f"dev-{d:05d}", first_seen_ms=now - 3600_000, last_seen_ms=now - 5000)
        twin.meta = {"model": "boiler-x200", "max_temp": 85}
        twin.attributes["mode"] = (now, "eco" if d % 3 else "comfort")
        energy = 0.0
        for i in range(60):  # 10 minutes at 10 s
            ts = now - (60 - i) * 10_000
            temp = 60 + 10 * math.sin(i / 9 + d) + rng.gauss(0, 0.5)
            energy += rng.random()
            for metric, value in (("temperature", temp), ("pressure", 1.5 + rng.gauss(0, 0.02)),
                                  ("burner_on", float(i % 4 == 0)), ("power", 40 + temp / 2),
                                  ("energy", energy)):  # fmt: skip
                windows.add(twin.id, metric, ts, value)
                twin.metrics[metric] = (ts, value)
        twins.append(twin)
    return twins, windows


def round_seconds(group: Group, twins: list[DeviceTwin], windows: SeriesWindows, now: int) -> float:
    settings = RulesSettings()
    watch = Watch(True, now - 86_400_000, 0)
    states: dict[str, AlertState] = {}
    started = time.perf_counter()
    contexts = [DeviceContext(t, windows, now, watch, 600.0) for t in twins]
    evaluate_group(group, now, contexts, states, lambda rule: alert_params(settings, rule))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    now = 1_800_000_000_000
    group, reference = group_of(EXPRESSIONS), group_of(REFERENCE)
    tracemalloc.start()
    twins, windows = fleet(args.devices, now, group)
    window_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    pairs = args.devices * len(EXPRESSIONS)
    rounds = [round_seconds(group, twins, windows, now) for _ in range(args.rounds)]
    refs = [round_seconds(reference, twins, windows, now) for _ in range(args.rounds)]
    for i, (full, ref) in enumerate(zip(rounds, refs, strict=True), 1):
        print(
            f"round {i}: {full:.2f}s for {args.devices:,} devices x {len(EXPRESSIONS)} rules "
            f"= {pairs / full:,.0f} device-rules/s | reference (20 x last(x) > c) {ref:.2f}s "
            f"| round/interval {full / INTERVAL_S:.3f}",
            flush=True,
        )
    med, ref = statistics.median(rounds), statistics.median(refs)
    print(
        f"median: {pairs / med:,.0f} device-rules/s; one round {med:.2f}s = "
        f"{med / INTERVAL_S:.3f} of its {INTERVAL_S}s interval; {med / ref:.1f}x the reference "
        f"rule set; twins + windows {window_bytes / args.devices / 1024:.1f} KiB per device "
        f"({len(windows):,} points)"
    )


if __name__ == "__main__":
    main()
