"""Simulated device fleet: plausible telemetry, injectable faults, ground truth, commands."""

from simulators.commands import Behaviour
from simulators.faults import FaultKind, FaultSpec
from simulators.fleet import Fleet, FleetOptions, FleetStats
from simulators.models import UsageProfile
from simulators.scenario import Scenario, ScenarioInvalid, load_scenario, parse_fault_flag

__all__ = [
    "Behaviour",
    "FaultKind",
    "FaultSpec",
    "Fleet",
    "FleetOptions",
    "FleetStats",
    "Scenario",
    "ScenarioInvalid",
    "UsageProfile",
    "load_scenario",
    "parse_fault_flag",
]
