"""Static checks: the core stays pure (no I/O, no clock) and nothing in daemon/ calls eval/exec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parent.parent / "daemon"
CORE_MODULES = sorted((DAEMON / "core").glob("*.py"))
ALL_MODULES = sorted(DAEMON.rglob("*.py"))

FORBIDDEN_IMPORTS = {
    "asyncio",
    "socket",
    "sqlite3",
    "paho",
    "aiomqtt",
    "aiohttp",
    "influxdb_client",
    "apscheduler",
    "threading",
}
CLOCK_READS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}
CODE_RUNNERS = {"eval", "exec"}


def _dotted(node: ast.expr) -> list[str]:
    """Return `a.b.c` of an attribute chain as ['a', 'b', 'c'] (empty if not a plain chain)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return []


def impurities(source: str) -> list[str]:
    """Return what in `source` breaks the core's purity: forbidden imports and clock reads."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_IMPORTS
            ]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_IMPORTS:
                found.append(f"from {node.module} import ...")
            for alias in node.names:
                if (node.module.split(".")[-1], alias.name) in CLOCK_READS:
                    found.append(f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Call):
            chain = _dotted(node.func)
            if len(chain) >= 2 and (chain[-2], chain[-1]) in CLOCK_READS:
                found.append(f"call {'.'.join(chain)}()")
    return found


def code_runners(source: str) -> list[str]:
    """Return every eval/exec call in `source` (bare or via builtins)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            chain = _dotted(node.func)
            if chain and chain[-1] in CODE_RUNNERS and (len(chain) == 1 or chain[0] == "builtins"):
                found.append(".".join(chain))
    return found


def test_core_modules_exist() -> None:
    """Test that the purity checks below actually see the core modules."""
    names = {path.stem for path in CORE_MODULES}
    assert {"payloads", "topics", "messages", "twin", "durations"} <= names
    assert len(ALL_MODULES) > len(CORE_MODULES)


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    """Test that a core module imports no I/O library and never reads the clock."""
    assert impurities(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", ALL_MODULES, ids=lambda p: str(p.relative_to(DAEMON)))
def test_no_eval_or_exec(path: Path) -> None:
    """Test that no module in daemon/ calls eval or exec."""
    assert code_runners(path.read_text(encoding="utf-8")) == []


IMPURE = [
    pytest.param("import asyncio", id="import-asyncio"),
    pytest.param("import paho.mqtt.client as mqtt", id="import-submodule"),
    pytest.param("from sqlite3 import connect", id="from-sqlite3"),
    pytest.param("from aiohttp.web import Application", id="from-submodule"),
    pytest.param("import os, threading", id="second-name"),
    pytest.param("import time\nnow = time.time()", id="time-time"),
    pytest.param("import time\ndef f():\n    return time.monotonic()", id="time-monotonic-in-def"),
    pytest.param("from datetime import datetime\nx = datetime.now()", id="datetime-now"),
    pytest.param("import datetime\nx = datetime.datetime.now(tz=None)", id="datetime-datetime-now"),
    pytest.param("from time import monotonic", id="from-time-import-monotonic"),
]


@pytest.mark.parametrize("source", IMPURE)
def test_purity_check_catches(source: str) -> None:
    """Test that the purity check flags each kind of violation (so the check itself can fail)."""
    assert impurities(source)


PURE = [
    pytest.param("import math\nimport re\nfrom datetime import UTC, datetime", id="imports"),
    pytest.param(
        "from datetime import datetime\nx = datetime.fromisoformat('2023-01-01')", id="iso"
    ),
    pytest.param("def f(now_ms: int) -> int:\n    return now_ms + 1", id="time-as-argument"),
    pytest.param("from daemon.core.twin import Twins", id="own-package"),
]


@pytest.mark.parametrize("source", PURE)
def test_purity_check_allows(source: str) -> None:
    """Test that the purity check does not flag pure code."""
    assert impurities(source) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("eval('1 + 1')", ["eval"], id="eval"),
        pytest.param("def f(code):\n    exec(code, {})", ["exec"], id="exec-in-def"),
        pytest.param("import builtins\nbuiltins.eval('x')", ["builtins.eval"], id="builtins"),
        pytest.param("x = [eval(s) for s in y]", ["eval"], id="in-comprehension"),
        pytest.param("evaluate(rules, now)\nconn.execute('SELECT 1')", [], id="lookalikes"),
        pytest.param("s = 'eval(1)'", [], id="in-string"),
    ],
)
def test_eval_check_catches(source: str, expected: list[str]) -> None:
    """Test that the eval/exec check finds real calls and ignores lookalikes."""
    assert code_runners(source) == expected
