"""Service outcomes: a simulated fleet with faults, through the real daemon, scored against truth.

Starts Mosquitto from the project's `mosquitto.conf` on a free port, the daemon (`frontline run`
as a child process, as a user runs it) with the shipped rules (`rules/`) and learned models
(`models/`), and the simulated fleet of the scenario with its ground-truth log. When the scenario
has a `history:` the fleet first publishes its simulated past (12 hours of telemetry, with
run-to-failure episodes), then `frontline train` fits the models on what the daemon stored, and
only then does the live run begin. Near the end it runs the scheduled usage groups once (as
`frontline evaluate GROUP` would), stops the daemon with SIGTERM, then the fleet, and joins what
the daemon did (alert transitions, remediations, notices, tickets, from its state DB) with what
the simulator injected (the ground truth). Prints one table; `--write-docs` also writes it, as
one column per rule set, into `docs/benchmarks.md`. Usage:

    python benchmarks/service_outcomes.py [--scenario simulators/scenarios/service.yaml]
        [--rules rules] [--models models | --no-models] [--settle 60] [--write-docs] [--keep]
    python benchmarks/service_outcomes.py --rules benchmarks/service/rules --no-models

Each fault is classed by its true fix (the ground truth's `fix`, and the device's behaviours):
`m2m` (a command clears it), `h2m` (the customer does, once guided), `technician` (hardware,
wear, a broken relation, or a command the device refuses), `offline` (the connection drops and
comes back), `observe` (noise nobody can fix). Beside the targets of issue 5 (detected >= 95 %,
every m2m fault auto-remediated and verified, no duplicate ticket, no ticket missing context) it
measures what learned models are for: faults detected before the customer-visible impact the
simulator logs (`customer_impact_at`) and by how much, detection by fault kind (including the
kinds no rule targets: decorrelate, wear), and false alerts per 1,000 device-hours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.adapters.mosquitto import MosquittoProcess, free_port  # noqa: E402
from daemon.adapters.rule_files import load_rules  # noqa: E402
from daemon.adapters.service_files import load_routing  # noqa: E402
from daemon.adapters.state_sqlite import SqliteStateStore  # noqa: E402
from daemon.cli.output import post_to_daemon  # noqa: E402
from daemon.config import HttpSettings, Settings  # noqa: E402
from daemon.demo import daemon_env, spawn_daemon, wait_ready  # noqa: E402
from daemon.metrics import parse_metrics  # noqa: E402
from simulators.fleet import Fleet, FleetOptions  # noqa: E402
from simulators.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "simulators" / "scenarios" / "service.yaml"
SHIPPED_RULES = ROOT / "rules"
MODELS = ROOT / "models"
# Written for the simulator's physics (each rule checks one relation of a model); scored side by
# side with the shipped set, and the rule set of the chaos test and the end-to-end service test.
RULES = ROOT / "benchmarks" / "service" / "rules"
SERVICE = ROOT / "rules" / "service"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- service-outcomes:begin -->", "<!-- service-outcomes:end -->"
ADVISORY_CATEGORIES = {"usage", "customer-success"}
# A ticket or alert belongs to a fault when it comes between the fault's start and this long
# after its end (a verification or a quiet period outlives the fault).
ATTRIBUTION_S = 180.0
CONNECTIVITY_FAULTS = {"offline", "dropout"}  # answered by connectivity-category alerts
# Kinds no rule targets: only a learned model can see them (docs/simulators.md).
MODEL_KINDS = ("decorrelate", "wear")


# -- ground truth -------------------------------------------------------------------------------
@dataclass
class Fault:
    fault_id: str
    device: str
    kind: str
    fix_type: str
    fix_method: str | None
    start_ms: int
    end_ms: int | None = None
    end_reason: str | None = None
    klass: str = ""
    guided_fix: bool = False  # the customer fixes it once told (customer_fix_from: notice)
    impact_ms: int | None = None  # when the customer would notice (ground truth)


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def read_truth(
    lines: list[dict[str, Any]], rejects: dict[str, set[str]]
) -> tuple[list[Fault], dict[str, str]]:
    """Return the injected faults (classed by their true fix) and each device's usage profile.

    Faults of the simulated past (``"history": true``: the training data's wear runs) are not
    the live run's and are left out.
    """
    faults: dict[str, Fault] = {}
    usage: dict[str, str] = {}
    for line in lines:
        event = line.get("event")
        if line.get("history"):
            continue
        if event == "usage_profile":
            usage[line["device"]] = line["profile"]
        elif event == "fault_started":
            fix = line.get("fix") or {}
            fault = Fault(
                fault_id=line["fault_id"],
                device=line["device"],
                kind=line["kind"],
                fix_type=fix.get("type", "none"),
                fix_method=fix.get("method"),
                start_ms=_ms(line["start"]),
                guided_fix=(line.get("customer_fix") or {}).get("from") == "notice",
                impact_ms=_ms(line["customer_impact_at"])
                if line.get("customer_impact_at")
                else None,
            )
            fault.klass = _klass(fault, rejects.get(fault.device, set()))
            faults[fault.fault_id] = fault
        elif event == "fault_ended" and line["fault_id"] in faults:
            faults[line["fault_id"]].end_ms = _ms(line["end"])
            faults[line["fault_id"]].end_reason = line["reason"]
    return list(faults.values()), usage


def read_guidance(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return what the simulated customers received about live faults (``customer_guided``)."""
    return [line for line in lines if line.get("event") == "customer_guided" and line["fault_id"]]


def _klass(fault: Fault, rejected: set[str]) -> str:
    if fault.fix_type == "command":
        return "technician" if fault.fix_method in rejected else "m2m"
    if fault.fix_type == "customer":
        return "h2m"
    if fault.kind in ("hardware", *MODEL_KINDS):
        return "technician"
    if fault.kind == "offline":
        return "offline"
    return "observe"


# -- what the daemon did ------------------------------------------------------------------------
@dataclass
class Outcome:
    firings: list[dict[str, Any]]  # alert transitions to firing
    remediations: list[dict[str, Any]]
    tickets: list[dict[str, Any]]
    notices: list[dict[str, Any]]


async def read_outcome(state_db: Path) -> Outcome:
    store = SqliteStateStore(state_db)
    await store.open()
    try:
        events = await store.alert_events(limit=1_000_000)
        remediations = [orjson.loads(r) for r in await store.load_remediations()]
        tickets = [orjson.loads(t) for t in await store.load_tickets()]
        notices = await store.notices(limit=1_000_000)
    finally:
        await store.close()
    firings = [e for e in events if e.get("to_phase") == "firing" and not e.get("dry_run")]
    return Outcome(sorted(firings, key=lambda e: e["at_ms"]), remediations, tickets, notices)


def _advisory(labels: dict[str, Any]) -> bool:
    return labels.get("category") in ADVISORY_CATEGORIES


REQUIRED_CONTEXT = (
    "summary",
    "category",
    "priority",
    "skill",
    "queue",
    "context.device.metrics",
    "context.device.meta",
    "context.device.last_seen",
    "context.live",
    "context.telemetry.series",
    "context.rule.expr",
    "context.trigger.fired_at",
    "context.customer.name",
    "context.customer.tier",
    "context.customer.contact",
    "context.runbook.steps",
    "timeline",
)


def missing_context(ticket: dict[str, Any], remediated: bool) -> list[str]:
    """Return the context fields a ticket lacks (empty values count as missing).

    The remediation log is required when the ticket's rule had remediation steps; telemetry must
    hold at least one point.
    """
    missing = []
    for path in REQUIRED_CONTEXT:
        value: Any = ticket
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        empty = value in (None, "", [], {})
        if empty or (path == "context.telemetry.series" and not any(value.values())):
            missing.append(path)
    if remediated and not ticket.get("context", {}).get("remediation"):
        missing.append("context.remediation")
    return missing


# -- scoring ------------------------------------------------------------------------------------
@dataclass
class FaultScore:
    fault: Fault
    detected_ms: int | None = None
    acted_ms: int | None = None
    remediated: bool = False  # the daemon verified a fix it commanded
    guided: bool = False
    tickets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fixed_by_command(self) -> bool:
        """Ground truth: a command ended the fault."""
        return (self.fault.end_reason or "").startswith("command:")

    @property
    def fixed_by_customer(self) -> bool:
        return self.fault.end_reason == "customer"

    @property
    def lead_ms(self) -> int | None:
        """Return how long before the customer-visible impact it was detected (None: not)."""
        if self.detected_ms is None or self.fault.impact_ms is None:
            return None
        lead = self.fault.impact_ms - self.detected_ms
        return lead if lead > 0 else None


@dataclass
class Report:
    faults: list[FaultScore]
    false_tickets: list[dict[str, Any]]
    duplicate_tickets: int
    missing: dict[str, list[str]]  # ticket id -> fields
    misrouted: list[str]  # ticket ids whose assignee lacks the skill
    advisories: dict[str, list[str]]  # device -> advisory ticket ids
    usage: dict[str, str]
    false_alerts: list[dict[str, Any]] = field(default_factory=list)  # firings, no fault active
    device_hours: float = 0.0
    guidance: list[dict[str, Any]] = field(default_factory=list)  # customer_guided lines

    def by_class(self, klass: str) -> list[FaultScore]:
        return [s for s in self.faults if s.fault.klass == klass]

    def by_kind(self, kind: str) -> list[FaultScore]:
        return [s for s in self.faults if s.fault.kind == kind]


def score(
    faults: list[Fault],
    usage: dict[str, str],
    outcome: Outcome,
    run_end_ms: int,
    skills: dict[str, frozenset[str]],
    *,
    run_start_ms: int | None = None,
    guidance: list[dict[str, Any]] | None = None,
) -> Report:
    """Join the ground truth with what the daemon did; `skills` is the roster (agent -> skills).

    A firing is false when no fault is active on its device (nor ended less than
    ``ATTRIBUTION_S`` before: a verification or a ``keep_firing_for`` outlives its fault);
    device-hours count every device of ``usage`` from ``run_start_ms`` (default: the first
    fault's start) to ``run_end_ms``.
    """
    scores = {f.fault_id: FaultScore(f) for f in faults}
    by_device: dict[str, list[Fault]] = defaultdict(list)
    for fault in faults:
        by_device[fault.device].append(fault)

    # What each alert is about: a connectivity alert answers an offline or dropout fault.
    category = {
        (e["device"], e["alert"]): (e.get("labels") or {}).get("category") for e in outcome.firings
    }

    def owner(device: str, at_ms: int, alert: str | None = None) -> Fault | None:
        """The fault on `device` that an action at `at_ms` (about `alert`) answers.

        Among the faults active then (or shortly before), those of the alert's kind, then the
        latest started.
        """
        window = [
            f
            for f in by_device.get(device, [])
            if f.start_ms <= at_ms <= (f.end_ms or run_end_ms) + ATTRIBUTION_S * 1000
        ]
        if alert is not None and (device, alert) in category:
            connectivity = category[device, alert] == "connectivity"
            window = [
                f for f in window if (f.kind in CONNECTIVITY_FAULTS) == connectivity
            ] or window
        return max(window, key=lambda f: f.start_ms) if window else None

    false_alerts = []
    for event in outcome.firings:
        if _advisory(event.get("labels") or {}):
            continue
        found = owner(event["device"], event["at_ms"], event["alert"])
        if found is None:
            false_alerts.append(event)
        elif scores[found.fault_id].detected_ms is None:
            scores[found.fault_id].detected_ms = event["at_ms"]

    def acted(device: str, at_ms: int, alert: str) -> None:
        found = owner(device, at_ms, alert)
        if found is not None:
            s = scores[found.fault_id]
            s.acted_ms = at_ms if s.acted_ms is None else min(s.acted_ms, at_ms)

    remediated_keys = set()
    for rem in outcome.remediations:
        remediated_keys.add(rem["key"])
        for entry in rem.get("log", []):
            if entry["event"] in {"sent", "no reply: sent again"}:
                acted(rem["device"], entry["at_ms"], rem["alert"])
            if entry["event"] == "cleared" and rem.get("sends", 0) > 0:
                found = owner(rem["device"], entry["at_ms"], rem["alert"])
                if found is not None:
                    scores[found.fault_id].remediated = True
    for notice in outcome.notices:
        if notice.get("kind") == "guidance":
            acted(notice["device"], notice["at_ms"], notice["alert"])
            found = owner(notice["device"], notice["at_ms"], notice["alert"])
            if found is not None:
                scores[found.fault_id].guided = True

    false_tickets: list[dict[str, Any]] = []
    missing: dict[str, list[str]] = {}
    misrouted: list[str] = []
    advisories: dict[str, list[str]] = defaultdict(list)
    duplicates = 0
    for ticket in sorted(outcome.tickets, key=lambda t: t["created_ms"]):
        gaps = missing_context(ticket, ticket["key"] in remediated_keys)
        if gaps:
            missing[ticket["id"]] = gaps
        assignee = ticket.get("assignee")
        if assignee and ticket["skill"] not in skills.get(assignee, frozenset()):
            misrouted.append(ticket["id"])
        if ticket["kind"] == "advisory":
            advisories[ticket["device"]].append(ticket["id"])
            continue
        found = owner(ticket["device"], ticket["created_ms"], ticket["alert"])
        if found is None:
            false_tickets.append(ticket)
            continue
        acted(ticket["device"], ticket["created_ms"], ticket["alert"])
        scores[found.fault_id].tickets.append(ticket)
    for s in scores.values():
        duplicates += max(len({t["key"] for t in s.tickets}) - 1, 0)  # two alerts, one fault
        per_key: dict[str, int] = defaultdict(int)
        for t in s.tickets:
            per_key[t["key"]] += 1
        duplicates += sum(n - 1 for n in per_key.values())  # one alert, reopened
    start_ms = run_start_ms
    if start_ms is None:
        start_ms = min((f.start_ms for f in faults), default=run_end_ms)
    device_hours = len(usage) * max(run_end_ms - start_ms, 0) / 3_600_000
    return Report(
        list(scores.values()),
        false_tickets,
        duplicates,
        missing,
        misrouted,
        advisories,
        usage,
        false_alerts=false_alerts,
        device_hours=device_hours,
        guidance=list(guidance or []),
    )


# -- table --------------------------------------------------------------------------------------
def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "n/a"


def _seconds(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.0f} s / {p95:.0f} s"


def _lead(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.0f} s / {min(values):.0f} s"


def per_1000_device_hours(count: int, device_hours: float) -> str:
    if device_hours <= 0:
        return "n/a"
    return f"{1000 * count / device_hours:.0f} ({count} in {device_hours:.1f} device-hours)"


def table(report: Report) -> list[tuple[str, str]]:
    faults = report.faults
    detected = [s for s in faults if s.detected_ms is not None]
    ttd = [(s.detected_ms - s.fault.start_ms) / 1000 for s in detected if s.detected_ms]
    tta = [(s.acted_ms - s.fault.start_ms) / 1000 for s in faults if s.acted_ms is not None]
    with_impact = [s for s in faults if s.fault.impact_ms is not None]
    leads = [s.lead_ms / 1000 for s in with_impact if s.lead_ms is not None]
    m2m = report.by_class("m2m")
    h2m = report.by_class("h2m")
    told = [s for s in h2m if s.fault.guided_fix]
    tech = report.by_class("technician")
    m2m_open = [s for s in m2m if any(t["status"] != "resolved" for t in s.tickets)]
    abnormal = {d for d, p in report.usage.items() if p != "normal"}
    adv_right = sum(1 for d in abnormal if report.advisories.get(d))
    adv_wrong = sum(1 for d in report.advisories if d not in abnormal)
    fitting = [g for g in report.guidance if g["steps_matched"]]
    rows = [
        ("faults injected", f"{len(faults)} ({_classes([s.fault for s in faults])})"),
        ("faults detected", _pct(len(detected), len(faults))),
        (
            "faults detected before the customer-visible impact",
            _pct(len(leads), len(with_impact)),
        ),
        ("lead time before the impact, median / shortest", _lead(leads)),
        ("time to detect, median / p95", _seconds(ttd)),
        ("time to first action, median / p95", _seconds(tta)),
        (
            "false alerts (firing, no fault on the device) per 1,000 device-hours",
            per_1000_device_hours(len(report.false_alerts), report.device_hours),
        ),
    ]
    for kind in sorted({s.fault.kind for s in faults}):
        scores = report.by_kind(kind)
        impact = [s for s in scores if s.fault.impact_ms is not None]
        early = sum(1 for s in impact if s.lead_ms is not None)
        hits = sum(1 for s in scores if s.detected_ms is not None)
        label = f"detected: {kind}" + (" (no rule targets it)" if kind in MODEL_KINDS else "")
        value = _pct(hits, len(scores))
        if impact:
            value += f", {early}/{len(impact)} before impact"
        rows.append((label, value))
    rows += [
        (
            "m2m faults auto-remediated and verified",
            _pct(sum(1 for s in m2m if s.remediated and s.fixed_by_command), len(m2m)),
        ),
        ("m2m faults left with an open ticket", str(len(m2m_open))),
        ("h2m faults with guidance sent", _pct(sum(1 for s in h2m if s.guided), len(h2m))),
        (
            "guidance that reached a faulty device with steps that fit its fault",
            _pct(len(fitting), len(report.guidance)),
        ),
        (
            "customers who act on guidance: fixed after the notice",
            _pct(sum(1 for s in told if s.guided and s.fixed_by_customer), len(told)),
        ),
        (
            "technician faults with exactly one ticket",
            _pct(sum(1 for s in tech if len(s.tickets) == 1), len(tech)),
        ),
        ("false tickets (no fault on the device)", str(len(report.false_tickets))),
        ("duplicate tickets", str(report.duplicate_tickets)),
        ("tickets missing a context field", str(len(report.missing))),
        ("tickets assigned to an agent without the skill", str(len(report.misrouted))),
        ("advisories for unused/misused devices", _pct(adv_right, len(abnormal))),
        ("advisories for normally used devices", str(adv_wrong)),
    ]
    return rows


def _classes(faults: list[Fault]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for f in faults:
        counts[f.klass] += 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def details(report: Report) -> list[str]:
    lines = []
    for s in sorted(report.faults, key=lambda s: s.fault.start_ms):
        f = s.fault
        ttd = f"{(s.detected_ms - f.start_ms) / 1000:.0f}s" if s.detected_ms else "-"
        tta = f"{(s.acted_ms - f.start_ms) / 1000:.0f}s" if s.acted_ms else "-"
        lead = "-"
        if f.impact_ms is not None:
            lead = f"{s.lead_ms / 1000:.0f}s" if s.lead_ms is not None else "late"
        tickets = ",".join(f"{t['alert']}:{t['status']}" for t in s.tickets) or "-"
        lines.append(
            f"{f.fault_id:32} {f.klass:10} detect {ttd:>5} act {tta:>5} lead {lead:>5} "
            f"remediated={'y' if s.remediated else 'n'} end={f.end_reason or '-'} "
            f"guided={'y' if s.guided else 'n'} tickets={tickets}"
        )
    for t in report.false_tickets:
        lines.append(f"false ticket {t['id']} {t['alert']} on {t['device']}")
    for event in report.false_alerts:
        lines.append(f"false alert {event['alert']} on {event['device']}")
    for tid, gaps in report.missing.items():
        lines.append(f"ticket {tid} misses {', '.join(gaps)}")
    for g in report.guidance:
        lines.append(
            f"guidance {g['alert']} on {g['device']} for {g['fault_id']}: "
            f"steps fit={'y' if g['steps_matched'] else 'n'} complied={g['complied']} "
            f"({g['why']})"
        )
    return lines


# -- docs: one column per rule set --------------------------------------------------------------
@dataclass
class Column:
    label: str  # e.g. "rules/ + models/"
    command: str
    setup: str
    values: dict[str, str]


_NOTE = re.compile(r"^- \*\*(?P<label>.+?)\*\*: `(?P<command>[^`]+)` \((?P<setup>.*)\)\.$")


def parse_columns(text: str) -> list[Column]:
    """Return the columns of a table written by `markdown` (empty if there is none)."""
    notes = {}
    for line in text.splitlines():
        found = _NOTE.match(line.strip())
        if found:
            notes[found["label"]] = (found["command"], found["setup"])
    rows = [line for line in text.splitlines() if line.startswith("|")]
    if len(rows) < 2:
        return []
    labels = [cell.strip() for cell in rows[0].strip("|").split("|")][1:]
    columns = [Column(label, *notes.get(label, ("", "")), {}) for label in labels]
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for column, value in zip(columns, cells[1:], strict=False):
            if value != "—":
                column.values[cells[0]] = value
    return columns


def markdown(columns: list[Column]) -> str:
    """Return the docs block: how each column was measured, then the table."""
    out = [BEGIN, "", "Measured with:", ""]
    out += [f"- **{c.label}**: `{c.command}` ({c.setup})." for c in columns]
    names: list[str] = []
    for column in columns:
        names += [name for name in column.values if name not in names]
    out += ["", "| outcome | " + " | ".join(c.label for c in columns) + " |"]
    out.append("|---|" + "---|" * len(columns))
    for name in names:
        cells = [c.values.get(name, "—") for c in columns]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([*out, "", END])


def write_docs(column: Column) -> None:
    """Put ``column`` into the table of docs/benchmarks.md, keeping the other rule sets' columns.

    The column replaces the one with the same label, in its place; a new label is appended.
    """
    doc = DOCS.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    found = pattern.search(doc)
    columns = parse_columns(found.group(0)) if found else []
    columns = [c for c in columns if c.command]  # a table of an older format is replaced
    labels = [c.label for c in columns]
    if column.label in labels:
        columns[labels.index(column.label)] = column
    else:
        columns.append(column)
    text = markdown(columns)
    if found:
        doc = pattern.sub(lambda _: text, doc)
    else:
        doc = doc.rstrip("\n") + "\n\n## Service outcomes\n\n" + text + "\n"
    DOCS.write_text(doc, encoding="utf-8")


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Prelude:
    """What happened before the live run: the history backfill and the training."""

    history_messages: int = 0
    history_s: float = 0.0
    ingest_s: float = 0.0
    train_s: float | None = None
    train_code: int | None = None
    train_output: str = ""


def models_dir(args: argparse.Namespace) -> Path | None:
    """Return the model specs to score, or None: `--no-models`, or no such folder (yet)."""
    if args.no_models:
        return None
    path: Path = args.models
    if not path.exists():
        print(f"  models: {path} does not exist; scoring the rules alone", flush=True)
        return None
    return path


def has_train_command() -> bool:
    """Return True when this checkout's CLI has `frontline train` (learned models are in)."""
    from daemon.cli import cli

    return "train" in cli.commands


def has_models_settings() -> bool:
    return "models" in Settings.model_fields


def daemon_environment(
    args: argparse.Namespace, broker: MosquittoProcess, workdir: Path, http_port: int
) -> dict[str, str]:
    env = daemon_env(broker.host, broker.port, workdir / "data", http_port)
    env.update(
        FRONTLINE_RULES__PATHS=json.dumps([str(args.rules)]),
        FRONTLINE_ACTIONS__ROUTING=str(args.routing),
        FRONTLINE_ACTIONS__CUSTOMERS=str(args.customers),
        # The daemon starts with the fleet: a short grace lets offline rules speak in 10 minutes.
        FRONTLINE_RULES__OUTAGE_GRACE="10s",
        FRONTLINE_ACTIONS__QUIET_PERIOD=f"{args.quiet}s",
        FRONTLINE_ACTIONS__GUIDANCE_TIMEOUT=f"{args.guidance_timeout}s",
    )
    if has_models_settings():
        models = models_dir(args)
        if models is None:
            env["FRONTLINE_MODELS__ENABLED"] = "false"
        else:
            env["FRONTLINE_MODELS__PATHS"] = json.dumps([str(models)])
    return env


def _scrape(http_port: int) -> tuple[float, float]:
    """Return (messages received, points written) from the daemon's /metrics."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        snap = parse_metrics(answer.read().decode())
    return snap.received, snap.stored


async def wait_ingested(http_port: int, messages: int, limit_s: float = 300.0) -> None:
    """Wait until the daemon received ``messages`` and its written points stopped growing."""
    deadline = time.monotonic() + limit_s
    last = -1.0
    while time.monotonic() < deadline:
        received, stored = await asyncio.to_thread(_scrape, http_port)
        if received >= messages and stored == last:
            return
        last = stored
        await asyncio.sleep(1.0)
    raise SystemExit(f"the daemon did not ingest the history within {limit_s:.0f} s")


async def backfill(
    planned: FleetOptions, broker: MosquittoProcess, truth: Path, http_port: int
) -> Prelude:
    """Publish the scenario's history (the fleet's past) and wait until the daemon stored it."""
    prelude = Prelude()
    received_before, _ = await asyncio.to_thread(_scrape, http_port)
    options = replace(
        planned, host=broker.host, port=broker.port, ground_truth=truth, history_mode="only"
    )
    fleet = Fleet(options)
    started = time.monotonic()
    await fleet.run()
    prelude.history_s = time.monotonic() - started
    prelude.history_messages = fleet.stats.history_published
    print(
        f"  history: {prelude.history_messages} messages published in {prelude.history_s:.1f} s",
        flush=True,
    )
    started = time.monotonic()
    await wait_ingested(http_port, int(received_before) + prelude.history_messages)
    prelude.ingest_s = time.monotonic() - started
    print(f"  history: stored by the daemon {prelude.ingest_s:.1f} s later", flush=True)
    return prelude


async def train(env: dict[str, str], workdir: Path, prelude: Prelude) -> None:
    """Run `frontline train` on the daemon's data dir (the daemon picks the versions up)."""
    started = time.monotonic()
    process = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "daemon", "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    prelude.train_s = time.monotonic() - started
    prelude.train_code = process.returncode
    prelude.train_output = (process.stdout + process.stderr).strip()
    (workdir / "train.log").write_text(prelude.train_output, encoding="utf-8")
    print(f"  frontline train: exit {process.returncode} in {prelude.train_s:.1f} s", flush=True)
    for line in prelude.train_output.splitlines()[-12:]:
        print(f"    {line}", flush=True)


async def run(args: argparse.Namespace, workdir: Path) -> tuple[Report, float]:
    scenario = load_scenario(args.scenario)
    duration = float(args.duration or scenario.duration or 600.0)
    groups, problems = load_rules([args.rules])
    if problems:
        raise SystemExit("\n".join(str(p) for p in problems))
    scheduled = [g.name for g in groups if g.schedule]
    broker = MosquittoProcess(workdir / "mosquitto")
    broker.start()
    http_port = free_port()
    env = daemon_environment(args, broker, workdir, http_port)
    daemon = spawn_daemon(env, workdir / "daemon.log")
    truth = workdir / "ground-truth.jsonl"
    fleet_task: asyncio.Task[None] | None = None
    planned = scenario.options(FleetOptions())
    api = Settings(http=HttpSettings(host="127.0.0.1", port=http_port))
    daemon_start_ms = int(time.time() * 1000)
    args.prelude = Prelude()  # read by column_of for the docs' setup line
    try:
        await asyncio.to_thread(wait_ready, http_port, daemon)
        if planned.history is not None and not args.no_history:
            args.prelude = await backfill(planned, broker, truth, http_port)
            if models_dir(args) is not None:
                if has_train_command():
                    await train(env, workdir, args.prelude)
                else:
                    print("  models: `frontline train` is not in this checkout yet", flush=True)
        options = replace(
            planned,
            host=broker.host,
            port=broker.port,
            ground_truth=truth,
            duration=None,  # stopped after the daemon, so its last evaluation sees a live fleet
            history_mode="skip",
        )
        fleet = Fleet(options)
        fleet_task = asyncio.create_task(fleet.run())
        started = time.monotonic()
        end = duration + args.settle
        usage_at = end - 15.0
        usage_done = False
        while (elapsed := time.monotonic() - started) < end:
            if fleet_task.done():
                fleet_task.result()
                raise SystemExit("the fleet stopped early")
            if not usage_done and elapsed >= usage_at:
                for group in scheduled:
                    path = f"/api/v1/rules/groups/{group}/evaluate"
                    answer = await asyncio.to_thread(post_to_daemon, api, path, {})
                    n = len(answer["transitions"])
                    print(f"  evaluated {group}: {n} transition(s)", flush=True)
                usage_done = True
            st = fleet.stats
            print(
                f"  {elapsed:4.0f}/{end:.0f} s  published {st.messages_published}  "
                f"faults {st.faults_injected} (active {st.faults_active})  "
                f"commands {st.commands_received}",
                flush=True,
            )
            next_stop = end if usage_done else min(usage_at, end)
            await asyncio.sleep(min(30.0, max(next_stop - elapsed, 0.1)))
        run_end_ms = int(time.time() * 1000)
        daemon.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(daemon.wait, 60)
        if code != 0:
            raise SystemExit(f"the daemon exited with {code}; see {workdir / 'daemon.log'}")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if fleet_task is not None:
            fleet_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fleet_task
        broker.stop()
    rejects = {d: set(b.rejects) for d, b in planned.behaviours.items()}
    lines = [orjson.loads(line) for line in truth.read_bytes().splitlines() if line.strip()]
    faults, usage = read_truth(lines, rejects)
    outcome = await read_outcome(workdir / "data" / "state.db")
    roster = {a.id: a.skills for a in load_routing(args.routing).agents}
    report = score(
        faults,
        usage,
        outcome,
        run_end_ms,
        roster,
        run_start_ms=daemon_start_ms,
        guidance=read_guidance(lines),
    )
    return report, duration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--rules", type=Path, default=SHIPPED_RULES, help="rule set [rules]")
    parser.add_argument(
        "--models", type=Path, default=MODELS, help="model specs [models; skipped if absent]"
    )
    parser.add_argument("--no-models", action="store_true", help="score the rules alone")
    parser.add_argument(
        "--no-history", action="store_true", help="skip the scenario's history (and training)"
    )
    parser.add_argument("--routing", type=Path, default=SERVICE / "routing.yaml")
    parser.add_argument("--customers", type=Path, default=SERVICE / "customers.yaml")
    parser.add_argument("--duration", type=float, help="seconds (default: the scenario's)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the scenario")
    parser.add_argument("--quiet", type=float, default=60.0, help="ticket quiet period, s")
    parser.add_argument("--guidance-timeout", type=float, default=180.0, help="seconds")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def column_of(args: argparse.Namespace, rows: list[tuple[str, str]], duration: float) -> Column:
    """Return this run's column of the docs table: its label, command, setup and figures."""
    models = models_dir(args)
    label = f"{_shown(args.rules)}/" + (f" + {_shown(models)}/" if models is not None else "")
    command = "python benchmarks/service_outcomes.py"
    if args.rules.resolve() != SHIPPED_RULES:
        command += f" --rules {_shown(args.rules)}"
    if models is None:
        command += " --no-models"
    elif args.models.resolve() != MODELS:
        command += f" --models {_shown(models)}"
    command += " --write-docs"
    prelude: Prelude = args.prelude
    setup = (
        f"scenario {args.scenario.name}, {duration:.0f} s + {args.settle:.0f} s settle, "
        f"quiet period {args.quiet:.0f} s, guidance timeout {args.guidance_timeout:.0f} s"
    )
    if prelude.history_messages:
        setup += (
            f"; history of {prelude.history_messages} messages published in "
            f"{prelude.history_s:.0f} s"
        )
    if prelude.train_s is not None:
        setup += f", `frontline train` {prelude.train_s:.0f} s (exit {prelude.train_code})"
    return Column(label, command, setup, dict(rows))


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="frontline-outcomes-"))
    try:
        report, duration = asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = table(report)
    width = max(len(name) for name, _ in rows)
    print()
    for line in details(report):
        print(line)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.write_docs:
        write_docs(column_of(args, rows, duration))
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
