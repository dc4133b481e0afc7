"""Run the docstring examples of every module in daemon/core/ as doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import daemon.core

CORE_MODULES = sorted(
    info.name for info in pkgutil.iter_modules(daemon.core.__path__, prefix="daemon.core.")
)


def _run(module: ModuleType) -> doctest.TestResults:
    return doctest.testmod(module, verbose=False, report=False, optionflags=doctest.ELLIPSIS)


@pytest.mark.parametrize("name", CORE_MODULES)
def test_module_doctests_pass(name: str) -> None:
    """Test that every docstring example of a core module passes."""
    result = _run(importlib.import_module(name))
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_doctests_are_attempted() -> None:
    """Test that the core modules are found and hold examples at all (the run is not vacuous)."""
    assert {"daemon.core.payloads", "daemon.core.topics", "daemon.core.durations"} <= set(
        CORE_MODULES
    )
    attempted = sum(_run(importlib.import_module(name)).attempted for name in CORE_MODULES)
    assert attempted >= 1


def test_doctest_runner_reports_failures() -> None:
    """Test that a wrong example is reported as a failure by the same runner."""
    module = ModuleType("broken")
    module.__doc__ = ">>> 1 + 1\n3\n"
    assert _run(module) == doctest.TestResults(failed=1, attempted=1)
