"""Urgency from prediction: how soon the customer feels a fault, and what remediation achieved.

Rule labels are fixed per rule, so routing on them cannot tell an overheating boiler that will
lock out in seven minutes and refuses every command from one that took its fix. Two facts can:

- the **impact**: the rule's `impact:` expression, seconds until customer impact (`time_to`,
  `rul`, ...), evaluated with the rule while its alert is active (`predicted_impact`);
- the **remediation outcome**: what the remote fix achieved so far (`remediation_outcome`).

Routing matches both (`impact_within`, `remediation`: daemon.core.tickets.decide) and a ticket's
queue and priority follow them while it is open. Pure: the caller passes the clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.core.expr import Node
from daemon.core.expr_eval import EvalContext, evaluate

#: what remediation achieved, as routing's `remediation` key matches it:
#: none (no remote fix, or not needed), pending (nothing conclusive yet), refused (the device
#: refused the commands and accepted none), failed (no reply, errors, expired, not allowed),
#: unverified (the device accepted a command but the alert still fired after `verify`),
#: verified (the alert cleared after the fix)
OUTCOMES = ("none", "pending", "refused", "failed", "unverified", "verified")
#: log events that end an attempt without a verified fix (daemon.core.remediation)
_ENDS_ATTEMPT = frozenset(
    {"failed", "budget exhausted", "device answered error", "next step", "retry scheduled"}
)


def predicted_impact(node: Node | None, ctx: EvalContext) -> float | None:
    """Return the seconds until customer impact `node` predicts for the device of `ctx`.

    None when the rule has no `impact` or the prediction is unknown (a trend moving away, no
    model output) or not a finite number; a negative result means the impact is here: 0.
    """
    if node is None:
        return None
    value = evaluate(node, ctx)
    if value is None or isinstance(value, bool | str):
        return None
    seconds = float(value)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def impact_left(impact_s: float | None, predicted_at_ms: int | None, now_ms: int) -> float | None:
    """Return the seconds left at `now_ms` of an impact predicted at `predicted_at_ms`.

    A prediction ages with the clock: the impact a 5-minute group predicted 4 minutes ago is
    4 minutes nearer now than it said.

    >>> impact_left(600.0, 1_000, 61_000), impact_left(30.0, 0, 60_000), impact_left(None, 0, 1)
    (540.0, 0.0, None)
    """
    if impact_s is None or predicted_at_ms is None:
        return None
    return max(0.0, impact_s - (now_ms - predicted_at_ms) / 1000)


def _methods(log: Sequence[Mapping[str, Any]], event: str) -> list[str]:
    found: list[str] = []
    for entry in log:
        method = entry.get("method")
        if entry.get("event") == event and method and method not in found:
            found.append(str(method))
    return found


def remediation_outcome(  # noqa: PLR0911  one answer per outcome, in the order they win
    log: Sequence[Mapping[str, Any]],
) -> tuple[str, str]:
    """Return what remediation achieved so far (one of OUTCOMES) and a line for the agent.

    `log` is the remediation's log (daemon.core.remediation.LogEntry as dicts), empty when the
    rule has none. A device that accepted any command is cooperative: the outcome is then
    pending or unverified, never refused. Refusals win over other failures, because a device
    that refuses will refuse again (only a visit changes that).

    >>> remediation_outcome([])
    ('none', 'no remote fix for this fault')
    >>> log = [{"event": "started"}, {"event": "sent", "method": "reduce_power"},
    ...        {"event": "device answered rejected", "method": "reduce_power", "detail": "locked"},
    ...        {"event": "failed", "method": "reduce_power", "detail": "no step left"}]
    >>> remediation_outcome(log)
    ('refused', 'the device refused reduce_power (locked)')
    """
    if not log:
        return "none", "no remote fix for this fault"
    events = [str(entry.get("event", "")) for entry in log]
    last = log[-1]
    if "not needed" in events:
        return "none", "not needed: the alert cleared before any command"
    if "cleared" in events:
        cleared = next(e for e in reversed(log) if e.get("event") == "cleared")
        return "verified", f"fixed remotely: {cleared.get('detail') or 'the alert cleared'}"
    accepted = _methods(log, "acknowledged")
    verifying = events[-1] == "acknowledged"
    if accepted:
        if events.count("acknowledged") > (1 if verifying else 0):
            methods = ", ".join(accepted)
            return "unverified", f"the device accepted {methods} but the alert still fires"
        return "pending", f"verifying {last.get('method') or 'the command'}"
    refused = _methods(log, "device answered rejected")
    if refused:
        reasons = [
            str(e.get("detail")) for e in log if e.get("event") == "device answered rejected"
        ]
        why = f" ({reasons[-1]})" if reasons and reasons[-1] else ""
        return "refused", f"the device refused {', '.join(refused)}{why}"
    if any(event in _ENDS_ATTEMPT for event in events):
        ended = next(e for e in reversed(log) if e.get("event") in _ENDS_ATTEMPT)
        return "failed", str(ended.get("detail") or ended.get("event"))
    waiting = "waiting for the device" if events[-1] == "waiting for device" else "under way"
    return "pending", f"{last.get('method') or 'remediation'} {waiting}"


def format_impact(seconds: float | None) -> str:
    """Say when the customer feels it, for people: `now`, `in about 7 min`, `in about 3 h`.

    >>> [format_impact(s) for s in (None, 0, 20, 412)]
    ['not predicted', 'now', 'in under a minute', 'in about 7 min']
    >>> [format_impact(s) for s in (5400, 200_000)]
    ['in about 2 h', 'in about 2 days']
    """
    if seconds is None:
        return "not predicted"
    if seconds <= 0:
        return "now"
    if seconds < 60:
        return "in under a minute"
    if seconds < 5400:
        return f"in about {round(seconds / 60)} min"
    if seconds < 172_800:
        return f"in about {round(seconds / 3600)} h"
    return f"in about {round(seconds / 86400)} days"


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def urgency_context(
    *,
    impact_expr: str | None,
    impact_s: float | None,
    predicted_at_ms: int | None,
    outcome: str,
    detail: str,
    now_ms: int,
) -> dict[str, Any]:
    """Return a ticket's `context.urgency`: the prediction, the remediation outcome, a sentence.

    `impact_s` is the time left as predicted at `predicted_at_ms` (the alert's last evaluation).
    """
    left = impact_left(impact_s, predicted_at_ms, now_ms)
    impact_at = None if left is None else now_ms + int(left * 1000)
    if impact_expr is None:
        impact_text = "Customer impact: not predicted (the rule has no impact)."
    elif left is None:
        impact_text = "Customer impact: no prediction now (the trend does not reach it)."
    else:
        around = "" if left <= 0 else f" (around {_iso(impact_at)})"
        impact_text = f"Customer impact predicted {format_impact(left)}{around}."
    return {
        "impact_in_s": None if left is None else round(left, 1),
        "impact_at": _iso(impact_at),
        "impact_at_ms": impact_at,
        "predicted_at": _iso(predicted_at_ms) if left is not None else None,
        "impact_expr": impact_expr,
        "remediation": outcome,
        "remediation_detail": detail,
        "text": f"{impact_text} Remediation: {outcome}: {detail}.",
    }


def prediction_moved(old_at_ms: int | None, new_at_ms: int | None, now_ms: int) -> bool:
    """Return whether a ticket's stored prediction is worth rewriting (not at every evaluation).

    Known/unknown changes count; otherwise the predicted moment must have moved by more than a
    quarter of the time left, and at least a minute, so a steady trend rewrites nothing.

    >>> prediction_moved(None, 60_000, 0), prediction_moved(600_000, 630_000, 0)
    (True, False)
    >>> prediction_moved(600_000, 400_000, 0)
    True
    """
    if old_at_ms is None or new_at_ms is None:
        return (old_at_ms is None) != (new_at_ms is None)
    left = max(0, min(old_at_ms, new_at_ms) - now_ms)
    return abs(new_at_ms - old_at_ms) > max(60_000, left // 4)
