"""Live cost of the shipped learned models: device-model scorings per second, and their memory.

What runs is the daemon's own scoring path on the shipped specs (`models/*.yaml`, read with
`load_models`, never a copy tuned for this benchmark):

1. Training: each spec is fitted (`daemon.learning.trainer.fit`) on a `Dataset` built from
   simulated history, with the simulator's physics (`simulators/models.py`): anomaly models on
   healthy devices of their kind over the spec's `training.history`, one row every
   `training.step`; the rul model on devices whose part wears out and fails (the simulator's
   `wear` fault, lives of 1.5-2.5 h, repaired 30 min after the failure), cut into lives. Both
   are shaped by the trainer's own `Dataset.add_device`, as `frontline train` shapes them. The
   versions are saved into a temporary `ModelRegistry`.
2. The fleet: every shipped model scores `--devices` devices. Each device kind a spec matches
   gets `--devices` devices (with the shipped specs: heat pumps, scored by heat_pump_health and
   heat_pump_wear; boilers, by boiler_health; freezers, by freezer_health). Each device's
   in-memory `SeriesWindows` holds the points its models' windows need, at the simulator fleet's
   telemetry interval (5 s): the recent past of one of `TRACES` devices simulated per kind (the
   cost depends on how many points a window holds, not on their values).
3. A real `ModelService` (real `SqliteSeriesStore` in a temporary folder, `Twins` whose meta the
   specs' `match` selects, `Metrics()`) loads the versions through its normal `start()` (specs,
   registry, checksum, restore: timed too), then `ModelService.score(status, now)` is timed for
   each model: selecting the devices, their rows from the windows, the batched model calls, and
   writing the outputs to the store and the windows. One warm-up round first (it creates the
   output series in the store), then `--rounds` timed rounds, one second apart (each writes new
   points), and one more instrumented round that splits the time into building rows, predicting,
   writing (store and windows) and the rest.
4. The reference, measured in the same run: the rule engine (`evaluate_group`, as
   benchmarks/rules.py and the daemon do it) evaluating one threshold rule per device kind on the
   same devices and windows: `avg(<the kind's first model feature>, <that model's window>) > c`.
5. Memory, in a fresh child process: the artefacts' size on disk, the bytes the loaded models
   hold (tracemalloc around loading every current version from the registry and restoring it)
   and the process's RSS before and after loading them; and, in this process, what scoring keeps
   per device and model (tracemalloc over the warm-up round).

Usage:

    python benchmarks/models_live.py [--devices 10000] [--rounds 5] [--write-docs]

`--write-docs` replaces the block between the models-live markers in docs/models.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import daemon.learning.service as service_module  # noqa: E402
from benchmarks.docblock import replace_block  # noqa: E402
from benchmarks.simdata import kind_of, simulate  # noqa: E402
from daemon.adapters.model_files import ModelFileSet, load_models  # noqa: E402
from daemon.adapters.model_registry import ModelRegistry  # noqa: E402
from daemon.adapters.store_sqlite import SqliteSeriesStore  # noqa: E402
from daemon.config import RulesSettings, Settings  # noqa: E402
from daemon.core.alerts import AlertState  # noqa: E402
from daemon.core.engine import DeviceContext, Watch, evaluate_group, matches  # noqa: E402
from daemon.core.modelspec import ModelSpec  # noqa: E402
from daemon.core.rulefmt import Group, parse_rule_file  # noqa: E402
from daemon.core.twin import DeviceTwin, Twins  # noqa: E402
from daemon.core.windows import SeriesWindows  # noqa: E402
from daemon.learning.service import ModelService, ModelStatus  # noqa: E402
from daemon.learning.trained import restore  # noqa: E402
from daemon.learning.trainer import Dataset, fit  # noqa: E402
from daemon.metrics import Metrics  # noqa: E402
from daemon.rules import alert_params  # noqa: E402
from simulators.faults import FaultKind, FaultSpec, start_fault  # noqa: E402
from simulators.history import DEFAULT_WEAR_LIFE_S, PastFault  # noqa: E402
from simulators.models import DeviceModel  # noqa: E402

MODELS_DIR = ROOT / "models"
DOCS = ROOT / "docs" / "models.md"
MARK_START = "<!-- models-live:start -->"
MARK_END = "<!-- models-live:end -->"

NOW_MS = 1_800_000_000_000
SAMPLE_S = 5.0  # the simulator fleet's telemetry interval (FleetOptions.interval)
TRACES = 500  # distinct simulated devices per kind whose recent past fills the live windows
TRAIN_DEVICES = 8  # healthy devices per anomaly model's training history
WEAR_DEVICES = 6  # devices whose part wears out and fails, for the rul model's history
REPAIR_S = 1800.0  # a failed part is replaced this long after (simulators.history default)
REFERENCE_THRESHOLD = 1_000_000  # never met: the rule costs its evaluation, never an alert


# -- simulated telemetry ------------------------------------------------------------------------
def wear_runs(
    model: DeviceModel[Any], device: str, start_s: float, end_s: float, rng: random.Random
) -> list[PastFault]:
    """Run-to-failure episodes one after another (the simulator's `wear` fault, as the history
    backfill plans them): a life around 2 h, the failure, the repair 30 min later, a healthy gap."""
    runs: list[PastFault] = []
    cursor = start_s + rng.uniform(600.0, 3600.0)
    while True:
        life = DEFAULT_WEAR_LIFE_S * rng.uniform(0.75, 1.25)
        if cursor + life + REPAIR_S > end_s:
            return runs
        fault_id = f"wear-{device}-{len(runs) + 1}"
        spec = FaultSpec(device, FaultKind.WEAR, params={"life": life}, id=fault_id)
        runs.append(PastFault(start_fault(fault_id, spec, model, cursor), cursor + life + REPAIR_S))
        cursor += life + REPAIR_S + rng.uniform(600.0, 3600.0)


def training_data(spec: ModelSpec, model: DeviceModel[Any]) -> Dataset:
    """The spec's training set from simulated history, shaped as `trainer.gather` shapes it."""
    end_s = NOW_MS / 1000
    start_s = end_s - spec.training.history_s
    count = TRAIN_DEVICES if spec.kind == "anomaly" else WEAR_DEVICES
    data = Dataset(devices=count)
    for n in range(count):
        device = f"train-{spec.name}-{n}"
        faults = []
        if spec.kind == "rul":
            faults = wear_runs(model, device, start_s, end_s, random.Random(device))
        # the daemon's backfill steps the past at the training step (simulators.history)
        history = simulate(
            model, device, start_s - spec.window_s, end_s, spec.training.step_s, faults
        )
        data.add_device(spec, history, int(start_s * 1000), NOW_MS)
    return data.finish()


# -- the fleet ----------------------------------------------------------------------------------
@dataclass
class Kind:
    model: DeviceModel[Any]
    specs: list[ModelSpec] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)


def fleet(specs: list[ModelSpec], per_kind: int) -> tuple[dict[str, Kind], Twins]:
    kinds: dict[str, Kind] = {}
    for spec in specs:
        model = kind_of(spec)
        kinds.setdefault(model.name, Kind(model)).specs.append(spec)
    twins = []
    for kind in kinds.values():
        for n in range(per_kind):
            device = f"{kind.model.name}-{n:05d}"
            kind.devices.append(device)
            twin = DeviceTwin(device, first_seen_ms=NOW_MS - 86_400_000, last_seen_ms=NOW_MS)
            twin.meta = {"model": kind.model.product}
            twins.append(twin)
    return kinds, Twins(twins, max_devices=len(twins) + 1)


def fill_windows(kinds: dict[str, Kind], twins: Twins, windows: SeriesWindows) -> int:
    """Each device gets the recent past of one of TRACES simulated devices of its kind."""
    horizons = windows.horizons
    added = 0
    for kind in kinds.values():
        wanted = {m for spec in kind.specs for m in spec.metrics}
        longest = max(horizons[m] for m in wanted)
        end_s = NOW_MS / 1000
        traces = []
        for n in range(min(TRACES, len(kind.devices))):
            history = simulate(
                kind.model, f"live-{kind.model.name}-{n}", end_s - longest - 60.0, end_s, SAMPLE_S
            )
            points = []
            for metric, (times, values) in history.items():
                if metric not in wanted:
                    continue
                cut = NOW_MS - int(horizons[metric] * 1000)
                keep = times > cut
                points.append((metric, times[keep].tolist(), values[keep].tolist()))
            traces.append(points)
        for index, device in enumerate(kind.devices):
            twin = twins.get(device)
            assert twin is not None
            for metric, times, values in traces[index % len(traces)]:
                for ts, value in zip(times, values, strict=True):
                    windows.add(device, metric, ts, value)
                if times:
                    twin.metrics[metric] = (times[-1], values[-1])
                added += len(times)
    return added


# -- timing the service -------------------------------------------------------------------------
@dataclass
class ModelRun:
    name: str
    kind: str
    detector: str
    interval_s: float
    unit: str
    devices: int = 0
    scored: int = 0
    rounds: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)
    output: float = math.nan  # the median of the devices' last outputs (a sanity check)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


class Timer:
    """Seconds spent in wrapped calls (for the instrumented round)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed

    def wrap_async(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


async def instrumented(
    service: ModelService,
    store: SqliteSeriesStore,
    windows: SeriesWindows,
    status: ModelStatus,
    now_ms: int,
) -> dict[str, float]:
    """One round with timers around its parts: rows, predict, write (store + windows), other."""
    rows, predict, store_write, windows_add = Timer(), Timer(), Timer(), Timer()
    original_predict = service_module._predict
    service._row = rows.wrap(service._row)  # type: ignore[method-assign]
    service_module._predict = predict.wrap(original_predict)
    store.write = store_write.wrap_async(store.write)  # type: ignore[method-assign]
    windows.add = windows_add.wrap(windows.add)  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        await service.score(status, now_ms)
        total = time.perf_counter() - started
    finally:
        del service._row, store.write, windows.add  # back to the class's methods
        service_module._predict = original_predict
    write = store_write.seconds + windows_add.seconds
    return {
        "rows": rows.seconds / total,
        "predict": predict.seconds / total,
        "write": write / total,
        "other": max(0.0, total - rows.seconds - predict.seconds - write) / total,
    }


def reference_group(kind: Kind) -> tuple[Group, str]:
    """One threshold rule on the kind's first model feature, over that model's window."""
    spec = kind.specs[0]
    metric = spec.features[0].metric
    seconds = spec.window_s
    window = f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"
    expr = f"avg({metric}, {window}) > {REFERENCE_THRESHOLD}"
    text = (
        "groups:\n"
        f"  - name: reference_{kind.model.name}\n"
        "    interval: 30s\n"
        f"    match: {{model: '{kind.model.product}'}}\n"
        "    rules:\n"
        f"      - alert: Reference\n        expr: '{expr}'\n        for: 2m\n"
    )
    groups, problems = parse_rule_file(text, "reference.yaml")
    assert not problems, problems
    return groups[0], expr


def rule_round(group: Group, twins: Twins, windows: SeriesWindows, now_ms: int) -> float:
    """What the daemon's rule loop does for one group and round, minus persisting alerts."""
    settings = RulesSettings()
    watch = Watch(True, now_ms - 86_400_000, 0)
    states: dict[str, AlertState] = {}
    started = time.perf_counter()
    devices = [t for t in twins if matches(group.match, t)]
    contexts = [DeviceContext(t, windows, now_ms, watch, 600.0) for t in devices]
    evaluate_group(group, now_ms, contexts, states, lambda rule: alert_params(settings, rule))
    return time.perf_counter() - started


@dataclass
class Result:
    devices: int
    rounds: int
    runs: list[ModelRun]
    start_s: float
    points: int
    train_s: float
    select_s: float
    reference: list[tuple[str, int, float]]  # (expr, devices, median seconds)
    twins: int = 0
    live_bytes: int = 0
    memory: dict[str, Any] = field(default_factory=dict)


async def measure(specs: list[ModelSpec], devices: int, rounds: int, tmp: Path) -> Result:
    kinds, twins = fleet(specs, devices)
    registry = ModelRegistry(tmp / "models")
    train_started = time.perf_counter()
    for spec in specs:
        model = kind_of(spec)
        data = training_data(spec, model)
        meta, arrays = await asyncio.to_thread(fit, spec, data, NOW_MS)
        registry.save(spec.name, meta, arrays)
        size = len(data.rows) if spec.kind == "anomaly" else sum(len(t) for t, _, _ in data.lives)
        failures = sum(1 for *_, ended in data.lives if ended)
        extra = f", {len(data.lives)} lives ({failures} failed)" if spec.kind == "rul" else ""
        print(
            f"trained {spec.name}: {size:,} rows from {data.devices} simulated {model.name}s"
            f"{extra}, fit {meta['fit_seconds']:.1f}s",
            flush=True,
        )
    train_s = time.perf_counter() - train_started

    store = SqliteSeriesStore(tmp / "series.db")
    await store.open()
    windows = SeriesWindows()

    async def set_horizons(horizons: dict[str, float]) -> None:
        windows.set_horizons(horizons)

    service = ModelService(
        Settings(data_dir=tmp),
        ModelFileSet([MODELS_DIR]),
        registry,
        store,
        twins,
        windows,
        Metrics(),
        set_horizons,
    )
    try:
        started = time.perf_counter()
        await service.start()  # specs, registry (checksums), restore: the daemon's load path
        start_s = time.perf_counter() - started
        for status in service.models.values():
            if status.trained is None:
                sys.exit(f"{status.spec.name} did not load: {status.problem}")
        started = time.perf_counter()
        points = fill_windows(kinds, twins, windows)
        print(
            f"windows: {points:,} points for {len(twins):,} devices "
            f"({time.perf_counter() - started:.1f}s to fill)",
            flush=True,
        )

        runs = []
        for status in service.models.values():
            spec = status.spec
            count = sum(1 for t in twins if matches(spec.match, t))
            runs.append(
                ModelRun(spec.name, spec.kind, spec.detector, spec.interval_s, spec.unit, count)
            )
        statuses = list(service.models.values())
        for r in range(rounds + 1):
            now = NOW_MS + 1000 * r
            if r == 0:  # the warm-up round (it creates the output series), under tracemalloc
                gc.collect()
                tracemalloc.start()
            for run, status in zip(runs, statuses, strict=True):
                started = time.perf_counter()
                run.scored = await service.score(status, now)
                if r:
                    run.rounds.append(time.perf_counter() - started)
            if r == 0:  # what the scoring keeps per device and model from then on
                gc.collect()
                live_bytes = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
            if r:
                print(
                    f"round {r}: " + ", ".join(f"{run.name} {run.rounds[-1]:.2f}s" for run in runs),
                    flush=True,
                )
        for run, status in zip(runs, statuses, strict=True):
            now = NOW_MS + 1000 * (rounds + 1)
            run.parts = await instrumented(service, store, windows, status, now)
            outputs = [e.value for (_, name), e in service.latest.items() if name == run.name]
            run.output = statistics.median(outputs) if outputs else math.nan
        selects = []
        for _ in range(3):
            started = time.perf_counter()
            for status in statuses:
                _ = [t.id for t in twins if matches(status.spec.match, t)]
            selects.append(time.perf_counter() - started)

        reference = []
        for kind in kinds.values():
            group, expr = reference_group(kind)
            times = [rule_round(group, twins, windows, NOW_MS) for _ in range(rounds)]
            reference.append((expr, len(kind.devices), statistics.median(times)))
    finally:
        await service.close()
        await store.close()
    return Result(
        devices,
        rounds,
        runs,
        start_s,
        points,
        train_s,
        statistics.median(selects),
        reference,
        len(twins),
        live_bytes,
    )


# -- memory (in a fresh process) ----------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(registry_dir: Path) -> None:
    """Print, as JSON, what loading every shipped model's current version costs."""
    import daemon.core.rul
    import daemon.core.trees  # noqa: F401 - imported before measuring: code is not model data

    specs, problems = load_models([MODELS_DIR])
    assert not problems, problems
    registry = ModelRegistry(registry_dir)

    def load(spec: ModelSpec) -> Any:
        number = registry.current(spec.name)
        assert number is not None
        meta, arrays = registry.load(spec.name, number)
        return restore(spec, number, meta, arrays)

    load(specs[0])  # warm the loading code paths once (first-call caches, lazy imports)
    gc.collect()
    before = rss_bytes()
    kept = [load(spec) for spec in specs]
    gc.collect()
    after = rss_bytes()
    traced: dict[str, int] = {}
    disk: dict[str, int] = {}
    tracemalloc.start()
    again = []
    for spec in specs:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        again.append(load(spec))
        gc.collect()
        traced[spec.name] = tracemalloc.get_traced_memory()[0] - base
        folder = registry_dir / spec.name / f"v{registry.current(spec.name):04d}"
        disk[spec.name] = sum(p.stat().st_size for p in folder.iterdir())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(kept) == len(again)
    print(
        json.dumps(
            {"rss_before": before, "rss_after": after, "traced": traced, "disk": disk, "peak": peak}
        )
    )


def memory(registry_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--memory-of", str(registry_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- report -------------------------------------------------------------------------------------
def percent(share: float) -> str:
    return f"{100 * share:.0f} %"


def mib(size: float) -> str:
    return f"{size / 2**20:.2f} MiB"


def kib(size: float) -> str:
    return f"{size / 1024:,.0f} KiB"


def report(result: Result, command: str) -> str:
    runs = result.runs
    lines = [
        "| model | kind | devices scored | median round | share of its interval | "
        "scorings/s | rows | predict | write | other | median output |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        p = run.parts
        unit = "(score)" if run.kind == "anomaly" else run.unit
        lines.append(
            f"| {run.name} | {run.kind} ({run.detector}) | {run.scored:,} | {run.median:.3f} s | "
            f"{100 * run.median / run.interval_s:.1f} % of {run.interval_s:g} s | "
            f"{run.scored / run.median:,.0f} | {percent(p['rows'])} | {percent(p['predict'])} | "
            f"{percent(p['write'])} | {percent(p['other'])} | {run.output:.3g} {unit} |"
        )
    scorings = sum(run.scored for run in runs)
    total = sum(run.median for run in runs)
    rate = scorings / total
    lines.append(
        f"| all {len(runs)} models | | {scorings:,} | {total:.3f} s | | {rate:,.0f} | | | | | |"
    )
    ref_devices = sum(d for _, d, _ in result.reference)
    ref_seconds = sum(s for _, _, s in result.reference)
    ref_rate = ref_devices / ref_seconds
    exprs = "; ".join(f"`{e}`" for e, _, _ in result.reference)
    lines.append(
        f"| reference: one threshold rule per kind | rule | {ref_devices:,} | "
        f"{ref_seconds:.3f} s | | {ref_rate:,.0f} | | | | | |"
    )
    slowest = sorted(runs, key=lambda run: run.median, reverse=True)[:3]
    three = sum(run.median for run in slowest)
    three_scored = sum(run.scored for run in slowest)
    mem = result.memory
    traced_total = sum(mem["traced"].values())
    disk_total = sum(mem["disk"].values())
    memory_lines = [
        "| model | artefact on disk | loaded (tracemalloc) |",
        "| --- | ---: | ---: |",
        *(
            f"| {name} | {kib(mem['disk'][name])} | {kib(mem['traced'][name])} |"
            for name in mem["traced"]
        ),
        f"| all {len(mem['traced'])} models | {kib(disk_total)} | {kib(traced_total)} |",
    ]
    text = [
        f"```\n{command}\n```",
        "",
        f"Machine: {machine()}. Fleet: {result.devices:,} devices per device kind, each model "
        f"scoring all {result.devices:,} devices of its kind; median of {result.rounds} rounds "
        f"after a warm-up round; rows, predict, write and other are the shares of one more "
        f"round timed part by part.",
        "",
        *lines,
        "",
        f"- All shipped models: **{rate:,.0f} device-model scorings/s**, "
        f"{rate / ref_rate:.2f}x the reference's {ref_rate:,.0f} rule device-evaluations/s "
        f"(one scoring costs {ref_rate / rate:.1f} rule evaluations). Reference rules: {exprs}.",
        f"- {result.devices:,} devices x 3 models (the three slowest: "
        f"{', '.join(run.name for run in slowest)}): {three:.2f} s a round, "
        f"{three_scored / three:,.0f} scorings/s.",
        f"- Of a round, selecting the matching devices (`match` over all "
        f"{result.twins:,} twins) takes "
        f"{result.select_s / len(runs):.3f} s per model, inside `other`.",
        f"- Loading the {len(runs)} versions through `ModelService.start()` (specs, registry, "
        f"checksums, restore): {result.start_s * 1000:.0f} ms.",
        "",
        *memory_lines,
        "",
        f"RSS of a fresh process before and after loading the {len(mem['traced'])} trained "
        f"models: {mib(mem['rss_before'])} -> {mib(mem['rss_after'])} "
        f"(+{mib(mem['rss_after'] - mem['rss_before'])}). What scoring keeps per device and "
        f"model (the latest explanation, the output's window series, the store's series id; "
        f"tracemalloc over the warm-up round): {mib(result.live_bytes)} for {scorings:,} "
        f"device-model pairs, {result.live_bytes / scorings:,.0f} bytes each.",
    ]
    return "\n".join(text)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"
    )


def write_docs(block: str) -> None:
    path = DOCS
    replace_block(path, MARK_START, MARK_END, block)
    print(f"wrote the figures into {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="devices per device kind")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--memory-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of is not None:
        memory_child(args.memory_of)
        return
    if args.devices < 1 or args.rounds < 1:
        parser.error("--devices and --rounds must be at least 1")
    specs, problems = load_models([MODELS_DIR])
    if problems:
        sys.exit("\n".join(str(p) for p in problems))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="models-live-") as folder:
        tmp = Path(folder)
        result = asyncio.run(measure(specs, args.devices, args.rounds, tmp))
        result.memory = memory(tmp / "models")
    command = f"python benchmarks/models_live.py --devices {args.devices} --rounds {args.rounds}"
    block = report(result, command)
    print()
    print(block)
    print(f"\n(whole run {time.perf_counter() - started:.0f} s, training {result.train_s:.0f} s)")
    if args.write_docs:
        write_docs(block)


if __name__ == "__main__":
    main()
