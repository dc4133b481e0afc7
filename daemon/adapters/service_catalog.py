"""The `ServiceFiles` port over the operator's files: routing, customers, runbooks and guides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.adapters.service_files import load_customers, load_routing, runbook_steps
from daemon.core.tickets import Routing


class ServiceFileSet:
    """Routing and customers are read once (start-up); runbooks on use, so edits show at once."""

    def __init__(
        self,
        routing: Path | None,
        customers: Path | None,
        *,
        require_routing: bool | None = None,
        require_customers: bool | None = None,
    ) -> None:
        """`require_*`: a missing file is an error (True) or a warning (False), as in
        `load_routing`."""
        self._routing = load_routing(routing, required=require_routing)
        self._customers = load_customers(customers, required=require_customers)

    def routing(self) -> Routing:
        return self._routing

    def customer(self, customer_id: str) -> Mapping[str, Any] | None:
        customer = self._customers.get(customer_id)
        return None if customer is None else customer.model_dump()

    def customer_count(self) -> int:
        return len(self._customers)

    def steps(self, rule_file: str, path: str) -> list[str]:
        return runbook_steps(Path(rule_file).parent / path)
