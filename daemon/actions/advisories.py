"""Customer success: usage findings become an advisory, at most one per device per period.

The "already advised" marker (key `advisory:<device>:<alert>`) is a pending decision persisted in
the same transaction as the advisory notice or ticket it stands for.
"""

from __future__ import annotations

import logging

from daemon.actions.work import Work
from daemon.core.alerts import Transition

log = logging.getLogger(__name__)
PREFIX = "advisory:"


class Advisories:
    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def restore(self, values: dict[str, bytes]) -> None:
        self.last.update({name: int(data) for name, data in values.items()})

    def claim(self, t: Transition, period_ms: int, work: Work) -> bool:
        """True when this finding may be advised now; records that it was."""
        marker = f"{PREFIX}{t.device}:{t.alert}"
        last = self.last.get(marker)
        if last is not None and t.at_ms - last < period_ms:
            log.info(
                "advisory %s for %s skipped: one was sent within the period", t.alert, t.device
            )
            return False
        self.last[marker] = t.at_ms
        work.decisions[marker] = str(t.at_ms).encode()
        return True
