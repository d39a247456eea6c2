"""Every guard is tested, and the guards read the world, not the run's notes.

- Replacing any guard by ``return True`` makes the guard tests (``tests/test_machine.py``)
  fail, and for each guard that reads the world, a test against the real world (PostgreSQL,
  git, a dump on disk, a local HTTP double) fails too.
- Answering any question of :class:`orchestrator.engine.observations.LiveObservations` from
  the run record instead of the world (what a guard trusting its notes would believe) makes
  a test against the real world fail.

Each case runs the tests in a subprocess with ``ORCH_MUTATE_GUARD=<guard>`` or
``ORCH_MUTATE_OBSERVATION=<method>``, which ``tests/mutants.py`` applies (in the test process
through ``tests/conftest.py``, in the killed deploy through ``tests/pausing_deploy.py``)
before anything imports the engine. A surviving mutant is a check nothing tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.engine.machine import LIVE, TRANSITIONS, GuardedStep
from orchestrator.engine.observations import Observations
from tests.mutants import OBSERVATIONS

pytestmark = pytest.mark.mutants  # make mutants, not make test

REPO_ROOT = Path(__file__).resolve().parents[1]
GUARDS = sorted(
    {guard.__name__ for edge in TRANSITIONS for guard in edge.guards}
    | {
        guard.__name__
        for spec in LIVE.values()
        for step in spec.steps
        if isinstance(step, GuardedStep)
        for guard in step.guards
    }
)
WORLD = "tests/test_resume_world.py::"
# guard -> a test against the real world it must fail.
WORLD_TESTS = {
    "preflight_passed": WORLD
    + "test_source_commit_gone_from_the_clone_before_the_backup_guard_halts",
    "backup_recorded": WORLD
    + "test_dump_spoiled_before_the_backup_guard_halts_in_pending[deleted]",
    "backup_before_migrating": WORLD
    + "test_dump_spoiled_after_backup_checked_resume_never_migrates[deleted]",
    "migration_recorded": WORLD
    + "test_tracking_rows_deleted_between_migrate_and_its_guard_halt_partial",
    "merge_pushed": WORLD + "test_push_undone_before_its_guard_is_not_taken_for_pushed",
    "release_live": "tests/test_release_gate.py::"
    "test_production_rolled_back_during_the_monitor_window_is_not_a_success",
    "production_holds_release": "tests/test_resume_pinned.py::"
    "test_migration_undone_while_halted_at_merge_halts_partial_and_pushes_nothing",
}
# LiveObservations method -> a test against the real world it must fail when answered from
# the run record.
OBSERVATION_TESTS = {
    "untracked": WORLD + "test_tracking_rows_deleted_between_migrate_and_its_guard_halt_partial",
    "remote_ships": WORLD + "test_push_undone_before_its_guard_is_not_taken_for_pushed",
    "commit_exists": WORLD + "test_source_commit_gone_from_the_clone_before_the_backup_guard_halts",
    "dump_intact": WORLD + "test_dump_spoiled_before_the_backup_guard_halts_in_pending[appended]",
    "backup_branch_exists": WORLD
    + "test_neon_backup_branch_deleted_after_backup_checked_resume_never_migrates",
    "pull_request_merged": WORLD
    + "test_pull_request_reopened_before_its_guard_is_not_taken_for_merged",
    "release_live": "tests/test_release_gate.py::"
    "test_production_rolled_back_during_the_monitor_window_is_not_a_success",
    "release_verdict": "tests/test_resume_pinned.py::"
    "test_migration_undone_while_halted_at_merge_halts_partial_and_pushes_nothing",
}


def test_every_guard_and_every_observation_is_listed() -> None:
    assert len(GUARDS) >= 10, GUARDS
    questions = {name for name in dir(Observations) if not name.startswith("_")}
    assert questions == set(OBSERVATIONS) == set(OBSERVATION_TESTS)


@pytest.mark.parametrize("guard", GUARDS)
def test_a_guard_replaced_by_return_true_fails_the_guard_tests(guard: str) -> None:
    done = _pytest_with_mutant({"ORCH_MUTATE_GUARD": guard}, "tests/test_machine.py")
    assert done.returncode == 1, f"the mutant {guard} survived:\n{done.stdout[-2000:]}"


@pytest.mark.parametrize("guard", sorted(WORLD_TESTS))
def test_a_guard_replaced_by_return_true_fails_its_test_against_the_world(guard: str) -> None:
    assert guard in GUARDS
    done = _pytest_with_mutant({"ORCH_MUTATE_GUARD": guard}, WORLD_TESTS[guard])
    assert done.returncode == 1, f"the mutant {guard} survived:\n{done.stdout[-2000:]}"
    assert "1 failed" in done.stdout, done.stdout[-2000:]  # failed, not skipped or missing


@pytest.mark.parametrize("question", sorted(OBSERVATION_TESTS))
def test_an_observation_read_from_the_record_fails_its_test_against_the_world(
    question: str,
) -> None:
    done = _pytest_with_mutant({"ORCH_MUTATE_OBSERVATION": question}, OBSERVATION_TESTS[question])
    assert done.returncode == 1, f"the mutant {question} survived:\n{done.stdout[-2000:]}"
    assert "1 failed" in done.stdout, done.stdout[-2000:]


def _pytest_with_mutant(mutant: dict[str, str], *tests: str) -> subprocess.CompletedProcess[str]:
    pytest_argv = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ORCH_MUTATE_GUARD", "ORCH_MUTATE_OBSERVATION")
    }
    return subprocess.run(
        [sys.executable, *pytest_argv],
        cwd=REPO_ROOT,
        env={**env, **mutant},
        capture_output=True,
        text=True,
    )
