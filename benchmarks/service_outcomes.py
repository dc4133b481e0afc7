"""Service outcomes: a simulated fleet with faults, through the real daemon, scored against truth.

Starts Mosquitto from the project's `mosquitto.conf` on a free port, the daemon (`frontline run`
as a child process, as a user runs it) with the benchmark's rule set, and the simulated fleet of
the scenario with its ground-truth log. Near the end it runs the scheduled usage groups once
(as `frontline evaluate GROUP` would), stops the daemon with SIGTERM, then the fleet, and joins
what the daemon did (alert transitions, remediations, notices, tickets, from its state DB) with
what the simulator injected (the ground truth). Prints one table; `--write-docs` also replaces
the table in `docs/benchmarks.md`. Usage:

    python benchmarks/service_outcomes.py [--scenario simulators/scenarios/service.yaml]
        [--rules benchmarks/service/rules] [--settle 60] [--write-docs] [--keep]

Each fault is classed by its true fix (the ground truth's `fix`, and the device's behaviours):
`m2m` (a command clears it), `h2m` (the customer does, once guided), `technician` (hardware, or
a command the device refuses), `offline` (the connection drops and comes back), `observe` (noise
nobody can fix). The figures, and the targets of issue 5: detected >= 95 %, every m2m fault
auto-remediated and verified, no duplicate ticket, no ticket missing context.
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
import sys
import tempfile
import time
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
from simulators.fleet import Fleet, FleetOptions  # noqa: E402
from simulators.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "simulators" / "scenarios" / "service.yaml"
RULES = ROOT / "benchmarks" / "service" / "rules"
SERVICE = ROOT / "rules" / "service"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- service-outcomes:begin -->", "<!-- service-outcomes:end -->"
ADVISORY_CATEGORIES = {"usage", "customer-success"}
# A ticket or alert belongs to a fault when it comes between the fault's start and this long
# after its end (a verification or a quiet period outlives the fault).
ATTRIBUTION_S = 180.0
CONNECTIVITY_FAULTS = {"offline", "dropout"}  # answered by connectivity-category alerts


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


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def read_truth(
    lines: list[dict[str, Any]], rejects: dict[str, set[str]]
) -> tuple[list[Fault], dict[str, str]]:
    """Return the injected faults (classed by their true fix) and each device's usage profile."""
    faults: dict[str, Fault] = {}
    usage: dict[str, str] = {}
    for line in lines:
        event = line.get("event")
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
            )
            fault.klass = _klass(fault, rejects.get(fault.device, set()))
            faults[fault.fault_id] = fault
        elif event == "fault_ended" and line["fault_id"] in faults:
            faults[line["fault_id"]].end_ms = _ms(line["end"])
            faults[line["fault_id"]].end_reason = line["reason"]
    return list(faults.values()), usage


def _klass(fault: Fault, rejected: set[str]) -> str:
    if fault.fix_type == "command":
        return "technician" if fault.fix_method in rejected else "m2m"
    if fault.fix_type == "customer":
        return "h2m"
    if fault.kind == "hardware":
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


@dataclass
class Report:
    faults: list[FaultScore]
    false_tickets: list[dict[str, Any]]
    duplicate_tickets: int
    missing: dict[str, list[str]]  # ticket id -> fields
    misrouted: list[str]  # ticket ids whose assignee lacks the skill
    advisories: dict[str, list[str]]  # device -> advisory ticket ids
    usage: dict[str, str]

    def by_class(self, klass: str) -> list[FaultScore]:
        return [s for s in self.faults if s.fault.klass == klass]


def score(
    faults: list[Fault],
    usage: dict[str, str],
    outcome: Outcome,
    run_end_ms: int,
    skills: dict[str, frozenset[str]],
) -> Report:
    """Join the ground truth with what the daemon did; `skills` is the roster (agent -> skills)."""
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

    for event in outcome.firings:
        if _advisory(event.get("labels") or {}):
            continue
        found = owner(event["device"], event["at_ms"], event["alert"])
        if found is not None and scores[found.fault_id].detected_ms is None:
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
    return Report(
        list(scores.values()), false_tickets, duplicates, missing, misrouted, advisories, usage
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


def table(report: Report) -> list[tuple[str, str]]:
    faults = report.faults
    detected = [s for s in faults if s.detected_ms is not None]
    ttd = [(s.detected_ms - s.fault.start_ms) / 1000 for s in detected if s.detected_ms]
    tta = [(s.acted_ms - s.fault.start_ms) / 1000 for s in faults if s.acted_ms is not None]
    m2m = report.by_class("m2m")
    h2m = report.by_class("h2m")
    told = [s for s in h2m if s.fault.guided_fix]
    tech = report.by_class("technician")
    m2m_open = [s for s in m2m if any(t["status"] != "resolved" for t in s.tickets)]
    abnormal = {d for d, p in report.usage.items() if p != "normal"}
    adv_right = sum(1 for d in abnormal if report.advisories.get(d))
    adv_wrong = sum(1 for d in report.advisories if d not in abnormal)
    return [
        ("faults injected", f"{len(faults)} ({_classes([s.fault for s in faults])})"),
        ("faults detected", _pct(len(detected), len(faults))),
        ("time to detect, median / p95", _seconds(ttd)),
        ("time to first action, median / p95", _seconds(tta)),
        (
            "m2m faults auto-remediated and verified",
            _pct(sum(1 for s in m2m if s.remediated and s.fixed_by_command), len(m2m)),
        ),
        ("m2m faults left with an open ticket", str(len(m2m_open))),
        ("h2m faults with guidance sent", _pct(sum(1 for s in h2m if s.guided), len(h2m))),
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
        tickets = ",".join(f"{t['alert']}:{t['status']}" for t in s.tickets) or "-"
        lines.append(
            f"{f.fault_id:32} {f.klass:10} detect {ttd:>5} act {tta:>5} "
            f"remediated={'y' if s.remediated else 'n'} end={f.end_reason or '-'} "
            f"guided={'y' if s.guided else 'n'} tickets={tickets}"
        )
    for t in report.false_tickets:
        lines.append(f"false ticket {t['id']} {t['alert']} on {t['device']}")
    for tid, gaps in report.missing.items():
        lines.append(f"ticket {tid} misses {', '.join(gaps)}")
    return lines


def markdown(rows: list[tuple[str, str]], command: str, setup: str) -> str:
    out = [BEGIN, "", f"Measured with `{command}` ({setup}).", ""]
    out += ["| outcome | figure |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join([*out, "", END])


def write_docs(text: str) -> None:
    doc = DOCS.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc)
    else:
        doc = doc.rstrip("\n") + "\n\n## Service outcomes\n\n" + text + "\n"
    DOCS.write_text(doc, encoding="utf-8")


# -- the run ------------------------------------------------------------------------------------
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
    daemon = spawn_daemon(env, workdir / "daemon.log")
    truth = workdir / "ground-truth.jsonl"
    fleet_task: asyncio.Task[None] | None = None
    planned = scenario.options(FleetOptions())
    api = Settings(http=HttpSettings(host="127.0.0.1", port=http_port))
    try:
        await asyncio.to_thread(wait_ready, http_port, daemon)
        options = replace(
            planned,
            host=broker.host,
            port=broker.port,
            ground_truth=truth,
            duration=None,  # stopped after the daemon, so its last evaluation sees a live fleet
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
    return score(faults, usage, outcome, run_end_ms, roster), duration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--rules", type=Path, default=RULES)
    parser.add_argument("--routing", type=Path, default=SERVICE / "routing.yaml")
    parser.add_argument("--customers", type=Path, default=SERVICE / "customers.yaml")
    parser.add_argument("--duration", type=float, help="seconds (default: the scenario's)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the scenario")
    parser.add_argument("--quiet", type=float, default=60.0, help="ticket quiet period, s")
    parser.add_argument("--guidance-timeout", type=float, default=180.0, help="seconds")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


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
        command = "python benchmarks/service_outcomes.py --write-docs"
        rules = args.rules.resolve()
        shown = rules.relative_to(ROOT) if rules.is_relative_to(ROOT) else rules
        setup = (
            f"scenario {args.scenario.name}, {duration:.0f} s + {args.settle:.0f} s settle, "
            f"rules {shown}, quiet period {args.quiet:.0f} s, "
            f"guidance timeout {args.guidance_timeout:.0f} s"
        )
        write_docs(markdown(rows, command, setup))
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
