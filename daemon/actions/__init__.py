"""Acting on alerts, cheapest first: M2M remediation, H2M guidance, H2H tickets, advisories.

One module per concern (`remediation`, `guidance`, `advisories`, `tickets`, `publishing`), composed
by `ActionService` in `service`, which consumes the alert transitions persisted by the rule
runtime through a cursor (a transactional outbox) so that each is acted on exactly once.
"""

from daemon.actions.service import ActionService

__all__ = ["ActionService"]
