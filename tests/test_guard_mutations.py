"""Every guard is tested: replacing any one of them by ``return True`` makes a test fail.

Each case runs the guard tests (``tests/test_machine.py``) in a subprocess with
``ORCH_MUTATE_GUARD=<guard>``, which ``tests/conftest.py`` turns into "that guard always
passes" before anything imports it. A surviving mutant is a guard nothing checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.engine.machine import TRANSITIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
GUARDS = sorted({guard.__name__ for edge in TRANSITIONS for guard in edge.guards})
# guard -> a test against the real world (PostgreSQL, git, a local HTTP server) it must fail.
WORLD_TESTS = {
    "release_live": "tests/test_release_gate.py::"
    "test_production_rolled_back_during_the_monitor_window_is_not_a_success",
}


def test_every_transition_guard_is_listed() -> None:
    assert len(GUARDS) >= 9, GUARDS


@pytest.mark.parametrize("guard", GUARDS)
def test_a_guard_replaced_by_return_true_fails_the_guard_tests(guard: str) -> None:
    done = _pytest_with_mutant(guard, "tests/test_machine.py")
    assert done.returncode == 1, f"the mutant {guard} survived:\n{done.stdout[-2000:]}"


@pytest.mark.parametrize("guard", sorted(WORLD_TESTS))
def test_a_guard_replaced_by_return_true_fails_its_test_against_the_world(guard: str) -> None:
    assert guard in GUARDS
    done = _pytest_with_mutant(guard, WORLD_TESTS[guard])
    assert done.returncode == 1, f"the mutant {guard} survived:\n{done.stdout[-2000:]}"
    assert "1 failed" in done.stdout, done.stdout[-2000:]  # failed, not skipped or missing


def _pytest_with_mutant(guard: str, tests: str) -> subprocess.CompletedProcess[str]:
    pytest_argv = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests]
    return subprocess.run(
        [sys.executable, *pytest_argv],
        cwd=REPO_ROOT,
        env={**os.environ, "ORCH_MUTATE_GUARD": guard},
        capture_output=True,
        text=True,
        timeout=300,
    )
