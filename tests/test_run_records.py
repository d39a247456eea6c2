"""Typed run records: every step's outcome is saved in ``state.json`` and read back as its
model; the record an earlier version wrote still loads and reads the same; a record of the
wrong shape is refused in one line (exit 2); the console line of a finished step reads the
outcome as that step's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import run
from orchestrator.engine.outcomes import (
    AppliedMigration,
    BackupOutcome,
    DatabaseRestoreOutcome,
    FailedCheck,
    HaltOutcome,
    MergeOutcome,
    MigrateOutcome,
    MonitorOutcome,
    Outcome,
    PreflightOutcome,
    ReleaseOutcome,
    RollbackOutcome,
    StepOutcomes,
    ValidationOutcome,
)
from orchestrator.engine.rollback import rollback_plan
from orchestrator.engine.world import WorldNow, changes_since
from orchestrator.redaction import Redactor, connection_passwords
from orchestrator.render_runs import event_line, state_label
from orchestrator.runs import RunRecord, RunStore

RUN_ID = "20251021T143005Z-3fa9c2"
SOURCE, TARGET, PUSHED = "a" * 40, "c" * 40, "b" * 40

# state.json as the version before typed records wrote it: a pg_dump run whose monitor found
# production unhealthy after the merge (nulls spelled out, a key this version does not know).
EARLIER = {
    "run_id": RUN_ID,
    "playbook": "/srv/release/playbook.yaml",
    "name": "release-42",
    "state": "halted",
    "created_at": "2025-10-21T14:30:05.123456Z",
    "updated_at": "2025-10-21T14:41:00Z",
    "source_commit": SOURCE,
    "playbook_text": None,
    "playbook_sha256": None,
    "database": {},
    "planned": [{"tag": "0010_x", "hash": "h10"}],
    "tracked_before": ["h9"],
    "steps": {
        "preflight": {
            "ok": True,
            "repo": "/srv/app",
            "remote": "origin",
            "source": "staging",
            "target": "main",
            "via": "push",
            "source_commit": SOURCE,
            "target_commit": TARGET,
            "fast_forward": False,
            "already_merged": False,
            "migrations_dir": "drizzle",
            "migrations": ["0009_w", "0010_x"],
        },
        "backup": {
            "kind": "pg_dump",
            "path": "/backups/release-42.dump",
            "bytes": 2048,
            "sha256": "d" * 64,
            "toc_entries": 12,
            "taken_at": "2025-10-21T14:31:00Z",
        },
        "validate": {
            "status": "NEEDS_MIGRATION",
            "states": {"0009_w": "applied", "0010_x": "pending"},
            "pending": ["0010_x"],
            "findings": [{"code": "pending", "migration": "0010_x", "message": "not applied"}],
            "recommendation": "run migrate",
        },
        "migrate": {
            "applied": [{"tag": "0010_x", "hash": "h10", "created_at": 1761057060000}],
            "after": "SAFE",
        },
        "revalidate": {"status": "SAFE", "pending": [], "findings": [], "recommendation": ""},
        "merge": {
            "pushed_commit": PUSHED,
            "previous_target_commit": TARGET,
            "merge_commit": PUSHED,
            "fast_forward": False,
        },
        "release": {
            "gate": "none",
            "live": True,
            "ending": "live",
            "commit": PUSHED,
            "detail": None,
        },
        "monitor": {
            "healthy": False,
            "rounds": 2,
            "failures": 2,
            "failures_allowed": 1,
            "ended_early": True,
            "elapsed_s": 1.5,
            "failed_checks": [{"check": "health", "detail": "HTTP 500"}],
            "sampled_by": "an older monitor",
        },
        "halt": {"from": "live", "reason": "monitor unhealthy", "at": "2025-10-21T14:41:00Z"},
    },
    "transitions": [
        {
            "at": "2025-10-21T14:30:06Z",
            "trigger": "check_backup",
            "source": "pending",
            "dest": "backup_checked",
            "detail": "",
        },
    ],
    "halt_reason": "monitor unhealthy",
    "exit_code": 22,
    "rollback_plan": ["git revert"],
}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / ".orchestrator")


def written(store: RunStore, data: dict[str, Any]) -> None:
    """``data`` as the run's state.json, exactly."""
    store.create(RunRecord(run_id=RUN_ID, playbook="", name="placeholder"))
    store.record_path(RUN_ID).write_text(json.dumps(data))


def test_every_steps_outcome_is_loaded_back_as_it_was_saved(store: RunStore) -> None:
    record = RunRecord(run_id=RUN_ID, playbook="/p.yaml", name="release-42")
    record.steps = StepOutcomes(
        preflight=PreflightOutcome(ok=True, source_commit=SOURCE, pull_request=7),
        backup=BackupOutcome(kind="neon_branch", branch_id="br-1", lsn="0/1A", adopted=True),
        validation=ValidationOutcome(status="NEEDS_MIGRATION", pending=["0010_x"]),
        migrate=MigrateOutcome(applied=[AppliedMigration(tag="0010_x", hash="h10")]),
        revalidate=ValidationOutcome(status="SAFE"),
        merge=MergeOutcome(pushed_commit=PUSHED, via="github_pr", pull_request=7),
        release=ReleaseOutcome(gate="url", live=True, ending="live", waited_s=0.5, polls=2),
        monitor=MonitorOutcome(failed_checks=[FailedCheck(check="health", detail="500")]),
        halt=HaltOutcome(stopped_in="live", reason="monitor unhealthy"),
        rollback=RollbackOutcome(reverted_commit="e" * 40, at="2025-10-21T15:00:00Z"),
    )
    store.create(record)
    assert store.load(RUN_ID) == record
    on_disk = json.loads(store.record_path(RUN_ID).read_text())["steps"]
    # The steps' own names, and the keys earlier versions wrote.
    assert on_disk["validate"]["status"] == "NEEDS_MIGRATION"
    assert on_disk["halt"]["from"] == "live" and "database_restore" not in on_disk


def test_a_record_an_earlier_version_wrote_loads_and_reads_as_before(store: RunStore) -> None:
    written(store, EARLIER)
    record = store.load(RUN_ID)
    assert record.steps.halt is not None and record.steps.halt.stopped_in == "live"
    plan = "\n".join(rollback_plan(record))
    assert "this run applied 0010_x" in plan and "/backups/release-42.dump" in plan
    assert f"git revert --no-edit -m 1 {PUSHED}" in plan
    now = WorldNow(SOURCE, TARGET, source_merged=True, row_hashes=("h9", "h10"))
    assert changes_since(record, now) == []
    foreign = WorldNow(SOURCE, TARGET, True, ("h9", "h10", "h11"))
    assert "1 migration(s) this run did not plan" in changes_since(record, foreign)[0]
    # Saved again by this version and read back: the same record.
    store.save(record)
    assert store.load(RUN_ID) == record


@pytest.mark.parametrize(
    ("spoil", "where"),
    [
        (lambda d: d["steps"]["merge"].update(pushed_commit=42), "steps.merge.pushed_commit"),
        (lambda d: d["steps"].update(monitor=[]), "steps.monitor"),
        (lambda d: d.update(planned=[{"tag": "0010_x"}]), "planned.0.hash"),
    ],
)
def test_a_record_of_the_wrong_shape_is_refused_in_one_line(
    store: RunStore, capsys: pytest.CaptureFixture[str], spoil: Any, where: str
) -> None:
    data = json.loads(json.dumps(EARLIER))
    spoil(data)
    written(store, data)
    code = run(["show", RUN_ID, "--state-dir", str(store.state_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"malformed run record: {where}: " in err and len(err.strip().splitlines()) == 1


def step_end(step: str, outcome: Any) -> str | None:
    logged = outcome.model_dump(mode="json") if isinstance(outcome, Outcome) else outcome
    return event_line(
        {"event": "step_end", "timestamp": "2026-01-01T10:11:12Z", "step": step, "outcome": logged}
    )


def test_the_line_of_a_finished_step_reads_its_own_outcome() -> None:
    assert step_end("validate", ValidationOutcome(status="SAFE")) == (
        "10:11:12 step validate done: SAFE"
    )
    applied = [AppliedMigration(tag="0001_a"), AppliedMigration(tag="0002_b")]
    assert step_end("migrate", MigrateOutcome(applied=applied)) == (
        "10:11:12 step migrate done: applied 0001_a, 0002_b"
    )
    assert step_end("migrate", MigrateOutcome(skipped="validate said SAFE")) == (
        "10:11:12 step migrate done: validate said SAFE"
    )
    # Another step's keys in the outcome do not make it that step's.
    assert step_end("migrate", {"applied": [], "status": "SAFE"}) == (
        "10:11:12 step migrate done: nothing"
    )
    merged = MergeOutcome(
        pushed_commit=PUSHED, merge_commit=PUSHED, pull_request=7, pull_request_url="https://g/7"
    )
    assert step_end("merge", merged) == (
        f"10:11:12 step merge done: merged pull request #7 (https://g/7), merge commit {PUSHED}"
    )
    assert step_end("monitor", MonitorOutcome(rounds=3)) == (
        "10:11:12 step monitor done: UNHEALTHY (3 rounds)"
    )
    assert step_end("release", ReleaseOutcome(ending="timeout", detail="old")) == (
        "10:11:12 step release done: timeout (old)"
    )
    # An outcome of a shape this version does not record: the line, without a wrong hint.
    assert step_end("monitor", {"rounds": "three"}) == "10:11:12 step monitor done"
    assert step_end("unknown", {"status": "SAFE"}) == "10:11:12 step unknown done"


def test_literal_masking_leaves_the_fields_that_identify_a_run(store: RunStore) -> None:
    """A password as short as "42" is masked nowhere (it garbled the record's times: the run
    could not be read); one equal to the database's or a folder's name ("postgres" in CI
    service containers) is masked in free text only, never in a path, name, hash or time."""
    short, common = "postgresql://app:42@db/shop", "postgresql://postgres:postgres@db/postgres"
    store.redactor = Redactor([*connection_passwords(short), *connection_passwords(common)])
    record = RunRecord(
        run_id=RUN_ID,
        playbook="/srv/postgres/release.yaml",
        name="postgres",
        created_at="2025-10-21T14:30:05.142857Z",
        database={"system_identifier": "742", "database_oid": "16384", "database_name": "postgres"},
        halt_reason="postgres refused the login of role app at 14:42",
    )
    record.steps.backup = BackupOutcome(
        kind="pg_dump", path="/srv/postgres/dumps/a.dump", sha256="42" * 32, database="postgres"
    )
    store.create(record)
    loaded = store.load(RUN_ID)
    assert loaded.halt_reason == "*** refused the login of role app at 14:42"
    assert loaded.model_copy(update={"halt_reason": record.halt_reason}) == record


def test_what_befell_a_run_after_it_ended_has_its_line_and_its_label() -> None:
    """A rollback, a database restore and an abandon are in the timeline and in the state
    `runs` and `show` print: a reverted release no longer reads as plainly succeeded."""
    at = {"timestamp": "2026-01-01T10:11:12Z", "level": "info", "run_id": RUN_ID}
    lines = [
        event_line({**at, "event": "rollback_pushed", "reverted_commit": PUSHED}),
        event_line({**at, "event": "rollback_failed", "reason": "push rejected"}),
        event_line({**at, "event": "database_restore_finished", "preserved_as": "pre-restore"}),
        event_line({**at, "event": "database_revalidated", "status": "NEEDS_MIGRATION"}),
        event_line({**at, "event": "run_abandoned", "reason": "superseded by a hotfix"}),
        event_line({**at, "event": "rollback_plan", "plan": ["git revert"]}),
    ]
    assert lines == [
        f"10:11:12 ROLLBACK PUSHED; reverted commit {PUSHED}",
        "10:11:12 ROLLBACK FAILED; reason push rejected",
        "10:11:12 DATABASE RESTORE FINISHED; preserved as pre-restore",
        "10:11:12 DATABASE REVALIDATED; status NEEDS_MIGRATION",
        "10:11:12 RUN ABANDONED; reason superseded by a hotfix",
        None,  # the plan ends the timeline, whole
    ]
    record = RunRecord(run_id=RUN_ID, playbook="/p.yaml", name="r", state="succeeded")
    assert state_label(record) == "succeeded"
    record.steps.rollback = RollbackOutcome(reverted_commit=PUSHED, at="2026-01-01T10:11:12Z")
    record.steps.database_restore = DatabaseRestoreOutcome(at="2026-01-01T10:12:00Z")
    assert state_label(record, abandoned=True) == (
        "succeeded (rolled back, database restored, abandoned)"
    )
