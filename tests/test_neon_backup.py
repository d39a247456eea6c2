"""``backup.kind: neon_branch`` end to end, against the Neon API contract double.

A deploy branches production at the LSN it reads just before migrating (one branch, named
after the run); a failing API or a vanished branch keeps the run from migrating; a killed
deploy resumes with the same branch; the API key shows up nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.cli import run
from orchestrator.engine.outcomes import BackupOutcome
from orchestrator.engine.rollback import rollback_plan
from orchestrator.engine.run import resume
from orchestrator.errors import ExitCode
from orchestrator.neon.backup import neon_api, take_branch_backup
from orchestrator.playbook import load_playbook
from tests.drizzle_helpers import tracking_rows
from tests.neon_double import NeonState
from tests.neon_world import neon_world
from tests.release_world import World
from tests.test_resume import deploy_process, kill, only_run, wait_stopped

KEY = "napi_k3y_never_printed_0123456789"


@pytest.fixture
def neon(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[NeonState]:
    """The double with production's branch, the playbook pointing at it, the key set."""
    with neon_world(world, KEY) as state:
        monkeypatch.setenv("NEON_API_KEY", KEY)
        yield state


def backups(state: NeonState) -> list[dict[str, object]]:
    return [b for b in state.branches.values() if str(b["name"]).startswith("pre-")]


def test_a_deploy_branches_production_at_the_recorded_lsn(world: World, neon: NeonState) -> None:
    record = world.deploy(environ={"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY})
    assert record.state == "succeeded", record.halt_reason
    backup = record.steps.backup
    [branch] = backups(neon)
    assert branch["name"] == f"pre-{record.run_id}" and branch["id"] == backup.branch_id
    assert branch["parent_lsn"] == backup.lsn and str(backup.lsn).count("/") == 1
    plan = "\n".join(rollback_plan(record))
    assert f"from the backup branch pre-{record.run_id}" in plan and "/restore" in plan
    for path in world.store.run_dir(record.run_id).iterdir():
        assert KEY not in path.read_text(errors="replace")


def test_a_failing_api_keeps_the_run_from_migrating(world: World, neon: NeonState) -> None:
    neon.failures = [(400, {})]
    record = world.deploy(environ={"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY})
    assert record.state in ("halted", "failed")
    assert record.exit_code == int(ExitCode.GUARD_FAILED)
    assert len(tracking_rows(world.database_url)) == 9  # nothing migrated
    assert KEY not in str(record.halt_reason)


@pytest.mark.parametrize(
    ("key", "code"), [("", ExitCode.USAGE), ("napi_wrong", ExitCode.GUARD_FAILED)]
)
def test_the_dry_run_predicts_what_a_missing_or_wrong_key_does_to_the_deploy(
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    code: ExitCode,
) -> None:
    # A missing key is bad input, refused before a run exists; a key Neon refuses halts
    # the backup step (Neon's reference: 401 for a missing or invalid API key).
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    monkeypatch.setenv("NEON_API_KEY", key)
    state_dir = ["--state-dir", str(world.store.state_dir)]
    with neon_world(world, KEY) as state:
        dry = run(["deploy", "--playbook", str(world.playbook), "--dry-run", *state_dir])
        dry_out, dry_err = capsys.readouterr()
        deployed = run(world.deploy_argv())
        err = capsys.readouterr().err
    assert dry == deployed == code, (dry_out, dry_err, err)
    if key:
        assert "[HALT] backup: Neon API GET" in dry_out and "HTTP 401" in dry_out
        assert backups(state) == []
    else:
        refusal = ["error: $NEON_API_KEY is not set: it must hold the Neon API key"]
        assert dry_err.splitlines() == err.splitlines() == refusal
        assert world.store.list() == []  # no run record for bad input
    assert len(tracking_rows(world.database_url)) == 9


def test_a_killed_deploy_resumes_with_the_same_branch(world: World, neon: NeonState) -> None:
    process = deploy_process(world, "step_end:backup")
    wait_stopped(process)
    kill(process)
    assert len(backups(neon)) == 1
    record = resume(
        None,
        world.store,
        world.interaction(environ={"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY}),
    )
    assert record.state == "succeeded", record.halt_reason
    assert len(backups(neon)) == 1, "resume made a second backup branch"
    assert only_run(world).steps.backup.branch_id == backups(neon)[0]["id"]


def test_a_vanished_backup_branch_is_taken_again_on_resume(world: World, neon: NeonState) -> None:
    process = deploy_process(world, "step_end:backup")
    wait_stopped(process)
    kill(process)
    [first] = backups(neon)
    del neon.branches[str(first["id"])]  # someone deleted it in the console
    record = resume(
        None,
        world.store,
        world.interaction(environ={"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY}),
    )
    assert record.state == "succeeded", record.halt_reason
    [second] = backups(neon)
    assert record.steps.backup.branch_id == second["id"] != first["id"]


def test_a_backup_branch_neon_failed_to_make_is_made_again_on_resume(
    world: World, neon: NeonState
) -> None:
    environ = {"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY}
    neon.fail_next_operation = True  # the branch is listed, its create operation fails
    first = world.deploy(environ=environ)
    assert first.exit_code == int(ExitCode.GUARD_FAILED), first.halt_reason
    [failed] = backups(neon)
    assert len(tracking_rows(world.database_url)) == 9  # nothing migrated
    record = resume(None, world.store, world.interaction(environ=environ))
    assert record.state == "succeeded", record.halt_reason
    [made] = backups(neon)
    assert record.steps.backup.branch_id == made["id"] != failed["id"]


def test_a_killed_attempts_branch_is_adopted_only_once_neon_has_made_it(
    world: World, neon: NeonState
) -> None:
    # A killed attempt's backup branch, still being made (BranchState "init"), in a busy
    # project: its create operation is older than the newest 100 the client lists.
    main = next(b for b in neon.branches.values() if b["name"] == "main")
    made = neon.add_branch("pre-run-7", str(main["id"]))
    made["current_state"] = "init"
    neon.operation("create_branch", str(made["id"]))
    for _ in range(100):
        neon.operation("start_compute", str(main["id"]))
    playbook = load_playbook(world.playbook)
    api = neon_api(playbook, {"NEON_API_KEY": KEY})
    api.sleep = [].append  # the double's time passes with each look, not with the clock
    point = BackupOutcome(kind="restore_point", wal_lsn="0/16B3748", taken_at="2026-01-01")
    outcome = take_branch_backup(api, playbook, "run-7", point)
    assert outcome.branch_id == made["id"] and made["current_state"] == "ready"
    assert len(backups(neon)) == 1  # adopted, not made twice
