"""One round of action work: everything it changed, persisted together, then published."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from daemon.core.remediation import Fixed, SendCommand
from daemon.core.tickets import Ticket


def iso(ms: int | None) -> str | None:
    return (
        None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    )


@dataclass
class Work:
    """What one round changed. `ActionService.commit` makes it one durable fact."""

    remediations: dict[str, bytes | None] = field(default_factory=dict)
    tickets: dict[str, Ticket] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    commands: list[SendCommand] = field(default_factory=list)
    opens: list[tuple[str, str, str]] = field(default_factory=list)  # key, kind, reason
    fixed: list[Fixed] = field(default_factory=list)
    #: pending decisions (guidance deadlines, advisory markers, healthy-since); None deletes
    decisions: dict[str, bytes | None] = field(default_factory=dict)
    #: alert transition events consumed this round (published on MQTT)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    #: the id of the last alert event consumed this round
    cursor: int | None = None

    @property
    def empty(self) -> bool:
        """Nothing to persist or publish (an idle tick)."""
        return not (
            self.remediations
            or self.tickets
            or self.events
            or self.notices
            or self.commands
            or self.decisions
            or self.alerts
            or self.cursor is not None
        )

    def notice(
        self,
        device: str,
        kind: str,
        title: str,
        message: str,
        steps: list[str],
        alert: str,
        at_ms: int,
    ) -> None:
        self.notices.append(
            {
                "device": device,
                "kind": kind,
                "title": title,
                "message": message,
                "steps": steps,
                "alert": alert,
                "at_ms": at_ms,
            }
        )
