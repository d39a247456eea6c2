"""Mutants for tests/test_guard_mutations.py, applied before anything imports the engine.

``ORCH_MUTATE_GUARD=<guard>``: that guard always passes, on every edge and before every
guarded step. ``ORCH_MUTATE_OBSERVATION=<method>``: that question of
:class:`orchestrator.engine.observations.LiveObservations` is answered from the run record
(what the run's notes say) instead of the world. Both the test process (``tests/conftest.py``)
and the deploy subprocess of the kill tests (``tests/pausing_deploy.py``) apply them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported late: the engine is mutated before anything imports it
    from orchestrator.engine.outcomes import BackupOutcome


def mutate_guard(name: str) -> None:
    """Make guard ``name`` always pass, everywhere the machine declares it."""
    from orchestrator.engine import machine

    original = getattr(machine, name)

    def always(*_args: object) -> bool:
        return True

    always.__name__ = original.__name__

    def swap(guards: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(always if g is original else g for g in guards)

    setattr(machine, name, always)
    machine.TRANSITIONS = tuple(
        dataclasses.replace(e, guards=swap(e.guards)) for e in machine.TRANSITIONS
    )
    machine.LIVE = {
        state: dataclasses.replace(
            spec,
            steps=tuple(
                dataclasses.replace(s, guards=swap(s.guards))
                if isinstance(s, machine.GuardedStep)
                else s
                for s in spec.steps
            ),
        )
        for state, spec in machine.LIVE.items()
    }


def _from_record() -> Mapping[str, Callable[..., Any]]:
    """Each observation answered by the run's own notes: what a lazy guard would believe."""

    def untracked(self: Any) -> frozenset[str]:
        return frozenset()  # the notes say every planned migration was applied

    def remote_ships(self: Any, commit: str) -> bool:
        merge = self.ctx.record.steps.merge
        return merge is not None and merge.pushed_commit is not None

    def commit_exists(self: Any, commit: str) -> bool:
        return commit == self.ctx.record.source_commit

    def dump_intact(self: Any, outcome: BackupOutcome) -> bool:
        return bool(outcome.sha256)

    def backup_branch_exists(self: Any, outcome: BackupOutcome) -> bool:
        return bool(outcome.branch_id)

    def pull_request_merged(self: Any, number: int) -> bool:
        merge = self.ctx.record.steps.merge
        return merge is not None and merge.pull_request == number

    def release_live(self: Any, commit: str) -> bool:
        release = self.ctx.record.steps.release
        return release is not None and release.live

    def release_verdict(self: Any) -> str:
        verdict = self.ctx.record.steps.revalidate
        return str(verdict.status if verdict is not None else None)

    return {
        f.__name__: f
        for f in (
            untracked,
            remote_ships,
            commit_exists,
            dump_intact,
            backup_branch_exists,
            pull_request_merged,
            release_live,
            release_verdict,
        )
    }


OBSERVATIONS = (
    "untracked",
    "remote_ships",
    "commit_exists",
    "dump_intact",
    "backup_branch_exists",
    "pull_request_merged",
    "release_live",
    "release_verdict",
)


def mutate_observation(name: str) -> None:
    """Answer ``LiveObservations.<name>`` from the run record instead of the world."""
    from orchestrator.engine.observations import LiveObservations

    assert hasattr(LiveObservations, name), name
    setattr(LiveObservations, name, _from_record()[name])


def apply_from_environment() -> None:
    """Apply the mutants the environment names (none in a normal run)."""
    if guard := os.environ.get("ORCH_MUTATE_GUARD"):
        mutate_guard(guard)
    if observation := os.environ.get("ORCH_MUTATE_OBSERVATION"):
        mutate_observation(observation)
