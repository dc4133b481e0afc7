"""Prometheus instruments of one daemon instance, on its own registry (no module singletons)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "frontline_messages_received", "MQTT messages received, by kind", ["kind"], registry=r
        )
        self.rejected = Counter(
            "frontline_messages_rejected", "Messages rejected, by reason", ["reason"], registry=r
        )
        self.fields_dropped = Counter(
            "frontline_fields_dropped",
            "Fields of accepted messages that were not stored, by reason (docs/devices.md)",
            ["reason"],
            registry=r,
        )
        self.fields_renamed = Counter(
            "frontline_fields_renamed",
            "Fields stored under a canonical name other than the one the device sent",
            registry=r,
        )
        self.dead_letters_dropped = Counter(
            "frontline_dead_letters_dropped",
            "Dead letters dropped, oldest first, to keep the table within its row and byte bounds",
            registry=r,
        )
        self.devices_forgotten = Counter(
            "frontline_devices_forgotten",
            "Devices without meta forgotten after a silence of store.retention",
            registry=r,
        )
        self.history_pruned = Counter(
            "frontline_history_pruned",
            "State DB rows deleted by store.history_retention, by table",
            ["table"],
            registry=r,
        )
        self.points_written = Counter(
            "frontline_points_written", "Telemetry points durably stored", registry=r
        )
        self.store_errors = Counter(
            "frontline_store_errors", "Failed store writes (retried)", registry=r
        )
        self.store_write_seconds = Histogram(
            "frontline_store_write_seconds",
            "Duration of one batched store write",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.batch_points = Histogram(
            "frontline_store_batch_points",
            "Points per store write",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.queue_depth = Gauge(
            "frontline_ingest_queue_depth", "Messages received and not yet stored", registry=r
        )
        self.devices_online = Gauge("frontline_devices_online", "Devices online", registry=r)
        self.devices_known = Gauge("frontline_devices_known", "Devices known", registry=r)
        self.rule_evaluations = Counter(
            "frontline_rule_group_evaluations", "Rule group evaluations", ["group"], registry=r
        )
        self.rule_missed = Counter(
            "frontline_rule_group_missed_evaluations",
            "Evaluations skipped because a round overran its interval",
            ["group"],
            registry=r,
        )
        self.rule_seconds = Histogram(
            "frontline_rule_group_seconds",
            "Duration of one group evaluation round",
            ["group"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.alert_transitions = Counter(
            "frontline_alert_transitions", "Alert transitions, by new phase", ["to"], registry=r
        )
        self.rule_reloads = Counter(
            "frontline_rule_reloads", "Rule reloads, by outcome", ["outcome"], registry=r
        )
        self.model_scored = Counter(
            "frontline_model_scored", "Devices scored by a learned model", ["model"], registry=r
        )
        self.model_score_seconds = Histogram(
            "frontline_model_score_seconds",
            "Seconds for one scoring round of a model (all matching devices)",
            ["model"],
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.model_trainings = Counter(
            "frontline_model_trainings",
            "Model trainings by outcome (ok, not_enough_data, failed)",
            ["model", "outcome"],
            registry=r,
        )
        self.model_load_failures = Counter(
            "frontline_model_load_failures",
            "Trained versions refused when loading (corrupt or incompatible)",
            registry=r,
        )
        self.alerts_active = Gauge("frontline_alerts", "Alerts by phase", ["phase"], registry=r)
        self.commands_sent = Counter(
            "frontline_commands_sent", "Remediation commands published", registry=r
        )
        self.remediations_cleared = Counter(
            "frontline_remediations_cleared", "Faults fixed remotely and verified", registry=r
        )
        self.tickets_opened = Counter(
            "frontline_tickets_opened", "Tickets opened, by kind", ["kind"], registry=r
        )
        self.tickets_escalated = Counter(
            "frontline_tickets_escalated", "Ticket escalations", registry=r
        )
        self.notices_sent = Counter(
            "frontline_notices_sent", "Customer notices, by kind", ["kind"], registry=r
        )
        self.action_errors = Counter(
            "frontline_action_errors",
            "Alert events whose action failed with an unexpected error (logged, skipped)",
            registry=r,
        )
        self.mqtt_thread_restarts = Counter(
            "frontline_mqtt_thread_restarts",
            "Times the MQTT network thread died and was restarted",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "frontline_mqtt_connected", "1 while connected to the broker", registry=r
        )

    def bind(
        self,
        queue_depth: Callable[[], float],
        devices_online: Callable[[], float],
        devices_known: Callable[[], float],
        mqtt_connected: Callable[[], float],
    ) -> None:
        """Compute the gauges from live state at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.devices_online.set_function(devices_online)
        self.devices_known.set_function(devices_known)
        self.mqtt_connected.set_function(mqtt_connected)

    def count_events(
        self, name: str, doc: str, label: str, counts: Callable[[], dict[str, int]]
    ) -> None:
        """Export a live dict of event counts (kept by a pure component) as one counter family."""
        self.registry.register(_DictCounter(name, doc, label, counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DictCounter(Collector):
    """A counter family read, at scrape time, from a dict of monotonically growing counts."""

    def __init__(self, name: str, doc: str, label: str, counts: Callable[[], dict[str, int]]):
        self._name, self._doc, self._label, self._counts = name, doc, label, counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for key, value in sorted(self._counts().items()):
            family.add_metric([key], value)
        yield family


@dataclass
class Snapshot:
    """The headline figures of a scraped `/metrics` page."""

    received: float = 0.0
    stored: float = 0.0
    rejected: float = 0.0
    online: float = 0.0
    known: float = 0.0
    pending: float = 0.0
    firing: float = 0.0
    commands: float = 0.0
    fixed: float = 0.0
    tickets: float = 0.0


def parse_metrics(text: str) -> Snapshot:
    """Return the headline figures of a `/metrics` page (for the demo and benchmarks)."""
    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "frontline_messages_received_total":
                snap.received += sample.value
            elif sample.name == "frontline_points_written_total":
                snap.stored = sample.value
            elif sample.name == "frontline_messages_rejected_total":
                snap.rejected += sample.value
            elif sample.name == "frontline_devices_online":
                snap.online = sample.value
            elif sample.name == "frontline_devices_known":
                snap.known = sample.value
            elif sample.name == "frontline_commands_sent_total":
                snap.commands = sample.value
            elif sample.name == "frontline_remediations_cleared_total":
                snap.fixed = sample.value
            elif sample.name == "frontline_tickets_opened_total":
                snap.tickets += sample.value
            elif sample.name == "frontline_alerts" and sample.labels.get("phase") == "pending":
                snap.pending = sample.value
            elif sample.name == "frontline_alerts" and sample.labels.get("phase") == "firing":
                snap.firing = sample.value
    return snap
