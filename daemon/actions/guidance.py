"""H2M: customer guidance, and the deadline after which a person is asked to help.

The deadline is a pending decision: it is persisted (key `guided:<alert key>`) in the same
transaction as the guidance notice, so a restart neither forgets a customer who never fixed it
nor guides them twice.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from daemon.actions.work import Work
from daemon.core.alerts import Transition
from daemon.core.rulefmt import Rule
from daemon.ports import ServiceFiles

PREFIX = "guided:"


class Guidance:
    def __init__(
        self,
        files: ServiceFiles,
        timeout_ms: int,
        firing: Callable[[str], bool],
        clearing: Callable[[str], bool],
    ) -> None:
        self._files = files
        self.timeout_ms = timeout_ms
        self._firing = firing
        self._clearing = clearing
        self.guided: dict[str, tuple[int, int]] = {}  # key -> (episode, guided at)

    def restore(self, values: dict[str, bytes]) -> None:
        for name, data in values.items():
            episode, since = orjson.loads(data)
            self.guided[name.removeprefix(PREFIX)] = (int(episode), int(since))

    def guide(self, t: Transition, rule: Rule, now: int, work: Work) -> None:
        assert rule.guide is not None
        steps = self._files.steps(rule.file, rule.guide)
        summary = t.annotations.get("summary", t.alert)
        title, message = f"We noticed a problem: {summary}", "A few steps usually fix this:"
        work.notice(t.device, "guidance", title, message, steps, t.alert, now)
        self.guided[t.key] = (t.at_ms, now)
        work.decisions[PREFIX + t.key] = orjson.dumps([t.at_ms, now])

    def due(self, now: int, has_ticket: Callable[[str], bool], work: Work) -> list[str]:
        """Return the alerts whose customer did not fix it in time (and stop waiting on them)."""
        late = []
        for key, (_, since) in list(self.guided.items()):
            if not self._firing(key):
                self._drop(key, work)
            elif self._clearing(key):
                # Held only by keep_firing_for: the customer's fix may be taking hold. The ticket
                # waits; it opens if the condition comes back while the alert still fires.
                continue
            elif now - since >= self.timeout_ms and not has_ticket(key):
                self._drop(key, work)
                late.append(key)
        return late

    def _drop(self, key: str, work: Work) -> None:
        del self.guided[key]
        work.decisions[PREFIX + key] = None
