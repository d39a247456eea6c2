"""The ``transitions`` machine executes the declaration: its callbacks run each state's steps
and record each transition; the engine only fires triggers (pure: no I/O)."""

from __future__ import annotations

import pytest

from orchestrator.engine.machine import LIVE, RunModel, build_machine, reopen_trigger
from orchestrator.engine.outcomes import MigrateOutcome, Outcome, ValidationOutcome
from orchestrator.engine.steps.base import Step
from orchestrator.runs import RunRecord, Transition
from tests.test_machine import SEEN, record


class Walk:
    """A run_step that records which steps ran and writes the outcome each would write."""

    def __init__(self, r: RunRecord, outcomes: dict[str, Outcome]) -> None:
        self.record, self.outcomes = r, outcomes
        self.ran: list[str] = []
        self.moves: list[Transition] = []

    def run_step(self, step: Step) -> None:
        self.ran.append(step.name)
        self.record.steps.record(step.name, self.outcomes[step.name])

    def model(self, state: str) -> RunModel:
        self.record.state = state
        model = RunModel(self.record, SEEN, run_step=self.run_step, on_transition=self.moves.append)
        build_machine(model, state)
        return model


def test_a_state_walk_runs_its_steps_then_the_machine_records_the_move() -> None:
    r = record()
    walk = Walk(r, {"validate": ValidationOutcome(status="SAFE")})
    model = walk.model("backup_checked")
    assert model.validate() is True  # type: ignore[attr-defined]
    assert walk.ran == [s.name for s in LIVE["backup_checked"].steps] == ["validate"]
    assert model.state == r.state == "validated"  # the record's state is the machine's
    assert [(m.trigger, m.source, m.dest) for m in walk.moves] == [
        ("validate", "backup_checked", "validated")
    ]
    assert r.transitions == walk.moves


def test_the_steps_run_once_per_visit_whichever_edge_fires() -> None:
    # validated: skip_migrate is tried first (its guard fails), then migrate; migrate's step
    # must run once, before the first trigger's conditions.
    r = record(validate={"status": "NEEDS_MIGRATION"})
    r.planned = []
    walk = Walk(r, {"migrate": MigrateOutcome()})
    model = walk.model("validated")
    assert model.skip_migrate() is False  # type: ignore[attr-defined]
    assert walk.ran == ["migrate"] and r.state == "validated" and not walk.moves
    assert model.migrate() is True  # type: ignore[attr-defined]
    assert walk.ran == ["migrate"]
    assert r.state == "migrated" and [m.trigger for m in walk.moves] == ["migrate"]


def test_no_edge_holds_the_state_stays_and_nothing_is_recorded() -> None:
    r = record()
    walk = Walk(r, {"validate": ValidationOutcome(status="PARTIAL_MIGRATION")})
    model = walk.model("backup_checked")
    assert model.validate() is False  # type: ignore[attr-defined]
    assert r.state == "backup_checked" and not walk.moves and not r.transitions


def test_halt_and_reopen_run_no_step_and_are_recorded_with_their_detail() -> None:
    r = record()
    walk = Walk(r, {})
    model = walk.model("migrated")
    model.halt(detail="revalidate verdict ERROR")  # type: ignore[attr-defined]
    assert walk.ran == [] and r.state == "halted"
    reopen = getattr(model, reopen_trigger("migrated"))
    reopen(recorded_as="resume", detail="resumed by the operator")
    assert walk.ran == [] and r.state == "migrated"
    assert [(m.trigger, m.source, m.dest, m.detail) for m in walk.moves] == [
        ("halt", "migrated", "halted", "revalidate verdict ERROR"),
        ("resume", "halted", "migrated", "resumed by the operator"),
    ]


def test_a_failing_step_stops_the_trigger_and_leaves_the_state() -> None:
    r = record()

    def broken(step: Step) -> None:
        raise RuntimeError(f"{step.name} broke")

    model = RunModel(r, SEEN, run_step=broken)
    build_machine(model, "pending")
    with pytest.raises(RuntimeError, match="preflight broke"):
        model.check_backup()  # type: ignore[attr-defined]
    assert model.state == "pending" and not r.transitions
