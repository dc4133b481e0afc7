"""Chaos: `kill -9` the daemon over 20 times while a faulty fleet runs, then check the invariants.

The run lives in `tests/chaos.py` (also a script: `python -m tests.chaos`), the checks in
`tests/chaos_checks.py`. About 4 minutes. `FRONTLINE_CHAOS_SEED=N` replays a run's random
choices; the seed is printed first, then the figures, and it heads the failure message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import ChaosOptions, chaos, seed_from_env, summary
from tests.conftest import require_binary


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_kill_9_loses_nothing_and_leaves_no_fault_unacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that repeated kill -9 loses no telemetry, repeats no action and leaves none undone."""
    require_binary("mosquitto")
    require_binary("mosquitto_sub")
    seed = seed_from_env()

    def say(text: str) -> None:
        with capsys.disabled():  # the figures belong in CI's log, pass or fail
            print(text, flush=True)

    _, report = chaos(ChaosOptions(seed=seed), tmp_path, say)
    say(summary(seed, report))
    failed = report.failed()
    problems = "\n".join(report.problems())
    assert not failed, f"seed {seed} (replay: FRONTLINE_CHAOS_SEED={seed}):\n{problems}"
