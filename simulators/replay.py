"""Replay a CSV file over MQTT as one device's telemetry: one `{"ts", "values"}` message per row.

The columns keep the names the file gives them (`Volume Flow RateRMS`): Frontline stores them
under their canonical names (docs/devices.md, "Names"). The time column (detected as
`frontline detect` does, or named) gives each row's time; by default the times are shifted so
that the last row is now, spacing kept, so the points fall inside `store.retention`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from daemon.cli.detect import Table, number_cell, read_table, time_column, times_of
from simulators.burst import publish_burst


@dataclass(frozen=True)
class ReplayPlan:
    device: str
    time_column: str | None = None
    keep_time: bool = False
    exclude: frozenset[str] = frozenset()
    prefix: str = "devices"
    step_ms: int = 1000  # between rows when the file has no time column


def messages(table: Table, plan: ReplayPlan, now_ms: int) -> Iterator[tuple[str, bytes]]:
    """Yield (topic, payload) for every row; empty and non-finite cells are left out."""
    column = time_column(table, plan.time_column)
    if column is None:
        stamps = [now_ms - plan.step_ms * (len(table.rows) - 1 - i) for i in range(len(table.rows))]
    else:
        stamps = [int(t) for t in times_of(table, column)]
        if not plan.keep_time:
            shift = now_ms - max(stamps)
            stamps = [t + shift for t in stamps]
    names = [
        (index, name)
        for index, name in enumerate(table.header)
        if name != column and name not in plan.exclude
    ]
    topic = f"{plan.prefix}/{plan.device}/telemetry"
    for ts, row in zip(stamps, table.rows, strict=True):
        values: dict[str, float | str] = {}
        for index, name in names:
            cell = row[index]
            value = number_cell(cell)
            if value is None:
                if cell.strip():
                    values[name] = cell.strip()
            elif not math.isnan(value):
                values[name] = value
        if values:
            yield topic, orjson.dumps({"ts": ts, "values": values})


def replay(
    path: Path,
    plan: ReplayPlan,
    host: str = "127.0.0.1",
    port: int = 1883,
    username: str | None = None,
    password: str | None = None,
) -> tuple[int, float]:
    """Publish every row of `path` at QoS 1; return (messages, seconds), all acknowledged."""
    table = read_table(path)
    stream = messages(table, plan, time.time_ns() // 1_000_000)
    return publish_burst(
        port,
        stream,
        host=host,
        client_id=f"frontline-replay-{plan.device}"[:64],
        username=username,
        password=password,
    )
