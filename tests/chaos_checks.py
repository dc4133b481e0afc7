"""The invariants of the chaos run (tests/chaos.py), checked after it against three witnesses.

- the broker's recording (`mosquitto_sub`): every telemetry message and command it carried;
- the simulator's ground truth: the faults, and every command a device received and what it did;
- the daemon's databases, read after it stopped: `series.db` (read-only SQLite) and the state DB
  through `SqliteStateStore`, as the outcome benchmark reads it.

The faults are joined with the alerts, remediations, notices and tickets by the outcome
benchmark's scoring (`benchmarks/service_outcomes.py`), so a fault means the same thing here.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from daemon.adapters.rule_files import load_rules
from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.core.alerts import AlertState, Phase
from daemon.core.remediation import Remediation, RemState
from daemon.core.rulefmt import Rule
from tests.test_service_outcomes import so

if TYPE_CHECKING:  # the benchmark is a script, loaded from its path at run time (`so`)
    from benchmarks.service_outcomes import Outcome
    from benchmarks.service_outcomes import Report as Scored

INVARIANTS = (
    "1 telemetry stored exactly once",
    "2 every fault that fired got its action, once",
    "3 no command carried out twice",
    "4 no alert left firing without its action",
)
# daemon/core/remediation.py `command_id`: fl-{sha256(alert key)[:8]}-{episode}-{step}-{attempt}
COMMAND_ID = re.compile(r"fl-([0-9a-f]{8})-(\d+)-(\d+)-(\d+)")
SENT_EVENTS = {"sent", "no reply: sent again"}
# The guidance timeout is checked every second, after an evaluation (every 5 s) saw the alert.
GUIDANCE_SLACK_MS = 15_000


@dataclass(frozen=True)
class Evidence:
    """What a chaos run leaves for the checks (besides the daemon's data directory)."""

    recorded: list[dict[str, Any]]  # mosquitto_sub -F %j lines
    truth: list[dict[str, Any]]  # the ground truth's JSONL lines
    rejects: Mapping[str, set[str]]  # device -> methods it refuses
    data_dir: Path
    fleet_published: int  # telemetry messages the fleet saw acknowledged by the broker
    fleet_stopped_ms: int
    daemon_stopped_ms: int
    guidance_timeout_s: float


# -- invariant 1: telemetry ---------------------------------------------------------------------
def _metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Numbers and booleans are metrics (daemon/core/payloads.py); strings are attributes."""
    return {
        name: float(value)
        for name, value in values.items()
        if isinstance(value, bool | int | float) and name != "ts"
    }


def published_points(
    recorded: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], dict[int, float]], Counter[tuple[str, str]]]:
    """Return the points published with their own ts (series -> ts -> value) and flat counts."""
    stamped: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    flat: Counter[tuple[str, str]] = Counter()
    for message in recorded:
        parts = message["topic"].split("/")
        if len(parts) != 3 or parts[2] != "telemetry":
            continue
        body = orjson.loads(message["payload"])
        if "values" in body:
            for metric, value in _metrics(body["values"]).items():
                stamped[parts[1], metric][int(body["ts"])] = value
        else:
            for metric in _metrics(body):
                flat[parts[1], metric] += 1
    return stamped, flat


def _series_db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def stored_count(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(_series_db(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])


def stored_points(path: Path) -> dict[tuple[str, str], dict[int, float]]:
    stored: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    with contextlib.closing(_series_db(path)) as conn:
        rows = conn.execute(
            "SELECT s.device, s.metric, p.ts, p.value"
            " FROM points p JOIN series s ON s.id = p.series"
        )
        for device, metric, ts, value in rows:
            stored[device, metric][int(ts)] = float(value)
    return stored


@dataclass
class TelemetryCheck:
    published: int = 0
    stored: int = 0
    missing: list[str] = field(default_factory=list)  # published, not stored
    extra: list[str] = field(default_factory=list)  # stored, never published
    changed: list[str] = field(default_factory=list)  # stored with another value
    flat_published: int = 0
    flat_stored: int = 0
    flat_missing: int = 0
    flat_duplicated: int = 0


def check_telemetry(recorded: list[dict[str, Any]], series_db: Path) -> TelemetryCheck:
    """Compare what the broker carried with the store.

    The store keeps one point per (device, metric, ts): a message that carries its own ts must
    be there with its value, and nothing else may be. A flat message is stamped with the time the
    daemon received it, so a redelivery would be a second point: those are compared by count.
    """
    stamped, flat = published_points(recorded)
    stored = stored_points(series_db)
    out = TelemetryCheck()
    for key, points in stamped.items():
        have = stored.get(key, {})
        out.published += len(points)
        out.stored += sum(1 for ts in have if ts in points)
        out.missing += [f"{key[0]}/{key[1]}@{ts}" for ts in points if ts not in have]
        out.extra += [f"{key[0]}/{key[1]}@{ts}" for ts in have if ts not in points]
        out.changed += [
            f"{key[0]}/{key[1]}@{ts}: {value} stored as {have[ts]}"
            for ts, value in points.items()
            if ts in have and have[ts] != value
        ]
    for key, count in flat.items():
        kept = len(stored.get(key, {}))
        out.flat_published += count
        out.flat_stored += kept
        out.flat_missing += max(count - kept, 0)
        out.flat_duplicated += max(kept - count, 0)
    for key, points in stored.items():  # series nobody published to
        if key not in stamped and key not in flat:
            out.extra += [f"{key[0]}/{key[1]}@{ts}" for ts in points]
    return out


# -- the daemon's records -----------------------------------------------------------------------
@dataclass
class Records:
    outcome: Outcome  # firings, remediations, tickets, notices (as the benchmark reads them)
    events: list[dict[str, Any]]  # every alert transition, oldest first
    alerts: list[AlertState]  # the final states
    remediations: list[Remediation]  # the latest per alert key


async def read_records(state_db: Path) -> Records:
    outcome = await so.read_outcome(state_db)
    store = SqliteStateStore(state_db)
    await store.open()
    try:
        events = await store.alert_events(limit=1_000_000)
        alerts = [AlertState.from_json(a) for a in await store.load_alerts()]
        remediations = [Remediation.from_json(r) for r in await store.load_remediations()]
    finally:
        await store.close()
    events = sorted((e for e in events if not e.get("dry_run")), key=lambda e: e["at_ms"])
    return Records(outcome, events, alerts, remediations)


def _episodes(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Firing episodes (when each fired, ms) per alert key, oldest first."""
    out: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e["to_phase"] == "firing":
            out[e["key"]].append(e["at_ms"])
    return out


def _episode_of(episodes: dict[str, list[int]], key: str, at_ms: int) -> int | None:
    starts = [t for t in episodes.get(key, []) if t <= at_ms]
    return starts[-1] if starts else None


# -- the checks ---------------------------------------------------------------------------------
@dataclass
class Report:
    figures: list[tuple[str, str]]
    failures: dict[str, list[str]]  # invariant -> what broke it
    details: list[str]

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())

    def failed(self) -> list[str]:
        return [name for name, problems in self.failures.items() if problems]

    def lines(self) -> list[str]:
        width = max(len(name) for name, _ in self.figures)
        out = [f"  {name:<{width}}  {value}" for name, value in self.figures]
        return [*out, "", *self.details, *self.problems()]

    def problems(self, limit: int = 30) -> list[str]:
        out = []
        for name in self.failed():
            problems = self.failures[name]
            out.append(f"FAILED {name}: {len(problems)}")
            out += [f"  - {p}" for p in problems[:limit]]
            if len(problems) > limit:
                out.append(f"  ... and {len(problems) - limit} more")
        return out


def check(evidence: Evidence, records: Records) -> Report:
    """Check the four invariants; return the figures and everything that broke them."""
    failures: dict[str, list[str]] = {name: [] for name in INVARIANTS}
    telemetry = check_telemetry(evidence.recorded, evidence.data_dir / "series.db")
    problems = failures[INVARIANTS[0]]
    problems += [f"missing {p}" for p in telemetry.missing]
    problems += [f"stored but never published {p}" for p in telemetry.extra]
    problems += [f"value changed {p}" for p in telemetry.changed]
    if telemetry.flat_missing:
        problems.append(f"{telemetry.flat_missing} flat (receive-time) points missing")
    if telemetry.flat_duplicated:
        problems.append(f"{telemetry.flat_duplicated} flat (receive-time) points stored twice")
    heard = sum(1 for m in evidence.recorded if str(m["topic"]).endswith("/telemetry"))
    if heard < evidence.fleet_published:
        # Not the daemon's fault, but the check above would be blind to what the recording lost.
        problems.append(f"the recording has {heard} of {evidence.fleet_published} messages")

    groups, rule_problems = load_rules([so.RULES])
    assert not rule_problems, rule_problems
    rules = {(g.name, r.alert): r for g in groups for r in g.rules}
    faults, usage = so.read_truth(evidence.truth, dict(evidence.rejects))
    scored = so.score(faults, usage, records.outcome, evidence.fleet_stopped_ms, {})
    per_class = _check_faults(scored, failures[INVARIANTS[1]])
    guidance_dups, ticket_dups = _check_episodes(records, failures[INVARIANTS[1]])
    if scored.duplicate_tickets:
        failures[INVARIANTS[1]].append(f"{scored.duplicate_tickets} duplicate ticket(s) per fault")
    published, ids, copies, command_dups = _check_commands(
        evidence, records, {r.alert: r for r in rules.values()}, failures[INVARIANTS[2]]
    )
    unacted = _check_firing(evidence, records, rules, failures[INVARIANTS[3]])

    fired = sum(1 for s in scored.faults if s.detected_ms is not None)
    figures = [
        ("telemetry points published (own ts)", str(telemetry.published)),
        (
            "  stored / missing / never published",
            f"{telemetry.stored} / {len(telemetry.missing)} / {len(telemetry.extra)}",
        ),
        ("flat points published (receive time)", str(telemetry.flat_published)),
        (
            "  stored / missing / duplicated",
            f"{telemetry.flat_stored} / {telemetry.flat_missing} / {telemetry.flat_duplicated}",
        ),
        ("faults injected / whose alert fired", f"{len(scored.faults)} / {fired}"),
        ("actions per fault (fired faults)", per_class),
        ("commands published / distinct ids / most copies", f"{published} / {ids} / {copies}"),
        (
            "duplicates (tickets, guidance, commands)",
            f"{scored.duplicate_tickets + ticket_dups}, {guidance_dups}, {command_dups}",
        ),
        ("unacted firing alerts", str(unacted)),
    ]
    return Report(figures, failures, so.details(scored))


def _check_faults(scored: Scored, problems: list[str]) -> str:
    """Invariant 2 per fault: the action of its true fix. Return the figure per class."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wanted = {"m2m": "verified remediation", "h2m": "guidance", "technician": "one ticket"}
    for s in scored.faults:
        f = s.fault
        if s.detected_ms is None or f.klass not in wanted:
            continue
        if f.klass == "m2m":
            done = s.remediated and s.fixed_by_command
        elif f.klass == "h2m":
            done = s.guided
        else:
            done = len(s.tickets) == 1
        counts[f.klass][0] += done
        counts[f.klass][1] += 1
        if not done:
            got = f"{len(s.tickets)} ticket(s), guided={s.guided}, remediated={s.remediated}"
            problems.append(f"{f.fault_id} ({f.klass}) fired, wants {wanted[f.klass]}: {got}")
    return "; ".join(f"{k} {n}/{total} {wanted[k]}" for k, (n, total) in sorted(counts.items()))


def _check_episodes(records: Records, problems: list[str]) -> tuple[int, int]:
    """No firing episode got two guidance notices or two fault tickets. Return the duplicates."""
    episodes = _episodes(records.events)
    key_of = {(e["device"], e["alert"]): e["key"] for e in records.events}
    guidance: Counter[tuple[str, int]] = Counter()
    for notice in records.outcome.notices:
        key = key_of.get((notice["device"], notice["alert"]))
        if notice.get("kind") == "guidance" and key is not None:
            episode = _episode_of(episodes, key, notice["at_ms"])
            if episode is not None:
                guidance[key, episode] += 1
    tickets: Counter[tuple[str, int]] = Counter()
    for ticket in records.outcome.tickets:
        episode = _episode_of(episodes, ticket["key"], ticket["created_ms"])
        if ticket["kind"] == "fault" and episode is not None:
            tickets[ticket["key"], episode] += 1
    dups = [0, 0]
    for i, (what, counted) in enumerate((("guidance notices", guidance), ("tickets", tickets))):
        for (key, episode), n in counted.items():
            if n > 1:
                dups[i] += n - 1
                problems.append(f"{key} episode {episode}: {n} {what}")
    return dups[0], dups[1]


def _check_commands(
    evidence: Evidence, records: Records, rule_of: dict[str, Rule], problems: list[str]
) -> tuple[int, int, int, int]:
    """Invariant 3. Return (publishes, distinct command ids, most copies of one id, duplicates).

    A retry after a missing reply reuses the command id by design (the device answers a repeated
    id without acting again), so: each (alert, episode, step, attempt) has one id; its episode is
    one the alert really fired; no step has more attempts than the rule allows; no device carried
    out one id twice. How often one id was published is a figure, not a failure: a restart may
    resend a command whose reply it never stored, and the device answers it as a repeat.
    """
    publishes: Counter[str] = Counter()
    device_of: dict[str, str] = {}
    for message in evidence.recorded:
        parts = message["topic"].split("/")
        if len(parts) == 4 and parts[2] == "commands":
            publishes[parts[3]] += 1
            device_of[parts[3]] = parts[1]
    dups = 0
    handled: Counter[str] = Counter()
    for line in evidence.truth:
        if line.get("event") == "command_received" and line["effect"] not in {
            "duplicate",
            "dropped",
            "interrupted",
        }:
            handled[line["command_id"]] += 1
    for cid, n in handled.items():
        if n > 1:
            dups += n - 1
            problems.append(f"command {cid} carried out {n} times by {device_of.get(cid, '?')}")
    by_hash = {hashlib.sha256(e["key"].encode()).hexdigest()[:8]: e for e in records.events}
    episodes = _episodes(records.events)
    for cid in publishes:
        match = COMMAND_ID.fullmatch(cid)
        if match is None:
            problems.append(f"command id {cid} is not fl-<key hash>-<episode>-<step>-<attempt>")
            continue
        episode, step, attempt = (int(g) for g in match.groups()[1:])
        event = by_hash.get(match.group(1))
        if event is None:
            problems.append(f"command {cid}: no alert of {device_of[cid]} has this key hash")
            continue
        if event["device"] != device_of[cid]:
            problems.append(f"command {cid} for {event['key']} went to {device_of[cid]}")
        if episode not in episodes.get(event["key"], []):
            problems.append(f"command {cid}: {event['key']} did not fire at {episode}")
        rule = rule_of.get(event["alert"])
        if rule is not None and 1 <= step <= len(rule.remediate):
            allowed = rule.remediate[step - 1].max_attempts
            if attempt > allowed:
                problems.append(f"command {cid}: attempt {attempt} of at most {allowed}")
    for rem in records.remediations:
        ids: dict[tuple[int, int], set[str]] = defaultdict(set)
        for entry in rem.log:
            if entry.event in SENT_EVENTS and entry.command_id:
                ids[entry.step, entry.attempt].add(entry.command_id)
        for (step, attempt), found in sorted(ids.items()):
            if len(found) > 1:
                where = f"{rem.key} episode {rem.episode} step {step} attempt {attempt}"
                problems.append(f"{where}: several ids {sorted(found)}")
    return sum(publishes.values()), len(publishes), max(publishes.values(), default=0), dups


def _check_firing(
    evidence: Evidence,
    records: Records,
    rules: dict[tuple[str, str], Rule],
    problems: list[str],
) -> int:
    """Invariant 4: every alert still firing has its rule's action. Return the unacted count."""
    guidance_ms = int(evidence.guidance_timeout_s * 1000)
    rems = {r.key: r for r in records.remediations}
    open_tickets = {t["key"] for t in records.outcome.tickets if t["status"] != "resolved"}
    guided: dict[tuple[str, str], list[int]] = defaultdict(list)
    for notice in records.outcome.notices:
        if notice.get("kind") == "guidance":
            guided[notice["device"], notice["alert"]].append(notice["at_ms"])
    unacted = 0
    for state in records.alerts:
        if state.phase is not Phase.FIRING or state.dry_run or state.fired_at_ms is None:
            continue
        if state.fired_at_ms >= evidence.fleet_stopped_ms:
            continue  # fired by the fleet's own shutdown (devices announce offline)
        rule = rules.get((state.group, state.alert))
        if rule is None:
            continue
        missing = []
        rem = rems.get(state.key)
        if rule.remediate:
            # This episode's remediation, or one still running (an alert that resolved and fired
            # again between two ticks keeps the remediation that is acting on it).
            if rem is None or (rem.episode != state.fired_at_ms and rem.done):
                missing.append("no remediation for this episode")
            elif (
                rem.state is RemState.FAILED
                and rule.ticket != "never"
                and state.key not in open_tickets
            ):
                missing.append("remediation failed and no ticket is open")
        told = [t for t in guided[state.device, state.alert] if t >= state.fired_at_ms]
        if rule.guide and not told:
            missing.append("no guidance")
        clearing = (  # held only by keep_firing_for: the guidance timeout waits
            state.last_true_ms is not None
            and state.last_eval_ms is not None
            and state.last_true_ms < state.last_eval_ms
        )
        if (
            told
            and not rule.remediate
            and rule.ticket != "never"
            and not clearing
            and evidence.daemon_stopped_ms - min(told) > guidance_ms + GUIDANCE_SLACK_MS
            and state.key not in open_tickets
        ):
            missing.append(f"guided, and no ticket {evidence.guidance_timeout_s:.0f} s later")
        if (
            rule.ticket == "always"
            or (rule.ticket == "on_failure" and not rule.remediate and not rule.guide)
        ) and state.key not in open_tickets:
            missing.append("no ticket")
        if missing:
            unacted += 1
            ago = (evidence.fleet_stopped_ms - state.fired_at_ms) / 1000
            problems.append(
                f"{state.key} fired {ago:.0f} s before the fleet stopped: {'; '.join(missing)}"
            )
    return unacted
